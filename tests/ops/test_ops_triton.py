"""The Triton kernels (pansynth.ops._triton) against literal float64 transcriptions of the paper.

On CUDA the compiled kernels run on CUDA tensors; without CUDA they run in Triton's
interpreter on CPU tensors (``TRITON_INTERPRET=1``, set in conftest.py), so the maps are
tiny. The references below loop over pixels and window positions, as eq. 1-2 and
Algorithm 1 are written, and differentiate them by hand in the scatter form of the chain
rule (each output pixel sends its gradient back along the window positions it used).
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from pansynth.ops import _triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not _triton.is_available(torch.device(DEVICE)),
    reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 and an importable triton",
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Ids that a float64 comparison (they differ in the lowest bit only) or a 32-bit one (they
# differ above bit 31 only: 2**32 + 3 and 3) would confuse, at both ends of int64.
CLOSE_IDS = torch.tensor([INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1, 2**32 + 3, 3])
ID_VALUES = torch.cat([CLOSE_IDS, torch.tensor([0, -5])])

# (N, C, H, W, O): ragged sizes, a one-row map, C and O above one 16-wide block.
CONV_SHAPES = [(2, 3, 7, 9, 4), (1, 5, 1, 13, 6), (3, 17, 5, 6, 19)]


@pytest.fixture(autouse=True)
def _exact_fp32():
    """fp32 references with fp32 tolerances: no TF32 in the kernels' dots (nor in torch's)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def random_ids(n, height, width, generator, block=2):
    """Blocky maps (windows cross several segments) with single-pixel segments sprinkled in."""
    pick = torch.randint(0, len(ID_VALUES), (n, -(-height // block), -(-width // block)), generator=generator)
    ids = ID_VALUES[pick].repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :height, :width]
    single = torch.rand(n, height, width, generator=generator) < 0.15
    return torch.where(
        single, ID_VALUES[torch.randint(0, len(ID_VALUES), (n, height, width), generator=generator)], ids
    )


# --- literal references ------------------------------------------------------------------------


def window(ids, n, y, x, kernel_size):
    """The window positions (i, j, yy, xx) with M = 1 (eq. 1) around (y, x), and k²/sum(M)."""
    radius = kernel_size // 2
    height, width = ids.shape[1:]
    matched = []
    for i in range(kernel_size):
        for j in range(kernel_size):
            yy, xx = y + i - radius, x + j - radius
            if 0 <= yy < height and 0 <= xx < width and int(ids[n, yy, xx]) == int(ids[n, y, x]):
                matched.append((i, j, yy, xx))
    return matched, kernel_size * kernel_size / len(matched)


def reference_conv(x, ids, weight, bias):
    """Eq. 2: out[p] = sum_t M_t W_t x[p + d_t] * k²/sum(M) + b. Returns (out, scale)."""
    x, weight = x.double(), weight.double()
    n_batch, _, height, width = x.shape
    kernel_size = weight.shape[-1]
    out = torch.zeros(n_batch, weight.shape[0], height, width, dtype=torch.float64)
    scale = torch.zeros(n_batch, height, width, dtype=torch.float64)
    for n in range(n_batch):
        for y in range(height):
            for x_ in range(width):
                matched, scale[n, y, x_] = window(ids, n, y, x_, kernel_size)
                for i, j, yy, xx in matched:
                    out[n, :, y, x_] += weight[:, :, i, j] @ x[n, :, yy, xx]
                out[n, :, y, x_] *= scale[n, y, x_]
                if bias is not None:
                    out[n, :, y, x_] += bias.double()
    return out, scale


def reference_conv_grads(grad_out, x, ids, weight):
    """d(eq. 2): each output pixel p sends s(p) W_t^T grad[p] to x[p + d_t] and s(p) grad[p] x[p + d_t]^T
    to W_t, for every window position t with M_t(p) = 1. Returns (grad_input, grad_weight); the bias
    gradient, the sum of grad_out, is left to the callers of the kernels."""
    grad_out, x, weight = grad_out.double(), x.double(), weight.double()
    n_batch, _, height, width = x.shape
    kernel_size = weight.shape[-1]
    grad_x = torch.zeros_like(x)
    grad_w = torch.zeros_like(weight)
    for n in range(n_batch):
        for y in range(height):
            for x_ in range(width):
                matched, scale = window(ids, n, y, x_, kernel_size)
                g = grad_out[n, :, y, x_] * scale
                for i, j, yy, xx in matched:
                    grad_x[n, :, yy, xx] += weight[:, :, i, j].t() @ g
                    grad_w[:, :, i, j] += torch.outer(g, x[n, :, yy, xx])
    return grad_x, grad_w


CANDIDATES = ((0, 0), (0, 1), (1, 0), (1, 1))  # Algorithm 1's four loops, (row, column) offsets


def reference_upsample(features, low, high):
    """Algorithm 1: the first candidate with the pixel's id, 0 and choice 4 where none matches."""
    n_batch, channels, low_h, low_w = features.shape
    out = torch.zeros(n_batch, channels, 2 * low_h, 2 * low_w, dtype=torch.float64)
    choice = torch.full((n_batch, 2 * low_h, 2 * low_w), 4, dtype=torch.uint8)
    for n in range(n_batch):
        for y in range(2 * low_h):
            for x in range(2 * low_w):
                for k, (d_row, d_col) in enumerate(CANDIDATES):
                    row, col = y // 2 + d_row, x // 2 + d_col
                    if row < low_h and col < low_w and int(low[n, row, col]) == int(high[n, y, x]):
                        out[n, :, y, x] = features[n, :, row, col].double()
                        choice[n, y, x] = k
                        break
    return out, choice


def reference_upsample_grad(grad_up, choice, low_size):
    """Each matched high pixel sends its gradient to the low pixel it copied."""
    n_batch, channels = grad_up.shape[:2]
    grad = torch.zeros(n_batch, channels, *low_size, dtype=torch.float64)
    for n in range(n_batch):
        for y in range(grad_up.shape[2]):
            for x in range(grad_up.shape[3]):
                k = int(choice[n, y, x])
                if k < 4:
                    grad[n, :, y // 2 + CANDIDATES[k][0], x // 2 + CANDIDATES[k][1]] += grad_up[n, :, y, x].double()
    return grad


# --- partial convolution -------------------------------------------------------------------------


def conv_case(shape, kernel_size, seed, with_bias=True):
    n, c, h, w, o = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    ids = random_ids(n, h, w, g)
    weight = torch.randn(o, c, kernel_size, kernel_size, generator=g)
    bias = torch.randn(o, generator=g) if with_bias else None
    grad_out = torch.randn(n, o, h, w, generator=g)
    return x, ids, weight, bias, grad_out


def on_device(*tensors):
    return [None if t is None else t.to(DEVICE) for t in tensors]


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_forward_matches_eq2(shape, kernel_size):
    x, ids, weight, bias, _ = conv_case(shape, kernel_size, seed=kernel_size, with_bias=shape[0] != 1)
    expected, expected_scale = reference_conv(x, ids, weight, bias)
    out, scale = _triton.conv2d_forward(*on_device(x, ids, weight, bias))
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert scale.dtype == torch.float32 and scale.shape == ids.shape
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scale.cpu().double(), expected_scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_grad_prescale_is_g_times_scale_in_nhwc_and_the_bias_gradient(dtype, layout):
    """The backward's one pass over g: g~ = g * k²/sum(M) rounded once to the input's dtype (as
    fp32 g * s, then a cast), dense NHWC whatever g's layout, and sum_{n,y,x} g of eq. 2's bias."""
    g_ = torch.Generator().manual_seed(41)
    n, o, h, w = 2, 19, 5, 7
    grad = torch.randn(n, o, h, w, generator=g_).to(dtype)
    if layout == "channels_last":
        grad = grad.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a view with a gap in every stride
        grad = torch.randn(n, 2 * o, h, 2 * w, generator=g_).to(dtype)[:, ::2, :, ::2]
    scale = 9 / torch.randint(1, 10, (n, h, w), generator=g_).float()
    grad_d, scale_d = on_device(grad, scale)
    scaled, bias = _triton.conv2d_grad_prescale(grad_d, scale_d, dtype, True)
    literal = torch.empty(n, o, h, w, dtype=dtype)
    for b, c, y, x in torch.cartesian_prod(*(torch.arange(size) for size in (n, o, h, w))).tolist():
        literal[b, c, y, x] = (grad[b, c, y, x].float() * scale[b, y, x]).to(dtype)
    assert scaled.dtype == dtype and scaled.stride() == (h * w * o, 1, w * o, o)
    # Triton's interpreter truncates fp32 -> bf16 (a GPU rounds to nearest even, as torch): one ulp there.
    ulp = 2**-7 if dtype == torch.bfloat16 and DEVICE == "cpu" else 0
    torch.testing.assert_close(scaled.cpu(), literal, rtol=ulp, atol=0)
    expected_bias = grad.double().sum((0, 2, 3))
    assert bias.dtype == torch.float32
    torch.testing.assert_close(bias.cpu().double(), expected_bias, rtol=1e-6, atol=1e-5)
    scaled_fp32, no_bias = _triton.conv2d_grad_prescale(grad_d, scale_d, torch.float32, False)
    assert no_bias is None and scaled_fp32.dtype == torch.float32
    torch.testing.assert_close(scaled_fp32.cpu(), grad.float() * scale.unsqueeze(1), rtol=0, atol=0)


def test_conv_launchers_read_a_given_neighbour_mask_and_check_it():
    """``neighbours=`` / ``mask=`` (a plan's mask of the map) give the results of the ids, and a
    mask of the wrong type or shape, or a channels_last weight, is handled: errors name the argument."""
    from pansynth.ops import neighbour_mask

    x, ids, weight, bias, grad_out = conv_case((2, 5, 6, 7, 4), 3, seed=31)
    x_d, ids_d, weight_d, bias_d, grad_d = on_device(x, ids, weight, bias, grad_out)
    out, scale = _triton.conv2d_forward(x_d, ids_d, weight_d, bias_d)
    grad_x = _triton.conv2d_input_grad(grad_d, scale, ids_d, weight_d)
    grad_w = _triton.conv2d_weight_grad(grad_d, scale, x_d, ids_d, 3)
    mask, mask_scale = neighbour_mask(ids_d, 3)
    weight_last = weight_d.contiguous(memory_format=torch.channels_last)
    out2, scale2 = _triton.conv2d_forward(x_d, None, weight_last, bias_d, neighbours=(mask, mask_scale))
    torch.testing.assert_close(out2, out, rtol=0, atol=0)
    torch.testing.assert_close(scale2, scale, rtol=0, atol=0)
    grad_x2 = _triton.conv2d_input_grad(grad_d, scale, None, weight_last, mask=mask)
    grad_w2 = _triton.conv2d_weight_grad(grad_d, scale, x_d, None, 3, mask=mask)
    torch.testing.assert_close(grad_x2, grad_x, rtol=0, atol=0)
    torch.testing.assert_close(grad_w2, grad_w, rtol=0, atol=0)
    # the weight gradient comes in the layout of NHWC weights: it accumulates into one without a copy
    assert grad_w.is_contiguous(memory_format=torch.channels_last)
    leaf = weight_last.clone(memory_format=torch.channels_last).requires_grad_()
    from pansynth.ops import panoptic_conv2d

    panoptic_conv2d(x_d, ids_d, leaf, bias_d, backend="triton").backward(grad_d)
    assert leaf.grad.stride() == leaf.stride()
    torch.testing.assert_close(leaf.grad, grad_w, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"mask must be \(2, 6, 7\) int32 \(from neighbour_mask\)"):
        _triton.conv2d_forward(x_d, None, weight_d, bias_d, neighbours=(mask.long(), mask_scale))
    with pytest.raises(ValueError, match=r"mask must be \(2, 6, 7\) int32"):
        _triton.conv2d_input_grad(grad_d, scale, None, weight_d, mask=mask[:, :3])
    with pytest.raises(ValueError, match="panoptic must be"):
        _triton.conv2d_weight_grad(grad_d, scale, x_d, None, 3)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_gradients_match_eq2(shape, kernel_size):
    x, ids, weight, bias, grad_out = conv_case(shape, kernel_size, seed=10 + kernel_size)
    expected_x, expected_w = reference_conv_grads(grad_out, x, ids, weight)
    x_d, ids_d, weight_d, bias_d, grad_d = on_device(x, ids, weight, bias, grad_out)
    _, scale = _triton.conv2d_forward(x_d, ids_d, weight_d, bias_d)
    grad_x = _triton.conv2d_input_grad(grad_d, scale, ids_d, weight_d)
    grad_w = _triton.conv2d_weight_grad(grad_d, scale, x_d, ids_d, kernel_size)
    assert grad_x.dtype == torch.float32 and grad_x.is_contiguous(memory_format=torch.channels_last)
    assert grad_w.dtype == torch.float32 and grad_w.shape == weight.shape
    torch.testing.assert_close(grad_x.cpu().double(), expected_x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_w.cpu().double(), expected_w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("int32_offsets", [True, False], ids=["int32-offsets", "int64-offsets"])
def test_conv_both_offset_widths(int32_offsets, monkeypatch):
    """The int64 path (tensors past 2^31 elements) computes what the int32 one does: forced here."""
    from pansynth.ops._triton import _launch

    monkeypatch.setattr(_launch, "_fits_int32", lambda *sizes: int32_offsets)
    x, ids, weight, bias, grad_out = conv_case((2, 17, 5, 6, 19), 5, seed=13)
    expected, _ = reference_conv(x, ids, weight, bias)
    expected_x, expected_w = reference_conv_grads(grad_out, x, ids, weight)
    x_d, ids_d, weight_d, bias_d, grad_d = on_device(x, ids, weight, bias, grad_out)
    out, scale = _triton.conv2d_forward(x_d, ids_d, weight_d, bias_d)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-4, atol=1e-4)
    grad_x = _triton.conv2d_input_grad(grad_d, scale, ids_d, weight_d)
    grad_w = _triton.conv2d_weight_grad(grad_d, scale, x_d, ids_d, 5)
    torch.testing.assert_close(grad_x.cpu().double(), expected_x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_w.cpu().double(), expected_w, rtol=1e-4, atol=1e-4)


def relative_error(actual, expected):
    return ((actual.cpu().double() - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_conv_half_precision(dtype, tolerance):
    """bf16/fp16 operands, fp32 accumulation, outputs in the input dtype."""
    x, ids, weight, bias, grad_out = conv_case((2, 8, 6, 7, 8), 3, seed=20)
    expected, _ = reference_conv(x, ids, weight, bias)
    expected_x, expected_w = reference_conv_grads(grad_out, x, ids, weight)
    x_d, ids_d, weight_d, bias_d, grad_d = on_device(x.to(dtype), ids, weight, bias, grad_out.to(dtype))
    out, scale = _triton.conv2d_forward(x_d, ids_d, weight_d, bias_d)
    grad_x = _triton.conv2d_input_grad(grad_d, scale, ids_d, weight_d)
    grad_w = _triton.conv2d_weight_grad(grad_d, scale, x_d, ids_d, 3)
    assert out.dtype == dtype and grad_x.dtype == dtype and grad_w.dtype == torch.float32
    assert relative_error(out, expected) < tolerance
    assert relative_error(grad_x, expected_x) < tolerance
    assert relative_error(grad_w, expected_w) < tolerance


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_input_gradient_reads_the_forward_weight_rows_in_place(dtype, kernel_size, monkeypatch):
    """In 16 bits the input gradient reads the forward's (O, k²C) weight rows as the flipped, transposed
    kernel (no per-backward conversion): exact against eq. 2's gradient of the rounded operands, with
    ragged C != O over several blocks, and the weight of an NHWC model read without a copy."""
    from pansynth.ops._triton import _launch

    monkeypatch.setattr(_launch, "_input_grad_rows", lambda weight: pytest.fail("16-bit weight converted"))
    x, ids, weight, _, grad_out = conv_case((2, 17, 5, 6, 19), kernel_size, seed=42 + kernel_size)
    x, weight, grad_out = (t.to(dtype) for t in (x, weight, grad_out))
    expected_x, _ = reference_conv_grads(grad_out.double(), x.double(), ids, weight.double())
    weight_d = on_device(weight)[0].contiguous(memory_format=torch.channels_last)
    x_d, ids_d, grad_d = on_device(x, ids, grad_out)
    _, scale = _triton.conv2d_forward(x_d, ids_d, weight_d, None)
    rows = _launch._forward_rows(weight_d, dtype)
    assert rows.data_ptr() == weight_d.data_ptr()  # a view: nothing converted
    grad_x = _triton.conv2d_input_grad(grad_d, scale, ids_d, weight_d)
    assert grad_x.dtype == dtype
    # fp32 accumulation of the rounded operands; the one rounding left is g~ and the output's
    assert relative_error(grad_x, expected_x) < (8e-3 if dtype == torch.bfloat16 else 1e-3)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_conv_half_precision_no_leak_across_segments(dtype, tolerance):
    """A pixel's output holds no term of a neighbouring segment, even one 1000x larger: the mask is
    applied on load, not subtracted from a dense sum (which would leave 1000x the rounding error)."""
    g = torch.Generator().manual_seed(21)
    n, c, h, w, o = 1, 8, 6, 8, 8
    ids = torch.full((n, h, w), INT64_MAX - 1)
    ids[:, :, 4:] = INT64_MAX
    x = torch.randn(n, c, h, w, generator=g)
    x[:, :, :, 4:] *= 1000
    weight = torch.randn(o, c, 3, 3, generator=g)
    grad_out = torch.randn(n, o, h, w, generator=g)
    grad_out[:, :, :, 4:] *= 1000
    expected, _ = reference_conv(x, ids, weight, None)
    expected_x, _ = reference_conv_grads(grad_out, x, ids, weight)
    x_d, ids_d, weight_d, grad_d = on_device(x.to(dtype), ids, weight, grad_out.to(dtype))
    out, scale = _triton.conv2d_forward(x_d, ids_d, weight_d, None)
    grad_x = _triton.conv2d_input_grad(grad_d, scale, ids_d, weight_d)
    for actual, reference in ((out, expected), (grad_x, expected_x)):
        boundary = actual[..., 3].cpu().double()  # the column of the small segment next to the large one
        error = (boundary - reference[..., 3]).norm(dim=1) / reference[..., 3].norm(dim=1)
        assert error.max().item() < tolerance


def test_conv_single_pixel_segments():
    """Every pixel its own segment: only the centre tap survives, rescaled by k²."""
    g = torch.Generator().manual_seed(22)
    x = torch.randn(2, 4, 5, 6, generator=g)
    weight = torch.randn(5, 4, 3, 3, generator=g)
    bias = torch.randn(5, generator=g)
    ids = torch.arange(2 * 5 * 6).view(2, 5, 6) + (INT64_MAX - 100)
    grad_out = torch.randn(2, 5, 5, 6, generator=g)
    centre = weight[:, :, 1:2, 1:2]
    x_d, ids_d, weight_d, bias_d, grad_d = on_device(x, ids, weight, bias, grad_out)
    out, scale = _triton.conv2d_forward(x_d, ids_d, weight_d, bias_d)
    torch.testing.assert_close(out.cpu(), F.conv2d(x, 9 * centre, bias), rtol=1e-4, atol=1e-4)
    assert bool((scale == 9).all())
    grad_x = _triton.conv2d_input_grad(grad_d, scale, ids_d, weight_d)
    torch.testing.assert_close(grad_x.cpu(), F.conv_transpose2d(grad_out, 9 * centre), rtol=1e-4, atol=1e-4)
    grad_w = _triton.conv2d_weight_grad(grad_d, scale, x_d, ids_d, 3).cpu()
    expected_centre = 9 * torch.einsum("nohw,nchw->oc", grad_out, x)
    torch.testing.assert_close(grad_w[:, :, 1, 1], expected_centre, rtol=1e-4, atol=1e-4)
    grad_w[:, :, 1, 1] = 0
    assert not grad_w.any()


def test_conv_single_segment_is_plain_convolution_inside():
    """One segment: eq. 2 equals conv2d wherever the window lies inside the image."""
    g = torch.Generator().manual_seed(23)
    x = torch.randn(1, 6, 7, 8, generator=g)
    weight = torch.randn(3, 6, 5, 5, generator=g)
    ids = torch.full((1, 7, 8), INT64_MIN)
    (out, _) = _triton.conv2d_forward(*on_device(x, ids, weight, None))
    dense = F.conv2d(x, weight, padding=2)
    torch.testing.assert_close(out.cpu()[..., 2:-2, 2:-2], dense[..., 2:-2, 2:-2], rtol=1e-4, atol=1e-4)


def test_conv_ids_differing_in_the_lowest_or_highest_bits():
    """Neighbouring ids 2**63 - 1 and 2**63 - 2 (equal as float64), 2**32 + 3 and 3 (equal in
    32 bits) are different segments."""
    g = torch.Generator().manual_seed(24)
    ids = CLOSE_IDS[torch.randint(0, len(CLOSE_IDS), (2, 4, 5), generator=g)]
    x = torch.randn(2, 3, 4, 5, generator=g)
    weight = torch.randn(4, 3, 3, 3, generator=g)
    expected, _ = reference_conv(x, ids, weight, None)
    out, _ = _triton.conv2d_forward(*on_device(x, ids, weight, None))
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-4, atol=1e-4)
    # int32 ids are accepted (cast to int64).
    small_ids = torch.randint(-3, 3, (2, 4, 5), generator=g, dtype=torch.int32)
    out, _ = _triton.conv2d_forward(*on_device(x, small_ids, weight, None))
    torch.testing.assert_close(out.cpu().double(), reference_conv(x, small_ids, weight, None)[0], rtol=1e-4, atol=1e-4)


def test_conv_strided_and_channels_last_inputs():
    """Views with any strides (sliced NCHW, channels_last, sliced channels_last) give the same results."""
    x, ids, weight, bias, grad_out = conv_case((2, 5, 6, 7, 4), 3, seed=25)
    expected, _ = reference_conv(x, ids, weight, bias)
    expected_x, expected_w = reference_conv_grads(grad_out, x, ids, weight)
    x, ids, weight, bias, grad_out = on_device(x, ids, weight, bias, grad_out)
    # The views are taken on the device: .to() would make them contiguous.
    big_x = torch.zeros(2, 5, 12, 9, device=DEVICE)
    big_x[:, :, ::2, 1:8] = x
    big_grad = torch.zeros(2, 4, 6, 14, device=DEVICE)
    big_grad[..., ::2] = grad_out
    big_ids = torch.zeros(2, 12, 14, dtype=torch.long, device=DEVICE)
    big_ids[:, 1::2, ::2] = ids
    channels_last = torch.channels_last
    layouts = {
        "sliced": (big_x[:, :, ::2, 1:8], big_grad[..., ::2], big_ids[:, 1::2, ::2]),
        "channels_last": (
            x.contiguous(memory_format=channels_last),
            grad_out.contiguous(memory_format=channels_last),
            ids,
        ),
        "sliced_channels_last": (
            big_x.contiguous(memory_format=channels_last)[:, :, ::2, 1:8],
            big_grad.contiguous(memory_format=channels_last)[..., ::2],
            big_ids.transpose(1, 2).contiguous().transpose(1, 2)[:, 1::2, ::2],
        ),
    }
    for name, (x_view, grad_view, ids_view) in layouts.items():
        out, scale = _triton.conv2d_forward(x_view, ids_view, weight, bias)
        torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-4, atol=1e-4, msg=name)
        grad_x = _triton.conv2d_input_grad(grad_view, scale, ids_view, weight)
        torch.testing.assert_close(grad_x.cpu().double(), expected_x, rtol=1e-4, atol=1e-4, msg=name)
        grad_w = _triton.conv2d_weight_grad(grad_view, scale, x_view, ids_view, 3)
        torch.testing.assert_close(grad_w.cpu().double(), expected_w, rtol=1e-4, atol=1e-4, msg=name)


def test_conv_batch_size_zero():
    x = torch.zeros(0, 3, 4, 5, device=DEVICE)
    ids = torch.zeros(0, 4, 5, dtype=torch.long, device=DEVICE)
    weight = torch.randn(6, 3, 3, 3, device=DEVICE)
    out, scale = _triton.conv2d_forward(x, ids, weight, torch.zeros(6, device=DEVICE))
    assert out.shape == (0, 6, 4, 5) and scale.shape == (0, 4, 5)
    grad_out = torch.zeros(0, 6, 4, 5, device=DEVICE)
    assert _triton.conv2d_input_grad(grad_out, scale, ids, weight).shape == (0, 3, 4, 5)
    grad_w = _triton.conv2d_weight_grad(grad_out, scale, x, ids, 3)
    assert grad_w.shape == (6, 3, 3, 3) and not grad_w.any()


def _conv_args(**changes):
    args = {
        "input": torch.randn(1, 3, 5, 5),
        "panoptic": torch.zeros(1, 5, 5, dtype=torch.long),
        "weight": torch.randn(4, 3, 3, 3),
        "bias": None,
    }
    args.update(changes)
    return {
        name: value.to(DEVICE) if isinstance(value, torch.Tensor) and value.device.type == "cpu" else value
        for name, value in args.items()
    }


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"input": torch.randn(3, 5, 5)}, r"input must be a \(N, C, H, W\)"),
        ({"input": torch.randn(1, 3, 5, 5, dtype=torch.float64)}, "float32, bfloat16 or float16"),
        ({"panoptic": torch.zeros(1, 5, 5)}, "panoptic must be .* integer ids"),
        ({"panoptic": torch.zeros(1, 4, 5, dtype=torch.long)}, "to match the input"),
        ({"weight": torch.randn(4, 3, 2, 2)}, "square kernel of size 1, 3 or 5"),
        ({"weight": torch.randn(4, 3, 7, 7)}, "square kernel of size 1, 3 or 5"),
        ({"weight": torch.randn(4, 2, 3, 3)}, "input channels"),
        ({"bias": torch.randn(3)}, r"bias must be \(4,\)"),
        ({"weight": torch.randn(4, 3, 3, 3, device="meta")}, "weight is on meta"),
        (
            {
                "input": torch.randn(1, 3, 5, 5, device="meta"),
                "panoptic": torch.zeros(1, 5, 5, dtype=torch.long, device="meta"),
                "weight": torch.randn(4, 3, 3, 3, device="meta"),
            },
            "run on CUDA tensors",
        ),
    ],
)
def test_conv_forward_bad_input(changes, match):
    with pytest.raises(ValueError, match=match):
        _triton.conv2d_forward(**_conv_args(**changes))


