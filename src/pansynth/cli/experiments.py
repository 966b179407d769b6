"""``pansynth demo``, ``pansynth ablate`` and ``pansynth robustness``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pansynth.cli.common import add_dataset_arguments, add_device_argument, add_overrides, overrides
from pansynth.cli.evaluate import add_metric_arguments, corruptions_argument, metric_networks
from pansynth.data.corrupt import CORRUPTIONS
from pansynth.experiments.ablation import command_line, run_ablation
from pansynth.experiments.demo import run_demo
from pansynth.experiments.robustness import run_robustness
from pansynth.train.config import preset_names


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo on procedural scenes: data, training, synthesis, HTML page",
        description="Generate procedural scenes, train the demo preset (resumable), synthesize the held-out "
        "scenes and write OUT/index.html.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo preset's max_steps)")
    add_device_argument(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's own choice, one per core; 1 is faster when "
        "the machine is busy with other work)",
    )
    p.set_defaults(func=_demo)

    ablate = subparsers.add_parser(
        "ablate",
        help="train and evaluate the paper's ablation, one switch per row (Table 4)",
        description="Train and evaluate the baseline, +panoptic conv (with and without the boundary map) and "
        "+panoptic upsampling with the same configuration, budget and seeds; write OUT/ablation.md and .json.",
    )
    ablate.add_argument("--config", required=True, help=f"training preset ({', '.join(preset_names())}) or YAML")
    ablate.add_argument("--root", type=Path, required=True, help="dataset root")
    ablate.add_argument("--budget", type=int, required=True, help="training steps per variant")
    ablate.add_argument("--out", type=Path, default=Path("runs/ablation"), help="output folder (default runs/ablation)")
    ablate.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="seed(s); several give mean ± standard deviation (default 0)"
    )
    ablate.add_argument(
        "--split",
        default="val",
        help="the held-out split the variants are evaluated on (default val: training reads data.split of the config)",
    )
    add_overrides(ablate)
    add_device_argument(ablate)
    ablate.add_argument("--limit", type=int, help="evaluate only the first N samples of the split")
    ablate.add_argument("--batch-size", type=int, default=8, help="evaluation batch size (default 8)")
    ablate.add_argument(
        "--train-segmenter", type=int, default=0, metavar="STEPS",
        help="without --seg-model/--seg-arch: train a small proxy segmenter on the real training images "
        "for STEPS steps (saved as OUT/segmenter.pt) to report mIoU/accuracy (default 0: off)",
    )  # fmt: skip
    add_metric_arguments(ablate)
    ablate.set_defaults(func=_ablate)

    robustness = subparsers.add_parser(
        "robustness",
        help="evaluate trained runs on corrupted maps (unknown pixels, merged/split instances...): table + chart",
        description="For every run and corruption, synthesize the held-out split from the corrupted maps and "
        "evaluate against the clean ones (clean maps first); write OUT/robustness.md, .json and .png.",
    )
    robustness.add_argument("--runs", type=Path, nargs="+", required=True, help="run directories (or exports)")
    robustness.add_argument(
        "--labels", nargs="+", help="one model name per run (default the folder names); equal names are pooled"
    )
    add_dataset_arguments(robustness)
    robustness.add_argument(
        "--corrupt", action="append", default=[], metavar="NAME[:LEVEL]",
        help="corruption rows, repeatable or comma-separated (default: every one at its default level: "
        + ", ".join(CORRUPTIONS) + ")",
    )  # fmt: skip
    robustness.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="corruption seed(s) (default 0); several give mean ± sd"
    )
    robustness.add_argument(
        "--unknown-classes", type=int, nargs="+", default=[], metavar="ID",
        help="cityscapes: label ids read as unknown pixels (void: 0 1 2 3 4 5 6)",
    )  # fmt: skip
    robustness.add_argument("--out", type=Path, default=Path("runs/robustness"), help="output folder")
    add_device_argument(robustness)
    robustness.add_argument(
        "--train-segmenter", type=int, default=0, metavar="STEPS",
        help="without --seg-model/--seg-arch: train the proxy segmenter of `ablate` for STEPS steps (default 0: off)",
    )  # fmt: skip
    add_metric_arguments(robustness)
    robustness.set_defaults(func=_robustness)


def _demo(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    run_demo(Path(args.out), steps=args.steps, device=args.device)
    return 0


def _ablate(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.train_segmenter < 0:
        raise ValueError(f"--train-segmenter must be >= 0 steps, got {args.train_segmenter}")
    if not args.root.is_dir():
        raise FileNotFoundError(f"--root {args.root} is not a directory")
    run_ablation(
        args.config, args.root, args.budget, args.out, seeds=args.seed, overrides=overrides(args),
        split=args.split, batch_size=args.batch_size, device=args.device, limit=args.limit,
        networks=metric_networks(args), separation_width=args.separation_width,
        command=command_line(sys.argv[1:]) if sys.argv[1:2] == ["ablate"] else None,
        segmenter_steps=args.train_segmenter,
    )  # fmt: skip
    print((args.out / "ablation.md").read_text().split("\n\n")[1])
    print(f"wrote {args.out / 'ablation.md'} and {args.out / 'ablation.json'}")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    corruptions = corruptions_argument(args.corrupt) or None
    run_robustness(
        args.runs, args.dataset, args.root, args.out, corruptions=corruptions, labels=args.labels, seeds=args.seed,
        split=args.split, unknown_classes=args.unknown_classes, batch_size=args.batch_size, device=args.device,
        limit=args.limit, networks=metric_networks(args), separation_width=args.separation_width,
        segmenter_steps=args.train_segmenter,
        command=command_line(sys.argv[1:]) if sys.argv[1:2] == ["robustness"] else None,
    )  # fmt: skip
    print((args.out / "robustness.md").read_text().split("\n\n")[1])
    print(f"wrote {args.out / 'robustness.md'}, {args.out / 'robustness.json'} and {args.out / 'robustness.png'}")
    return 0
