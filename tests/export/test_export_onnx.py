"""`pansynth export`: ONNX files run by ONNX Runtime and torch.export programs equal the eager generator;
standard operators only; one-line errors, nothing written or overwritten without --force;
`pansynth synthesize --onnx`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

from conftest import CLASS_NAMES, SIZES, procedural_maps
from pansynth import __version__
from pansynth.cli.main import main
from pansynth.data.io import write_id_png, write_label_png
from pansynth.export import OnnxGenerator, onnx_metadata
from pansynth.inference import load_generator

CASES = [(variant, size) for variant in ("paper", "baseline") for size in SIZES]


@pytest.mark.parametrize(("variant", "size"), CASES, ids=lambda v: v if isinstance(v, str) else f"{v[0]}x{v[1]}")
def test_onnx_runtime_equals_pytorch(onnx_files, runs, variant, size):
    generator = load_generator(runs[variant, size])
    session = onnxruntime.InferenceSession(str(onnx_files[variant, size]), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        semantic, panoptic = procedural_maps(batch, size, seed=batch)
        with torch.no_grad():
            expected = generator(semantic, panoptic).numpy()
        (image,) = session.run(None, {"semantic": semantic.numpy(), "panoptic": panoptic.numpy()})
        assert image.shape == expected.shape == (batch, 3, *size)
        assert np.abs(image - expected).max() < 1e-4
        assert expected.std() > 1e-3  # an image that depends on the map, not a constant


def test_the_maps_exercise_alignment_and_hole_filling():
    from pansynth.ops import upsample_choices

    semantic, panoptic = procedural_maps(2, SIZES[0], seed=1)
    choices = torch.cat([upsample_choices(panoptic[:, :: 2 * s, :: 2 * s], panoptic[:, ::s, ::s]).flatten()
                         for s in (1, 2, 4)])  # fmt: skip
    assert {0, 1, 4} <= set(choices.unique().tolist())  # nearest, a corrected neighbour, holes


def test_onnx_file_is_standard_and_carries_its_metadata(onnx_files):
    path = onnx_files["paper", SIZES[0]]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert all(opset.version >= 17 for opset in model.opset_import if opset.domain in ("", "ai.onnx"))
    assert not {"Loop", "If", "Scan", "NonZero", "Unique"} & {node.op_type for node in model.graph.node}
    props = {entry.key: entry.value for entry in model.metadata_props}
    assert json.loads(props["class_names"]) == CLASS_NAMES
    assert props["size"] == f"{SIZES[0][0]}x{SIZES[0][1]}" and props["pansynth_version"] == __version__
    metadata = onnx_metadata(path)
    assert metadata["num_classes"] == 4 and metadata["ignore_index"] == 255 and metadata["thing_classes"] == [2, 3]
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == list(SIZES[0])


@pytest.fixture(scope="module")
def program_file(runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "paper.pt2"
    assert main(["export", str(runs["paper", SIZES[0]]), "--format", "torch-export", "--out", str(path)]) == 0
    return path


def test_torch_export_program_equals_eager_and_needs_no_pansynth(program_file, runs, tmp_path):
    generator = load_generator(runs["paper", SIZES[0]])
    semantic, panoptic = procedural_maps(2, SIZES[0], seed=3)
    np.save(tmp_path / "semantic.npy", semantic.numpy())
    np.save(tmp_path / "panoptic.npy", panoptic.numpy())
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["pansynth"] = None  # any import of pansynth fails from here on
        import numpy as np, torch
        extra = {{"pansynth.json": ""}}
        program = torch.export.load({str(program_file)!r}, extra_files=extra)
        namespaces = {{getattr(n.target, "namespace", "aten") for n in program.graph.nodes if n.op == "call_function"}}
        assert namespaces <= {{"aten", "prims"}}, namespaces
        semantic = torch.from_numpy(np.load({str(tmp_path / "semantic.npy")!r}))
        panoptic = torch.from_numpy(np.load({str(tmp_path / "panoptic.npy")!r}))
        with torch.no_grad():
            images = [program.module()(semantic[:b], panoptic[:b]) for b in (1, 2)]
        np.save({str(tmp_path / "image.npy")!r}, images[1].numpy())
        np.save({str(tmp_path / "image1.npy")!r}, images[0].numpy())
        open({str(tmp_path / "meta.json")!r}, "w").write(extra["pansynth.json"])
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    with torch.no_grad():
        expected = generator(semantic, panoptic).numpy()
    # The graph engine sums in another order than the PyTorch engine: float32 rounding apart.
    np.testing.assert_allclose(np.load(tmp_path / "image.npy"), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "image1.npy"), expected[:1], rtol=0, atol=1e-4)
    assert json.loads((tmp_path / "meta.json").read_text())["class_names"] == CLASS_NAMES


def _write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage_config", "garbage_checkpoint"])
@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_a_garbage_or_missing_run_is_a_one_line_error_and_nothing_is_written(tmp_path, capsys, kind, fmt):
    run = tmp_path / "run"
    if kind == "empty":
        run.mkdir()
    elif kind == "garbage_config":
        _write(run / "export" / "config.json", b"{not json")
        _write(run / "export" / "model.safetensors", b"\x00garbage")
    elif kind == "garbage_checkpoint":
        run = _write(tmp_path / "checkpoints" / "step_00000010.pt", b"PK\x03\x04 not a checkpoint")
    out = tmp_path / "out" / ("model.onnx" if fmt == "onnx" else "model.pt2")
    code = main(["export", str(run), "--format", fmt, "--out", str(out), "--painter", str(tmp_path / "site"),
                 "--ort-web", str(tmp_path)])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1 and error.startswith("pansynth export: error:")
    assert not out.exists() and not (tmp_path / "site").exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_an_existing_out_is_kept_without_force_and_replaced_with_it(runs, tmp_path, capsys):
    out = _write(tmp_path / "model.onnx", b"keep me")
    run = runs["baseline", SIZES[0]]
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    site = _write(tmp_path / "site" / "notes.txt", b"mine")
    assert main(["export", str(run), "--painter", str(site.parent), "--ort-web", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err and site.read_bytes() == b"mine"
    assert main(["export", str(run), "--out", str(out), "--opset", "16", "--force"]) == 2
    assert "--opset" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt2")]) == 2  # suffix of another format
    assert main(["export", str(run), "--out", str(out), "--force"]) == 0
    onnx.checker.check_model(onnx.load(str(out)))


def test_synthesize_with_onnx_equals_synthesize_with_the_checkpoint(onnx_files, runs, tmp_path):
    size = SIZES[1]
    semantic, panoptic = procedural_maps(1, size, seed=5)
    maps = tmp_path / "maps"
    for kind in ("semantic", "panoptic"):
        (maps / kind).mkdir(parents=True)
    write_label_png(maps / "semantic" / "scene.png", semantic[0].numpy().astype(np.uint8))
    write_id_png(maps / "panoptic" / "scene.png", panoptic[0].numpy() % 2**24)
    common = ["synthesize", "--input", str(maps)]
    assert main([*common, "--onnx", str(onnx_files["paper", size]), "--out", str(tmp_path / "onnx")]) == 0
    assert main([*common, "--checkpoint", str(runs["paper", size]), "--out", str(tmp_path / "torch")]) == 0
    via_onnx = np.asarray(Image.open(tmp_path / "onnx" / "scene.png")).astype(int)
    via_torch = np.asarray(Image.open(tmp_path / "torch" / "scene.png")).astype(int)
    assert np.abs(via_onnx - via_torch).max() <= 1 and via_torch.std() > 1
    generator = OnnxGenerator(onnx_files["paper", size])
    assert generator.output_size == size and generator.num_classes == 4


def test_an_onnx_file_without_pansynth_metadata_is_refused(tmp_path, capsys):
    bare = tmp_path / "bare.onnx"
    torch.onnx.export(torch.nn.Identity(), (torch.zeros(1),), str(bare), dynamo=False)
    code = main(["synthesize", "--onnx", str(bare), "--input", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "no pansynth metadata" in capsys.readouterr().err
