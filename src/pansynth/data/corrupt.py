"""Seeded label-map corruptions: SCDM's noisy labels and imperfect panoptic maps.

Every corruption takes one sample's maps, ``semantic`` and ``panoptic`` (Tensor[H, W] int64, unknown
pixels -1 in both, see :data:`pansynth.ops.maps.UNKNOWN`), the dataset's thing classes, a LEVEL and a
``torch.Generator``, and returns new maps: its input is never modified, and the same generator seed
gives the same result. The corruptions and their LEVEL (default in brackets):

- ``ds`` [4]: SCDM's DS. The maps are resized (nearest) by 1/LEVEL, to ``(round(H / LEVEL),
  round(W / LEVEL))``, then back to their size (nearest). SCDM takes 256 px ADE20K maps to 64 px,
  a factor 4; a factor carries over to the small maps of the procedural scenes.
- ``edge`` [2]: SCDM's Edge. Every pixel with a pixel of another panoptic id within Chebyshev distance
  LEVEL (the segment boundaries widened to radius LEVEL) becomes unknown.
- ``random`` [0.1]: SCDM's Random. Exactly ``round(LEVEL * H * W)`` pixels, drawn uniformly without
  replacement, become unknown.
- ``regions`` [3]: LEVEL random rectangles (sides drawn in [1/8, 1/3] of the map's) become unknown
  (the masked regions of an OASIS re-evaluation, and the training augmentation's unknown regions).
- ``drop`` [0.5]: ``round(LEVEL * n)`` of the n thing instances, drawn at random, become unknown.
- ``merge`` [1.0]: each pair of 4-adjacent thing instances of one class is joined with probability
  LEVEL; joined instances (transitively) take the smallest id of their group.
- ``split`` [1.0]: ``round(LEVEL * n)`` of the n thing instances that span two or more pixels along
  some axis are cut in two through the middle of their bounding box, across its longer side
  (rows ``>= (ymin + ymax + 1) // 2`` when ``ymax - ymin >= xmax - xmin``, else columns); the second
  part takes a new id above every id of the map.
- ``no_instances`` [1.0]: for ``round(LEVEL * m)`` of the m thing classes present, drawn at random,
  all instances take one id (the smallest of them): a semantic map with stuff-like things.
- ``jitter`` [4]: elastic warping of both maps by a smooth random displacement field whose largest
  displacement is LEVEL pixels (:func:`elastic_displacement`); each pixel takes the values of the
  pixel it is displaced to (nearest, clamped at the border).

:class:`CorruptedMaps` applies a list of corruptions to every sample of a dataset with per-sample
seeds; :class:`CorruptAugment` is the training augmentation (``data.corrupt`` in the config).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.data.transforms import resize_map
from pansynth.ops.maps import UNKNOWN

__all__ = [
    "CORRUPTIONS",
    "Augmented",
    "CorruptAugment",
    "CorruptedMaps",
    "Corruption",
    "corrupt_maps",
    "elastic_displacement",
    "make_augment",
    "parse_corruption",
    "random_rectangles",
    "sample_seed",
]

Maps = tuple[Tensor, Tensor]
CorruptFn = Callable[[Tensor, Tensor, Sequence[int], float, torch.Generator], Maps]

# The displacement field of ``jitter`` is white noise blurred by a Gaussian of this many map sides.
JITTER_SMOOTHING = 1 / 16


def _check_maps(semantic: Tensor, panoptic: Tensor) -> None:
    if semantic.dim() != 2 or semantic.shape != panoptic.shape:
        raise ValueError(
            f"corruptions take (H, W) semantic and panoptic maps of one shape, got {tuple(semantic.shape)} "
            f"and {tuple(panoptic.shape)}"
        )


def _set_unknown(semantic: Tensor, panoptic: Tensor, unknown: Tensor) -> Maps:
    return semantic.masked_fill(unknown, UNKNOWN), panoptic.masked_fill(unknown, UNKNOWN)


def _things(semantic: Tensor, thing_classes: Sequence[int]) -> Tensor:
    """Bool map of the pixels of a thing class."""
    return torch.isin(semantic, torch.as_tensor(list(thing_classes), dtype=semantic.dtype))


def _choose(count: int, share: float, generator: torch.Generator) -> Tensor:
    """Indices of ``round(share * count)`` of ``count`` items drawn without replacement (sorted)."""
    chosen = torch.randperm(count, generator=generator)[: round(share * count)]
    return chosen.sort().values


def _relabel(panoptic: Tensor, old: Tensor, new: Tensor) -> Tensor:
    """``panoptic`` with every id ``old[i]`` replaced by ``new[i]`` (``old`` sorted, unique)."""
    if old.numel() == 0:
        return panoptic.clone()
    position = torch.searchsorted(old, panoptic).clamp(max=old.numel() - 1)
    hit = old[position] == panoptic
    return torch.where(hit, new[position], panoptic)


# --------------------------------------------------------------------------- SCDM's corruptions


def downsample(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``ds``: nearest resize by 1/``level`` and back."""
    height, width = semantic.shape
    small = (max(1, round(height / level)), max(1, round(width / level)))
    return tuple(resize_map(resize_map(m, small), (height, width)) for m in (semantic, panoptic))  # type: ignore[return-value]


