"""``pansynth serve``: the painter page (the server is :mod:`pansynth.serve`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pansynth.choices import DATASET_NAMES
from pansynth.cli.common import CHECKPOINT_HELP, add_device_argument, load_checkpoint_argument
from pansynth.data import DEFAULT_SPLIT_HELP
from pansynth.serve.server import serve

DEFAULT_PORT = 8765


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="paint panoptic maps in a local web page and see the synthesized image",
        description="Load a run's exported generator once and serve a page to paint semantic + panoptic maps "
        "(stuff classes and separate thing instances) next to the image the generator makes from them.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help=CHECKPOINT_HELP)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the page to the network)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    add_device_argument(p)
    p.add_argument(
        "--root",
        help="dataset root: its samples can be loaded as starting maps, its class names are "
        "used when the checkpoint has none",
    )
    p.add_argument(
        "--dataset", default="folder", choices=DATASET_NAMES, help="dataset format of --root (default folder)"
    )
    p.add_argument("--split", help=f"split of --root (default: {DEFAULT_SPLIT_HELP})")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest request body accepted, in MiB (default 8)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb * 2**20 >= 1):
        raise ValueError(f"--max-upload-mb must be a positive number of MiB, got {args.max_upload_mb}")
    if args.split and not args.root:
        raise ValueError("--split needs --root DIR")
    try:
        generator = load_checkpoint_argument(args.checkpoint, device=args.device)
    except ValueError as error:
        raise ValueError(f"--checkpoint {args.checkpoint}: cannot load a generator ({error})") from None
    serve(
        generator,
        host=args.host,
        port=args.port,
        root=args.root,
        dataset=args.dataset,
        split=args.split,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        title=args.checkpoint.name,
    )
    return 0
