"""Datasets: readers of the real formats, procedural panoptic scenes, paired transforms.

Every reader returns samples ``{"image": Tensor[3, H, W] float32 in [-1, 1], "semantic": Tensor[H, W]
int64, "panoptic": Tensor[H, W] int64, "name": str}`` and exposes ``num_classes``, ``ignore_index``,
``class_names`` and ``thing_classes``.
"""

from __future__ import annotations

from pathlib import Path

from pansynth.data.base import PanopticDataset, Transform
from pansynth.data.cityscapes import Cityscapes
from pansynth.data.coco_panoptic import CocoPanoptic
from pansynth.data.coco_stuff import CocoStuff
from pansynth.data.folder import Folder
from pansynth.data.synthetic import SyntheticScenes, write_synthetic_dataset

DATASET_NAMES = ("folder", "cityscapes", "coco-stuff", "coco-panoptic")

_READERS = {"cityscapes": Cityscapes, "coco-stuff": CocoStuff, "coco-panoptic": CocoPanoptic}


def build_dataset(name: str, root: str | Path, split: str | None = None, transform: Transform | None = None,
                  skip_bad: bool = False) -> PanopticDataset:
    """Build a reader by name: ``folder``, ``cityscapes``, ``coco-stuff`` or ``coco-panoptic``.

    ``split`` is optional for ``folder`` (None reads ``root/images`` directly) and defaults to
    ``train`` for the other formats.
    """
    if name == "folder":
        return Folder(root, split=split, transform=transform, skip_bad=skip_bad)
    if name not in _READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    return _READERS[name](root, split or "train", transform=transform, skip_bad=skip_bad)


__all__ = [
    "DATASET_NAMES",
    "Cityscapes",
    "CocoPanoptic",
    "CocoStuff",
    "Folder",
    "PanopticDataset",
    "SyntheticScenes",
    "build_dataset",
    "write_synthetic_dataset",
]
