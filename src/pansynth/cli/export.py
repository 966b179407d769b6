"""``pansynth export``: the generator as an ONNX file, a torch.export program, or a static in-browser painter."""

from __future__ import annotations

import argparse
from pathlib import Path

from pansynth.cli.common import CHECKPOINT_HELP, load_checkpoint_argument
from pansynth.export import DEFAULT_OPSET, export_program, write_painter
from pansynth.export.graph import STYLE_NOT_EXPORTED
from pansynth.export.onnx_file import onnx_bytes, refuse_existing
from pansynth.export.painter import find_ort_web
from pansynth.files import atomic_write_bytes
from pansynth.serve.classes import build_class_table

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the generator as an ONNX file, a torch.export program, or an in-browser painter",
        description="Export a run's generator (paper model or baseline) for use without pansynth: an ONNX file "
        "(opset 17+, standard operators, for ONNX Runtime), a torch.export program (.pt2), or with --painter a "
        "static folder that paints and synthesizes in the browser (onnxruntime-web). Inputs: semantic and panoptic "
        "int64 maps (N, H, W), dynamic batch, the generator's fixed H x W; output: the image (N, 3, H, W) in "
        "[-1, 1]. Nothing is written when the run cannot be loaded; an existing output is kept unless --force.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help=CHECKPOINT_HELP)
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="file format of --out (default onnx)")
    p.add_argument("--out", type=Path, help="output file (.onnx for onnx, .pt2 for torch-export)")
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, 17 or newer (default {DEFAULT_OPSET})"
    )
    p.add_argument("--painter", type=Path, metavar="DIR", help="write the static in-browser painter into DIR")
    p.add_argument(
        "--ort-web",
        type=Path,
        metavar="DIR",
        help="onnxruntime-web files for --painter (default: vendor/onnxruntime-web of the checkout, filled by "
        "`make ort-web`)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file / --painter folder")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    if args.out is None and args.painter is None:
        raise ValueError("give --out FILE (with --format onnx|torch-export) and/or --painter DIR")
    if args.out is not None:
        suffix = FORMATS[args.format]
        if args.out.suffix != suffix:
            raise ValueError(f"--out {args.out}: a {args.format} file must end in {suffix}")
        refuse_existing(args.out, args.force)
    if args.painter is not None:
        if args.painter.is_dir() and any(args.painter.iterdir()) and not args.force:
            raise FileExistsError(f"--painter {args.painter} is not empty; choose another folder or pass --force")
        find_ort_web(args.ort_web)  # before the slow part: say now that the files are missing
    if not args.run.exists():
        raise FileNotFoundError(f"RUN {args.run} does not exist (expected {CHECKPOINT_HELP})")
    try:
        generator = load_checkpoint_argument(args.run, device="cpu")
    except ValueError as error:
        raise ValueError(f"RUN {args.run}: cannot load a generator ({error})") from None
    if getattr(generator, "style_encoder", None) is not None:
        raise ValueError(f"RUN {args.run}: {STYLE_NOT_EXPORTED}")
    model = None
    if args.out is not None:
        if args.format == "onnx":
            model = onnx_bytes(generator, args.opset)
            path = atomic_write_bytes(args.out, model)
        else:
            path = export_program(generator, args.out, force=args.force)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.format})")
    if args.painter is not None:
        classes = build_class_table(generator.num_classes, generator.ignore_index, generator.metadata)
        folder = write_painter(
            generator, args.painter, classes, ort_web=args.ort_web, opset=args.opset, force=args.force,
            title=args.run.name, model=model,
        )  # fmt: skip
        print(f"wrote the in-browser painter to {folder}; serve it with: python -m http.server -d {folder}")
    return 0
