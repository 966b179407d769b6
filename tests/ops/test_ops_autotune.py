"""Which autotune configurations the Triton kernels time for a launch shape: the pruning rules of
``_kernels.py`` (pure Python, no GPU) at the Cityscapes stage shapes of the paper's generator, batch 8.

The rules are restated literally here (a configuration survives iff ...) and compared with what the
pruning functions keep, and the figures that motivate them are checked on named configurations."""

from __future__ import annotations

import math

import pytest
import torch

from pansynth.ops._triton import _kernels as K
from pansynth.ops._triton.report import config_name

SMS = 132  # H100 / H200
SHARED = 227 * 1024
BATCH = 8
# (in channels C, out channels O, height, width) of the generator's convolutions at Cityscapes 256x512:
# the residual blocks' stages, and the one-hot label map (35 classes) of the first layer / SPADE's shared conv.
STAGES = {
    "1024 at 8x16": (1024, 1024, 8, 16),
    "1024 at 16x32": (1024, 1024, 16, 32),
    "512 at 64x128": (512, 512, 64, 128),
    "128 at 128x256": (128, 128, 128, 256),
    "64 at 256x512": (64, 64, 256, 512),
    "one-hot 35 -> 1024 at 8x16": (35, 1024, 8, 16),
    "one-hot 35 -> 128 at 256x512": (35, 128, 256, 512),
}
ELEMENT_SIZES = {"bf16": 2, "fp32": 4}


def blocks(config) -> tuple[int, ...]:
    return tuple(value for key, value in config.kwargs.items() if key.startswith("BLOCK"))


def pow2_at_least(value: int) -> int:
    return 2 ** math.ceil(math.log2(value))


def expected_conv(C: int, O: int, M: int, element_size: int) -> list[tuple]:
    """The rules, written out: hard limits, then the configurations that fill the GPU, then the big tiles."""
    hard = []
    for config in K.CONV_CONFIGS:
        m, n, k = blocks(config)
        stages = config.num_stages
        if n > max(32, pow2_at_least(O)) or k > max(16, pow2_at_least(C)):
            continue  # a block larger than the padded problem
        if k == 128 and C < 512:
            continue  # BLOCK_K 128 only for C >= 512
        if stages * (m * k + k * n) * element_size > SHARED:
            continue  # the pipeline's buffers exceed the shared memory
        hard.append((config, math.ceil(M / m) * math.ceil(O / n), m * n))
    filling = [(c, programs, area) for c, programs, area in hard if programs >= 0.9 * SMS]
    if not filling:
        most = max(programs for _, programs, _ in hard)
        return [config_name(c) for c, programs, _ in hard if programs == most]
    largest = max(area for _, _, area in filling)
    return [config_name(c) for c, _, area in filling if 2 * area >= largest]


@pytest.mark.parametrize("dtype", ELEMENT_SIZES)
@pytest.mark.parametrize("stage", STAGES)
def test_conv_pruning_follows_the_rules_at_the_cityscapes_stages(stage, dtype):
    C, O, height, width = STAGES[stage]
    M = BATCH * height * width
    for reduction, out in ((C, O), (O, C)):  # the forward, and the input gradient (roles swapped)
        kept = K.conv_configs(K.CONV_CONFIGS, reduction, out, M, ELEMENT_SIZES[dtype], SMS, SHARED)
        assert kept and [config_name(c) for c in kept] == expected_conv(reduction, out, M, ELEMENT_SIZES[dtype])


def kept_blocks(C, O, height, width, element_size=2, batch=BATCH):
    return {
        (*blocks(c), c.num_stages) for c in K.conv_configs(K.CONV_CONFIGS, C, O, batch * height * width, element_size)
    }


