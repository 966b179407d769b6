"""Measure per-segment styles on the procedural scenes (docs/style.md): reconstruction, diversity, restyle locality.

Trains, per seed and with the same budget, the paper's model without styles (``paper``), with styles
(``style``: panoptic-aware layers in G and E) and the SPADE-like baseline with styles
(``style-baseline``: plain convolutions, nearest upsampling, boundary map), then on the held-out
scenes measures:

- reconstruction: L1 and PSNR (images in [0, 1]) to the real image of the style model fed the codes
  E reads from that image, fed codes drawn with seed 0, and of the style-less model;
- diversity: mean pairwise pixel L1 between 10 samples (seeds 0..9) per map, within thing instances
  and within stuff segments;
- restyle locality: a thing instance's code is redrawn; the mean absolute change inside it divided by
  the mean change in the touching instances of its class (and in all touching segments).

Run (small CPU budget, results as JSON)::

    python -m pansynth.experiments.style --data DIR --runs DIR --steps 300 --seeds 0 1 2 --out style.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pansynth.data import build_dataset
from pansynth.inference import encode_style, load_generator, synthesize
from pansynth.models.style import segment_index
from pansynth.train import load_config, train

VARIANTS = {
    "paper": [],
    "style": ["model.style=instance"],
    "style-baseline": ["model.style=instance", "model.conv=standard", "model.upsample=nearest", "model.boundary=true"],
}


def _segment_means(values: Tensor, panoptic: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of a per-pixel map (Tensor[H, W]) over each segment: (ids, means)."""
    index, keys = segment_index(panoptic[None])
    sums = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, index.reshape(-1), values.reshape(-1).double())
    counts = torch.bincount(index.reshape(-1), minlength=len(keys)).double()
    return keys[:, 1], sums / counts


def _touching(panoptic: Tensor) -> set[tuple[int, int]]:
    """Pairs of ids that touch (4-neighbourhood)."""
    pairs = set()
    for a, b in ((panoptic[1:], panoptic[:-1]), (panoptic[:, 1:], panoptic[:, :-1])):
        differ = a != b
        pairs |= set(zip(a[differ].tolist(), b[differ].tolist()))
    return pairs | {(b, a) for a, b in pairs}


def _reconstruction(image: Tensor, real: Tensor) -> tuple[float, float]:
    error = (image - real) / 2  # [0, 1] units
    mse = float(error.pow(2).mean())
    return float(error.abs().mean()), 10 * math.log10(1 / max(mse, 1e-12))


@torch.no_grad()
def evaluate_run(
    run: Path, data: Path, samples: int = 10, limit: int | None = None, max_restyles: int = 4
) -> dict[str, Any]:
    generator = load_generator(run)
    dataset = build_dataset("folder", data, split="val")
    things = set(int(c) for c in dataset.thing_classes)
    styled = generator.style_encoder is not None
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    for index in range(min(len(dataset), limit or len(dataset))):
        sample = dataset[index]
        real, semantic, panoptic = sample["image"], sample["semantic"], sample["panoptic"]
        ids, classes = _classes(semantic, panoptic)
        is_thing = {i: c in things for i, c in zip(ids, classes)}
        if not styled:
            l1, psnr = _reconstruction(synthesize(generator, semantic, panoptic), real)
            add("styleless_l1", l1)
            add("styleless_psnr", psnr)
            continue
        codes = encode_style(generator, real, semantic, panoptic)
        for name, kwargs in (("encoded", {"codes": codes}), ("sampled", {"seed": 0})):
            l1, psnr = _reconstruction(synthesize(generator, semantic, panoptic, **kwargs), real)
            add(f"{name}_l1", l1)
            add(f"{name}_psnr", psnr)
        images = torch.stack([synthesize(generator, semantic, panoptic, seed=seed) for seed in range(samples)])
        first, second = torch.triu_indices(samples, samples, offset=1)
        pairwise = ((images[first] - images[second]).abs() / 2).mean(dim=(0, 1))  # (H, W)
        segment_ids, means = _segment_means(pairwise, panoptic)
        for identifier, value in zip(segment_ids.tolist(), means.tolist()):
            add("diversity_thing" if is_thing.get(identifier) else "diversity_stuff", value)
        base = images[0]
        touching = _touching(panoptic)
        class_of = dict(zip(ids, classes))
        for identifier in [i for i in ids if is_thing[i]][:max_restyles]:
            neighbours = [b for a, b in touching if a == identifier]
            same_class = [b for b in neighbours if class_of[b] == class_of[identifier]]
            restyled = synthesize(generator, semantic, panoptic, seed=0, restyle={identifier: 10_000 + identifier})
            change = ((restyled - base).abs() / 2).mean(dim=0)
            inside = float(change[panoptic == identifier].mean())
            if same_class:
                add("restyle_inside_same_class", inside)
                add(
                    "restyle_neighbours_same_class",
                    float(change[torch.isin(panoptic, torch.tensor(same_class))].mean()),
                )
            if neighbours:
                add("restyle_inside", inside)
                add("restyle_neighbours", float(change[torch.isin(panoptic, torch.tensor(neighbours))].mean()))
    summary = {name: statistics.fmean(values) for name, values in results.items()}
    summary["count"] = {name: len(values) for name, values in results.items()}
    for suffix in ("", "_same_class"):
        if f"restyle_inside{suffix}" in summary:
            summary[f"restyle_ratio{suffix}"] = summary[f"restyle_inside{suffix}"] / max(
                summary[f"restyle_neighbours{suffix}"], 1e-12
            )
    return summary


def _classes(semantic: Tensor, panoptic: Tensor) -> tuple[list[int], list[int]]:
    ids, inverse = torch.unique(panoptic, return_inverse=True)
    first = torch.full((len(ids),), inverse.numel()).scatter_reduce(
        0, inverse.reshape(-1), torch.arange(inverse.numel()), reduce="amin"
    )
    return ids.tolist(), semantic.reshape(-1)[first].tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="procedural scenes (pansynth data synthetic)")
    parser.add_argument("--runs", type=Path, required=True, help="folder of the training runs (resumed if there)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the results")
    parser.add_argument("--limit", type=int, help="evaluate the first N held-out scenes only")
    parser.add_argument("--max-restyles", type=int, default=4, help="thing instances restyled per scene (default 4)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.out.exists():
        results = json.loads(args.out.read_text())
    for seed in args.seeds:
        for variant in args.variants:
            key = f"{variant}/seed{seed}"
            if key in results:
                continue
            run = args.runs / key.replace("/", "_")
            overrides = [f"data.root={args.data}", f"max_steps={args.steps}", f"seed={seed}", "device=cpu"]
            overrides += ["sample_every=100000", f"checkpoint_every={args.steps}", *VARIANTS[variant]]
            train(load_config("demo", overrides), run)
            results[key] = evaluate_run(run, args.data, limit=args.limit, max_restyles=args.max_restyles)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(key, json.dumps({k: v for k, v in results[key].items() if k != "count"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
