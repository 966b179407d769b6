"""Synthesize a dataset split with a generator, then evaluate the images: inference + evaluation."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import Subset

from pansynth.data.corrupt import CorruptedMaps, Corruption
from pansynth.devices import resolve_device
from pansynth.eval.evaluate import MetricNetworks, evaluate_images, weights_fingerprint
from pansynth.files import write_json_keeping_old
from pansynth.inference import synthesize_dataset
from pansynth.models import Generator

__all__ = ["evaluate_generator", "stored_evaluation"]


def stored_evaluation(eval_dir: Path, fingerprint: str, setup: Mapping) -> dict | None:
    """The metrics stored in ``eval_dir`` when they are of the same weights and set-up, else None."""
    previous = eval_dir / "metrics.json"
    if not previous.is_file():
        return None
    try:
        stored = json.loads(previous.read_text())
    except json.JSONDecodeError:
        return None
    if stored.get("weights_sha256") == fingerprint and stored.get("setup") == setup:
        return stored
    return None


def evaluate_generator(
    generator: Generator,
    dataset,
    out_dir: str | Path,
    networks: MetricNetworks | None = None,
    *,
    separation_width: int = 3,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    extra: Mapping | None = None,
    corruptions: Sequence[Corruption] = (),
    corrupt_seed: int = 0,
) -> dict:
    """Synthesize ``dataset`` with ``generator`` into ``out_dir/images`` and evaluate the images.

    With ``corruptions`` (:mod:`pansynth.data.corrupt`) the generator is given the corrupted maps
    (sample ``i`` seeded by ``(corrupt_seed, i)``) and the images are evaluated against the clean
    ones: how much of the clean scene survives the imperfect map. Writes ``out_dir/metrics.json``
    (with ``extra`` entries and the weights' fingerprint added) and ``out_dir/grid.png``; an existing
    ``out_dir/images`` folder is never written over (choose another ``out_dir`` or evaluate it with
    :func:`evaluate_images`).
    """
    out_dir = Path(out_dir)
    device = resolve_device(device)
    images_dir = out_dir / "images"
    if images_dir.exists() and any(images_dir.iterdir()):
        raise FileExistsError(
            f"{images_dir} already holds images; evaluate them with --images {images_dir} or choose another --out"
        )
    subset = dataset if limit is None else Subset(dataset, range(min(limit, len(dataset))))
    if corruptions:
        subset = CorruptedMaps(subset, corruptions, corrupt_seed)
    synthesize_dataset(generator, subset, images_dir, batch_size=batch_size, device=device, progress=False)
    result = evaluate_images(
        dataset, images_dir, networks, separation_width=separation_width, batch_size=batch_size, device=device,
        limit=limit, grid_path=out_dir / "grid.png",
    )  # fmt: skip
    result["weights_sha256"] = weights_fingerprint(generator)
    result["generator_step"] = generator.metadata.get("step")
    result["limit"] = limit
    result["corruptions"] = [str(c) for c in corruptions]
    result["corrupt_seed"] = corrupt_seed if corruptions else None
    result.update(extra or {})
    write_json_keeping_old(out_dir / "metrics.json", result)
    return result
