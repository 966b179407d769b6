"""Datasets: readers of the real formats, procedural panoptic scenes, paired transforms.

Every reader returns samples ``{"image": Tensor[3, H, W] float32 in [-1, 1], "semantic": Tensor[H, W]
int64, "panoptic": Tensor[H, W] int64, "name": str}`` and exposes ``num_classes``, ``ignore_index``,
``class_names`` and ``thing_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pansynth.choices import DATASET_NAMES, DatasetName
from pansynth.data.base import PanopticDataset, Transform
from pansynth.data.cityscapes import Cityscapes
from pansynth.data.coco_panoptic import CocoPanoptic
from pansynth.data.coco_stuff import CocoStuff
from pansynth.data.folder import Folder
from pansynth.data.synthetic import SyntheticScenes, write_synthetic_dataset

_READERS = {"cityscapes": Cityscapes, "coco-stuff": CocoStuff, "coco-panoptic": CocoPanoptic}

# What ``split=None`` means, per format (the command line's ``--split`` help says the same).
DEFAULT_SPLIT_HELP = (
    "the dataset's own default: for folder, the folder itself when it holds images/, else its only split; "
    "train for the other formats"
)


def build_dataset(
    name: DatasetName,
    root: str | Path,
    split: str | None = None,
    transform: Transform | None = None,
    skip_bad: bool = False,
    unknown_classes: Sequence[int] = (),
) -> PanopticDataset:
    """Build a reader by name: ``folder``, ``cityscapes``, ``coco-stuff`` or ``coco-panoptic``.

    ``split=None`` takes the dataset's own default (:data:`DEFAULT_SPLIT_HELP`). ``unknown_classes``
    (Cityscapes only) are label ids read as unknown; the other formats name their unknown value
    themselves (COCO: 255 / VOID, Folder: ``classes.json``).
    """
    if unknown_classes and name != "cityscapes":
        raise ValueError(
            f"unknown_classes applies to cityscapes only; {name} names its unknown value itself "
            '(COCO: unlabeled 255 / VOID, folder: "unknown" in classes.json)'
        )
    if name == "cityscapes":
        return Cityscapes(
            root, split or "train", transform=transform, skip_bad=skip_bad, unknown_classes=unknown_classes
        )
    if name == "folder":
        return Folder(root, split=split, transform=transform, skip_bad=skip_bad)
    if name not in _READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    return _READERS[name](root, split or "train", transform=transform, skip_bad=skip_bad)


def guess_format(root: str | Path) -> DatasetName | None:
    """The dataset format whose layout ``root`` looks like, or None (used for hints in error messages)."""
    root = Path(root)
    if (root / "classes.json").is_file():
        return "folder"
    if (root / "gtFine").is_dir() or (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if any(root.glob("*_label")) and any(root.glob("*_img")):
        return "coco-stuff"
    if (root / "annotations").is_dir() and any((root / "annotations").glob("panoptic_*.json")):
        return "coco-panoptic"
    return None


__all__ = [
    "DATASET_NAMES",
    "DEFAULT_SPLIT_HELP",
    "Cityscapes",
    "CocoPanoptic",
    "CocoStuff",
    "Folder",
    "PanopticDataset",
    "SyntheticScenes",
    "build_dataset",
    "guess_format",
    "write_synthetic_dataset",
]
