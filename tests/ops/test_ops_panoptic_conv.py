"""panoptic_conv2d against a literal transcription of the paper's eq. 1-2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pansynth.ops import PanopticConv2d, panoptic_conv2d, panoptic_conv2d_labels, semantic_one_hot

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["sparse", "full", "sparse-large-map-path", "full-large-map-path"])
def strategy(request, monkeypatch):
    """Run a test with each exact strategy of the implementation (dense conv + tap-wise
    corrections at the irregular pixels, or every window recomputed from its mask), and with
    each way of finding the irregular pixels (batched masks for small maps, shifted
    comparisons for large ones)."""
    import pansynth.ops.panoptic_conv as module

    monkeypatch.setattr(module, "FULL_RECOMPUTE_SHARE", 1.0 if request.param.startswith("sparse") else -1.0)
    if request.param.endswith("large-map-path"):
        monkeypatch.setattr(module, "SMALL_MAP_PIXELS", 0)
    return request.param


# Irregular, non-contiguous ids, negative and huge ones included.
ID_VALUES = torch.tensor([-7, 0, 3, 1_000_003, 2**40 + 5, 24001, 24002])


def reference_panoptic_conv2d(x, panoptic, weight, bias=None):
    """Eq. 1-2 written out pixel by pixel, window position by window position."""
    n_batch, _, height, width = x.shape
    out_channels, _, k, _ = weight.shape
    radius = k // 2
    out = torch.zeros(n_batch, out_channels, height, width, dtype=torch.float64)
    for n in range(n_batch):
        for y in range(height):
            for x_ in range(width):
                centre = panoptic[n, y, x_]
                acc = torch.zeros(out_channels, dtype=torch.float64)
                mask_sum = 0
                for i in range(k):
                    for j in range(k):
                        yy, xx = y + i - radius, x_ + j - radius
                        inside = 0 <= yy < height and 0 <= xx < width
                        m = 1 if inside and panoptic[n, yy, xx] == centre else 0  # eq. 1
                        if m:
                            acc += weight[:, :, i, j].double() @ x[n, :, yy, xx].double()
                            mask_sum += m
                if mask_sum > 0:  # eq. 2, sum(1) = k*k including the padded positions
                    out[n, :, y, x_] = acc * (k * k) / mask_sum + (0 if bias is None else bias.double())
    return out


def random_panoptic(n, height, width, generator, block=2):
    """Blocky maps with irregular ids so that windows cross several segments."""
    coarse = torch.randint(0, len(ID_VALUES), (n, -(-height // block), -(-width // block)), generator=generator)
    ids = ID_VALUES[coarse].repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :height, :width]
    # Sprinkle single pixels so that isolated segments (sum(M) = 1) occur too.
    noise = torch.rand(n, height, width, generator=generator) < 0.1
    return torch.where(noise, ID_VALUES[torch.randint(0, len(ID_VALUES), (n, height, width), generator=generator)], ids)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_literal_equation(device, kernel_size, with_bias, strategy):
    g = torch.Generator().manual_seed(kernel_size + 10 * with_bias)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    panoptic = random_panoptic(2, 7, 9, g)
    weight = torch.randn(4, 3, kernel_size, kernel_size, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64) if with_bias else None
    expected = reference_panoptic_conv2d(x, panoptic, weight, bias)
    out = panoptic_conv2d(
        x.to(device), panoptic.to(device), weight.to(device), None if bias is None else bias.to(device)
    )
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    num_ids=st.integers(1, 4),
)
def test_property_random_maps(seed, height, width, num_ids):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 2, height, width, generator=g, dtype=torch.float64)
    panoptic = ID_VALUES[torch.randint(0, num_ids, (1, height, width), generator=g)]
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        panoptic_conv2d(x, panoptic, weight, bias), reference_panoptic_conv2d(x, panoptic, weight, bias)
    )


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_gradcheck(kernel_size, strategy):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    panoptic = random_panoptic(2, 5, 6, g)
    weight = torch.randn(3, 2, kernel_size, kernel_size, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: panoptic_conv2d(a, panoptic, w, b), (x, weight, bias), fast_mode=kernel_size == 5
    )


def test_gradients_match_literal_autograd(strategy):
    """The hand-written backward equals autograd through the literal reference."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    panoptic = random_panoptic(1, 5, 6, g)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(1, 3, 5, 6, generator=g, dtype=torch.float64)
    fast = torch.autograd.grad(panoptic_conv2d(x, panoptic, weight, bias), (x, weight, bias), grad_out)
    slow = torch.autograd.grad(reference_panoptic_conv2d(x, panoptic, weight, bias), (x, weight, bias), grad_out)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


