"""Sub-commands ``train``, ``synthesize`` and ``demo`` (argument parsing only)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

# Synthetic scenes written by `pansynth demo` (sized for a 2-core CPU; see docs/train.md).
DEMO_NUM_SCENES = 400
DEMO_VAL_FRACTION = 0.05
DEMO_SEED = 0


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the generator (resumes an existing run directory)",
        description="Train (or resume) a run. Works under plain python and under "
        "`torchrun --nproc_per_node=G -m pansynth train ...`.",
    )
    p.add_argument("--config", required=True, help="preset name (demo, cityscapes, coco-stuff, coco-panoptic) or YAML")
    p.add_argument("--out", required=True, help="run directory (created; resumed when it holds a run)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides on dotted keys, e.g. data.root=DIR max_steps=1000 model.conv=standard")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "synthesize",
        help="generate images from semantic + panoptic maps",
        description="Write one PNG per input map pair, at the map's resolution.",
    )
    p.add_argument("--checkpoint", required=True, help="run directory, exported weights directory or step_*.pt")
    p.add_argument("--input", help="folder with semantic/ and panoptic/ PNGs (Folder layout), or one semantic PNG")
    p.add_argument("--panoptic", help="panoptic PNG going with a single semantic PNG given as --input")
    p.add_argument("--dataset",
                   help="read the maps with a dataset reader: folder, cityscapes, coco-stuff, coco-panoptic")
    p.add_argument("--root", help="dataset root for --dataset (defaults to --input)")
    p.add_argument("--split", help="split sub-folder (e.g. val)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_synthesize)

    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo on synthetic scenes: data, training, synthesis, HTML page",
        description="Generate synthetic scenes, train the demo preset (resumable), synthesize the held-out "
        "scenes and write OUT/index.html.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo preset's max_steps)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's own choice, one per core; 1 is faster when "
                   "the machine is busy with other work)")
    p.set_defaults(func=_demo)


def _train(args: argparse.Namespace) -> int:
    from pansynth.train.config import load_config
    from pansynth.train.trainer import train

    config = load_config(args.config, args.overrides)
    train(config, args.out)
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    from pansynth.inference import MapFolder, load_generator, read_map_pair, synthesize_dataset

    generator = load_generator(args.checkpoint, device="cpu")
    if args.dataset:
        from pansynth.data import build_dataset

        root = args.root or args.input
        if root is None:
            raise ValueError("--dataset needs --root DIR (or --input DIR)")
        dataset: Any = build_dataset(args.dataset, root, split=args.split)
    elif args.input is None:
        raise ValueError("give --input DIR|SEMANTIC.png (with --panoptic PAN.png) or --dataset NAME --root DIR")
    elif Path(args.input).is_file():
        if not args.panoptic:
            raise ValueError(f"--input {args.input} is a file: also give its panoptic map with --panoptic PAN.png")
        dataset = [read_map_pair(args.input, args.panoptic)]
    elif Path(args.input).is_dir():
        dataset = MapFolder(args.input, split=args.split)
    else:
        raise FileNotFoundError(f"--input {args.input} does not exist")
    paths = synthesize_dataset(generator, dataset, args.out, batch_size=args.batch_size, device=args.device,
                               overwrite=args.overwrite)
    print(f"wrote {len(paths)} images to {args.out}")
    return 0


def demo_data_complete(data_dir: Path) -> bool:
    """True when ``data_dir`` holds a finished synthetic dataset (written atomically with synthetic.json)."""
    info_path = data_dir / "synthetic.json"
    if not info_path.is_file():
        return False
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError:
        return False
    for split in ("train", "val"):
        for kind in ("images", "semantic", "panoptic"):
            folder = data_dir / split / kind
            if not folder.is_dir() or len(list(folder.glob("*.png"))) != info.get(split):
                return False
    return True


def _demo(args: argparse.Namespace) -> int:
    import torch

    from pansynth.data.synthetic import write_synthetic_dataset
    from pansynth.inference import load_generator, synthesize_dataset
    from pansynth.train.config import load_config
    from pansynth.train.trainer import train

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    data_dir, run_dir, synth_dir = out / "data", out / "run", out / "synthesized"
    overrides = [f"data.root={data_dir}", f"device={args.device}"]
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        overrides.append(f"max_steps={args.steps}")
    config = load_config("demo", overrides)
    size = config.data.load_size or [128, 128]

    # 1. data
    if demo_data_complete(data_dir):
        print(f"[1/4] synthetic scenes already in {data_dir}")
    else:
        if data_dir.exists() and any(data_dir.iterdir()):
            raise FileExistsError(
                f"{data_dir} exists but is not a complete demo dataset; remove it or choose another --out"
            )
        print(f"[1/4] writing {DEMO_NUM_SCENES} synthetic scenes ({size[0]}x{size[1]}) to {data_dir}")
        write_synthetic_dataset(data_dir, DEMO_NUM_SCENES, tuple(size), seed=DEMO_SEED, val_fraction=DEMO_VAL_FRACTION)

    # 2. training (resumes when interrupted)
    print(f"[2/4] training the demo preset (paper's model, ngf={config.model.ngf}, {config.max_steps} steps) "
          f"into {run_dir}")
    train(config, run_dir)

    # 3. synthesis of the held-out scenes
    from pansynth.data import build_dataset

    val = build_dataset("folder", data_dir, split="val")
    print(f"[3/4] synthesizing the {len(val)} held-out val scenes into {synth_dir}")
    generator = load_generator(run_dir, device="cpu")
    synthesize_dataset(generator, val, synth_dir, batch_size=8, device=args.device, overwrite=True)

    # 4. the HTML page
    html = out / "index.html"
    print(f"[4/4] writing {html}")
    write_demo_page(run_dir, data_dir / "val", synth_dir, html)
    minutes = (time.perf_counter() - start) / 60
    print(
        f"done in {minutes:.1f} min.\n"
        f"  results page:       {html.resolve()}\n"
        f"  synthesized images: {synth_dir.resolve()}\n"
        f"  training run:       {run_dir.resolve()} (checkpoints/, export/, metrics.jsonl, samples/, tb/)"
    )
    return 0


def write_demo_page(run_dir: Path, val_dir: Path, synth_dir: Path, html: Path) -> Path:
    """``index.html``: panoptic map | generated | real for the held-out scenes, plus the loss curves."""
    import numpy as np
    import torch
    from PIL import Image

    from pansynth.data.io import read_id_png
    from pansynth.train.trainer import colorize

    # Two (panoptic | generated | real) triplets per row, for every held-out scene.
    triplets = []
    for fake_path in sorted(synth_dir.glob("*.png")):
        real_path = val_dir / "images" / f"{fake_path.stem}.png"
        panoptic_path = val_dir / "panoptic" / f"{fake_path.stem}.png"
        if real_path.is_file() and panoptic_path.is_file():
            panoptic = colorize(torch.from_numpy(read_id_png(panoptic_path)))
            fake = np.asarray(Image.open(fake_path).convert("RGB"))
            real = np.asarray(Image.open(real_path).convert("RGB"))
            triplets.append([panoptic, fake, real])
    if not triplets:
        raise FileNotFoundError(f"no synthesized held-out scenes found in {synth_dir}")
    grid_path = html.parent / "heldout_panoptic_generated_real.png"
    gap = np.full((triplets[0][0].shape[0], 8, 3), 255, dtype=np.uint8)
    rows = []
    for i in range(0, len(triplets), 2):
        pair = triplets[i : i + 2]
        if len(pair) == 1:
            pair.append([np.full_like(a, 255) for a in pair[0]])
        rows.append(np.concatenate([*pair[0], gap, *pair[1]], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(grid_path)
    caption = f"Held-out scenes ({len(triplets)}): panoptic map | generated | real"
    try:
        from pansynth.eval.report import write_run_report
    except ImportError:
        return _minimal_page(run_dir, grid_path, caption, html)
    return Path(write_run_report(run_dir, out_html=html, extra_images={caption: grid_path}))


def _minimal_page(run_dir: Path, grid_path: Path, caption: str, html: Path) -> Path:
    """A self-contained page (images inlined as base64) used when the report module is absent."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def inline(data: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(data).decode()

    records = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    curves = ""
    if records:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for name in ("G_total", "G_gan", "G_feat", "D_total"):
            points = [(r["step"], r[name]) for r in records if name in r]
            if points:
                ax.plot(*zip(*points), label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        curves = f'<img src="{inline(buffer.getvalue())}" alt="loss curves">'
    rows = f'<figure><img src="{inline(grid_path.read_bytes())}" alt="held-out scenes"></figure>'
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>pansynth demo</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:.5em}}
img{{image-rendering:pixelated}}</style></head>
<body><h1>pansynth demo: panoptic-based image synthesis on synthetic scenes</h1>
<p>Run: {run_dir}. Each row: panoptic map (colour per segment) | generated | real held-out scene.</p>
<h2>Losses</h2>{curves}
<h2>{caption}</h2>{rows}
</body></html>
"""
    html.write_text(page)
    return html
