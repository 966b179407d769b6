"""Decompression bombs: a small file whose header announces a huge image is refused from its header, in one
line naming the file, by every reader (maps and photos of the datasets, `synthesize`, `evaluate`)."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch

from pansynth.cli import main
from pansynth.data import build_dataset, write_synthetic_dataset
from pansynth.data.io import read_id_png, read_image, read_label_png
from pansynth.eval.evaluate import read_png
from pansynth.models import Generator


def write_bomb_png(path, width: int, height: int, color_type: int = 0) -> None:
    """A valid PNG header announcing ``width`` x ``height`` (8-bit; grey or RGB) and a token of pixel data:
    a reader that decoded it would need width*height bytes or more; it must not get that far."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 4096, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(20000, 20000), (10000, 10000)])  # above twice Pillow's limit; above it
@pytest.mark.parametrize("reader", [read_label_png, read_id_png, read_image, read_png])
def test_every_image_reader_refuses_a_bomb_in_one_line(tmp_path, reader, size):
    path = tmp_path / "bomb.png"
    write_bomb_png(path, *size, color_type=2 if reader in (read_image, read_png) else 0)
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match="image too large to decode safely") as error:
        reader(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_synthesize_refuses_a_bomb_map_in_one_line(tmp_path, capsys):
    Generator(num_classes=4, size=(32, 64), ngf=4, norm="instance").save_pretrained(tmp_path / "weights")
    semantic, panoptic = tmp_path / "semantic.png", tmp_path / "panoptic.png"
    write_bomb_png(semantic, 20000, 20000)
    write_bomb_png(panoptic, 64, 32)
    argv = ["synthesize", "--checkpoint", str(tmp_path / "weights"), "--input", str(semantic)]
    assert main([*argv, "--panoptic", str(panoptic), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(semantic) in err and "too large to decode safely" in err
    assert not (tmp_path / "out").exists()


def test_a_dataset_names_the_bomb_among_its_files(tmp_path):
    root = write_synthetic_dataset(tmp_path / "data", 3, 32, seed=0, val_fraction=0)
    photo = sorted((root / "train" / "images").iterdir())[1]
    write_bomb_png(photo, 20000, 20000, color_type=2)
    dataset = build_dataset("folder", root, split="train")
    with pytest.raises(ValueError, match="image too large to decode safely") as error:
        dataset[1]
    assert str(photo) in str(error.value)
    assert torch.is_tensor(dataset[0]["image"])
