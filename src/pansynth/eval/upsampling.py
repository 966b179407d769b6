"""How often nearest-neighbour upsampling misplaces features (the paper's Figure 4).

For each 2x upsampling step of the generator, the panoptic map seen by the low-resolution
layer is ``P[::s, ::s]`` and the one seen after upsampling is ``P[::s/2, ::s/2]``. For a
high-resolution pixel ``(y, x)`` nearest-neighbour upsampling copies the feature of
``low[y // 2, x // 2]``:

* **misaligned**: share of high-resolution pixels whose nearest-neighbour copy carries another
  panoptic id (these need Algorithm 1's alignment correction or hole filling);
* **holes**: share whose id matches none of the four candidates ``low[r, c]``, ``low[r, c+1]``,
  ``low[r+1, c]``, ``low[r+1, c+1]`` (``r = y // 2``, ``c = x // 2``, in-bounds candidates
  only) of Algorithm 1, so the panoptic-aware upsampling has to fill them from the semantic map.

Holes are a subset of the misaligned pixels. ``levels`` is the number of upsampling steps:
the strides go ``2**levels -> 2**(levels-1)``, ..., ``2 -> 1``; SPADE's "normal" generator on a
256-pixel crop starts at 8x8 and upsamples 5 times, hence the default ``levels=5``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def _as_tensor(panoptic: Tensor | np.ndarray) -> Tensor:
    if isinstance(panoptic, np.ndarray):
        panoptic = torch.from_numpy(panoptic.astype(np.int64))
    if panoptic.ndim != 2 or panoptic.dtype.is_floating_point or panoptic.dtype == torch.bool:
        raise ValueError(
            f"panoptic must be an (H, W) integer map, got {tuple(panoptic.shape)} {panoptic.dtype}"
        )
    return panoptic.long()


def upsampling_counts(panoptic: Tensor | np.ndarray, levels: int = 5) -> list[dict]:
    """Pixel counts behind :func:`upsampling_stats`: stride, pixels, misaligned, holes per step."""
    panoptic = _as_tensor(panoptic)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    height, width = panoptic.shape
    if min(height, width) < 2**levels:
        raise ValueError(
            f"a {height}x{width} map is too small for {levels} upsampling levels (stride {2**levels})"
        )
    results = []
    for level in range(levels, 0, -1):
        stride = 2**level
        low = panoptic[::stride, ::stride]
        high = panoptic[:: stride // 2, :: stride // 2]
        h, w = high.shape
        rows = torch.arange(h) // 2
        cols = torch.arange(w) // 2
        nearest = low[rows[:, None], cols[None, :]]
        misaligned = high != nearest
        matched = ~misaligned
        for dr, dc in ((0, 1), (1, 0), (1, 1)):
            r, c = rows + dr, cols + dc
            valid = (r < low.shape[0])[:, None] & (c < low.shape[1])[None, :]
            candidate = low[r.clamp(max=low.shape[0] - 1)[:, None], c.clamp(max=low.shape[1] - 1)[None, :]]
            matched |= valid & (candidate == high)
        results.append(
            {
                "stride": stride,
                "low_size": list(low.shape),
                "high_size": [h, w],
                "pixels": h * w,
                "misaligned": int(misaligned.sum()),
                "holes": int((~matched).sum()),
            }
        )
    return results


def upsampling_stats(panoptic: Tensor | np.ndarray, levels: int = 5) -> list[dict]:
    """Misaligned / hole fractions of nearest-neighbour upsampling for one panoptic map.

    Args:
        panoptic (Tensor[H, W] or ndarray, integer): full-resolution panoptic ids.
        levels: number of 2x upsampling steps (strides ``2**levels`` ... ``2``).

    Returns:
        One dict per step, coarsest first: ``stride`` (the low-resolution stride s),
        ``misaligned`` and ``holes`` (fractions in [0, 1] of the pixels of ``P[::s/2, ::s/2]``).

    Example:
        >>> upsampling_stats(torch.tensor([[0, 1], [2, 3]]), levels=1)
        [{'stride': 2, 'misaligned': 0.75, 'holes': 0.75}]
    """
    return [
        {
            "stride": c["stride"],
            "misaligned": c["misaligned"] / c["pixels"],
            "holes": c["holes"] / c["pixels"],
        }
        for c in upsampling_counts(panoptic, levels)
    ]


def dataset_upsampling_stats(panoptic_maps: Iterable[Tensor], levels: int = 5) -> list[dict]:
    """Average over many maps: pixel-weighted fractions per step plus the per-image mean.

    Returns per step ``stride``, ``misaligned``, ``holes`` (pooled over all pixels),
    ``misaligned_mean_image``, ``holes_mean_image`` and ``images``.
    """
    totals: list[dict] | None = None
    per_image: list[list[tuple[float, float]]] = []
    for panoptic in panoptic_maps:
        counts = upsampling_counts(panoptic, levels)
        per_image.append([(c["misaligned"] / c["pixels"], c["holes"] / c["pixels"]) for c in counts])
        if totals is None:
            totals = [{"stride": c["stride"], "pixels": 0, "misaligned": 0, "holes": 0} for c in counts]
        for total, count in zip(totals, counts):
            for key in ("pixels", "misaligned", "holes"):
                total[key] += count[key]
    if totals is None:
        raise ValueError("no panoptic maps to analyse")
    means = np.asarray(per_image).mean(axis=0)
    return [
        {
            "stride": total["stride"],
            "misaligned": total["misaligned"] / total["pixels"],
            "holes": total["holes"] / total["pixels"],
            "misaligned_mean_image": float(means[index, 0]),
            "holes_mean_image": float(means[index, 1]),
            "images": len(per_image),
        }
        for index, total in enumerate(totals)
    ]


def format_table(stats: list[dict], image_size: tuple[int, int] | None = None) -> str:
    """Plain-text table of :func:`dataset_upsampling_stats` (percentages)."""
    lines = [f"{'step':>20}  {'misaligned %':>12}  {'holes %':>8}"]
    for row in stats:
        stride = row["stride"]
        step = _step_label(stride, image_size).replace("\n→", " -> ").replace("→", " -> ")
        lines.append(f"{step:>20}  {100 * row['misaligned']:12.2f}  {100 * row['holes']:8.2f}")
    return "\n".join(lines)


def _step_label(stride: int, image_size: tuple[int, int] | None) -> str:
    if image_size is None:
        return f"1/{stride}→1/{stride // 2}"
    h, w = image_size
    low, high = stride, stride // 2
    return f"{-(-h // low)}x{-(-w // low)}\n→{-(-h // high)}x{-(-w // high)}"


def plot_upsampling_stats(
    stats: list[dict], path: str | Path, title: str | None = None, image_size: tuple[int, int] | None = None
) -> Path:
    """Grouped bar chart like the paper's Figure 4 (percent per upsampling step).

    ``image_size`` (H, W) of the full maps labels the steps with feature-map sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_step_label(row["stride"], image_size) for row in stats]
    x = np.arange(len(stats))
    fig, ax = plt.subplots(figsize=(7.0, 3.9), dpi=120)
    misaligned = [100 * row["misaligned"] for row in stats]
    holes = [100 * row["holes"] for row in stats]
    bars_a = ax.bar(x - 0.2, misaligned, width=0.4, label="misaligned (needs alignment correction)")
    bars_b = ax.bar(x + 0.2, holes, width=0.4, label="holes (needs hole filling)")
    ax.bar_label(bars_a, fmt="%.1f", fontsize=7)
    ax.bar_label(bars_b, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_xlabel("upsampling step" + (" (feature map size)" if image_size else " (scale of the image)"))
    ax.set_ylabel("% of upsampled pixels")
    ax.set_title(title or "Nearest-neighbour upsampling vs panoptic map")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    from pansynth.eval.report import save_figure

    return save_figure(fig, path)


def write_analysis(stats: list[dict], out_dir: str | Path, meta: dict | None = None) -> dict[str, Path]:
    """Write ``upsampling.json`` and ``upsampling.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "upsampling.json"
    json_path.write_text(json.dumps({**(meta or {}), "steps": stats}, indent=2))
    title = None
    if meta and meta.get("dataset"):
        title = f"Figure 4: {meta['dataset']} {meta.get('split') or ''} ({meta.get('images', '?')} maps)"
    size = tuple(meta["map_size"]) if meta and meta.get("map_size") else None
    png_path = plot_upsampling_stats(stats, out_dir / "upsampling.png", title=title, image_size=size)
    return {"json": json_path, "png": png_path}
