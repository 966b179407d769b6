"""Procedural panoptic scenes: the embedded default dataset for demos and tests.

Each scene has three stuff classes with distinct smooth textures (a sky with clouds above a wavy
horizon, grass-like ground, a stone-block wall) and three thing classes (discs, boxes, cones)
placed in clusters: several instances of the SAME class overlap and occlude each other. Every
instance has its own colour (a hue range per class, a shade per instance) and its own pattern
(stripes at an angle and period of its own, dots or a checkerboard), so a generator that blends
neighbouring instances of one class produces visibly and measurably wrong images.

Everything is drawn with vectorised numpy on a ``numpy.random.Generator`` seeded per sample by
``(seed, index)``: a scene depends only on the seed, its index and its size.

Panoptic ids follow the Cityscapes convention: stuff class ``c`` has id ``c``; thing instance ``k``
(1, 2, ...) of class ``c`` has id ``c * 1000 + k``.
"""

from __future__ import annotations

import colorsys
import json
import operator
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pansynth.data.folder import write_classes_json
from pansynth.data.io import write_id_png, write_label_png
from pansynth.viz import uint8_to_image

SKY, GROUND, WALL, DISC, BOX, CONE = range(6)
SYNTHETIC_CLASS_NAMES: list[str] = ["sky", "ground", "wall", "disc", "box", "cone"]
SYNTHETIC_THING_CLASSES: list[int] = [DISC, BOX, CONE]
# Hue range (HSV, in turns) of each thing class: red-pink discs, violet boxes, orange-yellow cones.
_THING_HUES = {DISC: (0.93, 1.04), BOX: (0.68, 0.82), CONE: (0.07, 0.16)}
_THING_ID_STRIDE = 1000
MIN_SIZE = 16

# The semantic file value of unknown pixels in the written dataset (its classes.json "unknown").
UNKNOWN_VALUE = 255