def test_conv_gradients_bad_input():
    grad_out, scale = torch.randn(1, 4, 5, 5, device=DEVICE), torch.ones(1, 5, 5, device=DEVICE)
    ids, weight = torch.zeros(1, 5, 5, dtype=torch.long, device=DEVICE), torch.randn(4, 3, 3, 3, device=DEVICE)
    x = torch.randn(1, 3, 5, 5, device=DEVICE)
    with pytest.raises(ValueError, match="scale must be"):
        _triton.conv2d_input_grad(grad_out, scale[:, :4], ids, weight)
    with pytest.raises(ValueError, match="4 output channels but grad_output has 5"):
        _triton.conv2d_input_grad(torch.randn(1, 5, 5, 5, device=DEVICE), scale, ids, weight)
    with pytest.raises(ValueError, match="kernel_size must be 1, 3 or 5"):
        _triton.conv2d_weight_grad(grad_out, scale, x, ids, 2)
    with pytest.raises(ValueError, match="to match grad_output"):
        _triton.conv2d_weight_grad(grad_out, scale, x[:, :, :4], ids, 3)


def test_is_available():
    assert _triton.is_available(torch.device(DEVICE))
    assert not _triton.is_available(torch.device("meta"))
    assert _triton.is_available(torch.device("cuda")) == torch.cuda.is_available()


