"""COCO panoptic reader on a fixture written here; COCO-Stuff reader on the real samples in ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pansynth.data import CocoPanoptic, CocoStuff, build_dataset
from pansynth.data.coco_stuff import COCO_STUFF_CLASS_NAMES, COCO_STUFF_THING_CLASSES

COCO_STUFF_SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco_stuff_samples"

# Unsorted on purpose: classes follow sorted category id order.
CATEGORIES = [
    {"id": 184, "name": "tree-merged", "isthing": 0, "supercategory": "plant"},
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 119, "name": "sky-other-merged", "isthing": 0, "supercategory": "sky"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle"},
]


def write_coco_panoptic(root: Path, split: str = "val") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two images; returns name -> (expected semantic, expected panoptic)."""
    (root / "annotations" / f"panoptic_{split}2017").mkdir(parents=True)
    (root / f"{split}2017").mkdir()
    images, annotations, expected = [], [], {}
    for image_id, (name, height, width) in enumerate([("000000000139", 6, 8), ("000000000285", 5, 7)], start=1):
        ids = np.zeros((height, width), np.int64)  # 0 = void
        ids[: height // 2] = 5000  # sky
        ids[height // 2 :, : width // 2] = 1_234_567 + image_id  # a person, id beyond 16 bits
        ids[height // 2 :, width // 2 :] = 300  # a car touching the person
        ids[-1, -1] = 301  # another car
        ids[0, 0] = 0
        segments = [
            {"id": 5000, "category_id": 119, "iscrowd": 0},
            {"id": 1_234_567 + image_id, "category_id": 1, "iscrowd": 0},
            {"id": 300, "category_id": 3, "iscrowd": 0},
            {"id": 301, "category_id": 3, "iscrowd": 1},
            {"id": 77, "category_id": 184, "iscrowd": 0},  # listed but absent from the PNG
        ]
        rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "annotations" / f"panoptic_{split}2017" / f"{name}.png")
        photo = np.full((height, width, 3), 40 * image_id, np.uint8)
        Image.fromarray(photo).save(root / f"{split}2017" / f"{name}.jpg")
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": height, "width": width})
        annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments})
        # Classes by sorted category id: 1 person -> 0, 3 car -> 1, 119 sky -> 2, 184 tree -> 3.
        # VOID (id 0) is unknown: class and id -1.
        semantic = np.full((height, width), -1, np.int64)
        semantic[ids == 5000] = 2
        semantic[ids == 1_234_567 + image_id] = 0
        semantic[(ids == 300) | (ids == 301)] = 1
        expected[name] = (semantic, np.where(ids == 0, -1, ids))
    content = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations" / f"panoptic_{split}2017.json").write_text(json.dumps(content))
    return expected


def test_coco_panoptic_reader(tmp_path: Path) -> None:
    expected = write_coco_panoptic(tmp_path)
    dataset = CocoPanoptic(tmp_path, "val")
    assert dataset.num_classes == 4 and dataset.ignore_index == 255
    assert dataset.class_names == ["person", "car", "sky-other-merged", "tree-merged"]
    assert dataset.category_ids == [1, 3, 119, 184]
    assert dataset.thing_classes == [0, 1]
    assert len(dataset) == 2
    for i in range(2):
        sample = dataset[i]
        semantic, panoptic = expected[sample["name"]]
        np.testing.assert_array_equal(sample["semantic"].numpy(), semantic)
        np.testing.assert_array_equal(sample["panoptic"].numpy(), panoptic)
        assert sample["semantic"][0, 0] == -1 and sample["panoptic"][0, 0] == -1
        assert sample["image"].shape == (3, *semantic.shape)
    assert build_dataset("coco-panoptic", tmp_path, split="val")[1]["name"] == "000000000285"


