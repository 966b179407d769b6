"""panoptic_conv2d against a literal transcription of the paper's eq. 1-2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pansynth.ops import PanopticConv2d, conv_plan, panoptic_conv2d, panoptic_conv2d_labels, semantic_one_hot
from pansynth.ops import _torch_engine as engine

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["sparse", "sparse-masked", "full", "sparse-large-map-path", "full-large-map-path"])
def strategy(request, monkeypatch):
    """Run a test with each exact strategy of the PyTorch engine (dense conv + tap-wise
    subtraction at the irregular pixels; dense conv + the irregular windows computed from
    their masks, the half-precision path, here in any dtype; every window recomputed from its
    mask), and with each way of finding the irregular pixels (batched masks for small maps,
    shifted comparisons for large ones)."""
    monkeypatch.setattr(engine, "FULL_RECOMPUTE_SHARE", 1.0 if request.param.startswith("sparse") else -1.0)
    if request.param.endswith("large-map-path"):
        monkeypatch.setattr(engine, "SMALL_MAP_PIXELS", 0)
    if request.param == "sparse-masked":
        monkeypatch.setattr(engine, "subtraction_is_exact", lambda dtype, device: False)
        monkeypatch.setattr(engine, "GATHER_CHUNK_ELEMENTS", 64)  # several chunks per image
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
    # A crop: rows that cannot be viewed as one (C, H*W) block; gradients too.
    cropped = torch.randn(2, 3, 6, 13, generator=g, dtype=torch.float64)
    cropped[..., :10] = x
    cropped.requires_grad_()
    grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    out = panoptic_conv2d(cropped[..., :10], panoptic, weight)
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out, cropped, grad_out)
    x_ref = x.clone().requires_grad_()
    (expected_grad,) = torch.autograd.grad(reference_panoptic_conv2d(x_ref, panoptic, weight), x_ref, grad_out)
    torch.testing.assert_close(grad[..., :10], expected_grad)
    torch.testing.assert_close(
        panoptic_conv2d(
            x.contiguous(memory_format=torch.channels_last),
            panoptic.transpose(1, 2).contiguous().transpose(1, 2),
            weight,
        ),
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


def test_full_and_sparse_paths_agree(monkeypatch):
    """The dense+sparse and the full-recompute strategies compute the same function."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 12, 12, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    panoptic = random_panoptic(2, 12, 12, g, block=4)
    results = []
    for share in (1.0, 0.0):  # never / always take the full path
        monkeypatch.setattr(engine, "FULL_RECOMPUTE_SHARE", share)
        out = panoptic_conv2d(x, panoptic, weight)
        results.append((out, *torch.autograd.grad(out.square().sum(), (x, weight))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


# --- plans: derived from a map, passed explicitly -------------------------------------------


def test_explicit_plan_equals_plan_per_call(strategy):
    g = torch.Generator().manual_seed(12)
    panoptic_full = random_panoptic(2, 12, 14, g)
    view = panoptic_full[:, ::2, ::2]  # a strided view, as the generator feeds each scale
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    plan = conv_plan(view, 3)
    for weight in weights:  # one plan, several layers
        with_plan = panoptic_conv2d(x, view, weight, plan=plan)
        torch.testing.assert_close(with_plan, reference_panoptic_conv2d(x, view, weight))
        grad_out = torch.randn(with_plan.shape, generator=g, dtype=torch.float64)
        fast = torch.autograd.grad(with_plan, (x, weight), grad_out)
        slow = torch.autograd.grad(panoptic_conv2d(x, view, weight), (x, weight), grad_out)
        for a, b in zip(fast, slow):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("shape", "kernel_size", "match"),
    [((2, 6, 7), 5, "kernel size 3"), ((1, 6, 7), 3, r"\(2, 6, 7\) map"), ((2, 7, 6), 3, "conv_plan")],
)
def test_plan_for_another_map_is_rejected(shape, kernel_size, match):
    plan = conv_plan(torch.zeros(2, 6, 7, dtype=torch.long), 3)
    panoptic = torch.zeros(shape, dtype=torch.long)
    weight = torch.randn(4, 3, kernel_size, kernel_size)
    with pytest.raises(ValueError, match=match):
        panoptic_conv2d(torch.randn(shape[0], 3, *shape[1:]), panoptic, weight, plan=plan)


@pytest.mark.parametrize("edit", ["numpy", "data"])
def test_map_edited_in_place_between_calls(edit, strategy):
    """Nothing derived from a map outlives a call: editing the map in place (through numpy's
    shared memory or ``.data``, which no version counter sees) gives the new map's answer."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    if edit == "numpy":
        array = random_panoptic(1, 12, 12, g).numpy()
        panoptic_full = torch.from_numpy(array)
    else:
        panoptic_full = random_panoptic(1, 12, 12, g)
    first = panoptic_conv2d(x, panoptic_full[:, ::2, ::2], weight)
    torch.testing.assert_close(first, reference_panoptic_conv2d(x, panoptic_full[:, ::2, ::2], weight))
    if edit == "numpy":
        array[:, :6, :6] = 123_456
    else:
        panoptic_full.data[:, :6, :6] = 123_456
    changed = panoptic_conv2d(x, panoptic_full[:, ::2, ::2], weight)
    torch.testing.assert_close(changed, reference_panoptic_conv2d(x, panoptic_full[:, ::2, ::2], weight))
    assert not torch.allclose(changed, first)


def test_backward_uses_the_forward_map(strategy):
    """The backward pass differentiates the function the forward pass computed, even when the
    map is changed in between (the plan travels with the autograd graph)."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    panoptic = random_panoptic(1, 6, 7, g)
    original = panoptic.clone()
    out = panoptic_conv2d(x, panoptic, weight)
    panoptic.fill_(5)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    fast = torch.autograd.grad(out, (x, weight), grad_out)
    slow = torch.autograd.grad(reference_panoptic_conv2d(x, original, weight), (x, weight), grad_out)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


def test_inference_mode(strategy):
    g = torch.Generator().manual_seed(15)
    x = torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64)
    panoptic = random_panoptic(2, 7, 8, g)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    expected = reference_panoptic_conv2d(x, panoptic, weight)
    conv = PanopticConv2d(3, 4, 3, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(weight)
    with torch.inference_mode():
        x_inference, panoptic_inference = x.clone(), panoptic.clone()
        plan = conv_plan(panoptic_inference, 3)
        torch.testing.assert_close(panoptic_conv2d(x_inference, panoptic_inference, weight), expected)
        torch.testing.assert_close(conv(x_inference, panoptic_inference, plan), expected)
    # A plan built under inference mode serves a later training step.
    out = panoptic_conv2d(x.requires_grad_(), panoptic, weight, plan=plan)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# --- memory format ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_output_keeps_the_input_memory_format(device, strategy):
    g = torch.Generator().manual_seed(16)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    panoptic = random_panoptic(2, 7, 9, g)
    weight = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    expected = reference_panoptic_conv2d(x, panoptic, weight)
    grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    x_last = x.to(device).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = panoptic_conv2d(x_last, panoptic.to(device), weight.to(device), backend="torch")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.cpu(), expected)
    out.backward(grad_out.to(device).contiguous(memory_format=torch.channels_last))
    x_ref = x.clone().requires_grad_()
    reference_panoptic_conv2d(x_ref, panoptic, weight).backward(grad_out)
    torch.testing.assert_close(x_last.grad.cpu(), x_ref.grad)
    plain = panoptic_conv2d(x.to(device), panoptic.to(device), weight.to(device), backend="torch")
    assert plain.is_contiguous()