@dataclass(frozen=True)
class _Instance:
    thing_class: int
    cx: float  # centre, pixels
    cy: float
    radius: float  # half extent, pixels
    angle: float  # rotation of boxes, radians
    aspect: float  # height / width of boxes and cones

    @property
    def bottom(self) -> float:
        return self.cy + self.radius


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Bilinearly interpolated value noise in [0, 1] with ``cells`` cells across the shorter side."""
    cells_y = max(1, round(cells * height / min(height, width)))
    cells_x = max(1, round(cells * width / min(height, width)))
    grid = rng.random((cells_y + 1, cells_x + 1))
    fy = np.linspace(0.0, cells_y, height, endpoint=False)[:, None] + 0.5 * cells_y / height
    fx = np.linspace(0.0, cells_x, width, endpoint=False)[None, :] + 0.5 * cells_x / width
    y0 = np.minimum(fy.astype(np.int64), cells_y - 1)
    x0 = np.minimum(fx.astype(np.int64), cells_x - 1)
    ty = fy - y0
    tx = fx - x0
    # Smoothstep weights hide the grid.
    ty = ty * ty * (3 - 2 * ty)
    tx = tx * tx * (3 - 2 * tx)
    top = grid[y0, x0] * (1 - tx) + grid[y0, x0 + 1] * tx
    bottom = grid[y0 + 1, x0] * (1 - tx) + grid[y0 + 1, x0 + 1] * tx
    return top * (1 - ty) + bottom * ty


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float64)


def _draw_stuff(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Sky / ground / wall layout and texture. Returns (image (H, W, 3) float, semantic (H, W), horizon)."""
    yy = np.arange(height, dtype=np.float64)[:, None]
    xx = np.arange(width, dtype=np.float64)[None, :]
    horizon_mean = rng.uniform(0.3, 0.55) * height
    horizon = horizon_mean + rng.uniform(0.02, 0.07) * height * np.sin(
        2 * np.pi * rng.uniform(0.5, 2.0) * xx / width + rng.uniform(0, 2 * np.pi)
    )
    semantic = np.where(yy < horizon, SKY, GROUND).astype(np.int64)

    # Sky: vertical gradient (deep blue at the top, pale near the horizon) plus soft clouds.
    sky_top = _hsv(rng.uniform(0.56, 0.62), rng.uniform(0.55, 0.8), rng.uniform(0.65, 0.85))
    sky_low = _hsv(rng.uniform(0.52, 0.58), rng.uniform(0.15, 0.35), rng.uniform(0.9, 1.0))
    t = np.clip(yy / max(horizon_mean, 1.0), 0, 1)[..., None]
    sky = sky_top * (1 - t) + sky_low * t
    clouds = np.clip((_smooth_noise(rng, height, width, 4) - 0.55) * 4, 0, 1)[..., None] * 0.8
    sky = sky * (1 - clouds) + clouds * np.array([0.97, 0.97, 1.0])
    sky = np.broadcast_to(sky, (height, width, 3))

    # Ground: olive green with large blotches and fine grain.
    ground_colour = _hsv(rng.uniform(0.2, 0.3), rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.65))
    blotches = _smooth_noise(rng, height, width, 6)[..., None]
    grain = rng.random((height, width, 1))
    ground = ground_colour * (0.75 + 0.35 * blotches + 0.12 * (grain - 0.5))

    image = np.where((semantic == SKY)[..., None], sky, ground)

    # Wall (most scenes): a stone-block wall standing on the ground at the left or right.
    if rng.random() < 0.75:
        wall_width = rng.uniform(0.25, 0.55) * width
        left = 0.0 if rng.random() < 0.5 else width - wall_width
        wall_top = rng.uniform(0.05, 0.6) * horizon_mean
        wall_bottom = horizon_mean + rng.uniform(0.0, 0.15) * height
        in_wall = (xx >= left) & (xx < left + wall_width) & (yy >= wall_top) & (yy < wall_bottom)
        semantic = np.where(in_wall, WALL, semantic)
        block_h = rng.uniform(0.06, 0.1) * height
        block_w = block_h * rng.uniform(1.6, 2.4)
        row = np.floor(yy / block_h)
        shifted = xx + (row % 2) * block_w / 2
        col = np.floor(shifted / block_w)
        mortar = ((yy / block_h) % 1 < 0.12) | ((shifted / block_w) % 1 < 0.06)
        # One shade per block, looked up by a hash of the block's row and column.
        shades = rng.uniform(0.8, 1.15, size=97)
        block_shade = shades[((row * 31 + col * 17) % 97).astype(np.int64)]
        wall_colour = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.1, 0.25), rng.uniform(0.55, 0.7))
        wall = wall_colour * block_shade[..., None]
        wall = np.where(mortar[..., None], np.array([0.85, 0.83, 0.8]), wall)
        image = np.where(in_wall[..., None], np.broadcast_to(wall, (height, width, 3)), image)
    return image, semantic, float(horizon_mean)


def _place_instances(rng: np.random.Generator, height: int, width: int, horizon: float) -> list[_Instance]:
    """Clusters of 2-5 overlapping instances of one class each."""
    short = min(height, width)
    instances: list[_Instance] = []
    for _ in range(int(rng.integers(2, 5))):
        thing_class = int(rng.choice(SYNTHETIC_THING_CLASSES))
        cx = rng.uniform(0.1, 0.9) * width
        cy = rng.uniform(max(horizon / height - 0.1, 0.15), 0.85) * height
        radius = rng.uniform(0.07, 0.13) * short
        for _ in range(int(rng.integers(2, 6))):
            instances.append(_Instance(thing_class, cx, cy, radius, rng.uniform(-0.5, 0.5), rng.uniform(0.7, 1.4)))
            # The next instance of the cluster overlaps this one: closer than the sum of the radii.
            new_radius = rng.uniform(0.07, 0.13) * short
            angle = rng.uniform(0, 2 * np.pi)
            distance = (radius + new_radius) * rng.uniform(0.5, 0.85)
            cx = float(np.clip(cx + distance * np.cos(angle), 0, width - 1))
            cy = float(np.clip(cy + distance * np.sin(angle), 0, height - 1))
            radius = new_radius
    # Painter's order: instances lower in the picture are nearer and occlude the ones behind.
    return sorted(instances, key=lambda instance: instance.bottom)


