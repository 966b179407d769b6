"""Export meets the other features: maps with unknown pixels run through the exported ONNX graph as through
PyTorch; a style generator is refused with one line, before anything is written."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import CLASS_NAMES, IGNORE_INDEX, SIZES, procedural_maps
from pansynth.cli.main import main
from pansynth.export import export_program
from pansynth.export.onnx_file import onnx_bytes
from pansynth.inference import load_generator
from pansynth.models import Generator
from pansynth.ops.maps import UNKNOWN


def _with_unknown(batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural maps with an unknown block (class and id -1) across both touching cars, and ignore pixels."""
    semantic, panoptic = procedural_maps(batch, size, seed=5)
    height, width = size
    block = (slice(None), slice(height // 4, height // 2), slice(width // 3, 2 * width // 3))
    semantic[block], panoptic[block] = UNKNOWN, UNKNOWN
    return semantic, panoptic


@pytest.mark.parametrize("variant", ["paper", "baseline"])
def test_onnx_runtime_equals_pytorch_on_maps_with_unknown_pixels(onnx_files, runs, variant):
    size = SIZES[0]
    generator = load_generator(runs[variant, size])
    session = onnxruntime.InferenceSession(str(onnx_files[variant, size]), providers=["CPUExecutionProvider"])
    semantic, panoptic = _with_unknown(2, size)
    known_semantic, known_panoptic = procedural_maps(2, size, seed=5)
    # the ignore value is unknown too: the same image as -1 in both maps
    as_ignore = torch.where(semantic == UNKNOWN, IGNORE_INDEX, semantic)
    with torch.no_grad():
        expected = generator(semantic, panoptic).numpy()
        known = generator(known_semantic, known_panoptic).numpy()
    for sent in (semantic, as_ignore):
        (image,) = session.run(None, {"semantic": sent.numpy(), "panoptic": panoptic.numpy()})
        assert np.abs(image - expected).max() < 1e-4
    unknown = (semantic == UNKNOWN).numpy()[:, None].repeat(3, axis=1)
    assert np.abs(expected - known)[unknown].mean() > 1e-3  # the unknown block is not drawn as the map it hid


def _style_run(directory) -> Generator:
    torch.manual_seed(0)
    generator = Generator(len(CLASS_NAMES), size=SIZES[0], ngf=2, spade_hidden=4, style="instance", style_dim=3)
    generator.save_pretrained(directory / "export")
    return generator.eval()


def test_style_generator_export_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys):
    generator = _style_run(tmp_path / "run")
    for fmt, name in (("onnx", "model.onnx"), ("torch-export", "model.pt2")):
        out = tmp_path / "out" / name
        assert main(["export", str(tmp_path / "run"), "--format", fmt, "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and str(tmp_path / "run") in error and "model.style=none" in error
        assert not (tmp_path / "out").exists()
    # the library refuses before tracing too (tracing the code hash once crashed the exporter's process)
    with pytest.raises(ValueError, match="style generator"):
        onnx_bytes(generator)
    with pytest.raises(ValueError, match="style generator"):
        export_program(generator, tmp_path / "model.pt2")
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == ["config.json", "model.safetensors"]


def test_static_painter_info_names_the_unknown_value(runs):
    """The static painter's info.json names the unknown value, as /api/info does (its eraser paints it)."""
    from pansynth.export.painter import painter_info
    from pansynth.serve.classes import build_class_table

    generator = load_generator(runs["paper", SIZES[0]])
    classes = build_class_table(generator.num_classes, generator.ignore_index, generator.metadata)
    info = painter_info(generator, classes, "run")
    assert info["unknown"] == {"value": IGNORE_INDEX, "name": "unknown"}
    plain = Generator(len(CLASS_NAMES), size=SIZES[0], ngf=2, spade_hidden=4)  # no ignore value: 255
    assert painter_info(plain, build_class_table(len(CLASS_NAMES), None), "run")["unknown"]["value"] == 255
