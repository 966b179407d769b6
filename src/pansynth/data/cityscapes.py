"""Cityscapes (fine annotations) in its official layout.

Layout::

    root/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    root/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png     label id 0..33 per pixel
    root/gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png  labelId * 1000 + k for thing instances,
                                                               the label id elsewhere (incl. crowds)

Classes are the 34 Cityscapes label ids 0..33 plus index 34 for the "license plate" label (id -1
in Cityscapes, absent from the official labelIds PNGs): ``num_classes = 35`` and no ignore value,
as SPADE-style generators use 35 label channels. The panoptic id is the instanceIds value itself,
which is already unique per thing instance (>= 24000) and per stuff class (< 34); thing pixels
without an instance id (crowds) form one segment per class.

Unknown pixels: the label ids given as ``unknown_classes`` (for instance
:data:`CITYSCAPES_VOID_CLASSES`, the "void" category 0..6) are read as class and id -1. The
default is none, as in the paper's recipe, where the void labels are classes of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pansynth.data.base import PanopticDataset, SampleFiles, Transform
from pansynth.data.io import read_id_png, read_label_png

# Label id -> name (cityscapesScripts labels.py); index 34 stands for "license plate" (id -1).
CITYSCAPES_CLASS_NAMES: list[str] = [
    "unlabeled",
    "ego vehicle",
    "rectification border",
    "out of roi",
    "static",
    "dynamic",
    "ground",
    "road",
    "sidewalk",
    "parking",
    "rail track",
    "building",
    "wall",
    "fence",
    "guard rail",
    "bridge",
    "tunnel",
    "pole",
    "polegroup",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "caravan",
    "trailer",
    "train",
    "motorcycle",
    "bicycle",
    "license plate",
]

# Label ids of the "void" category (unlabeled, ego vehicle, rectification border, out of roi,
# static, dynamic, ground).
CITYSCAPES_VOID_CLASSES: list[int] = list(range(7))

# Label ids with hasInstances=True.
CITYSCAPES_THING_CLASSES: list[int] = list(range(24, 34))

# Label id (index 0..34) -> train id 0..18 used by Cityscapes segmentation benchmarks, 255 = ignored.
CITYSCAPES_TRAIN_IDS: list[int] = [
    255,
    255,
    255,
    255,
    255,
    255,
    255,
    0,
    1,
    255,
    255,
    2,
    3,
    4,
    255,
    255,
    255,
    5,
    255,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    255,
    255,
    16,
    17,
    18,
    255,
]

# Train id -> name of the 19 evaluated classes.
CITYSCAPES_TRAIN_CLASS_NAMES: list[str] = [
    CITYSCAPES_CLASS_NAMES[label] for label in range(35) if CITYSCAPES_TRAIN_IDS[label] != 255
]


class Cityscapes(PanopticDataset):
    """Cityscapes fine annotations (``leftImg8bit`` + ``gtFine``), see module docstring.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        transform: callable applied to each sample dict.
        skip_bad: skip bad samples with a logged count instead of raising.
        unknown_classes: label ids read as unknown (class and id -1), e.g. :data:`CITYSCAPES_VOID_CLASSES`.
    """

    num_classes = 35
    ignore_index = None
    class_names = CITYSCAPES_CLASS_NAMES
    thing_classes = CITYSCAPES_THING_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        skip_bad: bool = False,
        unknown_classes: Sequence[int] = (),
    ) -> None:
        bad = [c for c in unknown_classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 35]
        if bad:
            raise ValueError(f"unknown_classes must be Cityscapes label ids 0..34, got {bad[0]!r}")
        self.unknown_values = tuple(sorted(set(unknown_classes)))
        root = Path(root)
        self.root = root
        self.split = split
        image_dir = root / "leftImg8bit" / split
        label_dir = root / "gtFine" / split
        for directory in (image_dir, label_dir):
            if not directory.is_dir():
                raise FileNotFoundError(
                    f"{directory}: folder not found (expected Cityscapes layout "
                    f"leftImg8bit/{split}/<city>/ and gtFine/{split}/<city>/)"
                )
        samples: list[SampleFiles] = []
        missing: list[str] = []
        for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            city = image.parent.name
            labels = label_dir / city / f"{stem}_gtFine_labelIds.png"
            instances = label_dir / city / f"{stem}_gtFine_instanceIds.png"
            lacking = [str(path) for path in (labels, instances) if not path.is_file()]
            if lacking:
                missing.append(f"{image}: missing partner file(s) {', '.join(lacking)}")
                continue
            samples.append(SampleFiles(stem, image, labels, instances))
        super().__init__(samples, transform, skip_bad, missing, source=str(image_dir))

    def _read_maps(self, files: SampleFiles) -> tuple[np.ndarray, np.ndarray]:
        return read_label_png(files.semantic), read_id_png(files.panoptic)