def test_conv_pruning_picks_big_tiles_for_big_stages_and_small_tiles_for_small_ones():
    # 16x32 at batch 8: 4096 pixels x 1024 channels. 128x256 tiles give 128 programs (one wave of 132
    # SMs, 97%), 128x128 256; BLOCK_K 128 is timed (C >= 512); 64x64 tiles (1024 programs) are not.
    stage = kept_blocks(1024, 1024, 16, 32)
    assert {(128, 256, 64, 3), (256, 128, 64, 3), (128, 128, 128, 3), (128, 128, 64, 3)} <= stage
    assert all(m * n >= 128 * 128 for m, n, _, _ in stage)
    # 8x16 at batch 8: 1024 pixels give 64 programs of 128x128 for 132 SMs: only smaller tiles are timed.
    small = kept_blocks(1024, 1024, 8, 16)
    assert small and all(math.ceil(1024 / m) * math.ceil(1024 / n) >= 0.9 * SMS for m, n, _, _ in small)
    assert (128, 128, 64, 3) not in small and {(64, 64, 64, 3), (64, 128, 64, 4), (128, 64, 64, 3)} <= small
    # At batch 12, 128x128 tiles give 96 programs: three quarters of a wave, not timed either.
    assert (128, 128, 64, 3) not in kept_blocks(1024, 1024, 8, 16, batch=12)
    assert expected_conv(1024, 1024, 12 * 8 * 16, 2) == [config_name(c) for c in K.conv_configs(
        K.CONV_CONFIGS, 1024, 1024, 12 * 8 * 16, 2)]  # fmt: skip
    # At batch 32 the same 8x16 stage has 4096 pixels: the big tiles come back (the key holds M).
    assert (128, 128, 64, 3) in kept_blocks(1024, 1024, 8, 16, batch=32)
    # 64 channels at 256x512: BLOCK_N <= 64, BLOCK_K <= 64; one-hot 35 channels: BLOCK_K <= 64, never 128.
    assert all(n <= 64 and k <= 64 for _, n, k, _ in kept_blocks(64, 64, 256, 512))
    assert all(k <= 64 for _, _, k, _ in kept_blocks(35, 128, 256, 512) | kept_blocks(35, 1024, 8, 16))
    # fp32 tiles are twice as large: 128x256x64 (3 x 96 KB = 288 KB) does not fit, 128x256x32 x 4 stages does.
    assert (128, 256, 64, 3) in kept_blocks(512, 512, 64, 128, 2)
    fp32 = kept_blocks(512, 512, 64, 128, 4)
    assert (128, 256, 64, 3) not in fp32 and (128, 256, 32, 4) in fp32
    # Pruning is what keeps tuning short: at most 8 of the configurations are timed at any stage.
    for C, O, height, width in STAGES.values():
        for element_size in (2, 4):
            assert 1 <= len(kept_blocks(C, O, height, width, element_size)) <= 8 < len(K.CONV_CONFIGS)


def test_problems_too_small_to_fill_the_gpu_keep_the_tiles_with_the_most_programs():
    kept = K.conv_configs(K.CONV_CONFIGS, 16, 16, 2 * 8 * 8, 2)  # 128 pixels, 16 channels
    programs = {math.ceil(128 / c.kwargs["BLOCK_M"]) for c in kept}
    assert programs == {2} and all(c.kwargs["BLOCK_M"] == 64 for c in kept)
    # Nothing within the shared memory: the smallest blocks, which always launch.
    (smallest,) = K.conv_configs(K.CONV_CONFIGS, 1024, 1024, 4096, 2, shared_limit=1)
    assert blocks(smallest) == min((blocks(c) for c in K.CONV_CONFIGS), key=sum)


def test_shared_memory_estimate_bounds_every_conv_configuration():
    # 3 stages of a 128x64 A tile and a 64x256 B tile, as the compiled kernels hold them (the report test).
    config = next(c for c in K.CONV_CONFIGS if blocks(c) == (128, 256, 64) and c.num_stages == 3)
    assert K.conv_shared_bytes(config, 2) == 3 * (128 * 64 + 64 * 256) * 2 == 147456
    # Every configuration fits sm_90 in bf16 / fp16; fp32 drops only the ones over 227 KB.
    assert all(K.conv_shared_bytes(c, 2) <= SHARED for c in K.CONV_CONFIGS)
    assert any(K.conv_shared_bytes(c, 4) > SHARED for c in K.CONV_CONFIGS)


