"""`pansynth evaluate` with unknown pixels in every dataset format, and with --corrupt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pansynth.cli import main
from pansynth.data.io import read_image
from pansynth.data.transforms import resize_map
from pansynth.inference import synthesize
from pansynth.models import Generator
from pansynth.viz import image_to_uint8

SIZE = ["--size", "32", "64"]


def _export(path, num_classes, ignore_index=None):
    torch.manual_seed(0)
    Generator(num_classes, size=(32, 64), ignore_index=ignore_index, ngf=2, spade_hidden=8).save_pretrained(path)
    return path


def _maps(seed):
    """8x16 maps: class 0 stuff (id 0), class 1 things (two instances), an unknown block (-1)."""
    semantic = np.zeros((8, 16), np.int64)
    semantic[2:6, 2:12] = 1
    panoptic = semantic * 100
    panoptic[2:6, 7:12] = 101
    unknown = np.zeros((8, 16), bool)
    unknown[:3, 10 + seed :] = True
    return semantic, panoptic, unknown


def _folder(root):
    classes = [{"name": "sky", "isthing": False}, {"name": "car", "isthing": True}]
    root.mkdir()
    (root / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": None, "unknown": 255}))
    for kind in ("images", "semantic", "panoptic"):
        (root / kind).mkdir()
    for seed in range(2):
        semantic, panoptic, unknown = _maps(seed)
        Image.fromarray(np.where(unknown, 255, semantic).astype(np.uint8)).save(root / "semantic" / f"s{seed}.png")
        Image.fromarray(np.where(unknown, 0, panoptic).astype(np.uint16)).save(root / "panoptic" / f"s{seed}.png")
        Image.fromarray(np.full((8, 16, 3), 90 * seed, np.uint8)).save(root / "images" / f"s{seed}.png")
    return root, 2, None, []


def _coco_stuff(root):
    for kind in ("img", "label", "inst"):
        (root / f"val_{kind}").mkdir(parents=True)
    semantic, panoptic, unknown = _maps(0)
    label = np.where(semantic == 1, 2, 156)  # car (thing index 2), sky-other (stuff 156)
    Image.fromarray(np.where(unknown, 255, label).astype(np.uint8)).save(root / "val_label" / "a.png")
    inst = np.where(semantic == 1, (panoptic == 101).astype(np.int64), label)
    Image.fromarray(np.where(unknown, 255, inst).astype(np.uint8)).save(root / "val_inst" / "a.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(root / "val_img" / "a.jpg")
    return root, 182, 255, []


def _coco_panoptic(root):
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    (root / "val2017").mkdir()
    semantic, panoptic, unknown = _maps(0)
    ids = np.where(semantic == 1, panoptic + 1000, 7)
    ids[unknown] = 0  # VOID
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "annotations" / "panoptic_val2017" / "a.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(root / "val2017" / "a.jpg")
    segments = [{"id": 7, "category_id": 119}, {"id": 1100, "category_id": 3}, {"id": 1101, "category_id": 3}]
    content = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}],
        "categories": [{"id": 3, "name": "car", "isthing": 1}, {"id": 119, "name": "sky", "isthing": 0}],
    }
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(content))
    return root, 2, 255, []


def _cityscapes(root):
    (root / "leftImg8bit" / "val" / "ulm").mkdir(parents=True)
    (root / "gtFine" / "val" / "ulm").mkdir(parents=True)
    semantic, panoptic, unknown = _maps(0)
    labels = np.where(semantic == 1, 26, 23)  # car, sky
    labels[unknown] = 0  # "unlabeled", read as unknown with --unknown-classes 0
    instances = np.where(semantic == 1, 26000 + (panoptic == 101), labels)
    gt = root / "gtFine" / "val" / "ulm"
    Image.fromarray(labels.astype(np.uint8)).save(gt / "ulm_000000_000001_gtFine_labelIds.png")
    Image.fromarray(instances.astype(np.uint16)).save(gt / "ulm_000000_000001_gtFine_instanceIds.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(
        root / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000001_leftImg8bit.png"
    )
    return root, 35, None, ["--unknown-classes", "0"]


@pytest.mark.parametrize("kind", ["folder", "coco-stuff", "coco-panoptic", "cityscapes"])
def test_evaluate_accepts_unknown_pixels_in_every_format(tmp_path, kind, capsys):
    writer = {"folder": _folder, "coco-stuff": _coco_stuff, "coco-panoptic": _coco_panoptic, "cityscapes": _cityscapes}
    root, num_classes, ignore_index, extra = writer[kind](tmp_path / "data")
    export = _export(tmp_path / "export", num_classes, ignore_index)
    split = [] if kind == "folder" else ["--split", "val"]
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(export), "--dataset", kind, "--root", str(root), *split, *SIZE,
            "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads((out / "metrics.json").read_text())
    assert result["images"] >= 1 and "separation" in result["metrics"]
    if kind == "folder":  # the image is the generator's on the maps with class and id -1 where unknown
        semantic, panoptic, unknown = (resize_map(torch.from_numpy(m), (32, 64)) for m in _maps(0))
        generator = Generator.from_pretrained(export)
        expected = synthesize(generator, semantic.masked_fill(unknown, -1), panoptic)
        written = read_image(out / "images" / "s0.png")
        np.testing.assert_array_equal(image_to_uint8(written), image_to_uint8(expected))


def test_evaluate_refuses_a_value_neither_class_nor_unknown(tmp_path, capsys):
    root, *_ = _folder(tmp_path / "data")
    Image.fromarray(np.full((8, 16), 7, np.uint8)).save(root / "semantic" / "s1.png")
    export = _export(tmp_path / "export", 2)
    assert main(["evaluate", "--checkpoint", str(export), "--dataset", "folder", "--root", str(root), *SIZE]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(root / "semantic" / "s1.png") in error and "class index 7" in error


def test_evaluate_with_corruptions(tmp_path, capsys):
    root, *_ = _folder(tmp_path / "data")
    export = _export(tmp_path / "export", 2)
    base = ["evaluate", "--checkpoint", str(export), "--dataset", "folder", "--root", str(root), *SIZE]
    assert main([*base, "--corrupt", "edge:1,random", "--corrupt", "drop:1", "--corrupt-seed", "3"]) == 0
    result = json.loads((export / "eval-edge1-random0.1-drop1" / "metrics.json").read_text())
    assert result["corruptions"] == ["edge:1", "random:0.1", "drop:1"] and result["corrupt_seed"] == 3
    assert "maps corrupted by edge:1, random:0.1, drop:1" in capsys.readouterr().out
    assert main([*base, "--corrupt", "blur:2"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "pansynth evaluate: error: unknown corruption 'blur'; choose NAME[:LEVEL] from ds[:4], edge[:2], "
        "random[:0.1], regions[:3], drop[:0.5], merge[:1], split[:1], no_instances[:1], jitter[:4]"
    )
    assert main([*base, "--corrupt", "random:7"]) == 2
    assert "corruption random: level 7 is not valid; expected a number in 0..1" in capsys.readouterr().err
    images = ["evaluate", "--images", str(tmp_path), "--dataset", "folder", "--root", str(root), "--corrupt", "ds"]
    assert main(images) == 2
    assert "--corrupt needs --checkpoint RUN" in capsys.readouterr().err


def test_synthesize_reads_the_models_unknown_value_from_map_files(tmp_path, capsys):
    root, *_ = _folder(tmp_path / "data")  # semantic PNGs hold 255 where unknown, panoptic 0 there
    export = _export(tmp_path / "export", 2)
    out = tmp_path / "out"
    assert main(["synthesize", "--checkpoint", str(export), "--input", str(root), "--out", str(out)]) == 0
    semantic, panoptic, unknown = (torch.from_numpy(m) for m in _maps(1))
    expected = synthesize(Generator.from_pretrained(export), semantic.masked_fill(unknown, -1), panoptic)
    np.testing.assert_array_equal(image_to_uint8(read_image(out / "s1.png")), image_to_uint8(expected))
    Image.fromarray(np.full((8, 16), 254, np.uint8)).save(root / "semantic" / "s1.png")
    capsys.readouterr()
    assert main(["synthesize", "--checkpoint", str(export), "--input", str(root), "--out", str(tmp_path / "o2")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "s1.png holds class values [254]" in error and "unknown value 255" in error
