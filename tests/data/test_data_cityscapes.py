"""Cityscapes reader on a tiny fixture in the official layout written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pansynth.data import Cityscapes, build_dataset
from pansynth.data.cityscapes import (
    CITYSCAPES_CLASS_NAMES,
    CITYSCAPES_THING_CLASSES,
    CITYSCAPES_TRAIN_CLASS_NAMES,
    CITYSCAPES_TRAIN_IDS,
)


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.full((8, 12), 7)  # road
    labels[:3] = 23  # sky
    labels[3:6, 0:4] = 26  # car
    labels[3:6, 4:8] = 26  # another car, touching the first
    labels[6:8, 8:12] = 24  # person crowd (no instance id)
    labels[3, 11] = 33  # one bicycle pixel
    instances = labels.copy()
    instances[3:6, 0:4] = 26001
    instances[3:6, 4:8] = 26002 + seed
    instances[3, 11] = 33000
    image = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    return image, labels, instances


def write_cityscapes(root: Path, split: str, cities: dict[str, list[str]]) -> dict[str, tuple]:
    arrays = {}
    seed = 0
    for city, stems in cities.items():
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            image, labels, instances = _scene(seed)
            seed += 1
            Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            gt = root / "gtFine" / split / city
            Image.fromarray(labels.astype(np.uint8)).save(gt / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(instances.astype(np.uint16)).save(gt / f"{stem}_gtFine_instanceIds.png")
            # Colour and polygon files of the official release are ignored.
            Image.fromarray(image).save(gt / f"{stem}_gtFine_color.png")
            arrays[stem] = (image, labels, instances)
    return arrays


def test_cityscapes_reads_labels_and_instance_ids(tmp_path: Path) -> None:
    arrays = write_cityscapes(
        tmp_path,
        "val",
        {"lindau": ["lindau_000001_000019"], "frankfurt": ["frankfurt_000000_000294", "frankfurt_000000_000576"]},
    )
    dataset = Cityscapes(tmp_path, "val")
    assert len(dataset) == 3
    assert [s.name for s in dataset.samples] == [
        "frankfurt_000000_000294",
        "frankfurt_000000_000576",
        "lindau_000001_000019",
    ]
    assert dataset.num_classes == 35 and dataset.ignore_index is None
    assert dataset.thing_classes == list(range(24, 34))
    for i in range(3):
        sample = dataset[i]
        _, labels, instances = arrays[sample["name"]]
        np.testing.assert_array_equal(sample["semantic"].numpy(), labels)
        np.testing.assert_array_equal(sample["panoptic"].numpy(), instances)
        panoptic = sample["panoptic"].numpy()
        # The two touching cars are different segments; the crowd is one segment of its own.
        assert panoptic[4, 1] != panoptic[4, 5]
        assert panoptic[7, 9] == 24
    assert build_dataset("cityscapes", tmp_path, split="val")[0]["name"] == "frankfurt_000000_000294"


def test_cityscapes_constants() -> None:
    assert len(CITYSCAPES_CLASS_NAMES) == 35 and len(CITYSCAPES_TRAIN_IDS) == 35
    assert [CITYSCAPES_CLASS_NAMES[i] for i in CITYSCAPES_THING_CLASSES] == [
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
    ]
    # Hand-checked rows of the official table.
    assert CITYSCAPES_TRAIN_IDS[7] == 0 and CITYSCAPES_CLASS_NAMES[7] == "road"
    assert CITYSCAPES_TRAIN_IDS[23] == 10 and CITYSCAPES_CLASS_NAMES[23] == "sky"
    assert CITYSCAPES_TRAIN_IDS[33] == 18 and CITYSCAPES_TRAIN_IDS[29] == 255
    assert sorted(t for t in CITYSCAPES_TRAIN_IDS if t != 255) == list(range(19))
    assert CITYSCAPES_TRAIN_CLASS_NAMES[:3] == ["road", "sidewalk", "building"]
    assert len(CITYSCAPES_TRAIN_CLASS_NAMES) == 19


def test_cityscapes_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit.train: folder not found"):
        Cityscapes(tmp_path, "train")
    write_cityscapes(tmp_path, "train", {"aachen": ["aachen_000000_000019", "aachen_000001_000019"]})
    gt = tmp_path / "gtFine" / "train" / "aachen"
    (gt / "aachen_000001_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"aachen_000001_000019_gtFine_instanceIds\.png"):
        Cityscapes(tmp_path, "train")
    dataset = Cityscapes(tmp_path, "train", skip_bad=True)
    assert len(dataset) == 1 and len(dataset.skipped) == 1
    labels = np.full((8, 12), 35, np.uint8)  # beyond the 35 classes
    Image.fromarray(labels).save(gt / "aachen_000000_000019_gtFine_labelIds.png")
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png: class index 35"):
        dataset.check_sample(0)
