"""How often nearest-neighbour upsampling misplaces features (the paper's Figure 4).

For each 2x upsampling step of the generator, the panoptic map seen by the low-resolution
layer is ``P[::s, ::s]`` and the one seen after upsampling is ``P[::s/2, ::s/2]``. For a
high-resolution pixel ``(y, x)`` nearest-neighbour upsampling copies the feature of
``low[y // 2, x // 2]``. Algorithm 1 (:func:`pansynth.ops.upsample_choices`, called here)
classifies every pixel:

* **misaligned**: its nearest-neighbour copy carries another panoptic id (Algorithm 1 takes
  another candidate, or finds none);
* **hole**: its id matches none of the four candidates ``low[r, c]``, ``low[r, c+1]``,
  ``low[r+1, c]``, ``low[r+1, c+1]`` (in-bounds only), so the panoptic-aware upsampling fills
  it from the semantic map.

The paper reports both as shares "among the newly generated" pixels of a step: the pixels
that upsampling creates, i.e. all but the top-left pixel of every 2x2 block, which is the
low-resolution pixel itself (``high[2r, 2c] == low[r, c]``) and never misaligned. These are
``misaligned`` and ``holes`` below; ``misaligned_all`` and ``holes_all`` divide by all
high-resolution pixels instead (3/4 of the paper's figures on even-sized maps).
Unknown pixels (id -1, see :data:`pansynth.ops.maps.UNKNOWN`) are left out of every count: they
have no instance to misplace. A known pixel whose nearest-neighbour copy is unknown counts as
misaligned. ``levels`` is the number of upsampling steps: strides ``2**levels -> 2**(levels-1)``, ...,
``2 -> 1``; SPADE's "normal" generator on a 256-pixel crop starts at 8x8 and upsamples 5
times, hence the default ``levels=5``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.files import atomic_write_text
from pansynth.ops import upsample_choices
from pansynth.ops.maps import UNKNOWN
from pansynth.ops.panoptic_upsample import CANDIDATES
from pansynth.viz import pyplot, save_figure

__all__ = [
    "analyze_dataset",
    "dataset_upsampling_stats",
    "format_table",
    "plot_upsampling_stats",
    "upsampling_counts",
    "upsampling_stats",
    "write_analysis",
]


def _as_tensor(panoptic: Tensor | np.ndarray) -> Tensor:
    if isinstance(panoptic, np.ndarray):
        panoptic = torch.from_numpy(panoptic.astype(np.int64))
    if panoptic.ndim != 2 or panoptic.dtype.is_floating_point or panoptic.dtype == torch.bool:
        raise ValueError(f"panoptic must be an (H, W) integer map, got {tuple(panoptic.shape)} {panoptic.dtype}")
    return panoptic.long()


def upsampling_counts(panoptic: Tensor | np.ndarray, levels: int = 5) -> list[dict]:
    """Pixel counts behind :func:`upsampling_stats`, per step (coarsest first): ``stride``,
    ``low_size``, ``high_size``, ``pixels`` (all known ones), ``new_pixels``, ``misaligned``, ``holes``."""
    panoptic = _as_tensor(panoptic)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    height, width = panoptic.shape
    if min(height, width) < 2**levels:
        raise ValueError(f"a {height}x{width} map is too small for {levels} upsampling levels (stride {2**levels})")
    results = []
    for level in range(levels, 0, -1):
        stride = 2**level
        low = panoptic[::stride, ::stride]
        high = panoptic[:: stride // 2, :: stride // 2]
        h, w = high.shape
        # Algorithm 1 works on (2h', 2w') maps: pad an odd-sized high map by one row/column,
        # whose pixels are left out of the counts (a pixel's choice depends on its own id only).
        padded = F.pad(high, (0, 2 * low.shape[1] - w, 0, 2 * low.shape[0] - h))
        choice = upsample_choices(low[None], padded[None])[0, :h, :w]
        known = high != UNKNOWN
        new = known.clone()
        new[::2, ::2] = False
        results.append(
            {
                "stride": stride,
                "low_size": list(low.shape),
                "high_size": [h, w],
                "pixels": int(known.sum()),
                "new_pixels": int(new.sum()),
                "misaligned": int(((choice != 0) & known).sum()),
                "holes": int(((choice == len(CANDIDATES)) & known).sum()),
            }
        )
    return results


def _shares(counts: dict) -> dict:
    # max(1, ...): a map (almost) all unknown has no known pixel to count; its shares are 0.
    new, pixels = max(1, counts["new_pixels"]), max(1, counts["pixels"])
    return {
        "misaligned": counts["misaligned"] / new,
        "holes": counts["holes"] / new,
        "misaligned_all": counts["misaligned"] / pixels,
        "holes_all": counts["holes"] / pixels,
    }


def upsampling_stats(panoptic: Tensor | np.ndarray, levels: int = 5) -> list[dict]:
    """Misaligned / hole shares of nearest-neighbour upsampling for one panoptic map.

    Args:
        panoptic (Tensor[H, W] or ndarray, integer): full-resolution panoptic ids.
        levels: number of 2x upsampling steps (strides ``2**levels`` ... ``2``).

    Returns:
        One dict per step, coarsest first: ``stride`` (the low-resolution stride s); ``misaligned``
        and ``holes``, fractions of the newly generated pixels of ``P[::s/2, ::s/2]`` (the paper's
        Figure 4); ``misaligned_all`` and ``holes_all``, fractions of all its pixels.

    Example:
        >>> upsampling_stats(torch.tensor([[0, 1], [2, 3]]), levels=1)
        [{'stride': 2, 'misaligned': 1.0, 'holes': 1.0, 'misaligned_all': 0.75, 'holes_all': 0.75}]
    """
    return [{"stride": c["stride"], **_shares(c)} for c in upsampling_counts(panoptic, levels)]


def dataset_upsampling_stats(panoptic_maps: Iterable[Tensor], levels: int = 5) -> list[dict]:
    """Average over many maps: pooled shares per step plus the per-image mean of the paper's shares.

    Returns per step ``stride``, ``misaligned``, ``holes`` (shares of the new pixels, pooled over
    all maps), ``misaligned_all``, ``holes_all`` (shares of all pixels), ``misaligned_mean_image``,
    ``holes_mean_image`` (mean over maps of the new-pixel shares) and ``images``.
    """
    keys = ("pixels", "new_pixels", "misaligned", "holes")
    totals: list[dict] | None = None
    per_image: list[list[tuple[float, float]]] = []
    for panoptic in panoptic_maps:
        counts = upsampling_counts(panoptic, levels)
        per_image.append([(shares["misaligned"], shares["holes"]) for shares in map(_shares, counts)])
        if totals is None:
            totals = [{"stride": c["stride"], **{key: 0 for key in keys}} for c in counts]
        for total, count in zip(totals, counts):
            for key in keys:
                total[key] += count[key]
    if totals is None:
        raise ValueError("no panoptic maps to analyse")
    means = np.asarray(per_image).mean(axis=0)
    return [
        {
            "stride": total["stride"],
            **_shares(total),
            "misaligned_mean_image": float(means[index, 0]),
            "holes_mean_image": float(means[index, 1]),
            "images": len(per_image),
        }
        for index, total in enumerate(totals)
    ]


def format_table(stats: list[dict], image_size: tuple[int, int] | None = None) -> str:
    """Plain-text table of :func:`dataset_upsampling_stats` (percent of the newly generated pixels,
    the paper's Figure 4; the shares of all pixels beside them)."""
    lines = [
        f"{'step':>20}  {'misaligned %':>12}  {'holes %':>8}  {'(of all pixels:':>16} {'misaligned %':>12}  "
        f"{'holes %)':>8}"
    ]
    for row in stats:
        step = _step_label(row["stride"], image_size).replace("\n→", " -> ").replace("→", " -> ")
        lines.append(
            f"{step:>20}  {100 * row['misaligned']:12.2f}  {100 * row['holes']:8.2f}  {'':>16} "
            f"{100 * row['misaligned_all']:12.2f}  {100 * row['holes_all']:8.2f}"
        )
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
    """Grouped bar chart like the paper's Figure 4 (percent of the newly generated pixels per step).

    ``image_size`` (H, W) of the full maps labels the steps with feature-map sizes."""
    plt = pyplot()
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
    ax.set_ylabel("% of the newly generated pixels")
    ax.set_title(title or "Nearest-neighbour upsampling vs panoptic map")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def write_analysis(stats: list[dict], out_dir: str | Path, meta: dict | None = None) -> dict[str, Path]:
    """Write ``upsampling.json`` and ``upsampling.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    json_path = atomic_write_text(out_dir / "upsampling.json", json.dumps({**(meta or {}), "steps": stats}, indent=2))
    title = None
    if meta and meta.get("dataset"):
        title = f"Figure 4: {meta['dataset']} {meta.get('split') or ''} ({meta.get('images', '?')} maps)"
    size = tuple(meta["map_size"]) if meta and meta.get("map_size") else None
    png_path = plot_upsampling_stats(stats, out_dir / "upsampling.png", title=title, image_size=size)
    return {"json": json_path, "png": png_path}


def analyze_dataset(dataset, levels: int = 5, limit: int | None = None) -> tuple[list[dict], dict]:
    """Figure 4 statistics over the panoptic maps of a dataset: ``(stats, meta)``.

    ``meta`` holds ``images`` (how many maps) and ``map_size`` ([H, W] when all maps share one size).
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    sizes = set()

    def maps():
        for index in range(count):
            panoptic = dataset[index]["panoptic"]
            sizes.add(tuple(panoptic.shape))
            yield panoptic

    stats = dataset_upsampling_stats(maps(), levels)
    size = next(iter(sizes)) if len(sizes) == 1 else None
    return stats, {"images": count, "levels": levels, "map_size": list(size) if size else None}
