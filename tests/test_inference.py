"""Inference API and the `synthesize` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pansynth.cli import main
from pansynth.data.io import write_id_png, write_label_png
from pansynth.data.transforms import resize_image
from pansynth.inference import MapFolder, load_generator, synthesize, synthesize_dataset
from pansynth.models import Generator


@pytest.fixture
def generator():
    torch.manual_seed(0)
    return Generator(num_classes=6, size=(64, 64), ngf=4, norm="instance").eval()


@pytest.fixture
def weights_dir(tmp_path, generator):
    return generator.save_pretrained(tmp_path / "weights")


def _maps(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    semantic = np.zeros((height, width), dtype=np.int64)
    semantic[height // 2 :] = 1
    semantic[rng.integers(0, height // 2), :] = 3
    panoptic = semantic * 1000 + (np.arange(width)[None, :] >= width // 2)
    return semantic, panoptic


def _write_maps(root, names_sizes) -> None:
    for kind in ("semantic", "panoptic"):
        (root / kind).mkdir(parents=True)
    for seed, (name, (height, width)) in enumerate(names_sizes):
        semantic, panoptic = _maps(height, width, seed)
        write_label_png(root / "semantic" / f"{name}.png", semantic)
        write_id_png(root / "panoptic" / f"{name}.png", panoptic)


def test_synthesize_at_model_size_is_the_generator(generator):
    semantic, panoptic = (torch.from_numpy(a) for a in _maps(64, 64, 0))
    with torch.no_grad():
        expected = generator(semantic[None], panoptic[None])[0]
    torch.testing.assert_close(synthesize(generator, semantic, panoptic), expected)


def test_synthesize_resizes_maps_by_nearest_and_the_image_back(generator):
    semantic, panoptic = (torch.from_numpy(a)[None] for a in _maps(128, 96, 1))
    # Nearest neighbour from 128x96 to 64x64 takes rows 1, 3, 5, ... and columns floor((2j + 1) * 96 / 128).
    rows = torch.arange(64) * 2 + 1
    cols = ((2 * torch.arange(64) + 1) * 96) // 128
    small_semantic, small_panoptic = semantic[:, rows][:, :, cols], panoptic[:, rows][:, :, cols]
    with torch.no_grad():
        expected = resize_image(generator(small_semantic, small_panoptic), (128, 96))
    out = synthesize(generator, semantic, panoptic)
    assert out.shape == (1, 3, 128, 96)
    torch.testing.assert_close(out, expected)


def test_synthesize_rejects_unknown_classes(generator):
    semantic = torch.full((64, 64), 9)
    with pytest.raises(ValueError, match=r"class values \[9\].*0\.\.5"):
        synthesize(generator, semantic, semantic)


def test_synthesize_cli_writes_pngs_at_the_map_size_and_never_overwrites(tmp_path, weights_dir, capsys):
    maps = tmp_path / "maps"
    _write_maps(maps, [("a", (64, 64)), ("b", (40, 50)), ("c", (64, 64))])
    out = tmp_path / "out"
    argv = [
        "synthesize",
        "--checkpoint",
        str(weights_dir),
        "--input",
        str(maps),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    sizes = {p.stem: Image.open(p).size for p in out.glob("*.png")}
    assert sizes == {"a": (64, 64), "b": (50, 40), "c": (64, 64)}
    # Same result as the Python API on the same maps.
    sample = MapFolder(maps)[1]
    expected = synthesize(load_generator(weights_dir), sample["semantic"], sample["panoptic"])
    expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "b.png")), expected)

    (out / "a.png").write_bytes(b"user's file")
    capsys.readouterr()
    assert main(argv) == 2
    assert "a.png already exists" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == b"user's file"
    assert main([*argv, "--overwrite"]) == 0
    assert Image.open(out / "a.png").size == (64, 64)


def test_synthesize_cli_single_pair_and_bad_input(tmp_path, weights_dir, capsys):
    maps = tmp_path / "maps"
    _write_maps(maps, [("one", (32, 48))])
    out = tmp_path / "out"
    argv = [
        "synthesize",
        "--checkpoint",
        str(weights_dir),
        "--input",
        str(maps / "semantic" / "one.png"),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 2
    assert "--panoptic" in capsys.readouterr().err
    assert main([*argv, "--panoptic", str(maps / "panoptic" / "one.png")]) == 0
    assert Image.open(out / "one.png").size == (48, 32)
    assert main(["synthesize", "--checkpoint", str(tmp_path / "nothing"), "--input", str(maps), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["synthesize", "--checkpoint", str(weights_dir), "--input", str(tmp_path), "--out", str(out)]) == 2
    assert "expected the folders semantic/ and panoptic/" in capsys.readouterr().err


def test_synthesize_dataset_on_a_dataset_reader(tmp_path, generator):
    from pansynth.data import build_dataset
    from pansynth.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", 4, 64, seed=0, val_fraction=0.5)
    dataset = build_dataset("folder", root, split="val")
    paths = synthesize_dataset(generator, dataset, tmp_path / "out", batch_size=3, progress=False)
    assert sorted(p.name for p in paths) == sorted(f"{dataset[i]['name']}.png" for i in range(len(dataset)))


def test_synthesize_checks_every_map_first_and_names_the_bad_file(tmp_path, weights_dir, capsys):
    maps = tmp_path / "maps"
    _write_maps(maps, [("a", (64, 64)), ("b", (64, 64)), ("c", (64, 64))])
    semantic, _ = _maps(64, 64, 0)
    semantic[10, 10] = 9  # a class the 6-class generator does not know, in the last map
    write_label_png(maps / "semantic" / "c.png", semantic)
    out = tmp_path / "out"
    argv = ["synthesize", "--checkpoint", str(weights_dir), "--input", str(maps), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(maps / "semantic" / "c.png") in err and "class values [9]" in err
    assert not out.exists()  # nothing written, so the corrected command needs no --overwrite
    semantic[10, 10] = 1
    write_label_png(maps / "semantic" / "c.png", semantic)
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]


def test_load_generator_reads_exports_only(tmp_path, generator):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000005.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"no generator found.*re-run its training command"):
        load_generator(run)
    with pytest.raises(ValueError, match="is a file"):
        load_generator(run / "checkpoints" / "step_00000005.pt")
    generator.save_pretrained(run / "export", metadata={"step": 5, "class_names": list("abcdef")})
    loaded = load_generator(run)
    assert loaded.metadata["step"] == 5 and loaded.metadata["class_names"] == list("abcdef")