def test_coco_panoptic_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"panoptic_val2017\.json: annotation file not found"):
        CocoPanoptic(tmp_path, "val")
    write_coco_panoptic(tmp_path)
    png = tmp_path / "annotations" / "panoptic_val2017" / "000000000139.png"
    ids = np.full((6, 8), 5000)
    ids[2, 3] = 999  # not in segments_info
    Image.fromarray(np.stack([ids % 256, ids // 256, ids * 0], -1).astype(np.uint8)).save(png)
    with pytest.raises(ValueError, match=r"000000000139\.png: segment id 999 at pixel \(y=2, x=3\) is not listed"):
        CocoPanoptic(tmp_path, "val")[0]
    (tmp_path / "val2017" / "000000000285.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"000000000285\.jpg"):
        CocoPanoptic(tmp_path, "val")
    json_path = tmp_path / "annotations" / "panoptic_val2017.json"
    content = json.loads(json_path.read_text())
    content["annotations"][0]["segments_info"][0]["category_id"] = 42
    json_path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"annotations\[0\] refers to unknown or missing 42"):
        CocoPanoptic(tmp_path, "val")


def test_coco_stuff_constants() -> None:
    assert len(COCO_STUFF_CLASS_NAMES) == 182 and len(COCO_STUFF_THING_CLASSES) == 80
    # Index = category id - 1: person is id 1, toothbrush id 90, banner (first stuff) id 92, wood id 182.
    assert COCO_STUFF_CLASS_NAMES[0] == "person" and COCO_STUFF_CLASS_NAMES[89] == "toothbrush"
    assert COCO_STUFF_CLASS_NAMES[91] == "banner" and COCO_STUFF_CLASS_NAMES[181] == "wood"
    assert COCO_STUFF_CLASS_NAMES[156] == "sky-other"
    assert 11 not in COCO_STUFF_THING_CLASSES  # "street sign" (id 12) is not a COCO category
    assert max(COCO_STUFF_THING_CLASSES) == 89


def test_coco_stuff_fixture_partition_and_errors(tmp_path: Path) -> None:
    for kind in ("img", "label", "inst"):
        (tmp_path / f"val_{kind}").mkdir()
    label = np.array([[0, 0, 0, 156], [0, 0, 255, 156], [5, 5, 255, 156]], np.uint8)
    inst = np.array([[0, 1, 1, 156], [0, 1, 255, 156], [0, 0, 255, 156]], np.uint8)
    Image.fromarray(label).save(tmp_path / "val_label" / "a.png")
    Image.fromarray(inst).save(tmp_path / "val_inst" / "a.png")
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "val_img" / "a.jpg")
    sample = CocoStuff(tmp_path, "val")[0]
    panoptic = sample["panoptic"].numpy()
    # person instance 0, person instance 1, sky, unlabeled, bus (label 5) instance 0: 5 segments.
    assert len(np.unique(panoptic)) == 5
    assert panoptic[0, 0] != panoptic[2, 0]  # same inst value, different label
    assert panoptic[0, 0] != panoptic[0, 1]  # same label, different inst
    assert panoptic[0, 0] == panoptic[1, 0]
    # Unlabeled (255) is unknown: class and id -1.
    np.testing.assert_array_equal(sample["semantic"].numpy(), np.where(label == 255, -1, label.astype(np.int64)))
    assert np.all(panoptic[label == 255] == -1) and np.all(panoptic[label != 255] >= 0)
    Image.fromarray(inst[:, :3]).save(tmp_path / "val_inst" / "a.png")
    with pytest.raises(ValueError, match=r"val_inst.a\.png: instance map is 3x3"):
        CocoStuff(tmp_path, "val")[0]
    label[0, 0] = 182
    Image.fromarray(label).save(tmp_path / "val_label" / "a.png")
    Image.fromarray(inst).save(tmp_path / "val_inst" / "a.png")
    with pytest.raises(ValueError, match=r"val_label.a\.png: class index 182 .* or the unknown value 255"):
        CocoStuff(tmp_path, "val")[0]
    with pytest.raises(FileNotFoundError, match=r"train_img: directory not found"):
        CocoStuff(tmp_path, "train")


@pytest.mark.skipif(not COCO_STUFF_SAMPLES.is_dir(), reason="shared COCO-Stuff samples not present")
def test_real_coco_stuff_samples() -> None:
    dataset = CocoStuff(COCO_STUFF_SAMPLES, "train")
    assert len(dataset) == len(list((COCO_STUFF_SAMPLES / "train_img").glob("*.jpg")))
    rng = np.random.default_rng(0)
    for index in range(len(dataset)):
        sample = dataset[index]
        name = sample["name"]
        label = np.array(Image.open(COCO_STUFF_SAMPLES / "train_label" / f"{name}.png")).astype(np.int64)
        inst = np.array(Image.open(COCO_STUFF_SAMPLES / "train_inst" / f"{name}.png")).astype(np.int64)
        photo = Image.open(COCO_STUFF_SAMPLES / "train_img" / f"{name}.jpg")
        assert sample["image"].shape == (3, photo.height, photo.width)
        semantic = sample["semantic"].numpy()
        panoptic = sample["panoptic"].numpy()
        # Unlabeled pixels are unknown: class and id -1, one segment whatever their inst value.
        unknown = label == 255
        label, inst = np.where(unknown, -1, label), np.where(unknown, -1, inst)
        assert np.all(panoptic[unknown] == -1)
        np.testing.assert_array_equal(semantic, label)
        # Partition check 1: each (label, inst) pair maps to one id and each id to one pair.
        pair_key = label.ravel() * 65536 + inst.ravel()
        _, id_rank = np.unique(panoptic.ravel(), return_inverse=True)
        num_combos = len(np.unique(pair_key * (id_rank.max() + 1) + id_rank))
        assert num_combos == len(np.unique(pair_key)) == len(np.unique(id_rank))
        # Partition check 2, literal: random pixel pairs share an id iff they share (label, inst).
        flat_label, flat_inst, flat_id = label.ravel(), inst.ravel(), panoptic.ravel()
        first = rng.integers(0, flat_id.size, 300)
        second = rng.integers(0, flat_id.size, 300)
        for p, q in zip(first.tolist(), second.tolist()):
            same_pair = flat_label[p] == flat_label[q] and flat_inst[p] == flat_inst[q]
            assert (flat_id[p] == flat_id[q]) == same_pair
        # Every pixel sharing (label, inst) with a sampled pixel shares its id.
        for p in first[:8].tolist():
            partners = np.flatnonzero((flat_label == flat_label[p]) & (flat_inst == flat_inst[p]))
            assert np.all(flat_id[partners] == flat_id[p])
        present = set(np.unique(label).tolist()) - {-1}
        assert all(0 <= c < 182 for c in present)
