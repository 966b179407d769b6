"""Dataset statistics: classes present, instances per image, touching instances of one class."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def touching_same_class_pairs(
    semantic: np.ndarray | torch.Tensor,
    panoptic: np.ndarray | torch.Tensor,
    thing_classes: Iterable[int],
) -> set[tuple[int, int]]:
    """Pairs of different thing segments of the same class that are 4-neighbours somewhere.

    Args:
        semantic (array[H, W] int): class index per pixel.
        panoptic (array[H, W] int): segment id per pixel.
        thing_classes: class indices that are things.
    Returns:
        set of (id_a, id_b) panoptic id pairs with ``id_a < id_b``.
    """
    semantic = _as_numpy(semantic)
    panoptic = _as_numpy(panoptic)
    if semantic.shape != panoptic.shape or semantic.ndim != 2:
        raise ValueError(
            f"semantic and panoptic must be (H, W) maps of one size, got {semantic.shape} and {panoptic.shape}"
        )
    is_thing = np.isin(semantic, np.fromiter(thing_classes, dtype=np.int64))
    pairs: list[np.ndarray] = []
    # Horizontal then vertical neighbours.
    for first, second in (
        (np.s_[:, :-1], np.s_[:, 1:]),
        (np.s_[:-1, :], np.s_[1:, :]),
    ):
        touching = is_thing[first] & (semantic[first] == semantic[second]) & (panoptic[first] != panoptic[second])
        if touching.any():
            a = panoptic[first][touching]
            b = panoptic[second][touching]
            pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not pairs:
        return set()
    unique = np.unique(np.concatenate(pairs), axis=0)
    return {(int(a), int(b)) for a, b in unique}


def _load_maps(dataset: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(dataset, "load_maps"):
        semantic, panoptic = dataset.load_maps(index)
    else:
        sample = dataset[index]
        semantic, panoptic = sample["semantic"], sample["panoptic"]
    return _as_numpy(semantic), _as_numpy(panoptic)


def dataset_stats(dataset: Any, limit: int | None = None) -> dict[str, Any]:
    """Statistics of the (semantic, panoptic) maps of a dataset at native resolution.

    Args:
        dataset: a pansynth dataset (``num_classes``, ``class_names``, ``thing_classes``,
            ``ignore_index``; ``load_maps(i)`` is used when available to skip image decoding).
        limit: only look at the first ``limit`` samples.
    Returns:
        dict with ``num_images``, ``num_pixels``, ``classes`` (list of {index, name, isthing,
        pixel_share, images} for every class present, by decreasing pixel share),
        ``ignored_pixel_share``, ``segments_per_image`` and ``instances_per_image`` (thing segments;
        each {mean, min, max}), ``touching`` ({images_with_pair_share, pairs_per_image,
        images_with_pair}).
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count < 1:
        raise ValueError("dataset_stats needs at least one sample")
    num_classes = int(dataset.num_classes)
    thing_classes = [int(c) for c in dataset.thing_classes]
    thing_ids = np.array(thing_classes, dtype=np.int64)
    pixels = np.zeros(num_classes, dtype=np.int64)
    images_per_class = np.zeros(num_classes, dtype=np.int64)
    ignored = 0
    total = 0
    segments: list[int] = []
    instances: list[int] = []
    pairs_per_image: list[int] = []
    for index in range(count):
        semantic, panoptic = _load_maps(dataset, index)
        valid = (semantic >= 0) & (semantic < num_classes)
        class_pixels = np.bincount(semantic[valid].ravel(), minlength=num_classes)
        pixels += class_pixels
        images_per_class += class_pixels > 0
        ignored += int((~valid).sum())
        total += semantic.size
        ids = np.unique(panoptic[valid])
        segments.append(int(ids.size))
        instances.append(int(np.unique(panoptic[valid & np.isin(semantic, thing_ids)]).size))
        pairs_per_image.append(len(touching_same_class_pairs(semantic, panoptic, thing_classes)))

    def summary(values: list[int]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "min": int(np.min(values)), "max": int(np.max(values))}

    names = list(dataset.class_names)
    classes = [
        {
            "index": c,
            "name": names[c] if c < len(names) else str(c),
            "isthing": c in thing_classes,
            "pixel_share": float(pixels[c] / total),
            "images": int(images_per_class[c]),
        }
        for c in np.argsort(-pixels, kind="stable").tolist()
        if pixels[c] > 0
    ]
    with_pair = sum(1 for p in pairs_per_image if p > 0)
    return {
        "num_images": count,
        "num_pixels": total,
        "classes": classes,
        "ignored_pixel_share": float(ignored / total),
        "segments_per_image": summary(segments),
        "instances_per_image": summary(instances),
        "touching": {
            "images_with_pair": with_pair,
            "images_with_pair_share": with_pair / count,
            "pairs_per_image": float(np.mean(pairs_per_image)),
        },
    }


def format_stats(stats: dict[str, Any], title: str = "") -> str:
    """Human-readable text of :func:`dataset_stats`' result."""
    lines = [title] if title else []
    lines.append(f"images: {stats['num_images']}")
    seg, inst = stats["segments_per_image"], stats["instances_per_image"]
    lines.append(f"segments per image: mean {seg['mean']:.2f}, min {seg['min']}, max {seg['max']}")
    lines.append(f"thing instances per image: mean {inst['mean']:.2f}, min {inst['min']}, max {inst['max']}")
    touching = stats["touching"]
    lines.append(
        "same-class thing instances touching: in "
        f"{touching['images_with_pair']}/{stats['num_images']} images "
        f"({100 * touching['images_with_pair_share']:.1f}%), "
        f"{touching['pairs_per_image']:.2f} touching pairs per image"
    )
    lines.append(
        f"classes present: {len(stats['classes'])}"
        + (f" (ignored pixels {100 * stats['ignored_pixel_share']:.1f}%)" if stats["ignored_pixel_share"] > 0 else "")
    )
    for entry in stats["classes"]:
        kind = "thing" if entry["isthing"] else "stuff"
        lines.append(
            f"  {entry['index']:>4} {entry['name']:<20} {kind:<5} {100 * entry['pixel_share']:6.2f}% "
            f"of pixels, in {entry['images']} images"
        )
    return "\n".join(lines)