def test_single_segment_equals_conv2d_away_from_borders():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    panoptic = torch.full((2, 8, 8), 42)
    out = panoptic_conv2d(x, panoptic, weight, bias)
    dense = F.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], dense[..., 1:-1, 1:-1])
    # At a corner only 4 of the 9 positions are inside: the masked sum is rescaled by 9/4.
    torch.testing.assert_close(out[..., 0, 0] - bias, (dense[..., 0, 0] - bias) * 9 / 4)


def test_one_by_one_kernel_is_plain_conv():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 5, generator=g)
    weight = torch.randn(4, 3, 1, 1, generator=g)
    panoptic = random_panoptic(2, 5, 5, g)
    torch.testing.assert_close(panoptic_conv2d(x, panoptic, weight), F.conv2d(x, weight))


def test_segments_do_not_leak():
    """Changing the features of one segment leaves every other segment's output unchanged."""
    g = torch.Generator().manual_seed(4)
    panoptic = random_panoptic(1, 9, 9, g)
    x = torch.randn(1, 3, 9, 9, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)
    target = panoptic[0, 4, 4]
    changed = x.clone()
    changed[:, :, panoptic[0] == target] += 100.0
    before, after = panoptic_conv2d(x, panoptic, weight), panoptic_conv2d(changed, panoptic, weight)
    other = (panoptic != target).unsqueeze(1).expand_as(before)
    torch.testing.assert_close(before[other], after[other])
    assert not torch.allclose(before[~other], after[~other])


def test_non_contiguous_and_channels_last_inputs(strategy):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 10, generator=g, dtype=torch.float64)
    panoptic = random_panoptic(2, 6, 10, g)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    expected = reference_panoptic_conv2d(x, panoptic, weight)
    wide = torch.randn(2, 3, 6, 20, generator=g, dtype=torch.float64)
    wide[..., ::2] = x
    torch.testing.assert_close(panoptic_conv2d(wide[..., ::2], panoptic, weight), expected)
    torch.testing.assert_close(
        panoptic_conv2d(x.contiguous(memory_format=torch.channels_last), panoptic.transpose(1, 2).contiguous()
                        .transpose(1, 2), weight),
        expected,
    )


def test_batch_size_zero():
    out = panoptic_conv2d(torch.randn(0, 3, 5, 5), torch.zeros(0, 5, 5, dtype=torch.long), torch.randn(4, 3, 3, 3))
    assert out.shape == (0, 4, 5, 5)


def test_float32_close_to_float64():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 8, 12, 12, generator=g, dtype=torch.float64)
    panoptic = random_panoptic(2, 12, 12, g)
    weight = torch.randn(6, 8, 3, 3, generator=g, dtype=torch.float64)
    out32 = panoptic_conv2d(x.float(), panoptic, weight.float())
    torch.testing.assert_close(out32.double(), panoptic_conv2d(x, panoptic, weight), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_labels_lookup_equals_one_hot_convolution(kernel_size):
    g = torch.Generator().manual_seed(7)
    semantic = torch.randint(0, 5, (2, 7, 8), generator=g)
    panoptic = random_panoptic(2, 7, 8, g)
    weight = torch.randn(6, 5, kernel_size, kernel_size, generator=g, dtype=torch.float64)
    bias = torch.randn(6, generator=g, dtype=torch.float64)
    one_hot = semantic_one_hot(semantic, 5).double()
    expected = reference_panoptic_conv2d(one_hot, panoptic, weight, bias)
    torch.testing.assert_close(panoptic_conv2d_labels(semantic, panoptic, weight, bias), expected)
    positions = torch.tensor([[0, 0, 0], [1, 6, 7], [1, 3, 2]])
    sparse = panoptic_conv2d_labels(semantic, panoptic, weight, bias, positions=positions)
    torch.testing.assert_close(sparse, expected[positions[:, 0], :, positions[:, 1], positions[:, 2]])


def test_module_subsamples_full_resolution_map():
    g = torch.Generator().manual_seed(8)
    conv = PanopticConv2d(3, 4, 3).double()
    panoptic_full = random_panoptic(2, 16, 24, g)
    x = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64)
    expected = reference_panoptic_conv2d(x, panoptic_full[:, ::4, ::4], conv.weight.detach(), conv.bias.detach())
    torch.testing.assert_close(conv(x, panoptic_full), expected)
    assert "kernel_size=3" in repr(conv)
    with pytest.raises(ValueError, match="integer stride"):
        conv(x, panoptic_full[:, :15])