def split_pixels(C: int, O: int, M: int, taps: int = 9) -> int:
    # The launcher's split of the pixel reduction (about 4 programs per SM, counted with 64x64 tiles).
    tiles = taps * math.ceil(O / 64) * math.ceil(C / 64)
    splits = max(1, min(math.ceil(4 * SMS / tiles), M // 512))
    return math.ceil(math.ceil(M / splits) / 128) * 128


@pytest.mark.parametrize("stage", STAGES)
def test_weight_grad_pruning_fills_the_gpu_with_the_largest_tiles(stage):
    C, O, height, width = STAGES[stage]
    M = BATCH * height * width
    per_split = split_pixels(C, O, M)
    kept = K.weight_grad_configs(K.WEIGHT_GRAD_CONFIGS, C, O, M, per_split, 9, SMS)
    assert kept
    splits = math.ceil(M / per_split)

    def programs(config):
        return 9 * math.ceil(O / config.kwargs["BLOCK_O"]) * math.ceil(C / config.kwargs["BLOCK_C"]) * splits

    assert all(programs(c) >= 0.9 * SMS for c in kept)
    assert all(c.kwargs["BLOCK_O"] <= max(32, pow2_at_least(O)) for c in kept)
    assert all(c.kwargs["BLOCK_C"] <= max(16, pow2_at_least(C)) for c in kept)
    largest = max(c.kwargs["BLOCK_O"] * c.kwargs["BLOCK_C"] for c in kept)
    dropped = [c for c in K.WEIGHT_GRAD_CONFIGS if c not in kept]
    # What was dropped is too large for the problem, too small a tile, or too few programs.
    for c in dropped:
        too_large = c.kwargs["BLOCK_O"] > max(32, pow2_at_least(O)) or c.kwargs["BLOCK_C"] > max(16, pow2_at_least(C))
        small = 2 * c.kwargs["BLOCK_O"] * c.kwargs["BLOCK_C"] < largest
        assert too_large or small or programs(c) < 0.9 * SMS, config_name(c)
    if stage == "1024 at 16x32":  # 576 programs of 128x128 per tap set: the largest tiles are timed
        assert (128, 128, 64) in {blocks(c) for c in kept}


def test_upsample_pruning_and_the_autotuner_hooks_read_the_launch():
    kept = K.upsample_configs(K.UPSAMPLE_CONFIGS, 1024, BATCH * 16 * 32)
    assert kept and all(math.ceil(BATCH * 16 * 32 / c.kwargs["BLOCK_P"]) * math.ceil(1024 / c.kwargs["BLOCK_C"])
                        >= 0.9 * SMS for c in kept)  # fmt: skip
    assert all(c.kwargs["BLOCK_C"] <= 16 for c in K.upsample_configs(K.UPSAMPLE_CONFIGS, 3, 10_000))
    # The hooks take the sizes from the launch's arguments and the GPU's figures from its tensors (CPU
    # tensors: an H100's).
    assert K.device_limits(torch.empty(0)) == (K.DEFAULT_MULTIPROCESSORS, K.DEFAULT_SHARED_BYTES) == (SMS, SHARED)
    x = torch.empty(0, dtype=torch.float32)
    args = {"x_ptr": x, "C": 512, "O": 512, "M": BATCH * 64 * 128}
    assert K._prune_conv(K.CONV_CONFIGS, args, KSIZE=3) == K.conv_configs(K.CONV_CONFIGS, 512, 512, args["M"], 4)
    args = {"g_ptr": x, "C": 64, "O": 64, "M": 4096, "PIXELS_PER_SPLIT": 512}
    expected = K.weight_grad_configs(K.WEIGHT_GRAD_CONFIGS, 64, 64, 4096, 512, 25)
    assert K._prune_weight_grad(K.WEIGHT_GRAD_CONFIGS, args, KSIZE=5) == expected
    args = {"out_ptr": x, "C": 64, "M": 4096}
    assert K._prune_upsample(K.UPSAMPLE_CONFIGS, args) == K.upsample_configs(K.UPSAMPLE_CONFIGS, 64, 4096)


def test_the_autotuners_key_on_kernel_arguments_and_hand_the_launch_to_the_pruning():
    for kernel, configs, key, _ in K.AUTOTUNED.values():
        assert set(key) <= set(kernel.arg_names) and "M" in key, key  # Triton skips unknown key names silently
        assert configs
    # A launch's positional arguments, in the launchers' order (_launch.py), reach the hooks by name.
    x = torch.empty(0, dtype=torch.bfloat16)
    cases = {
        "conv": ((x, x, x, x, x, x, 16, 32, 1024, 1024, BATCH * 16 * 32), {"KSIZE": 3, "FORWARD": True},
                 K.conv_configs(K.CONV_CONFIGS, 1024, 1024, BATCH * 16 * 32, 2)),
        "conv_weight_grad": ((x, x, x, x, 512, 64, 64, 4096, 512), {"KSIZE": 3},
                             K.weight_grad_configs(K.WEIGHT_GRAD_CONFIGS, 64, 64, 4096, 512, 9)),
        "upsample": ((x, x, x, x, x, 8, 16, 1024, BATCH * 16 * 32), {},
                     K.upsample_configs(K.UPSAMPLE_CONFIGS, 1024, BATCH * 16 * 32)),
        "upsample_backward": ((x, x, x, 8, 16, 64, BATCH * 8 * 16), {},
                              K.upsample_configs(K.UPSAMPLE_CONFIGS, 64, BATCH * 8 * 16)),
    }  # fmt: skip
    for name, (args, meta, expected) in cases.items():
        tuner = K.autotuned(name)
        tuner.nargs = dict(zip(tuner.arg_names, args))
        assert tuner.prune_configs(meta) == expected, name


def test_the_gpu_figures_come_from_the_device_of_the_launch(monkeypatch):
    from types import SimpleNamespace

    calls = []

    def properties(device):
        calls.append(device)
        return SimpleNamespace(multi_processor_count=78, shared_memory_per_block_optin=101376)

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(K, "_CUDA_LIMITS", {})
    on_gpu = SimpleNamespace(is_cuda=True, device=SimpleNamespace(index=1))
    assert K.device_limits(on_gpu) == K.device_limits(on_gpu) == (78, 101376) and len(calls) == 1  # cached
    # A smaller GPU: 128x256x64 (144 KB) no longer fits, and fewer programs fill it.
    kept = K.conv_configs(K.CONV_CONFIGS, 512, 512, BATCH * 64 * 128, 2, *K.device_limits(on_gpu))
    assert kept and all(K.conv_shared_bytes(c, 2) <= 101376 for c in kept)
    assert (128, 256, 64) not in {blocks(c) for c in kept}
