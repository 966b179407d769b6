"""``pansynth data synthetic | stats | check``: write, inspect and check datasets."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pansynth.cli.common import add_dataset_arguments
from pansynth.data import build_dataset, guess_format
from pansynth.data.base import PanopticDataset
from pansynth.data.stats import dataset_stats, format_stats
from pansynth.data.synthetic import split_counts, write_synthetic_dataset


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="generate, inspect and check datasets",
        description="Generate the procedural scenes, print dataset statistics, or list unreadable samples.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: _help(data))

    synthetic = commands.add_parser(
        "synthetic", help="write the procedural panoptic scenes as a Folder dataset",
        description="Write DIR/train, DIR/val and DIR/classes.json (Folder layout). DIR must not exist "
                    "or be empty.",
    )  # fmt: skip
    synthetic.add_argument("--out", required=True, type=Path, help="output folder (new or empty)")
    synthetic.add_argument("--num", type=int, default=300, help="number of scenes in all (default 300)")
    synthetic.add_argument("--size", type=int, default=128, help="side of the square scenes in pixels (default 128)")
    synthetic.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    synthetic.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the scenes in the val split (default 0.1; 0 writes train only)",
    )
    synthetic.set_defaults(func=_synthetic)

    for name, handler, help_text in (
        ("stats", _stats, "print image count, classes, instances per image and touching same-class instances"),
        ("check", _check, "load every sample and list the bad ones (exit status 1 when any)"),
    ):
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "dir",
            nargs="?",
            type=Path,
            help="a Folder dataset (each split sub-folder is reported); or use --dataset/--root",
        )
        add_dataset_arguments(parser, required=False)
        parser.set_defaults(batch_size=1)
        if name == "stats":
            parser.add_argument(
                "--skip-bad", action="store_true", help="skip bad samples with a logged count instead of stopping"
            )
            parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
        parser.set_defaults(func=handler)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (it may be replaced)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging() -> None:
    logger = logging.getLogger("pansynth.data")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("pansynth data: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _synthetic(args: argparse.Namespace) -> int:
    num_train, num_val = split_counts(args.num, args.val_fraction)
    start = time.perf_counter()
    out = write_synthetic_dataset(args.out, args.num, args.size, seed=args.seed, val_fraction=args.val_fraction)
    print(
        f"wrote {args.num} scenes of {args.size}x{args.size} ({num_train} train, {num_val} val, seed {args.seed}) "
        f"to {out} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _open_datasets(args: argparse.Namespace, skip_bad: bool) -> list[tuple[str, PanopticDataset]]:
    """(title, dataset) for each split the arguments designate."""
    if args.dir is not None and (args.dataset is not None or args.root is not None):
        raise ValueError("give either a Folder dataset DIR or --dataset NAME --root DIR, not both")
    if args.dir is None:
        if args.dataset is None or args.root is None:
            raise ValueError("expected a Folder dataset DIR, or --dataset NAME together with --root DIR")
        dataset = build_dataset(args.dataset, args.root, split=args.split, skip_bad=skip_bad)
        split = args.split or getattr(dataset, "split", None) or ("train" if args.dataset != "folder" else None)
        return [(f"{args.dataset} {args.root}" + (f" [{split}]" if split else ""), dataset)]
    root: Path = args.dir
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if args.split is not None:
        splits: list[str | None] = [args.split]
    elif (root / "images").is_dir():
        splits = [None]
    else:
        splits = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
        if not splits:
            guess = guess_format(root)
            hint = (
                f"; it looks like a {guess} dataset: use --dataset {guess} --root {root}"
                if guess not in (None, "folder")
                else "; expected the Folder layout images/ semantic/ panoptic/ + classes.json"
            )
            raise FileNotFoundError(f"{root}: no images/ folder and no split sub-folder (e.g. train/images/){hint}")
    return [
        (f"{root}" + (f" [{split}]" if split else ""), build_dataset("folder", root, split=split, skip_bad=skip_bad))
        for split in splits
    ]


def _stats(args: argparse.Namespace) -> int:
    _setup_logging()
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    results: dict[str, Any] = {}
    for title, dataset in _open_datasets(args, skip_bad=args.skip_bad):
        stats = dataset_stats(dataset, limit=args.limit)
        stats["skipped"] = len(dataset.skipped)
        results[title] = stats
        if not args.json:
            print(format_stats(stats, title=f"== {title}"))
            if dataset.skipped:
                print(f"skipped bad samples: {len(dataset.skipped)}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


def _check(args: argparse.Namespace) -> int:
    bad_total = 0
    for title, dataset in _open_datasets(args, skip_bad=True):
        bad = [reason for _, reason in dataset.skipped]  # missing partner files found at construction
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        for index in range(count):
            try:
                dataset.check_sample(index)
            except (ValueError, FileNotFoundError, OSError) as error:
                bad.append(str(error))
        for reason in bad:
            print(f"bad: {reason}")
        print(f"{title}: {count} samples checked, {len(bad)} bad")
        bad_total += len(bad)
    return 1 if bad_total else 0