def _instance_mask(instance: _Instance, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Shape of an instance on offsets (dy, dx) from its centre."""
    r = instance.radius
    if instance.thing_class == DISC:
        return dy * dy + dx * dx <= r * r
    if instance.thing_class == BOX:
        u = np.cos(instance.angle) * dx + np.sin(instance.angle) * dy
        v = -np.sin(instance.angle) * dx + np.cos(instance.angle) * dy
        half_w = r / np.sqrt(1 + instance.aspect**2) * 1.3
        return (np.abs(u) <= half_w) & (np.abs(v) <= half_w * instance.aspect)
    # Cone: an upright triangle with its apex at the top.
    depth = (dy + r) / (2 * r)
    return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= depth * r * 0.9 / instance.aspect**0.5)


def _instance_texture(rng: np.random.Generator, instance: _Instance, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Colour (h, w, 3) of an instance: its own hue/shade and its own stripe, dot or checker pattern."""
    low, high = _THING_HUES[instance.thing_class]
    hue = rng.uniform(low, high)
    base = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    second = _hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.2, 1.0), rng.uniform(0.2, 0.95))
    period = rng.uniform(3.0, 8.0)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    kind = rng.integers(3)
    if kind == 0:  # stripes
        pattern = (u / period) % 1 < 0.5
    elif kind == 1:  # dots
        pattern = ((u / period) % 1 - 0.5) ** 2 + ((v / period) % 1 - 0.5) ** 2 < 0.09
    else:  # checkerboard
        pattern = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    colour = np.where(pattern[..., None], second, base)
    # Soft shading from the upper left gives the shapes some volume.
    shade = 1.0 - 0.25 * np.clip((dx + dy) / (2 * instance.radius), -1, 1)
    return colour * shade[..., None]


def generate_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one scene.

    Returns:
        image (ndarray[H, W, 3] uint8), semantic (ndarray[H, W] int64), panoptic (ndarray[H, W] int64).
    """
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"scene size must be at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
    image, semantic, horizon = _draw_stuff(rng, height, width)
    panoptic = semantic.copy()
    counters = dict.fromkeys(SYNTHETIC_THING_CLASSES, 0)
    for instance in _place_instances(rng, height, width, horizon):
        extent = int(np.ceil(instance.radius * 1.5)) + 1
        y0, y1 = max(0, int(instance.cy) - extent), min(height, int(instance.cy) + extent + 1)
        x0, x1 = max(0, int(instance.cx) - extent), min(width, int(instance.cx) + extent + 1)
        dy = np.arange(y0, y1, dtype=np.float64)[:, None] - instance.cy
        dx = np.arange(x0, x1, dtype=np.float64)[None, :] - instance.cx
        dy, dx = np.broadcast_arrays(dy, dx)
        mask = _instance_mask(instance, dy, dx)
        texture = _instance_texture(rng, instance, dy, dx)
        if not mask.any():
            continue
        counters[instance.thing_class] += 1
        image[y0:y1, x0:x1] = np.where(mask[..., None], texture, image[y0:y1, x0:x1])
        semantic[y0:y1, x0:x1][mask] = instance.thing_class
        panoptic[y0:y1, x0:x1][mask] = instance.thing_class * _THING_ID_STRIDE + counters[instance.thing_class]
    grain = rng.normal(0.0, 0.012, size=image.shape)
    image = np.clip(np.rint((image + grain) * 255.0), 0, 255).astype(np.uint8)
    return image, semantic, panoptic


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
    try:
        height, width = (operator.index(side) for side in pair)
    except (TypeError, ValueError):
        height = width = 0
    if len(pair) != 2 or height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE} or a pair (H, W) of such, got {size!r}")
    return height, width


def scene(seed: int, index: int, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene ``index`` of the dataset with ``seed`` (see :func:`generate_scene`)."""
    height, width = _check_size(size)
    return generate_scene(np.random.default_rng([seed, index]), height, width)


