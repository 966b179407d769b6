"""Every reader turns its dataset's unknown value into class and id -1; other values stay refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_cityscapes import write_cityscapes

from pansynth.data import Cityscapes, Folder, build_dataset
from pansynth.data.cityscapes import CITYSCAPES_VOID_CLASSES


def test_cityscapes_void_classes_are_unknown_when_asked(tmp_path: Path) -> None:
    arrays = write_cityscapes(tmp_path, "val", {"ulm": ["ulm_000000_000001"]})
    _, labels, instances = arrays["ulm_000000_000001"]
    labels, instances = labels.copy(), instances.copy()
    labels[0, :5] = [0, 1, 4, 6, 7]  # unlabeled, ego vehicle, static, ground (void) and road (not void)
    instances[0, :5] = labels[0, :5]  # stuff: the instance id is the label id
    gt = tmp_path / "gtFine" / "val" / "ulm"
    Image.fromarray(labels.astype(np.uint8)).save(gt / "ulm_000000_000001_gtFine_labelIds.png")
    Image.fromarray(instances.astype(np.uint16)).save(gt / "ulm_000000_000001_gtFine_instanceIds.png")
    plain = Cityscapes(tmp_path, "val")[0]  # the paper's recipe: void labels are classes
    np.testing.assert_array_equal(plain["semantic"].numpy(), labels)
    sample = build_dataset("cityscapes", tmp_path, "val", unknown_classes=CITYSCAPES_VOID_CLASSES)[0]
    void = np.isin(labels, CITYSCAPES_VOID_CLASSES)
    assert void.sum() == 4
    np.testing.assert_array_equal(sample["semantic"].numpy(), np.where(void, -1, labels))
    np.testing.assert_array_equal(sample["panoptic"].numpy(), np.where(void, -1, instances))
    with pytest.raises(ValueError, match="unknown_classes must be Cityscapes label ids 0..34, got 35"):
        Cityscapes(tmp_path, "val", unknown_classes=[35])
    with pytest.raises(ValueError, match="unknown_classes applies to cityscapes only"):
        build_dataset("folder", tmp_path, unknown_classes=[0])


def _folder(root: Path, unknown: int | None, semantic: np.ndarray) -> None:
    classes = [{"name": "sky", "isthing": False}, {"name": "car", "isthing": True}]
    (root / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": None, "unknown": unknown}))
    for kind in ("images", "semantic", "panoptic"):
        (root / kind).mkdir(exist_ok=True)
    Image.fromarray(semantic.astype(np.uint8)).save(root / "semantic" / "a.png")
    Image.fromarray((semantic * 10 + 3).astype(np.uint16)).save(root / "panoptic" / "a.png")
    Image.fromarray(np.zeros((*semantic.shape, 3), np.uint8)).save(root / "images" / "a.png")


def test_folder_unknown_value_of_classes_json(tmp_path: Path) -> None:
    semantic = np.array([[0, 0, 1], [200, 1, 200]])
    _folder(tmp_path, 200, semantic)
    dataset = Folder(tmp_path)
    assert dataset.unknown_values == (200,) and dataset.ignore_index is None
    sample = dataset[0]
    np.testing.assert_array_equal(sample["semantic"].numpy(), [[0, 0, 1], [-1, 1, -1]])
    np.testing.assert_array_equal(sample["panoptic"].numpy(), [[3, 3, 13], [-1, 13, -1]])
    # A value that is neither a class nor the unknown value: a one-line error naming the file.
    semantic[0, 2] = 7
    _folder(tmp_path, 200, semantic)
    with pytest.raises(ValueError) as error:
        Folder(tmp_path)[0]
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "semantic" / "a.png") in message
    assert "class index 7 at pixel (y=0, x=2) is outside 0..1 or the unknown value 200" in message
    # Without an unknown value, 200 is refused too.
    _folder(tmp_path, None, np.array([[0, 200]]))
    with pytest.raises(ValueError, match=r"class index 200 .* \(this dataset names no unknown value\)"):
        Folder(tmp_path)[0]
    _folder(tmp_path, 1, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="unknown must be null or an integer >= the number of classes"):
        Folder(tmp_path)
