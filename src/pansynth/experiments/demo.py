"""The demo: procedural scenes -> the paper's model trained on them -> held-out scenes synthesized -> a page.

``pansynth demo --out demo_out`` (and ``make demo``) runs :func:`run_demo`: it writes the
procedural scenes of :mod:`pansynth.data.synthetic`, trains the ``demo`` preset (resumable: a
second call continues the run), synthesizes the held-out scenes and writes ``OUT/index.html``,
which leads with the held-out results (panoptic map | generated | real) and their instance
separation score, then the losses.
"""

from __future__ import annotations

import html
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pansynth.data import build_dataset
from pansynth.data.synthetic import write_synthetic_dataset
from pansynth.eval.evaluate import evaluate_images, read_png
from pansynth.eval.report import embed_image, loss_section, write_page
from pansynth.inference import load_generator, synthesize_dataset
from pansynth.train import load_config, train
from pansynth.viz import colorize_panoptic, image_to_uint8, save_png, tile

__all__ = ["DEMO_NUM_SCENES", "DemoResult", "demo_data_complete", "run_demo", "write_demo_page"]

# Synthetic scenes written by the demo (sized for a 2-core CPU; see docs/train.md).
DEMO_NUM_SCENES = 400
DEMO_VAL_FRACTION = 0.05
DEMO_SEED = 0
# Held-out tiles are shown this many times their size (the scenes are 64 px).
GRID_SCALE = 2


@dataclass
class DemoResult:
    page: Path
    data: Path
    run: Path
    synthesized: Path
    separation: dict


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


def run_demo(
    out: str | Path,
    steps: int | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo into ``out`` (``data/``, ``run/``, ``synthesized/``, ``index.html``); resumable."""
    start = time.perf_counter()
    out = Path(out)
    data_dir, run_dir, synth_dir = out / "data", out / "run", out / "synthesized"
    overrides = [f"data.root={data_dir}", f"device={device}"]
    if steps is not None:
        if steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        overrides.append(f"max_steps={steps}")
    config = load_config("demo", overrides)
    size = config.data.load_size or [128, 128]

    if demo_data_complete(data_dir):
        log(f"[1/4] synthetic scenes already in {data_dir}")
    else:
        if data_dir.exists() and any(data_dir.iterdir()):
            raise FileExistsError(
                f"{data_dir} exists but is not a complete demo dataset; remove it or choose another --out"
            )
        log(f"[1/4] writing {DEMO_NUM_SCENES} synthetic scenes ({size[0]}x{size[1]}) to {data_dir}")
        write_synthetic_dataset(data_dir, DEMO_NUM_SCENES, tuple(size), seed=DEMO_SEED, val_fraction=DEMO_VAL_FRACTION)

    log(
        f"[2/4] training the demo preset (paper's model, ngf={config.model.ngf}, {config.max_steps} steps) "
        f"into {run_dir}"
    )
    train(config, run_dir)

    val = build_dataset("folder", data_dir, split="val")
    log(f"[3/4] synthesizing the {len(val)} held-out val scenes into {synth_dir}")
    generator = load_generator(run_dir, device=device)
    synthesize_dataset(generator, val, synth_dir, batch_size=8, device=device, overwrite=True, progress=False)

    html_path = out / "index.html"
    log(f"[4/4] writing {html_path}")
    separation = evaluate_images(val, synth_dir, device="cpu")
    write_demo_page(run_dir, val, synth_dir, html_path, separation)
    minutes = (time.perf_counter() - start) / 60
    serve = f"pansynth serve --checkpoint {shlex.quote(str(run_dir))} --root {shlex.quote(str(data_dir))} --split val"
    log(
        f"done in {minutes:.1f} min.\n"
        f"  results page:       {html_path.resolve()}\n"
        f"  synthesized images: {synth_dir.resolve()}\n"
        f"  training run:       {run_dir.resolve()} (checkpoints/, export/, metrics.jsonl, samples/, tb/)\n"
        f"  paint your own map: {serve}"
    )
    return DemoResult(html_path, data_dir, run_dir, synth_dir, separation)


def _separation_text(result: dict) -> str:
    metrics = result["metrics"]
    if "separation" not in metrics:
        return f"<p class='note'>Instance separation: {html.escape(result['skipped'].get('separation', 'n/a'))}</p>"
    pairs = result.get("separation_pairs", 0)
    ratio = metrics.get("separation_ratio")
    ratio_text = f"{ratio:.3f}" if ratio is not None else "n/a"
    return (
        "<p class='lead'><b>Instance separation</b> of the held-out scenes: "
        f"<b>{metrics['separation']:.3f}</b> on the generated images, {metrics['separation_real']:.3f} on the "
        f"real ones (ratio <b>{ratio_text}</b>), over {pairs} pairs of touching instances of the same class. "
        "It is the contrast across the boundary between two touching same-class instances: how distinct the "
        "generator keeps objects that a semantic map alone would merge.</p>"
    )


def write_demo_page(run_dir: Path, dataset, synth_dir: Path, html_path: Path, evaluation: dict) -> Path:
    """``index.html``: the held-out scenes (panoptic map | generated | real), their instance separation, then
    the losses. Every image is embedded, so the page stands alone."""
    triplets = []
    for index in range(len(dataset)):
        sample = dataset[index]
        fake_path = synth_dir / f"{sample['name']}.png"
        if fake_path.is_file():
            triplets.append(
                [
                    colorize_panoptic(sample["panoptic"]),
                    image_to_uint8(read_png(fake_path)),
                    image_to_uint8(sample["image"]),
                ]
            )
    if not triplets:
        raise FileNotFoundError(f"no synthesized held-out scenes found in {synth_dir}")
    # Two (panoptic | generated | real) triplets per row, a wider gap between the two.
    triplets = [tile([triplet], gap=2, scale=GRID_SCALE) for triplet in triplets]
    rows = [triplets[i : i + 2] for i in range(0, len(triplets), 2)]
    grid_path = save_png(tile(rows, gap=16), html_path.parent / "heldout_panoptic_generated_real.png")
    sections = [
        "<h1>pansynth demo: panoptic-based image synthesis on procedural scenes</h1>",
        f"<p>The paper's model (panoptic-aware convolution and upsampling) trained on the demo scenes "
        f"({html.escape(str(run_dir))}), applied to the {len(triplets)} held-out scenes it never saw.</p>",
        _separation_text(evaluation),
        f"<h2>Held-out scenes: panoptic map | generated | real</h2>"
        f"<figure><img alt='held-out scenes: panoptic map, generated, real' {embed_image(grid_path, min_width=0)}>"
        "<figcaption>Each triplet: the panoptic map (a colour per segment: touching instances of one class get "
        "different colours) | the generated image | the real scene.</figcaption></figure>",
        "<h2>Training losses</h2>",
        loss_section(run_dir),
        "<h2>Next</h2><p>Paint your own panoptic map and watch the image appear: "
        f"<code>pansynth serve --checkpoint {html.escape(shlex.quote(str(run_dir)))} --root "
        f"{html.escape(shlex.quote(str(run_dir.parent / 'data')))} --split val</code></p>",
    ]
    return write_page(html_path, "pansynth demo", sections)
