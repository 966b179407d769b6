"""Folder reader: fixture folders written here (16-bit and RGB ids), bad input, skip_bad, pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pansynth.data import Folder, build_dataset

CLASSES = {
    "classes": [
        {"name": "sky", "isthing": False},
        {"name": "road", "isthing": False},
        {"name": "car", "isthing": True},
        {"name": "person", "isthing": True},
    ],
    "ignore_index": 255,
}


def _maps(seed: int, height: int = 12, width: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    semantic = rng.integers(0, 4, size=(height, width))
    semantic[0, 0] = 255  # one ignored pixel
    # Distinct ids per class and a few instances per thing class, some above 255.
    panoptic = semantic * 1000 + rng.integers(1, 4, size=(height, width)) * (semantic >= 2)
    panoptic[0, 0] = 7  # the ignored pixel: a segment of its own
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return image, semantic, panoptic


def write_folder(
    root: Path, names: list[str], split: str | None = None, rgb_ids: bool = False, image_ext: str = ".png"
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Write a Folder dataset by hand (independently of pansynth's writers)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    base = root / split if split else root
    for kind in ("images", "semantic", "panoptic"):
        (base / kind).mkdir(parents=True, exist_ok=True)
    arrays = {}
    for seed, name in enumerate(names):
        image, semantic, panoptic = _maps(seed)
        if image_ext == ".jpg":
            Image.fromarray(image).save(base / "images" / f"{name}.jpg", quality=95)
        else:
            Image.fromarray(image).save(base / "images" / f"{name}.png")
        Image.fromarray(semantic.astype(np.uint8)).save(base / "semantic" / f"{name}.png")
        if rgb_ids:
            ids = panoptic * 300  # beyond 16 bits: needs the RGB encoding
            rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)
            Image.fromarray(rgb).save(base / "panoptic" / f"{name}.png")
            panoptic = ids
        else:
            Image.fromarray(panoptic.astype(np.uint16)).save(base / "panoptic" / f"{name}.png")
        arrays[name] = (image, semantic, panoptic)
    return arrays


@pytest.mark.parametrize("rgb_ids", [False, True])
def test_folder_reads_exact_values(tmp_path: Path, rgb_ids: bool) -> None:
    arrays = write_folder(tmp_path / "ds", ["b", "a", "c"], split="train", rgb_ids=rgb_ids)
    dataset = Folder(tmp_path / "ds", split="train")
    assert len(dataset) == 3
    assert dataset.num_classes == 4
    assert dataset.ignore_index == 255
    assert dataset.class_names == ["sky", "road", "car", "person"]
    assert dataset.thing_classes == [2, 3]
    assert [dataset[i]["name"] for i in range(3)] == ["a", "b", "c"]  # sorted by name
    for i in range(3):
        sample = dataset[i]
        image, semantic, panoptic = arrays[sample["name"]]
        assert sample["semantic"].dtype == torch.int64 and sample["panoptic"].dtype == torch.int64
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 12, 16)
        # The ignore value 255 of classes.json is unknown: class and id -1.
        assert (semantic == 255).any()
        np.testing.assert_array_equal(sample["semantic"].numpy(), np.where(semantic == 255, -1, semantic))
        np.testing.assert_array_equal(sample["panoptic"].numpy(), np.where(semantic == 255, -1, panoptic))
        expected = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
        torch.testing.assert_close(sample["image"], expected)
        assert sample["image"].min() >= -1 and sample["image"].max() <= 1
    if rgb_ids:
        assert int(dataset[0]["panoptic"].max()) > 65535


def test_folder_without_split_and_jpg_and_build_dataset(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["x", "y"], image_ext=".jpg")
    dataset = build_dataset("folder", tmp_path / "ds")
    assert len(dataset) == 2 and dataset[1]["name"] == "y"
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        build_dataset("nope", tmp_path / "ds")


def test_folder_default_collate_and_pickle(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["a", "b", "c"])
    dataset = pickle.loads(pickle.dumps(Folder(tmp_path / "ds")))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 12, 16)
    assert batch["panoptic"].shape == (2, 12, 16)
    assert batch["name"] == ["a", "b"]


def test_missing_partner_file_names_it(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["a", "b"])
    (tmp_path / "ds" / "panoptic" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.png.*missing partner.*panoptic"):
        Folder(tmp_path / "ds")


def test_map_without_image_is_reported(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["a", "b"])
    (tmp_path / "ds" / "images" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"semantic.b\.png: no image"):
        Folder(tmp_path / "ds")


def test_size_mismatch_names_file(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["a"])
    Image.fromarray(np.zeros((10, 16, 3), np.uint8)).save(tmp_path / "ds" / "images" / "a.png")
    with pytest.raises(ValueError, match=r"images.a\.png: image is 10x16.*12x16"):
        Folder(tmp_path / "ds")[0]
    write_folder(tmp_path / "ds2", ["a"])
    Image.fromarray(np.zeros((12, 15), np.uint16)).save(tmp_path / "ds2" / "panoptic" / "a.png")
    with pytest.raises(ValueError, match=r"panoptic.a\.png: panoptic map is 12x15"):
        Folder(tmp_path / "ds2")[0]


def test_class_index_out_of_range_names_file_and_value(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["a"])
    semantic = np.zeros((12, 16), np.uint8)
    semantic[3, 5] = 4  # 4 classes (0..3), ignore 255
    Image.fromarray(semantic).save(tmp_path / "ds" / "semantic" / "a.png")
    with pytest.raises(ValueError, match=r"semantic.a\.png: class index 4 at pixel \(y=3, x=5\) is outside 0\.\.3"):
        Folder(tmp_path / "ds")[0]


def test_truncated_and_unreadable_files(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["a", "b"])
    image_path = tmp_path / "ds" / "images" / "a.png"
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"images.a\.png: unreadable or truncated"):
        Folder(tmp_path / "ds")[0]
    (tmp_path / "ds" / "semantic" / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"semantic.b\.png: not a readable image"):
        Folder(tmp_path / "ds")[1]


def test_rgb_semantic_map_is_rejected(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", ["a"])
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "ds" / "semantic" / "a.png")
    with pytest.raises(ValueError, match=r"semantic.a\.png: expected a single-channel"):
        Folder(tmp_path / "ds")[0]


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    write_folder(tmp_path / "ds", [])
    with pytest.raises(FileNotFoundError, match="no samples found"):
        Folder(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="split folder 'val' not found"):
        Folder(tmp_path / "ds", split="val")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        Folder(tmp_path / "nowhere")
    write_folder(tmp_path / "splits", ["a"], split="train")
    # The dataset's own default split: its only split...
    only = Folder(tmp_path / "splits")
    assert only.split == "train" and len(only) == 1
    # ... and with several, the user names one.
    write_folder(tmp_path / "splits", ["b"], split="val")
    with pytest.raises(FileNotFoundError, match="has the splits train, val: choose one"):
        Folder(tmp_path / "splits")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match=r"classes\.json: file not found"):
        Folder(tmp_path / "bare")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"classes": []}', "non-empty list 'classes'"),
        ('{"classes": [{"name": "a", "isthing": "yes"}]}', r"classes\[0\]\.isthing"),
        ('{"classes": [{"name": "a"}, {"name": "b"}], "ignore_index": 1}', "ignore_index must be null"),
    ],
)
def test_bad_classes_json(tmp_path: Path, content: str, message: str) -> None:
    write_folder(tmp_path / "ds", ["a"])
    (tmp_path / "ds" / "classes.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        Folder(tmp_path / "ds")


def test_skip_bad_counts_and_substitutes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = ["a", "b", "c", "d", "e"]
    arrays = write_folder(tmp_path / "ds", names)
    (tmp_path / "ds" / "semantic" / "b.png").unlink()  # missing partner: dropped at construction
    data = (tmp_path / "ds" / "panoptic" / "c.png").read_bytes()
    (tmp_path / "ds" / "panoptic" / "c.png").write_bytes(data[:40])  # truncated
    bad_class = arrays["e"][1].astype(np.uint8).copy()
    bad_class[1, 1] = 9
    Image.fromarray(bad_class).save(tmp_path / "ds" / "semantic" / "e.png")
    before = {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}

    with caplog.at_level("WARNING", logger="pansynth.data"):
        dataset = Folder(tmp_path / "ds", skip_bad=True)
        assert len(dataset) == 4
        assert len(dataset.skipped) == 1
        returned = [dataset[i]["name"] for i in range(len(dataset))]
    # a, c->d (c is bad), d, e->a (wraps around: e is bad)
    assert returned == ["a", "d", "d", "a"]
    assert len(dataset.skipped) == 3
    assert sorted(name for name, _ in dataset.skipped if name) == ["c", "e"]
    assert "skipped 1 sample(s) with missing partner files" in caplog.text
    assert "skipping bad sample c" in caplog.text
    # Nothing was written into the dataset folder.
    after = {p: p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    assert after == before
    # Without skip_bad the same folder stops at the first problem.
    with pytest.raises(FileNotFoundError):
        Folder(tmp_path / "ds")