# --- upsampling ----------------------------------------------------------------------------------


def upsample_case(n, channels, low_h, low_w, seed):
    g = torch.Generator().manual_seed(seed)
    high = ID_VALUES[torch.randint(0, 3, (n, 2 * low_h, 2 * low_w), generator=g)]
    low = high[:, ::2, ::2].clone()  # as in the generator; then some low pixels of a new id
    low = torch.where(torch.rand(low.shape, generator=g) < 0.2, ID_VALUES[3], low)
    features = torch.randn(n, channels, low_h, low_w, generator=g)
    grad_up = torch.randn(n, channels, 2 * low_h, 2 * low_w, generator=g)
    return features, low, high, grad_up


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 17, 1, 1), (3, 5, 3, 7)], ids=lambda s: "x".join(map(str, s)))
def test_upsample_matches_algorithm_1(shape):
    features, low, high, grad_up = upsample_case(*shape, seed=sum(shape))
    expected, expected_choice = reference_upsample(features, low, high)
    up, choice = _triton.upsample_forward(*on_device(features, low, high))
    assert up.dtype == torch.float32 and up.is_contiguous(memory_format=torch.channels_last)
    assert choice.dtype == torch.uint8
    torch.testing.assert_close(up.cpu().double(), expected, rtol=0, atol=0)
    torch.testing.assert_close(choice.cpu(), expected_choice, rtol=0, atol=0)
    grad = _triton.upsample_backward(grad_up.to(DEVICE), choice, shape[2:])
    assert grad.dtype == torch.float32 and grad.shape == features.shape
    expected_grad = reference_upsample_grad(grad_up, expected_choice, shape[2:])
    torch.testing.assert_close(grad.cpu().double(), expected_grad, rtol=1e-5, atol=1e-5)


