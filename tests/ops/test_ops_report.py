"""The kernel report (``python -m pansynth.ops._triton.report``): its reading of SASS, and every kernel,
dtype and autotuning configuration compiled for sm_90 without a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from pansynth.ops._triton import report

# A hand-written listing: an outer loop (0x10..0xa0) around an inner one with an MMA (0x30..0x70),
# a forward branch (not a loop), one 8-byte and one 4-byte local store.
SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   IMAD R2, R3, R4, RZ ;
        /*0020*/                   STL.64 [R1], R2 ;
        /*0030*/                   LDG.E R5, desc[UR4][R2.64] ;
        /*0040*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0050*/                   IADD3 R6, R6, 0x1, RZ ;
        /*0060*/              @P0  BRA 0x90 ;
        /*0070*/              @!P1 BRA 0x30 ;
        /*0080*/                   STL [R1+0x8], R7 ;
        /*0090*/                   ISETP.GE.AND P2, PT, R6, R8, PT ;
        /*00a0*/              @!P2 BRA 0x10 ;
        /*00b0*/                   EXIT ;
"""


def test_sass_reading_finds_loops_the_main_loop_and_spills():
    instructions = report.parse_sass(SASS)
    assert len(instructions) == 12 and instructions[4][1].startswith("HGMMA")
    assert sorted(report.loops(instructions)) == [(1, 10), (3, 7)]
    assert report.main_loop_stats(instructions) == (5, 1)  # the inner loop: 0x30..0x70
    assert report.spill_bytes(instructions) == 12
    without_mma = [(a, "FFMA" if op.startswith("HGMMA") else op, rest) for a, op, rest in instructions]
    assert report.main_loop_stats(without_mma) == (10, 1)  # no MMA: the longest loop
    assert report.main_loop_stats(instructions[:3]) == (None, 0)


def test_variants_cover_every_kernel_dtype_and_configuration():
    from pansynth.ops._triton import _kernels

    configs = {
        "conv_forward": _kernels.CONV_CONFIGS, "conv_input_grad": _kernels.CONV_CONFIGS,
        "conv_weight_grad": _kernels.WEIGHT_GRAD_CONFIGS, "upsample_forward": _kernels.UPSAMPLE_CONFIGS,
        "upsample_backward": _kernels.UPSAMPLE_CONFIGS, "conv_grad_prescale": _kernels.PRESCALE_CONFIGS,
    }  # fmt: skip
    expected = {(name, dtype, i) for name, c in configs.items() for i in range(len(c)) for dtype in report.DTYPES}
    assert set(report.variants()) == expected and len(report.variants()) == len(expected)
    quick = report.variants(quick=True)
    assert {name for name, _, _ in quick} == set(configs) and set(quick) < expected
    # every preferred configuration is one of the kernel's autotune configurations
    assert len(quick) == len(report.DTYPES) * sum(len(named) for named in report.QUICK_CONFIGS.values())


# Every autotune configuration compiled (174 variants) takes minutes with a cold Triton cache on 2 cores:
# that run is `make bench` (the full report) or this test with PANSYNTH_COMPILE_ALL=1. By default the test
# compiles every kernel x dtype at the configurations the generator's stages prefer.
COMPILE_ALL = os.environ.get("PANSYNTH_COMPILE_ALL") == "1"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None, reason="no CUDA backend in triton")
def test_every_kernel_dtype_and_configuration_compiles_for_sm90():
    """What the interpreter does not check (types, layouts, lowering, registers): every kernel and dtype
    (and with PANSYNTH_COMPILE_ALL=1 every autotune configuration) compiled for sm_90 with the report's
    code, in one subprocess, and the targets of the compiled code at the generator's configuration."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "pansynth.ops._triton.report", "--json", *([] if COMPILE_ALL else ["--quick"])],
        env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == len(report.variants(quick=not COMPILE_ALL))
    keys = {"kernel", "dtype", "config", "registers", "spills", "shared_bytes", "wgmma", "loop_instructions"}
    assert all(keys <= row.keys() and 0 < row["registers"] <= 255 for row in rows)
    assert all(row["spills"] == 0 for row in rows)  # no configuration spills, 128x256 tiles included
    by_name = {(row["kernel"], row["dtype"], row["config"]): row for row in rows}
    # The targets at conv bf16 128x128x64, 8 warps: one pipelined loop, <= 128 registers, no spills.
    for kernel in ("conv_forward", "conv_input_grad"):
        row = by_name[(kernel, "bf16", "128x128x64, 8 warps, 3 stages")]
        assert row["main_loops"] == 1 and row["registers"] <= 128 and row["spills"] == 0, row
    for stages in (2, 3):
        assert (
            by_name[("conv_weight_grad", "bf16", f"128x128x64, 8 warps, {stages} stages")]["loop_instructions"] <= 300
        )
    assert all(row["wgmma"] for row in rows if row["kernel"] in ("conv_forward", "conv_input_grad"))
    assert all(row["spills"] == 0 for row in rows if row["kernel"] == "conv_grad_prescale")
    # The autotuner's shared-memory estimate of a conv configuration is what the compiler allocates
    # (to within 256 bytes), so the configurations it prunes (fp32 128x256x64...) are those that do not fit.
    from pansynth.ops._triton import _kernels

    conv_configs = {report.config_name(config): config for config in _kernels.CONV_CONFIGS}
    element_sizes = {"fp32/tf32": 4, "bf16": 2, "fp16": 2}
    for row in rows:
        if row["kernel"] in ("conv_forward", "conv_input_grad"):
            estimate = _kernels.conv_shared_bytes(conv_configs[row["config"]], element_sizes[row["dtype"]])
            assert 0 <= row["shared_bytes"] - estimate <= 256, row
            assert row["fits_shared"] == (estimate <= _kernels.DEFAULT_SHARED_BYTES), row