class SyntheticScenes(torch.utils.data.Dataset):
    """The procedural scenes generated on the fly, in memory (same samples as the written dataset).

    Args:
        num: number of scenes.
        size: side (or (H, W)) of the scenes.
        seed: dataset seed; scene ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
        transform: callable applied to each sample dict.
        offset: index of the first scene (the written val split starts after the train scenes).
    """

    num_classes = len(SYNTHETIC_CLASS_NAMES)
    ignore_index = None
    unknown_values = ()
    class_names = SYNTHETIC_CLASS_NAMES
    thing_classes = SYNTHETIC_THING_CLASSES

    def __init__(
        self, num: int, size: int | tuple[int, int], seed: int = 0, transform: Any = None, offset: int = 0
    ) -> None:
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        self.num = num
        self.size = _check_size(size)
        self.seed = seed
        self.transform = transform
        self.offset = offset

    def __len__(self) -> int:
        return self.num

    def _scene(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= index < self.num:
            raise IndexError(f"scene index {index} out of range for {self.num} scenes")
        return scene(self.seed, self.offset + index, self.size)

    def load_maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        _, semantic, panoptic = self._scene(index)
        return semantic, panoptic

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, semantic, panoptic = self._scene(index)
        sample = {
            "image": uint8_to_image(image),
            "semantic": torch.from_numpy(semantic),
            "panoptic": torch.from_numpy(panoptic),
            "name": scene_name(self.offset + index),
        }
        return self.transform(sample) if self.transform is not None else sample


def scene_name(index: int) -> str:
    return f"scene_{index:06d}"


def split_counts(num: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) scene counts: at least one val scene when ``val_fraction > 0``, at least one train scene."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    num_val = round(num * val_fraction)
    if val_fraction > 0:
        num_val = max(1, num_val)
    if num - num_val < 1:
        raise ValueError(f"num={num} with val_fraction={val_fraction} leaves no training scene")
    return num - num_val, num_val


def write_synthetic_dataset(
    out: str | Path, num: int, size: int | tuple[int, int], seed: int = 0, val_fraction: float = 0.1
) -> Path:
    """Write ``num`` scenes as a :class:`~pansynth.data.folder.Folder` dataset.

    Writes ``out/train`` (and ``out/val`` when ``val_fraction > 0``) with ``images/``, ``semantic/``,
    ``panoptic/`` PNGs, plus ``out/classes.json`` and ``out/synthetic.json`` (the generation
    arguments). Scenes 0..n_train-1 form the train split, the following ones the val split.
    ``out`` must not exist or be an empty folder: nothing is ever overwritten. The files are
    written into a temporary sibling folder that is renamed to ``out`` at the end, so an
    interrupted run leaves no half-written dataset.

    Returns:
        ``out`` as a Path.
    """
    out = Path(out)
    height, width = _check_size(size)
    num_train, num_val = split_counts(num, val_fraction)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not an empty folder; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the dataset is an ordinary folder
    try:
        write_classes_json(
            staging / "classes.json", SYNTHETIC_CLASS_NAMES, SYNTHETIC_THING_CLASSES, None, unknown=UNKNOWN_VALUE
        )
        info = {
            "generator": "pansynth.data.synthetic",
            "num": num,
            "size": [height, width],
            "seed": seed,
            "val_fraction": val_fraction,
            "train": num_train,
            "val": num_val,
        }
        (staging / "synthetic.json").write_text(json.dumps(info, indent=1) + "\n")
        for index in range(num):
            split = "train" if index < num_train else "val"
            folders = [staging / split / kind for kind in ("images", "semantic", "panoptic")]
            if index in (0, num_train):
                for folder in folders:
                    folder.mkdir(parents=True)
            image, semantic, panoptic = scene(seed, index, (height, width))
            name = scene_name(index)
            # Fast compression: the noisy photographs barely shrink at higher levels.
            Image.fromarray(image).save(folders[0] / f"{name}.png", compress_level=1)
            write_label_png(folders[1] / f"{name}.png", semantic)
            write_id_png(folders[2] / f"{name}.png", panoptic)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
