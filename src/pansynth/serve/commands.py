"""Sub-command ``serve`` (argument parsing only; the server is :mod:`pansynth.serve.app`)."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_PORT = 8765


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="paint panoptic maps in a local web page and see the synthesized image",
        description="Load a run's exported generator once and serve a page to paint semantic + panoptic maps "
        "(stuff classes and separate thing instances) next to the image the generator makes from them.",
    )
    p.add_argument("--checkpoint", required=True, help="run directory, its export/ directory or a step_*.pt file")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the page to the network)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument(
        "--root",
        help="dataset root: its samples can be loaded as starting maps, its class names are "
        "used when the checkpoint has none",
    )
    p.add_argument(
        "--dataset",
        default="folder",
        help="dataset reader for --root: folder, cityscapes, coco-stuff, coco-panoptic (default folder)",
    )
    p.add_argument("--split", help="split of --root (e.g. val)")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest request body accepted, in MiB (default 8)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pansynth.serve.server import serve_checkpoint

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.split and not args.root:
        raise ValueError("--split needs --root DIR")
    serve_checkpoint(
        args.checkpoint,
        host=args.host,
        port=args.port,
        device=args.device,
        root=args.root,
        dataset=args.dataset,
        split=args.split,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
    )
    return 0
