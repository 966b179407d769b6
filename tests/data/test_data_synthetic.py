"""Procedural scenes: determinism, layout, touching same-class instances, no overwriting, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pansynth.cli import main
from pansynth.data import Folder, SyntheticScenes, write_synthetic_dataset
from pansynth.data.stats import touching_same_class_pairs
from pansynth.data.synthetic import SYNTHETIC_THING_CLASSES, scene, split_counts


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    first = _file_bytes(write_synthetic_dataset(tmp_path / "a", num=6, size=32, seed=5, val_fraction=0.34))
    second = _file_bytes(write_synthetic_dataset(tmp_path / "b", num=6, size=32, seed=5, val_fraction=0.34))
    other = _file_bytes(write_synthetic_dataset(tmp_path / "c", num=6, size=32, seed=6, val_fraction=0.34))
    assert first == second
    assert first.keys() == other.keys()
    images = [k for k in first if k.startswith("train/images/")]
    assert len(images) == 4 and len([k for k in first if k.startswith("val/images/")]) == 2
    assert all(first[k] != other[k] for k in images)
    info = json.loads(first["synthetic.json"])
    assert (info["seed"], info["train"], info["val"]) == (5, 4, 2)


def test_written_dataset_reads_back_as_folder_equal_to_in_memory_scenes(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "scenes", num=5, size=(24, 40), seed=1, val_fraction=0.2)
    train = Folder(root, split="train")
    val = Folder(root, "val")
    assert (len(train), len(val)) == (4, 1)
    assert train.class_names == ["sky", "ground", "wall", "disc", "box", "cone"]
    assert train.thing_classes == [3, 4, 5] and train.ignore_index is None
    memory = SyntheticScenes(4, (24, 40), seed=1)
    for i in range(4):
        written, generated = train[i], memory[i]
        assert written["name"] == generated["name"] == f"scene_{i:06d}"
        for key in ("image", "semantic", "panoptic"):
            torch.testing.assert_close(written[key], generated[key], rtol=0, atol=0)
    assert val[0]["name"] == "scene_000004"
    torch.testing.assert_close(val[0]["panoptic"], SyntheticScenes(1, (24, 40), seed=1, offset=4)[0]["panoptic"])


def test_scene_layout_and_instance_ids() -> None:
    for index in range(6):
        image, semantic, panoptic = scene(seed=0, index=index, size=64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert set(np.unique(semantic).tolist()) <= set(range(6))
        # Stuff id = class; thing id = class * 1000 + k: the class is recoverable from the id alone.
        np.testing.assert_array_equal(np.where(panoptic >= 1000, panoptic // 1000, panoptic), semantic)
        assert (semantic == 0).any() and (semantic == 1).any()  # sky and ground in every scene


def test_same_class_instances_touch_and_look_different() -> None:
    scenes_with_pairs = 0
    colour_gaps = []
    for index in range(12):
        image, semantic, panoptic = scene(seed=3, index=index, size=64)
        pairs = touching_same_class_pairs(semantic, panoptic, SYNTHETIC_THING_CLASSES)
        scenes_with_pairs += bool(pairs)
        for a, b in pairs:
            mean_a = image[panoptic == a].reshape(-1, 3).astype(float).mean(0)
            mean_b = image[panoptic == b].reshape(-1, 3).astype(float).mean(0)
            colour_gaps.append(np.abs(mean_a - mean_b).max())
    assert scenes_with_pairs >= 10
    # Neighbouring instances of one class differ in colour: averaging them is measurably wrong.
    assert np.median(colour_gaps) > 15


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_synthetic_dataset(out, num=2, size=16)
    assert _file_bytes(out) == {"notes.txt": b"keep me"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left behind
    (tmp_path / "empty").mkdir()
    write_synthetic_dataset(tmp_path / "empty", num=2, size=16, val_fraction=0.0)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["classes.json", "synthetic.json", "train"]


def test_argument_checks() -> None:
    assert split_counts(300, 0.1) == (270, 30)
    assert split_counts(3, 0.1) == (2, 1)
    assert split_counts(3, 0.0) == (3, 0)
    with pytest.raises(ValueError, match="leaves no training scene"):
        split_counts(1, 0.5)
    with pytest.raises(ValueError, match="val_fraction must lie in"):
        split_counts(10, 1.0)
    with pytest.raises(ValueError, match="size must be an integer >= 16"):
        scene(0, 0, 8)


def test_cli_synthetic_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["data", "synthetic", "--out", str(out), "--num", "5", "--size", "32", "--seed", "2"]) == 0
    assert "4 train, 1 val" in capsys.readouterr().out
    assert main(["data", "synthetic", "--out", str(out), "--num", "5", "--size", "32"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["data", "stats", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"== {out} [train]" in printed and f"== {out} [val]" in printed
    assert "images: 4" in printed and "images: 1" in printed
    assert main(["data", "stats", "--dataset", "folder", "--root", str(out), "--split", "train", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    (entry,) = stats.values()
    assert entry["num_images"] == 4 and entry["touching"]["images_with_pair"] >= 1
    assert main(["data", "check", str(out)]) == 0
    (out / "val" / "semantic" / "scene_000004.png").write_bytes(b"broken")
    assert main(["data", "check", str(out)]) == 1
    assert "scene_000004.png: not a readable image" in capsys.readouterr().out
    assert main(["data", "stats", str(out), "--split", "val"]) == 2
    assert "scene_000004.png: not a readable image" in capsys.readouterr().err
    assert main(["data", "stats", str(out), "--skip-bad"]) == 2  # the only val scene is bad
    assert "every sample is bad" in capsys.readouterr().err
    (out / "train" / "panoptic" / "scene_000001.png").unlink()
    assert main(["data", "stats", str(out), "--split", "train", "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "images: 3" in captured.out and "skipped bad samples: 1" in captured.out
    assert "skipped 1 sample(s) with missing partner files" in captured.err
    assert main(["data", "stats", str(tmp_path / "missing")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
