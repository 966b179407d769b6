"""Pictures: colours for panoptic maps, image <-> uint8 conversions, image grids and figures.

The one home of these conversions: images are float tensors in [-1, 1] everywhere in the
package, and become uint8 only here, when they are shown or written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pansynth.files import atomic_write

__all__ = [
    "colorize_panoptic",
    "image_to_uint8",
    "images_to_uint8",
    "pyplot",
    "save_figure",
    "save_grid",
    "save_png",
    "tile",
    "uint8_to_image",
]


def images_to_uint8(images: Tensor) -> Tensor:
    """Tensor[..., 3, H, W] float in [-1, 1] -> Tensor of the same shape, uint8 in [0, 255] (rounded)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def image_to_uint8(image: Tensor) -> np.ndarray:
    """Tensor[3, H, W] float in [-1, 1] -> ndarray[H, W, 3] uint8, for PIL and grids."""
    return images_to_uint8(image.cpu()).permute(1, 2, 0).numpy()


def uint8_to_image(array: np.ndarray) -> Tensor:
    """ndarray[H, W, 3] uint8 -> Tensor[3, H, W] float32 in [-1, 1] (the inverse of :func:`image_to_uint8`).

    The arithmetic is done in numpy: tiny torch ops are slow in a busy data-loading process.
    """
    chw = np.ascontiguousarray(np.asarray(array).transpose(2, 0, 1), dtype=np.float32)
    chw /= np.float32(127.5)
    chw -= np.float32(1.0)
    return torch.from_numpy(chw)


def colorize_panoptic(panoptic: Tensor | np.ndarray) -> np.ndarray:
    """Deterministic colours for a panoptic map: Tensor/ndarray[H, W] int -> ndarray[H, W, 3] uint8.

    Each id is hashed (a fixed integer mix, independent of the other ids in the map) to a
    colour; distinct ids in one map always get distinct colours (a rare hash collision is
    resolved by nudging the later id's colour).
    """
    if isinstance(panoptic, Tensor):
        panoptic = panoptic.detach().cpu().numpy()
    panoptic = np.asarray(panoptic)
    if panoptic.ndim != 2:
        raise ValueError(f"panoptic must be (H, W), got {panoptic.shape}")
    ids, inverse = np.unique(panoptic.astype(np.int64), return_inverse=True)
    colors = _hash_colors(ids)
    seen: set[tuple[int, int, int]] = set()
    for index in range(len(ids)):  # ids are sorted: collisions resolve the same way every time
        color = tuple(int(v) for v in colors[index])
        step = 0
        while color in seen:
            step += 1
            color = tuple(int(v) for v in _hash_colors(np.array([ids[index] + step * 7919]))[0])
        seen.add(color)
        colors[index] = color
    return colors[inverse.reshape(panoptic.shape)].astype(np.uint8)


def _hash_colors(ids: np.ndarray) -> np.ndarray:
    x = ids.astype(np.uint64) + np.uint64(0x9E3779B9)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(16))) * np.uint64(0x45D9F3B)
        x = (x ^ (x >> np.uint64(16))) * np.uint64(0x45D9F3B)
        x = x ^ (x >> np.uint64(16))
    channels = np.stack([(x >> np.uint64(shift)) & np.uint64(255) for shift in (0, 8, 16)], -1)
    # Keep colours away from black so that segments stay visible.
    return (channels.astype(np.int64) * 200 // 255 + 40).astype(np.int64)


def tile(rows: Sequence[Sequence[np.ndarray]], gap: int = 2, scale: int = 1) -> np.ndarray:
    """Tile uint8 images (H, W, 3), one sequence per row, on a white canvas with ``gap`` pixels between.

    ``scale`` enlarges every image by an integer factor (nearest neighbour), so that small
    images stay readable. Rows may be shorter than the longest one.
    """
    if not rows or not any(len(row) for row in rows):
        raise ValueError("no images to tile")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale > 1:
        rows = [[img.repeat(scale, axis=0).repeat(scale, axis=1) for img in row] for row in rows]
    cell_h = max(img.shape[0] for row in rows for img in row)
    cell_w = max(img.shape[1] for row in rows for img in row)
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (cell_h + gap) - gap, columns * (cell_w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
    return canvas


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W, 3) or (H, W) array as a PNG, atomically."""
    return atomic_write(path, lambda temporary: Image.fromarray(array).save(temporary, format="PNG"))


def save_grid(rows: Sequence[Sequence[np.ndarray]], path: str | os.PathLike, gap: int = 2, scale: int = 1) -> Path:
    """:func:`tile` the images and write the grid as a PNG."""
    return save_png(tile(rows, gap=gap, scale=scale), path)


def pyplot():
    """matplotlib's pyplot with the file-only Agg backend (no display is needed or opened)."""
    import matplotlib  # heavy, and only needed for charts: imported on first use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike | BinaryIO) -> Path | BinaryIO:
    """Lay out a matplotlib figure, write it as a PNG to ``path`` (a file, written atomically, or an
    open binary stream) and close it."""
    plt = pyplot()
    fig.tight_layout()
    try:
        if hasattr(path, "write"):
            fig.savefig(path, format="png")
            return path
        return atomic_write(path, lambda temporary: fig.savefig(temporary, format="png"))
    finally:
        plt.close(fig)
