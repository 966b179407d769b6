"""The benchmark's command line: every group of rows it runs is listed, and each runs its rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pansynth import bench


def test_help_and_usage_list_every_row_group(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert ",".join(bench.ROW_GROUPS) in text
    assert f"--rows {','.join(bench.ROW_GROUPS)}" in " ".join(bench.__doc__.split())
    assert set(bench.ROW_GROUPS) == {"conv", "upsample", "generator", "serve", "export"}


@pytest.mark.parametrize("group", bench.ROW_GROUPS)
def test_each_row_group_runs_its_own_rows_only(group, monkeypatch):
    # The measurements are replaced by markers: what is checked is which rows a group selects.
    def row(name):
        return bench.BenchRow(name, "", 1.0, 1.0)

    monkeypatch.setattr(bench, "bench_conv", lambda *args, **kwargs: [row("conv")])
    monkeypatch.setattr(bench, "bench_upsample", lambda *args, **kwargs: row("upsample"))
    monkeypatch.setattr(bench, "bench_generator", lambda *args, **kwargs: [row("generator")])
    monkeypatch.setattr(bench, "bench_style_step", lambda *args, **kwargs: row("generator"))
    monkeypatch.setattr(bench, "bench_export", lambda *args, **kwargs: row("export"))
    monkeypatch.setattr(bench, "bench_serve_synthesis", lambda *args, **kwargs: row("serve"))
    rows, _ = bench.run_benchmarks(torch.device("cpu"), quick=True, rows=(group,))
    assert rows and {r.name for r in rows} == {group}
    with pytest.raises(SystemExit):
        bench.main(["--rows", f"{group},nonsense"])


def test_the_painter_figure_is_one_and_the_same_in_the_readme_and_docs():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme, serve = (root / "README.md").read_text(), (root / "docs" / "serve.md").read_text()
    rows = re.findall(
        r"^\| serve: one stroke's synthesis [^|]*\|[^|]*\| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|", readme, re.M
    )
    assert len(rows) == 1, rows
    synthesis, request, ratio = rows[0]
    assert float(ratio) == pytest.approx(float(request) / float(synthesis), abs=0.006)
    speed = re.split(r"\n#+ ", serve[serve.index("## Speed") :])[0]  # up to the next heading of any level
    assert f"`synthesize` {synthesis} ms" in speed and f"whole request\n{request} ms ({ratio}x)" in speed
    # no other millisecond figure of the request than the one quoted
    assert re.findall(r"([\d.]+) ms", speed) == [synthesis, request, "70"]


# --- the CUDA rows: which modes they measure, and the gradients each engine is handed ------------------


def test_cuda_rows_cover_fp32_with_and_without_tf32_bf16_and_fp16():
    names = [mode.name for mode in bench.cuda_layer_modes()]
    assert names == ["fp32 TF32", "fp32 TF32 off", "bf16", "fp16"]
    cases = {(mode.name, execution) for mode, execution in bench.cuda_generator_cases()}
    eager = {(name, execution) for name in names for execution in ("eager", "channels_last")}
    assert cases == eager | {("fp32 TF32", "compile"), ("bf16", "compile")}
    assert {(mode.name, execution) for mode, execution in bench.cuda_generator_cases(quick=True)} == eager
    assert {mode.dtype for mode in bench.cuda_layer_modes()} == {torch.float32, torch.bfloat16, torch.float16}


def test_cuda_row_sets_name_every_mode_engine_and_stage(monkeypatch):
    # The measurements are replaced by constants and the maps made tiny: what is checked is which rows exist.
    monkeypatch.setattr(bench, "CITYSCAPES_SIZE", (16, 32))
    monkeypatch.setattr(bench, "CITYSCAPES_CONV_STAGES", ((4, 6, 8, 16), (6, 4, 16, 32)))
    monkeypatch.setattr(bench, "CITYSCAPES_UPSAMPLE_STAGES", ((4, 4, 8),))
    monkeypatch.setattr(
        bench, "scene_panoptic", lambda height, width, batch=1: torch.zeros(batch, height, width).long()
    )
    monkeypatch.setattr(bench, "_faster_cudnn", lambda *args: (1.0, "NHWC"))
    monkeypatch.setattr(bench, "_panoptic_conv_ms", lambda *args: 2.0)
    monkeypatch.setattr(bench, "_nearest_ms", lambda *args: 1.0)
    monkeypatch.setattr(bench, "_panoptic_upsample_ms", lambda *args: 2.0)
    monkeypatch.setattr(bench, "_time_generator_pair", lambda *args: (1.0, 2.0, 3.0))
    monkeypatch.setattr(bench, "build_generator", lambda *args: None)
    monkeypatch.setattr(bench, "MultiscaleDiscriminator", lambda *args, **kwargs: None)
    monkeypatch.setattr(bench.torch.cuda, "empty_cache", lambda: None)
    engines, cpu = ["torch", "triton"], torch.device("cpu")
    modes = [mode.name for mode in bench.cuda_layer_modes()]
    passes = ("forward", "forward+backward")
    conv = {row.name for row in bench.bench_cuda_conv_stages(cpu, engines, 1, batch=2)}
    assert conv == {f"conv stage {p} [{m}, {e}] vs cuDNN" for p in passes for m in modes for e in engines}
    rows = bench.bench_cuda_upsample_stages(cpu, engines, 1, batch=2)
    assert {row.name for row in rows} == {
        f"panoptic upsampling (align + hole fill) {p} [{m}, {e}] vs nearest"
        for p in passes
        for m in modes
        for e in engines
    }
    rows = bench.bench_cuda_generator(cpu, engines, 1, quick=False, batch=2)
    cases = bench.cuda_generator_cases()
    assert len(rows) == 3 * len(engines) * len(cases) and len({row.name for row in rows}) == len(rows)
    assert "generator forward [fp16, eager, paper on triton] (paper vs SPADE)" in {row.name for row in rows}


def test_each_engine_is_handed_its_gradient_in_the_layout_of_its_output(monkeypatch):
    """cuDNN gets the layout of the output it chose, the Triton engine channels_last, the PyTorch engine
    NCHW: no side pays a layout copy for the benchmark's sake."""
    from pansynth.ops import _triton

    seen = []

    def recording(function):
        def wrapped(*args, **kwargs):
            out = function(*args, **kwargs)
            if out.requires_grad:
                expected = out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
                out.register_hook(lambda grad: seen.append((expected, grad.is_contiguous(), grad.shape)))
            return out

        return wrapped

    monkeypatch.setattr(bench, "time_ms", lambda fn, device, repeats: fn() or 1.0)
    monkeypatch.setattr(bench, "panoptic_conv2d", recording(bench.panoptic_conv2d))
    monkeypatch.setattr(bench.F, "conv2d", recording(bench.F.conv2d))
    x, weight, bias = torch.randn(2, 3, 5, 6), torch.randn(4, 3, 3, 3), torch.zeros(4)
    panoptic = torch.randint(0, 3, (2, 5, 6))
    plans = {"torch": bench.conv_plan(panoptic, 3), "triton": bench.mask_plan(panoptic, 3)}
    engines = ["torch"] + (["triton"] if _triton.is_available(torch.device("cpu")) else [])
    for engine in engines:
        bench._panoptic_conv_ms(x, weight, bias, panoptic, plans[engine], engine, True, torch.device("cpu"), 1)
    bench._faster_cudnn(x, weight, bias, True, torch.device("cpu"), 1)  # NCHW, then channels_last
    assert len(seen) == len(engines) + 2
    # (output channels_last, gradient NCHW-contiguous): the gradient's layout is the output's
    assert [(channels_last, contiguous) for channels_last, contiguous, _ in seen] == [
        (False, True),
        *([(True, False)] if "triton" in engines else []),
        (False, True),
        (True, False),
    ]

    # The upsampling rows: hole filling on each engine, and nearest interpolation.
    seen.clear()

    class RecordingUpsample(bench.HoleFillingUpsample):
        forward = recording(bench.HoleFillingUpsample.forward)

    monkeypatch.setattr(bench, "HoleFillingUpsample", RecordingUpsample)
    monkeypatch.setattr(bench.F, "interpolate", recording(bench.F.interpolate))
    full = bench.scene_panoptic(16, 32, batch=2)
    features = torch.randn(2, 4, 2, 4)
    for engine in engines:
        bench._panoptic_upsample_ms(features, full[:, ::8, ::8], full[:, ::4, ::4], engine, True, "cpu", 1)
    bench._nearest_ms(features, True, "cpu", 1)
    triton_row = [(True, False)] if "triton" in engines else []
    assert [(channels_last, contiguous) for channels_last, contiguous, _ in seen] == [
        (False, True), *triton_row, (False, True)
    ]  # fmt: skip