# --- low precision: exact in the paper's sense ------------------------------------------------

HALF_DTYPES = [torch.bfloat16, torch.float16]
# Unit roundoff of each dtype: the error of rounding one value.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}


def loud_neighbour_case(generator, n=2, channels=6, height=10, width=12, loudness=1000.0):
    """Two-segment maps (a ragged boundary and single pixels) where one segment is 1000x louder."""
    panoptic = random_panoptic(n, height, width, generator, block=3)
    loud = panoptic == ID_VALUES[0]
    x = torch.randn(n, channels, height, width, generator=generator, dtype=torch.float64)
    x = torch.where(loud.unsqueeze(1), x * loudness, x)
    return x, panoptic, loud


def own_terms_bound(x, panoptic, weight):
    """k²/sum(M) * sum_q M_q |W_q| |X_q| per output: the size of the pixel's own terms (eq. 2 on |.|)."""
    return reference_panoptic_conv2d(x.abs(), panoptic, weight.abs())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_output_has_no_feature_of_a_louder_neighbour(device, dtype, strategy):
    """In bf16/fp16 each output differs from eq. 2 of its rounded operands by the rounding of
    its own terms: a 1000x louder touching segment leaves no trace (a dense sum corrected by
    subtraction would leave up to ~1000 * 2^-8 of it)."""
    g = torch.Generator().manual_seed(17)
    x, panoptic, _ = loud_neighbour_case(g)
    weight = torch.randn(4, x.shape[1], 3, 3, generator=g, dtype=torch.float64)
    x_low, weight_low = x.to(dtype), weight.to(dtype)
    # The reference of the rounded operands: what remains is the rounding of the sums.
    expected = reference_panoptic_conv2d(x_low.double(), panoptic, weight_low.double())
    out = panoptic_conv2d(x_low.to(device), panoptic.to(device), weight_low.to(device), backend="torch")
    assert out.dtype == dtype
    error = (out.cpu().double() - expected).abs()
    bound = 4 * UNIT_ROUNDOFF[dtype] * own_terms_bound(x_low.double(), panoptic, weight_low.double())
    assert (error <= bound).all(), f"worst error / own-terms bound: {(error / bound).max().item():.3g} (<= 1)"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_input_gradient_has_no_gradient_of_a_louder_neighbour(device, dtype, strategy):
    g = torch.Generator().manual_seed(18)
    x, panoptic, loud = loud_neighbour_case(g)
    weight = torch.randn(4, x.shape[1], 3, 3, generator=g, dtype=torch.float64)
    grad_out = torch.randn(x.shape[0], 4, *x.shape[2:], generator=g, dtype=torch.float64)
    grad_out = torch.where(loud.unsqueeze(1), grad_out * 1000, grad_out)
    x_low, weight_low, grad_low = x.to(dtype), weight.to(dtype), grad_out.to(dtype)

    def reference_grad(weight64, grad64):
        x64 = x_low.double().requires_grad_()
        return torch.autograd.grad(reference_panoptic_conv2d(x64, panoptic, weight64), x64, grad64)[0]

    expected = reference_grad(weight_low.double(), grad_low.double())
    bound = 4 * UNIT_ROUNDOFF[dtype] * reference_grad(weight_low.double().abs(), grad_low.double().abs())
    x_dev = x_low.to(device).requires_grad_()
    out = panoptic_conv2d(x_dev, panoptic.to(device), weight_low.to(device), backend="torch")
    (grad,) = torch.autograd.grad(out, x_dev, grad_low.to(device))
    error = (grad.cpu().double() - expected).abs()
    assert (error <= bound).all(), f"worst error / own-terms bound: {(error / bound).max().item():.3g} (<= 1)"


