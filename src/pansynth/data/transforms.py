"""Paired geometric transforms: the same resize / crop / flip for image, semantic and panoptic maps.

Maps are resized by nearest neighbour through integer index arithmetic, so no new label or id
value can appear and int64 ids are never rounded through floating point; the image is resized
with antialiased bilinear interpolation.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

Sample = dict[str, Any]

_MAP_KEYS = ("semantic", "panoptic")


def _pair(value: tuple[int, int] | list[int] | int | None, argument: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    try:
        height, width = (operator.index(side) for side in pair)
    except (TypeError, ValueError):
        height = width = 0
    if isinstance(value, bool) or height <= 0 or width <= 0:
        raise ValueError(f"{argument} must be a pair of positive integers (H, W) or None, got {value!r}")
    return height, width


def nearest_indices(size_in: int, size_out: int, device: torch.device | None = None) -> torch.Tensor:
    """Source index of each output position for a nearest resize: ``floor((i + 0.5) * in / out)``.

    Computed in integers (``(2 i + 1) * in // (2 out)``), as torch's ``nearest-exact`` mode does in floats.
    """
    positions = torch.arange(size_out, device=device, dtype=torch.int64)
    return ((2 * positions + 1) * size_in) // (2 * size_out)


def resize_map(label_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer map.

    Args:
        label_map (Tensor[..., H, W]): any dtype; values are only copied.
        size: (h, w) output size.
    Returns:
        Tensor[..., h, w] with values taken from ``label_map``.
    """
    rows = nearest_indices(label_map.shape[-2], size[0], label_map.device)
    cols = nearest_indices(label_map.shape[-1], size[1], label_map.device)
    return label_map.index_select(-2, rows).index_select(-1, cols)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of an image (Tensor[3, H, W] or Tensor[N, 3, H, W]) in [-1, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batched = image if image.dim() == 4 else image.unsqueeze(0)
    resized = F.interpolate(batched, size=size, mode="bilinear", align_corners=False, antialias=True)
    resized = resized.clamp(-1.0, 1.0)
    return resized if image.dim() == 4 else resized.squeeze(0)


class PairedTransform:
    """Resize, then random crop, then random horizontal flip, identically for all maps of a sample.

    Args:
        size: (H, W) to resize to (nearest for maps, antialiased bilinear for the image), or None.
        crop: (h, w) of a random crop taken after the resize, or None.
        flip: flip horizontally with probability 0.5.

    Randomness comes from torch's global generator (seeded per DataLoader worker by PyTorch).

    Example:
        >>> t = PairedTransform(size=(286, 286), crop=(256, 256), flip=True)
        >>> out = t(sample)  # doctest: +SKIP  (image (3, 256, 256), semantic/panoptic (256, 256))
    """

    def __init__(
        self, size: tuple[int, int] | None = None, crop: tuple[int, int] | None = None, flip: bool = False
    ) -> None:
        self.size = _pair(size, "size")
        self.crop = _pair(crop, "crop")
        self.flip = bool(flip)
        if (
            self.size is not None
            and self.crop is not None
            and (self.crop[0] > self.size[0] or self.crop[1] > self.size[1])
        ):
            raise ValueError(f"crop {self.crop} must not be larger than size {self.size}")

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        height, width = out["semantic"].shape[-2:]
        if self.size is not None:
            if "image" in out:
                out["image"] = resize_image(out["image"], self.size)
            for key in _MAP_KEYS:
                if key in out:
                    out[key] = resize_map(out[key], self.size)
            height, width = self.size
        if self.crop is not None:
            crop_h, crop_w = self.crop
            if crop_h > height or crop_w > width:
                raise ValueError(
                    f"sample {out.get('name', '?')}: crop {self.crop} is larger than the image ({height}, {width}); "
                    "set a resize size at least as large as the crop"
                )
            top = int(torch.randint(0, height - crop_h + 1, ()).item())
            left = int(torch.randint(0, width - crop_w + 1, ()).item())
            for key in ("image", *_MAP_KEYS):
                if key in out:
                    out[key] = out[key][..., top : top + crop_h, left : left + crop_w]
        if self.flip and bool(torch.rand(()) < 0.5):
            for key in ("image", *_MAP_KEYS):
                if key in out:
                    out[key] = out[key].flip(-1)
        for key in ("image", *_MAP_KEYS):
            if key in out:
                out[key] = out[key].contiguous()
        return out

    def __repr__(self) -> str:
        return f"PairedTransform(size={self.size}, crop={self.crop}, flip={self.flip})"


# name -> (train transform arguments, evaluation transform arguments); sizes from the paper / SPADE.
_PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Cityscapes at 256x512 (paper Sec. 4), flips for training.
    "cityscapes": ({"size": (256, 512), "flip": True}, {"size": (256, 512)}),
    # COCO-Stuff at 256x256: resize to 286 and random-crop 256 for training (SPADE), plain resize for eval.
    "coco-stuff": ({"size": (286, 286), "crop": (256, 256), "flip": True}, {"size": (256, 256)}),
    # COCO panoptic uses the COCO-Stuff resolution.
    "coco-panoptic": ({"size": (286, 286), "crop": (256, 256), "flip": True}, {"size": (256, 256)}),
    # Procedural scenes are generated at the wanted size: flip only.
    "demo": ({"flip": True}, {}),
}

PRESET_NAMES = tuple(_PRESETS)


def preset(name: str, train: bool) -> PairedTransform:
    """The transform used for dataset ``name`` (``cityscapes``, ``coco-stuff``, ``coco-panoptic``, ``demo``)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown transform preset {name!r}; expected one of {', '.join(_PRESETS)}")
    train_args, eval_args = _PRESETS[name]
    return PairedTransform(**(train_args if train else eval_args))
