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
from pansynth.data.io import read_image
from pansynth.export import OnnxGenerator
from pansynth.inference import MapFolder, read_map_pair, style_by_class, synthesize_dataset
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
    style = p.add_argument_group(
        "styles", "generators trained with model.style=instance: a code per panoptic segment (docs/style.md)"
    )
    style.add_argument("--samples", type=int, help="images per map, NAME_k.png with seed S+k (default 1: NAME.png)")
    style.add_argument("--seed", type=int, help="codes are drawn from (seed, segment id) (default 0)")
    style.add_argument(
        "--restyle",
        action="append",
        metavar="ID[:SEED]",
        help="redraw segment ID's code with its own seed (default: the image's seed + 1), keeping every other "
        "code; repeatable",
    )
    style.add_argument("--style-image", type=Path, help="reference photograph: each class takes its segments' style")
    style.add_argument("--style-semantic", type=Path, help="the reference's semantic map (PNG)")
    style.add_argument("--style-panoptic", type=Path, help="the reference's panoptic map (PNG)")
    style.add_argument("--style-sample", type=int, metavar="INDEX", help="the reference is sample INDEX of --dataset")
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


def _restyle(values: list[str] | None) -> dict[int, int | None] | None:
    """``--restyle ID[:SEED]`` arguments -> ``{id: seed or None}``."""
    if not values:
        return None
    restyle: dict[int, int | None] = {}
    for value in values:
        identifier, _, seed = value.partition(":")
        try:
            restyle[int(identifier)] = int(seed) if seed else None
        except ValueError:
            raise ValueError(
                f"--restyle {value!r}: expected a segment id, optionally with :SEED (e.g. 1001:7)"
            ) from None
    return restyle


def _style_reference(args: argparse.Namespace, maps: Any, generator: Any) -> Any:
    """``{class: code}`` of the reference given by --style-image/--style-semantic/--style-panoptic or --style-sample."""
    files = (args.style_image, args.style_semantic, args.style_panoptic)
    if args.style_sample is not None and any(files):
        raise ValueError(
            "give either --style-sample INDEX or --style-image/--style-semantic/--style-panoptic, not both"
        )
    if any(files):
        if not all(files):
            raise ValueError("--style-image needs --style-semantic and --style-panoptic (its maps), all three")
        for flag, path in zip(("--style-image", "--style-semantic", "--style-panoptic"), files):
            if not path.is_file():
                raise FileNotFoundError(f"{flag} {path} does not exist")
        pair = read_map_pair(args.style_semantic, args.style_panoptic)
        image = read_image(args.style_image)
        if tuple(image.shape[-2:]) != tuple(pair["semantic"].shape):
            raise ValueError(
                f"--style-image {args.style_image} is {image.shape[-2]}x{image.shape[-1]} but its maps "
                f"({args.style_semantic}) are {pair['semantic'].shape[0]}x{pair['semantic'].shape[1]}"
            )
        return style_by_class(generator, image, pair["semantic"], pair["panoptic"])
    if args.style_sample is not None:
        if not args.dataset:
            raise ValueError("--style-sample INDEX reads a sample of --dataset NAME --root DIR: give them")
        if not 0 <= args.style_sample < len(maps):
            raise ValueError(f"--style-sample {args.style_sample}: the dataset has samples 0..{len(maps) - 1}")
        sample = maps[args.style_sample]
        return style_by_class(generator, sample["image"], sample["semantic"], sample["panoptic"])
    return None


def _synthesize(args: argparse.Namespace) -> int:
    check_limit(args)
    if args.onnx is not None:
        generator = OnnxGenerator(args.onnx)
        if args.device not in ("auto", "cpu"):
            raise ValueError(f"--onnx runs on ONNX Runtime's CPU provider; drop --device {args.device}")
        args.device = "cpu"
    else:
        generator = load_checkpoint_argument(args.checkpoint)
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    styled = [
        flag
        for flag, value in (
            ("--samples", args.samples),
            ("--seed", args.seed),
            ("--restyle", args.restyle),
            ("--style-image", args.style_image),
            ("--style-semantic", args.style_semantic),
            ("--style-panoptic", args.style_panoptic),
            ("--style-sample", args.style_sample),
        )
        if value is not None
    ]
    if styled and getattr(generator, "style_encoder", None) is None:
        raise ValueError(
            f"{styled[0]} needs a generator with styles (trained with model.style=instance); "
            f"{args.onnx or args.checkpoint} has none"
        )
    restyle = _restyle(args.restyle)
    maps = _maps(args)
    class_codes = _style_reference(args, maps, generator)
    if args.limit is not None:
        maps = Subset(maps, range(min(args.limit, len(maps))))
    paths = synthesize_dataset(
        generator,
        maps,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        samples=args.samples or 1,
        seed=args.seed,
        restyle=restyle,
        class_codes=class_codes,
    )
    print(f"wrote {len(paths)} images to {args.out}")
    return 0