def test_module_gradients_reach_parameters():
    conv = PanopticConv2d(3, 4, 3)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    panoptic = torch.randint(0, 3, (1, 6, 6))
    conv(x, panoptic).square().sum().backward()
    assert conv.weight.grad.abs().sum() > 0 and conv.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"panoptic": torch.zeros(1, 5, 5)}, "integer"),
        ({"panoptic": torch.zeros(1, 1, 5, 5, dtype=torch.long)}, r"\(N, H, W\)"),
        ({"panoptic": torch.zeros(1, 4, 5, dtype=torch.long)}, "to match the input"),
        ({"weight": torch.randn(4, 3, 2, 2)}, "odd"),
        ({"weight": torch.randn(4, 2, 3, 3)}, "channels"),
        ({"bias": torch.randn(3)}, "bias"),
        ({"input": torch.zeros(1, 3, 5, 5, dtype=torch.long)}, "floating-point"),
        ({"padding": 0}, "same"),
    ],
)
def test_bad_input(kwargs, match):
    args = {
        "input": torch.randn(1, 3, 5, 5),
        "panoptic": torch.zeros(1, 5, 5, dtype=torch.long),
        "weight": torch.randn(4, 3, 3, 3),
        "bias": None,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        panoptic_conv2d(**args)


def test_even_kernel_module_rejected():
    with pytest.raises(ValueError, match="odd"):
        PanopticConv2d(3, 4, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_autocast_half_precision():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 8, 16, 16, generator=g)
    panoptic = random_panoptic(2, 16, 16, g)
    weight = torch.randn(8, 8, 3, 3, generator=g)
    expected = panoptic_conv2d(x.double(), panoptic, weight.double())
    xc, wc = x.cuda().requires_grad_(), weight.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        out = panoptic_conv2d(xc, panoptic.cuda(), wc)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double().cpu(), expected, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert xc.grad.dtype == torch.float32 and torch.isfinite(wc.grad).all()


@pytest.mark.parametrize("size", [6, 24])  # small maps take the full-recompute path, larger ones the sparse one
def test_cpu_bfloat16_autocast(size, strategy):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 8, size, size, generator=g, requires_grad=True)
    weight = torch.randn(8, 8, 3, 3, generator=g, requires_grad=True)
    panoptic = random_panoptic(2, size, size, g, block=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = panoptic_conv2d(x, panoptic, weight)
    assert out.dtype == torch.bfloat16
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    expected = panoptic_conv2d(x64, panoptic, w64)

    def relative_error(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    assert relative_error(out, expected) < 1e-2  # bf16 operands: 1e-3..1e-2
    out.float().sum().backward()
    expected.sum().backward()
    assert x.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    assert relative_error(x.grad, x64.grad) < 1e-2
    assert relative_error(weight.grad, w64.grad) < 1e-2


def test_full_and_sparse_paths_agree(monkeypatch):
    """The dense+sparse and the full-recompute strategies compute the same function."""
    import pansynth.ops.panoptic_conv as module

    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 12, 12, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    panoptic = random_panoptic(2, 12, 12, g, block=4)
    results = []
    for share in (1.0, 0.0):  # never / always take the full path
        monkeypatch.setattr(module, "FULL_RECOMPUTE_SHARE", share)
        out = panoptic_conv2d(x, panoptic, weight)
        results.append((out, *torch.autograd.grad(out.square().sum(), (x, weight))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_plan_cache_sees_in_place_changes_and_views(strategy):
    """Layers fed views of one map share its plan; an in-place change of the map is seen."""
    g = torch.Generator().manual_seed(12)
    panoptic_full = random_panoptic(1, 12, 12, g)
    x = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    view = panoptic_full[:, ::2, ::2]
    first = panoptic_conv2d(x, view, weight)
    torch.testing.assert_close(first, reference_panoptic_conv2d(x, view, weight))
    torch.testing.assert_close(panoptic_conv2d(x, panoptic_full[:, ::2, ::2], weight), first)
    panoptic_full[:, :6, :6] = 123_456  # in place: the same storage, a new version
    changed = panoptic_conv2d(x, panoptic_full[:, ::2, ::2], weight)
    torch.testing.assert_close(changed, reference_panoptic_conv2d(x, panoptic_full[:, ::2, ::2], weight))
    assert not torch.allclose(changed, first)