def test_the_gpu_check_script_runs_commands_that_exist(tmp_path, capsys):
    """scripts/gpu_check.sh (make gpu-check) is run on a GPU machine only: here its commands are
    checked to parse (the benchmark's arguments, the test it leaves out, the check's flags)."""
    import shlex

    from pansynth.ops._triton import check

    root = Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "gpu_check.sh").read_text().replace("\\\n", " ")
    commands = {}
    for line in script.splitlines():
        if not line.startswith("step ") or " -m " not in line:
            continue
        words = shlex.split(line.replace('"$PY"', "PY").replace('"$OUT/bench.json"', str(tmp_path / "b.json")))
        if "-m" in words:
            module = words[words.index("-m") + 1]
            commands[module] = words[words.index("-m") + 2 :]
    assert set(commands) == {"pytest", "pansynth.bench", "pansynth.ops._triton.check"}
    deselected = commands["pytest"][commands["pytest"].index("--deselect") + 1]
    path, name = deselected.split("::")
    assert f"def {name}(" in (root / path).read_text()
    targets = [word for word in commands["pytest"] if word.startswith("tests/") and "::" not in word]
    assert targets and all((root / target).exists() for target in targets)
    if not torch.cuda.is_available():  # the arguments parse; each run stops at the missing GPU
        assert bench.main(commands["pansynth.bench"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
        assert check.main(commands["pansynth.ops._triton.check"]) == 1
        assert "needs CUDA" in capsys.readouterr().err
