"""Arguments shared by the sub-commands, so that every command speaks one grammar.

- ``--device`` is ``auto`` (CUDA when available) by default everywhere;
- ``--dataset`` takes one of :data:`pansynth.choices.DATASET_NAMES` everywhere;
- ``--split`` defaults to the dataset's own default (stated in the help);
- configuration keys are overridden with ``KEY=VALUE`` arguments (``--set KEY=VALUE`` is the same);
- a model is named with ``--checkpoint`` (a run directory, its ``export/`` folder or a checkpoint file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pansynth.choices import DATASET_NAMES
from pansynth.data import DEFAULT_SPLIT_HELP
from pansynth.devices import resolve_device
from pansynth.inference import load_generator
from pansynth.models import Generator
from pansynth.train.checkpoint import load_generator_from_checkpoint

__all__ = [
    "CHECKPOINT_HELP",
    "add_dataset_arguments",
    "add_device_argument",
    "add_overrides",
    "check_limit",
    "load_checkpoint_argument",
    "overrides",
]

CHECKPOINT_HELP = "run directory, its export/ folder, or a checkpoint file step_*.pt"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", type=_device, help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)"
    )


def _device(text: str) -> str:
    try:
        resolve_device(text)  # rejects unknown names and CUDA without a GPU, naming --device
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_dataset_arguments(
    parser: argparse.ArgumentParser, required: bool = True, size: bool = False, size_help: str = ""
) -> None:
    """``--dataset``, ``--root``, ``--split`` (and ``--size``, ``--limit``, ``--batch-size``)."""
    parser.add_argument("--dataset", required=required, choices=DATASET_NAMES, help="dataset format")
    parser.add_argument("--root", type=Path, required=required, help="dataset root folder")
    parser.add_argument("--split", help=f"split to read (default: {DEFAULT_SPLIT_HELP})")
    if size:
        parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help=size_help)
    parser.add_argument("--limit", type=int, help="only use the first N samples")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """Configuration overrides: bare ``KEY=VALUE`` arguments, or ``--set KEY=VALUE`` (the same, repeatable)."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides on dotted keys, e.g. data.root=DIR max_steps=1000 model.conv=standard",
    )
    parser.add_argument(
        "--set",
        dest="set_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the same as a bare KEY=VALUE argument (repeatable)",
    )


def overrides(args: argparse.Namespace) -> list[str]:
    return [*args.overrides, *args.set_overrides]


def check_limit(args: argparse.Namespace) -> None:
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if getattr(args, "batch_size", 1) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def load_checkpoint_argument(path: Path, device: str | torch.device = "cpu") -> Generator:
    """The generator named by ``--checkpoint``: a checkpoint file, or exported weights (a run's ``export/``)."""
    if path.is_file() and path.suffix == ".pt":
        return load_generator_from_checkpoint(path, device=resolve_device(device))
    return load_generator(path, device=device)
