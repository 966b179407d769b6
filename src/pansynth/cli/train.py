"""``pansynth train`` and ``pansynth synthesize``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch.utils.data import Subset

from pansynth.cli.common import (
    CHECKPOINT_HELP,
    add_dataset_arguments,
    add_device_argument,
    add_overrides,
    check_limit,
    load_checkpoint_argument,
    overrides,
)
from pansynth.data import build_dataset
from pansynth.export import OnnxGenerator
from pansynth.inference import MapFolder, read_map_pair, synthesize_dataset
from pansynth.train import load_config, train
from pansynth.train.config import preset_names


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the generator (resumes an existing run directory)",
        description="Train (or resume) a run. Works under plain python and under "
        "`torchrun --nproc_per_node=G -m pansynth train ...`. Everything is checked before anything is "
        "written to --out; Ctrl-C, SIGTERM and SIGUSR1 save the current step and stop.",
    )
    p.add_argument("--config", required=True, help=f"preset name ({', '.join(preset_names())}) or a YAML file")
    p.add_argument("--out", required=True, help="run directory (created; resumed when it holds a run)")
    add_overrides(p)
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "synthesize",
        help="generate images from semantic + panoptic maps",
        description="Write one PNG per input map pair, at the map's resolution. Every map is checked before the "
        "first image is written.",
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    model.add_argument(
        "--onnx", type=Path, metavar="FILE", help="an .onnx file from `pansynth export`, run by ONNX Runtime"
    )
    p.add_argument("--input", help="folder with semantic/ and panoptic/ PNGs (Folder layout), or one semantic PNG")
    p.add_argument("--panoptic", help="panoptic PNG going with a single semantic PNG given as --input")
    p.add_argument("--out", required=True, help="output folder")
    add_dataset_arguments(p, required=False)
    add_device_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_synthesize)


def _train(args: argparse.Namespace) -> int:
    train(load_config(args.config, overrides(args)), args.out)
    return 0


def _maps(args: argparse.Namespace) -> Any:
    """The maps to synthesize: a dataset reader, a map folder, or one map pair."""
    if args.dataset:
        root = args.root or args.input
        if root is None:
            raise ValueError("--dataset needs --root DIR (or --input DIR)")
        return build_dataset(args.dataset, root, split=args.split)
    if args.input is None:
        raise ValueError("give --input DIR|SEMANTIC.png (with --panoptic PAN.png) or --dataset NAME --root DIR")
    if Path(args.input).is_file():
        if not args.panoptic:
            raise ValueError(f"--input {args.input} is a file: also give its panoptic map with --panoptic PAN.png")
        return [read_map_pair(args.input, args.panoptic)]
    if Path(args.input).is_dir():
        return MapFolder(args.input, split=args.split)
    raise FileNotFoundError(f"--input {args.input} does not exist")


def _synthesize(args: argparse.Namespace) -> int:
    check_limit(args)
    if args.onnx is not None:
        generator = OnnxGenerator(args.onnx)
        if args.device not in ("auto", "cpu"):
            raise ValueError(f"--onnx runs on ONNX Runtime's CPU provider; drop --device {args.device}")
        args.device = "cpu"
    else:
        generator = load_checkpoint_argument(args.checkpoint)
    maps = _maps(args)
    if args.limit is not None:
        maps = Subset(maps, range(min(args.limit, len(maps))))
    paths = synthesize_dataset(
        generator, maps, args.out, batch_size=args.batch_size, device=args.device, overwrite=args.overwrite
    )
    print(f"wrote {len(paths)} images to {args.out}")
    return 0