def test_float32_subtraction_stays_within_float32_rounding(strategy):
    """float32 keeps the fast subtraction on CPU: the neighbour's trace is float32 rounding."""
    g = torch.Generator().manual_seed(19)
    x, panoptic, _ = loud_neighbour_case(g)
    weight = torch.randn(4, x.shape[1], 3, 3, generator=g, dtype=torch.float64)
    expected = reference_panoptic_conv2d(x.float().double(), panoptic, weight.float().double())
    out = panoptic_conv2d(x.float(), panoptic, weight.float())
    error = (out.double() - expected).abs()
    # The rounding of sums that include the loud terms: |W| |X| over the whole window.
    whole_window = F.conv2d(x.abs(), weight.abs(), padding=1) * 9
    assert (error <= 8 * UNIT_ROUNDOFF[torch.float32] * whole_window).all()


def test_mixed_dtypes_outside_autocast_are_rejected():
    with pytest.raises(ValueError, match="input is bfloat16 but weight is float32"):
        ids = torch.zeros(1, 5, 5, dtype=torch.long)
        panoptic_conv2d(torch.randn(1, 3, 5, 5, dtype=torch.bfloat16), ids, torch.randn(4, 3, 3, 3))


AUTOCAST = [("cpu", torch.bfloat16)]
if "cuda" in DEVICES:
    AUTOCAST += [("cuda", torch.float16), ("cuda", torch.bfloat16)]


@pytest.mark.parametrize(("device", "dtype"), AUTOCAST)
@pytest.mark.parametrize("size", [6, 24])  # small maps take the full-recompute path, larger ones the sparse one
def test_autocast_forward_and_backward(device, dtype, size, strategy):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 8, size, size, generator=g).to(device).requires_grad_()
    weight = torch.randn(8, 8, 3, 3, generator=g).to(device).requires_grad_()
    bias = torch.randn(8, generator=g).to(device).requires_grad_()
    panoptic = random_panoptic(2, size, size, g, block=4)
    with torch.autocast(device, dtype=dtype):
        out = panoptic_conv2d(x, panoptic.to(device), weight, bias)
    assert out.dtype == dtype
    x64, w64, b64 = (t.detach().cpu().double().requires_grad_() for t in (x, weight, bias))
    expected = panoptic_conv2d(x64, panoptic, w64, b64)

    def relative_error(a, b):
        return ((a.cpu().double() - b).norm() / b.norm()).item()

    assert relative_error(out, expected) < 1e-2  # half-precision operands: 1e-3..1e-2
    out.float().sum().backward()
    expected.sum().backward()
    assert x.grad.dtype == weight.grad.dtype == bias.grad.dtype == torch.float32
    assert relative_error(x.grad, x64.grad) < 1e-2
    assert relative_error(weight.grad, w64.grad) < 1e-2
    assert relative_error(bias.grad, b64.grad) < 1e-2