def test_upsample_covers_every_choice():
    """A map built so that each of the five outcomes (4 candidates, hole) occurs."""
    low = torch.tensor([[[1, 2], [3, 4]]])
    high = torch.tensor([[[1, 2, 2, 9], [3, 4, 4, 9], [3, 4, 4, 9], [9, 9, 9, 9]]])
    features = torch.arange(8.0).view(1, 2, 2, 2)
    expected, expected_choice = reference_upsample(features, low, high)
    assert set(expected_choice.unique().tolist()) == {0, 1, 2, 3, 4}
    up, choice = _triton.upsample_forward(*on_device(features, low, high))
    torch.testing.assert_close(up.cpu().double(), expected, rtol=0, atol=0)
    torch.testing.assert_close(choice.cpu(), expected_choice, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_upsample_half_precision(dtype):
    features, low, high, grad_up = upsample_case(2, 6, 3, 4, seed=30)
    features, grad_up = features.to(dtype), grad_up.to(dtype)
    expected, expected_choice = reference_upsample(features, low, high)
    up, choice = _triton.upsample_forward(*on_device(features, low, high))
    assert up.dtype == dtype
    torch.testing.assert_close(up.cpu().double(), expected, rtol=0, atol=0)  # a copy: exact
    grad = _triton.upsample_backward(grad_up.to(DEVICE), choice, (3, 4))
    assert grad.dtype == dtype
    # fp32 sums rounded once to the output dtype: within one rounding of the exact sums.
    expected_grad = reference_upsample_grad(grad_up, expected_choice, (3, 4))
    torch.testing.assert_close(grad.cpu().double(), expected_grad, rtol=2 * torch.finfo(dtype).eps, atol=1e-6)


def test_upsample_close_ids_and_strided_inputs():
    g = torch.Generator().manual_seed(31)
    high = CLOSE_IDS[torch.randint(0, len(CLOSE_IDS), (2, 6, 8), generator=g)]
    low = CLOSE_IDS[torch.randint(0, len(CLOSE_IDS), (2, 3, 4), generator=g)]
    features = torch.randn(2, 5, 3, 4, generator=g)
    grad_up = torch.randn(2, 5, 6, 8, generator=g)
    expected, expected_choice = reference_upsample(features, low, high)
    expected_grad = reference_upsample_grad(grad_up, expected_choice, (3, 4))
    features, low, high, grad_up = on_device(features, low, high, grad_up)
    big_features = torch.zeros(2, 5, 6, 4, device=DEVICE).contiguous(memory_format=torch.channels_last)
    big_features[:, :, ::2] = features
    big_high = torch.zeros(2, 6, 16, dtype=torch.long, device=DEVICE)
    big_high[..., 1::2] = high
    big_grad = torch.zeros(2, 10, 6, 8, device=DEVICE)
    big_grad[:, ::2] = grad_up
    layouts = (
        (features, high, grad_up),
        (big_features[:, :, ::2], big_high[..., 1::2], big_grad[:, ::2]),
        (
            features.transpose(2, 3).contiguous().transpose(2, 3),
            high.transpose(1, 2).contiguous().transpose(1, 2),
            grad_up.contiguous(memory_format=torch.channels_last),
        ),
    )
    for features_view, high_view, grad_view in layouts:
        up, choice = _triton.upsample_forward(features_view, low, high_view)
        torch.testing.assert_close(up.cpu().double(), expected, rtol=0, atol=0)
        torch.testing.assert_close(choice.cpu(), expected_choice, rtol=0, atol=0)
        grad = _triton.upsample_backward(grad_view, choice, (3, 4))
        torch.testing.assert_close(grad.cpu().double(), expected_grad, rtol=1e-5, atol=1e-5)


def test_upsample_batch_size_zero():
    up, choice = _triton.upsample_forward(
        torch.zeros(0, 3, 2, 2, device=DEVICE),
        torch.zeros(0, 2, 2, dtype=torch.long, device=DEVICE),
        torch.zeros(0, 4, 4, dtype=torch.long, device=DEVICE),
    )
    assert up.shape == (0, 3, 4, 4) and choice.shape == (0, 4, 4) and choice.dtype == torch.uint8
    assert _triton.upsample_backward(torch.zeros(0, 3, 4, 4, device=DEVICE), choice, (2, 2)).shape == (0, 3, 2, 2)


def test_upsample_bad_input():
    features = torch.randn(1, 3, 2, 2, device=DEVICE)
    low, high = (
        torch.zeros(1, 2, 2, dtype=torch.long, device=DEVICE),
        torch.zeros(1, 4, 4, dtype=torch.long, device=DEVICE),
    )
    with pytest.raises(ValueError, match=r"features must be a \(N, C, h, w\)"):
        _triton.upsample_forward(features[0], low, high)
    with pytest.raises(ValueError, match="panoptic_low must be"):
        _triton.upsample_forward(features, low[:, :1], high)
    with pytest.raises(ValueError, match="panoptic_high must be"):
        _triton.upsample_forward(features, low, high[:, :3])
    with pytest.raises(ValueError, match="panoptic_high must be .* integer ids"):
        _triton.upsample_forward(features, low, high.float())
    with pytest.raises(ValueError, match="low_size"):
        _triton.upsample_backward(torch.randn(1, 3, 4, 4, device=DEVICE), high.to(torch.uint8), (2, 3))
    with pytest.raises(ValueError, match="choice must be"):
        _triton.upsample_backward(torch.randn(1, 3, 4, 4, device=DEVICE), low.to(torch.uint8), (2, 2))


# --- the GPU check script ------------------------------------------------------------------------


def test_gpu_check_script_references_and_report(capsys):
    """``python -m pansynth.ops._triton.check`` compares the kernels with vectorised float64
    references: they agree with the literal ones, and its report reads small errors."""
    from pansynth.ops._triton import check

    x, ids, weight, bias, grad_out = conv_case((2, 3, 5, 6, 4), 3, seed=40)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    check.reference_conv(x64, ids, w64, bias.double()).backward(grad_out.double())
    expected_x, expected_w = reference_conv_grads(grad_out, x, ids, weight)
    torch.testing.assert_close(
        check.reference_conv(x64, ids, w64, bias.double()), reference_conv(x, ids, weight, bias)[0]
    )
    torch.testing.assert_close(x64.grad, expected_x)
    torch.testing.assert_close(w64.grad, expected_w)
    features, low, high, _ = upsample_case(2, 3, 3, 4, seed=41)
    expected_up, _ = reference_upsample(features, low, high)
    torch.testing.assert_close(check.reference_upsample(features.double(), low, high), expected_up)

    check.check_conv((1, 3, 4, 5, 4, 3), (torch.float32,), bench=False, device=DEVICE)
    check.check_upsample((1, 3, 2, 3), (torch.float32,), bench=False, device=DEVICE)
    errors = [
        float(value) for value in re.findall(r"(?:forward|grad|backward) ([0-9.]+e[+-]\d+)", capsys.readouterr().out)
    ]
    assert len(errors) == 5 and max(errors) < 1e-5


def test_config_pruning_keeps_blocks_that_fit_the_channels():
    from pansynth.ops._triton import _kernels

    def prune(out_channels, in_channels, floors=(32, 16)):
        limits = {"BLOCK_N": (out_channels, floors[0]), "BLOCK_K": (in_channels, floors[1])}
        return _kernels.fit_blocks(_kernels.CONV_CONFIGS, limits)

    small = prune(4, 3)
    assert small and all(c.kwargs["BLOCK_N"] == 32 and c.kwargs["BLOCK_K"] == 16 for c in small)
    assert prune(512, 256) == [c for c in _kernels.CONV_CONFIGS if c.kwargs["BLOCK_K"] <= 256]
    assert len(prune(1, 1, floors=(1, 1))) == 1  # nothing fits: the smallest one


def test_dense_nhwc_memory_with_other_strides_on_size_one_dims_is_read_in_place():
    """One channel, or one pixel: NCHW strides describe NHWC memory; the launchers take a
    view with the kernels' strides instead of a copy. Anything else is copied once, values kept."""
    from pansynth.ops._triton import _launch

    for shape in ((2, 1, 5, 7), (2, 4, 1, 1), (1, 1, 1, 6)):
        tensor = torch.randn(shape)  # NCHW-contiguous, and channels_last-contiguous too
        n, c, h, w = shape
        view = _launch._nhwc_contiguous(tensor)
        assert view.stride() == (h * w * c, 1, w * c, c) and view.data_ptr() == tensor.data_ptr()
        torch.testing.assert_close(view, tensor, rtol=0, atol=0)
    strided = torch.randn(2, 3, 5, 7)  # NCHW: a copy
    copy = _launch._nhwc_contiguous(strided)
    assert copy.is_contiguous(memory_format=torch.channels_last) and copy.data_ptr() != strided.data_ptr()
    torch.testing.assert_close(copy, strided, rtol=0, atol=0)
    half = _launch._nhwc_contiguous(torch.randn(2, 1, 5, 7), torch.bfloat16)  # another dtype: a copy
    assert half.dtype == torch.bfloat16
