"""COCO panoptic segmentation in its official format.

Layout::

    root/annotations/panoptic_{split}2017.json   images, annotations (segments_info), categories
    root/annotations/panoptic_{split}2017/*.png  segment id per pixel as RGB: id = R + 256 G + 256^2 B
    root/{split}2017/*.jpg                       the photographs

Category ids are mapped to contiguous class indices in sorted category-id order (133 classes for
COCO panoptic 2017); ``isthing`` comes from the categories. The panoptic id is the segment id;
VOID pixels (id 0) are unknown: class and id -1 (``ignore_index = 255`` keeps SPADE's don't-care
channel in the generators trained on it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pansynth.data.base import PanopticDataset, SampleFiles, Transform
from pansynth.data.io import read_id_png

IGNORE_INDEX = 255


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: annotation file not found (expected COCO panoptic layout annotations/panoptic_<split>2017.json)"
        )
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    for key in ("images", "annotations", "categories"):
        if not isinstance(content, dict) or not isinstance(content.get(key), list):
            raise ValueError(f"{path}: expected a COCO panoptic JSON object with a list {key!r}")
    return content


class CocoPanoptic(PanopticDataset):
    """COCO panoptic segmentation (official JSON + RGB-id PNGs), see module docstring.

    Args:
        root: folder holding ``annotations/`` and ``{split}2017/``.
        split: ``train`` or ``val``.
        transform: callable applied to each sample dict.
        skip_bad: skip bad samples with a logged count instead of raising.

    Attributes:
        category_ids: COCO category id of each class index.
    """

    ignore_index = IGNORE_INDEX
    unknown_values = (IGNORE_INDEX,)

    def __init__(
        self, root: str | Path, split: str, transform: Transform | None = None, skip_bad: bool = False
    ) -> None:
        root = Path(root)
        self.root = root
        self.split = split
        json_path = root / "annotations" / f"panoptic_{split}2017.json"
        png_dir = root / "annotations" / f"panoptic_{split}2017"
        image_dir = root / f"{split}2017"
        content = _load_json(json_path)
        try:
            categories = sorted(content["categories"], key=lambda category: int(category["id"]))
            self.category_ids = [int(category["id"]) for category in categories]
            self.class_names = [str(category["name"]) for category in categories]
            self.thing_classes = [
                index for index, category in enumerate(categories) if bool(category.get("isthing", False))
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{json_path}: malformed 'categories' entry ({error!r})") from error
        self.num_classes = len(categories)
        if not 0 < self.num_classes <= IGNORE_INDEX:
            raise ValueError(f"{json_path}: expected 1..{IGNORE_INDEX} categories, got {self.num_classes}")
        class_of_category = {category_id: index for index, category_id in enumerate(self.category_ids)}
        image_files = {}
        for image in content["images"]:
            if isinstance(image, dict) and "id" in image and "file_name" in image:
                image_files[image["id"]] = image["file_name"]
        samples: list[SampleFiles] = []
        missing: list[str] = []
        for position, annotation in enumerate(content["annotations"]):
            try:
                png = png_dir / annotation["file_name"]
                segment_ids = np.array([int(s["id"]) for s in annotation["segments_info"]], dtype=np.int64)
                classes = np.array(
                    [class_of_category[int(s["category_id"])] for s in annotation["segments_info"]], dtype=np.int64
                )
                image_name = image_files[annotation["image_id"]]
            except KeyError as error:
                raise ValueError(
                    f"{json_path}: annotations[{position}] refers to unknown or missing {error} "
                    "(needs file_name, image_id of a listed image, segments_info with id and a known category_id)"
                ) from error
            image_path = image_dir / image_name
            lacking = [str(path) for path in (image_path, png) if not path.is_file()]
            if lacking:
                missing.append(f"{json_path}: annotation of image {image_name}: missing file(s) {', '.join(lacking)}")
                continue
            order = np.argsort(segment_ids)
            samples.append(
                SampleFiles(Path(image_name).stem, image_path, png, png, extra=(segment_ids[order], classes[order]))
            )
        super().__init__(samples, transform, skip_bad, missing, source=str(json_path))

    def _read_maps(self, files: SampleFiles) -> tuple[np.ndarray, np.ndarray]:
        panoptic = read_id_png(files.panoptic)
        segment_ids, classes = files.extra
        semantic = np.full(panoptic.shape, IGNORE_INDEX, dtype=np.int64)
        labelled = panoptic != 0
        if segment_ids.size:
            position = np.clip(np.searchsorted(segment_ids, panoptic), 0, segment_ids.size - 1)
            known = segment_ids[position] == panoptic
        else:
            position = np.zeros_like(panoptic)
            known = np.zeros(panoptic.shape, dtype=bool)
        unknown = labelled & ~known
        if unknown.any():
            y, x = (int(v[0]) for v in np.nonzero(unknown))
            raise ValueError(
                f"{files.panoptic}: segment id {int(panoptic[y, x])} at pixel (y={y}, x={x}) is not listed "
                "in the segments_info of this image"
            )
        semantic[labelled] = classes[position[labelled]]
        return semantic, panoptic