def near_other_id(panoptic: Tensor, radius: int) -> Tensor:
    """Bool map: a pixel of another id lies within Chebyshev distance ``radius`` (inside the map)."""
    height, width = panoptic.shape
    near = torch.zeros_like(panoptic, dtype=torch.bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy, dx) == (0, 0) or abs(dy) >= height or abs(dx) >= width:
                continue
            ys, yt = slice(max(0, -dy), height - max(0, dy)), slice(max(0, dy), height - max(0, -dy))
            xs, xt = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
            near[ys, xs] |= panoptic[ys, xs] != panoptic[yt, xt]
    return near


def edge(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``edge``: segment boundaries widened to radius ``level`` become unknown."""
    return _set_unknown(semantic, panoptic, near_other_id(panoptic, int(level)))


def random_pixels(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``random``: exactly ``round(level * H * W)`` uniformly drawn pixels become unknown."""
    count = round(level * semantic.numel())
    unknown = torch.zeros(semantic.numel(), dtype=torch.bool)
    unknown[torch.randperm(semantic.numel(), generator=generator)[:count]] = True
    return _set_unknown(semantic, panoptic, unknown.view(semantic.shape))


def random_rectangles(
    height: int, width: int, count: int, generator: torch.Generator
) -> list[tuple[int, int, int, int]]:
    """``count`` rectangles ``(top, left, h, w)`` with sides in [1/8, 1/3] of the map's, placed uniformly."""
    rectangles = []
    for _ in range(count):
        h = int(torch.randint(max(1, height // 8), max(1, height // 3) + 1, (), generator=generator))
        w = int(torch.randint(max(1, width // 8), max(1, width // 3) + 1, (), generator=generator))
        top = int(torch.randint(0, height - h + 1, (), generator=generator))
        left = int(torch.randint(0, width - w + 1, (), generator=generator))
        rectangles.append((top, left, h, w))
    return rectangles


def regions(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``regions``: ``level`` random rectangles become unknown."""
    unknown = torch.zeros_like(semantic, dtype=torch.bool)
    for top, left, h, w in random_rectangles(*semantic.shape, int(level), generator):
        unknown[top : top + h, left : left + w] = True
    return _set_unknown(semantic, panoptic, unknown)


# --------------------------------------------------------------------------- panoptic corruptions


def drop_things(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``drop``: a share ``level`` of the thing instances become unknown."""
    things = _things(semantic, thing_classes)
    instances = torch.unique(panoptic[things])
    dropped = instances[_choose(instances.numel(), level, generator)]
    return _set_unknown(semantic, panoptic, things & torch.isin(panoptic, dropped))


def touching_instance_pairs(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int]) -> Tensor:
    """Tensor[P, 2]: unique sorted pairs of 4-adjacent thing instance ids of one class."""
    things = _things(semantic, thing_classes)
    pairs = []
    for a, b, ca, cb, ta, tb in (
        (panoptic[:, :-1], panoptic[:, 1:], semantic[:, :-1], semantic[:, 1:], things[:, :-1], things[:, 1:]),
        (panoptic[:-1], panoptic[1:], semantic[:-1], semantic[1:], things[:-1], things[1:]),
    ):
        touching = (a != b) & (ca == cb) & ta & tb
        pairs.append(torch.stack([torch.minimum(a, b)[touching], torch.maximum(a, b)[touching]], 1))
    pairs = torch.cat(pairs)
    return torch.unique(pairs, dim=0) if pairs.numel() else pairs.reshape(0, 2)


def merge(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``merge``: touching instances of one class joined with probability ``level`` each pair."""
    pairs = touching_instance_pairs(semantic, panoptic, thing_classes)
    joined = pairs[torch.rand(len(pairs), generator=generator, dtype=torch.float64) < level]
    if joined.numel() == 0:
        return semantic.clone(), panoptic.clone()
    # Union-find over the few instances involved (a loop over segments, not pixels).
    ids = torch.unique(joined)
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in torch.searchsorted(ids, joined).tolist():
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)  # the root is the smallest id (ids are sorted)
    new = ids[torch.tensor([root(i) for i in range(len(ids))])]
    return semantic.clone(), _relabel(panoptic, ids, new)


def split(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``split``: a share ``level`` of the thing instances cut in two ids across their longer side."""
    height, width = panoptic.shape
    ids, segment = torch.unique(panoptic, return_inverse=True)
    flat = segment.reshape(-1)
    ys = torch.arange(height).repeat_interleave(width)
    xs = torch.arange(width).repeat(height)

    def extreme(values: Tensor, reduce: str) -> Tensor:
        start = torch.full((len(ids),), height * width if reduce == "amin" else -1, dtype=torch.long)
        return start.scatter_reduce(0, flat, values, reduce)

    ymin, ymax, xmin, xmax = extreme(ys, "amin"), extreme(ys, "amax"), extreme(xs, "amin"), extreme(xs, "amax")
    is_thing = torch.zeros(len(ids), dtype=torch.bool).scatter_(
        0, flat[_things(semantic, thing_classes).reshape(-1)], True
    )
    candidates = (is_thing & ((ymax > ymin) | (xmax > xmin))).nonzero().squeeze(1)
    chosen = candidates[_choose(len(candidates), level, generator)]
    if chosen.numel() == 0:
        return semantic.clone(), panoptic.clone()
    # new_rank[s]: 0 for unsplit segments, 1 + rank among the split ones otherwise.
    new_rank = torch.zeros(len(ids), dtype=torch.long)
    new_rank[chosen] = torch.arange(1, len(chosen) + 1)
    tall = (ymax - ymin) >= (xmax - xmin)
    cut = torch.where(tall, (ymin + ymax + 1) // 2, (xmin + xmax + 1) // 2)
    coordinate = torch.where(tall[flat], ys, xs)
    second = (new_rank[flat] > 0) & (coordinate >= cut[flat])
    first_new_id = int(ids.max()) + 1
    out = panoptic.reshape(-1).clone()
    out[second] = first_new_id + new_rank[flat][second] - 1
    return semantic.clone(), out.view(height, width)


def no_instances(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``no_instances``: a share ``level`` of the thing classes present get one id for all their instances."""
    things = _things(semantic, thing_classes)
    classes = torch.unique(semantic[things])
    chosen = classes[_choose(classes.numel(), level, generator)]
    merged = things & torch.isin(semantic, chosen)
    if not merged.any():
        return semantic.clone(), panoptic.clone()
    # The smallest id of each chosen class, gathered per pixel by a segment reduction over class indices.
    position = torch.searchsorted(chosen, semantic.masked_fill(~merged, 0)).clamp(max=len(chosen) - 1)
    smallest = torch.full((len(chosen),), torch.iinfo(torch.int64).max).scatter_reduce(
        0, position[merged], panoptic[merged], "amin"
    )
    return semantic.clone(), torch.where(merged, smallest[position], panoptic)


def elastic_displacement(height: int, width: int, level: float, generator: torch.Generator) -> Tensor:
    """Tensor[2, H, W] float64 (dy, dx): smooth random displacements whose largest magnitude is ``level`` px.

    White noise blurred by a Gaussian of standard deviation ``JITTER_SMOOTHING * min(H, W)`` pixels
    (replicated borders), scaled so that ``max(|dy|, |dx|) == level``.
    """
    noise = torch.randn(2, 1, height, width, generator=generator, dtype=torch.float64)
    sigma = max(1.0, JITTER_SMOOTHING * min(height, width))
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    field = F.pad(noise, (radius, radius, 0, 0), mode="replicate")
    field = F.conv2d(field, kernel.view(1, 1, 1, -1))
    field = F.pad(field, (0, 0, radius, radius), mode="replicate")
    field = F.conv2d(field, kernel.view(1, 1, -1, 1))[:, 0]
    peak = field.abs().max()
    return field * (level / peak) if peak > 0 else field


def jitter(semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], level: float, generator) -> Maps:
    """``jitter``: both maps warped by :func:`elastic_displacement` (nearest, clamped)."""
    height, width = semantic.shape
    dy, dx = elastic_displacement(height, width, level, generator)
    rows = (torch.arange(height, dtype=torch.float64)[:, None] + dy).round().long().clamp(0, height - 1)
    cols = (torch.arange(width, dtype=torch.float64)[None, :] + dx).round().long().clamp(0, width - 1)
    return semantic[rows, cols], panoptic[rows, cols]


# --------------------------------------------------------------------------- registry and parsing


@dataclass(frozen=True)
class CorruptionKind:
    """A corruption: its function, LEVEL default and valid range (integer levels for counts/radii)."""

    function: CorruptFn
    default: float
    low: float
    high: float
    integer: bool
    meaning: str


CORRUPTIONS: dict[str, CorruptionKind] = {
    "ds": CorruptionKind(downsample, 4, 1, 64, True, "downsampling factor"),
    "edge": CorruptionKind(edge, 2, 1, 64, True, "radius in pixels of the unknown band along boundaries"),
    "random": CorruptionKind(random_pixels, 0.1, 0, 1, False, "share of pixels made unknown"),
    "regions": CorruptionKind(regions, 3, 0, 64, True, "number of unknown rectangles"),
    "drop": CorruptionKind(drop_things, 0.5, 0, 1, False, "share of thing instances made unknown"),
    "merge": CorruptionKind(merge, 1.0, 0, 1, False, "probability that two touching instances of a class merge"),
    "split": CorruptionKind(split, 1.0, 0, 1, False, "share of thing instances cut in two"),
    "no_instances": CorruptionKind(no_instances, 1.0, 0, 1, False, "share of thing classes with one id"),
    "jitter": CorruptionKind(jitter, 4, 0, 64, False, "largest displacement in pixels of the elastic warp"),
}


def _choices() -> str:
    return ", ".join(f"{name}[:{kind.default:g}]" for name, kind in CORRUPTIONS.items())


@dataclass(frozen=True)
class Corruption:
    """One corruption with its level, e.g. ``Corruption("edge", 2)``; ``str()`` gives ``edge:2``."""

    name: str
    level: float

    def __post_init__(self) -> None:
        if self.name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.name!r}; choose NAME[:LEVEL] from {_choices()}")
        kind = CORRUPTIONS[self.name]
        level = self.level
        if (
            not isinstance(level, (int, float))
            or isinstance(level, bool)
            or not kind.low <= level <= kind.high
            or (kind.integer and level != int(level))
        ):
            expected = "an integer" if kind.integer else "a number"
            high = "" if math.isinf(kind.high) else f"..{kind.high:g}"
            raise ValueError(
                f"corruption {self.name}: level {level!r} is not valid; expected {expected} in {kind.low:g}{high} "
                f"({kind.meaning}, default {kind.default:g})"
            )

    def __str__(self) -> str:
        return f"{self.name}:{self.level:g}"

    def __call__(self, semantic: Tensor, panoptic: Tensor, thing_classes: Sequence[int], generator) -> Maps:
        _check_maps(semantic, panoptic)
        return CORRUPTIONS[self.name].function(semantic.long(), panoptic.long(), thing_classes, self.level, generator)


def parse_corruption(text: str) -> Corruption:
    """``NAME`` or ``NAME:LEVEL`` -> :class:`Corruption`; a one-line ValueError listing the choices otherwise."""
    name, _, level_text = str(text).strip().partition(":")
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose NAME[:LEVEL] from {_choices()}")
    if not level_text:
        return Corruption(name, CORRUPTIONS[name].default)
    try:
        level = float(level_text)
    except ValueError:
        level = None
    if level is None or not math.isfinite(level):
        kind = CORRUPTIONS[name]
        raise ValueError(
            f"corruption {name}: level {level_text!r} is not a number ({kind.meaning}, default {kind.default:g}); "
            f"choose NAME[:LEVEL] from {_choices()}"
        )
    return Corruption(name, int(level) if level == int(level) else level)


def sample_seed(seed: int, index: int, step: int = 0) -> int:
    """A 63-bit seed for sample ``index`` (and the ``step``-th corruption applied to it) from ``seed``."""
    return int(np.random.SeedSequence([seed, index, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def corrupt_maps(
    semantic: Tensor, panoptic: Tensor, corruptions: Sequence[Corruption], thing_classes: Sequence[int], seed: int
) -> Maps:
    """Apply ``corruptions`` in order to one sample's maps (Tensor[H, W]); the k-th draws from ``(seed, k)``."""
    for step, corruption in enumerate(corruptions):
        generator = torch.Generator().manual_seed(sample_seed(seed, 0, step))
        semantic, panoptic = corruption(semantic, panoptic, thing_classes, generator)
    return semantic, panoptic


class CorruptedMaps(torch.utils.data.Dataset):
    """A dataset whose samples' maps are corrupted; images, names and class lists are the dataset's.

    Sample ``i`` is corrupted with the seed :func:`sample_seed` ``(seed, i)``, so the same seed gives
    the same maps whatever the order of reading.

    Args:
        dataset: a pansynth dataset (or Subset of one) with ``thing_classes``.
        corruptions: applied in order.
        seed: base seed.
    """

    def __init__(self, dataset: Any, corruptions: Sequence[Corruption], seed: int = 0) -> None:
        self.dataset = dataset
        self.corruptions = list(corruptions)
        self.seed = int(seed)
        base = getattr(dataset, "dataset", dataset)  # a Subset's dataset
        self.thing_classes = list(getattr(base, "thing_classes", []))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        sample["semantic"], sample["panoptic"] = corrupt_maps(
            sample["semantic"], sample["panoptic"], self.corruptions, self.thing_classes, sample_seed(self.seed, index)
        )
        return sample

    def __getattr__(self, name: str) -> Any:
        # num_classes, ignore_index, class_names, samples... come from the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class CorruptAugment:
    """The training augmentation of ``data.corrupt``: elastic label-map warping and unknown regions.

    Each sample is warped (``jitter:warp_level``) with probability ``warp_prob`` and gets
    ``unknown_regions`` unknown rectangles (``regions``) with probability ``unknown_prob``. The draws
    come from torch's global generator, like the crop and flip of
    :class:`~pansynth.data.transforms.PairedTransform`, so a resumed run draws the same.
    """

    def __init__(
        self,
        thing_classes: Sequence[int],
        warp_prob: float,
        warp_level: float,
        unknown_prob: float,
        unknown_regions: int,
    ) -> None:
        for name, value in (("warp_prob", warp_prob), ("unknown_prob", unknown_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"data.corrupt.{name} must be a probability in [0, 1], got {value}")
        self.thing_classes = list(thing_classes)
        self.warp = Corruption("jitter", warp_level)
        self.regions = Corruption("regions", unknown_regions)
        self.warp_prob, self.unknown_prob = float(warp_prob), float(unknown_prob)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        draws = torch.rand(2, dtype=torch.float64)
        seed = int(torch.randint(0, 2**62, ()))
        chosen = [
            c
            for c, p, u in ((self.warp, self.warp_prob, draws[0]), (self.regions, self.unknown_prob, draws[1]))
            if u < p
        ]
        if not chosen:
            return sample
        out = dict(sample)
        out["semantic"], out["panoptic"] = corrupt_maps(
            out["semantic"], out["panoptic"], chosen, self.thing_classes, seed
        )
        return out

    def __repr__(self) -> str:
        return (
            f"CorruptAugment(warp_prob={self.warp_prob}, warp_level={self.warp.level}, "
            f"unknown_prob={self.unknown_prob}, unknown_regions={self.regions.level})"
        )


def make_augment(settings: Any, thing_classes: Sequence[int]) -> CorruptAugment | None:
    """The :class:`CorruptAugment` of a ``data.corrupt`` config section, or None when both probabilities are 0."""
    if settings.warp_prob <= 0 and settings.unknown_prob <= 0:
        return None
    return CorruptAugment(
        thing_classes, settings.warp_prob, settings.warp_level, settings.unknown_prob, settings.unknown_regions
    )


class Augmented(torch.utils.data.Dataset):
    """``dataset`` with ``augment`` applied to every sample it returns (the training loader's view)."""

    def __init__(self, dataset: Any, augment: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.dataset = dataset
        self.augment = augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.augment(self.dataset[index])
