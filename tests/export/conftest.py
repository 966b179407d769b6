"""Tiny generators saved as exported weights folders, and their exports, shared by the export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pansynth.models import Generator

CLASS_NAMES = ["road", "tree", "car", "person"]
THING_CLASSES = [2, 3]
IGNORE_INDEX = 255
NUM_CLASSES = len(CLASS_NAMES)
# Two model sizes (the exported spatial size is the generator's own, fixed).
SIZES = ((64, 64), (64, 128))

VARIANTS = {
    "paper": {"conv": "panoptic", "upsample": "panoptic"},
    "baseline": {"conv": "standard", "upsample": "nearest"},
}


def tiny_generator(variant: str, size: tuple[int, int], seed: int = 0) -> Generator:
    """A demo-shaped generator small enough for the tests; weights perturbed so every layer matters."""
    torch.manual_seed(seed)
    generator = Generator(
        num_classes=NUM_CLASSES, size=size, ignore_index=IGNORE_INDEX, ngf=2, spade_hidden=4, **VARIANTS[variant]
    )
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    generator.metadata = {"class_names": CLASS_NAMES, "thing_classes": THING_CLASSES, "step": 3}
    return generator.eval()


def save_run(directory: Path, generator: Generator) -> Path:
    """A run directory holding the generator in export/ (what `pansynth train` leaves)."""
    generator.save_pretrained(directory / "export")
    return directory


def procedural_maps(batch: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of classes, two same-class thing instances touching, one-pixel segments, unlabeled pixels."""
    height, width = size
    rng = np.random.default_rng(seed)
    semantic = np.zeros((batch, height, width), dtype=np.int64)
    panoptic = np.zeros((batch, height, width), dtype=np.int64)
    for b in range(batch):
        blocks = rng.integers(0, 2, size=(height // 8 + 1, width // 8 + 1))
        semantic[b] = np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:height, :width]
        panoptic[b] = semantic[b] * 1000
        # two car instances side by side, touching along a vertical line at an odd column
        top, left, middle = height // 4 + b, width // 5, width // 2 + 1
        semantic[b, top : top + height // 3, left : width - width // 5] = 2
        panoptic[b, top : top + height // 3, left:middle] = 2001
        panoptic[b, top : top + height // 3, middle : width - width // 5] = 2002
        # one-pixel segments: single person instances and single pixels of another class
        for k in range(6):
            y, x = rng.integers(0, height), rng.integers(0, width)
            semantic[b, y, x] = 3 if k % 2 else 1
            panoptic[b, y, x] = 3000 + k if k % 2 else 1000 + 2**40 + k
        semantic[b, 0, :3] = IGNORE_INDEX
        panoptic[b, 0, :3] = 7
    return torch.from_numpy(semantic), torch.from_numpy(panoptic)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[tuple[str, tuple[int, int]], Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for variant in VARIANTS:
        for size in SIZES:
            out[variant, size] = save_run(root / f"{variant}_{size[0]}x{size[1]}", tiny_generator(variant, size))
    return out


@pytest.fixture(scope="session")
def onnx_files(runs, tmp_path_factory) -> dict[tuple[str, tuple[int, int]], Path]:
    """Every run exported to ONNX: the paper model at 64x64 through the command line (with the
    in-browser painter when onnxruntime-web is at hand, which reuses the same ONNX bytes)."""
    from pansynth.cli.main import main
    from pansynth.export import export_onnx
    from pansynth.export.painter import find_ort_web
    from pansynth.inference import load_generator

    root = tmp_path_factory.mktemp("onnx")
    files = {}
    for (variant, size), run in runs.items():
        path = root / f"{variant}_{size[0]}x{size[1]}.onnx"
        if (variant, size) == ("paper", SIZES[0]):
            command = ["export", str(run), "--format", "onnx", "--out", str(path)]
            try:
                find_ort_web()
                command += ["--painter", str(root / "painter")]
            except FileNotFoundError:
                pass
            assert main(command) == 0
        else:
            export_onnx(load_generator(run), path)
        files[variant, size] = path
    return files
