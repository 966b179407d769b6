"""Engine selection (``backend=``, PANSYNTH_BACKEND) and the autograd/custom-op layer of the Triton
engine, the latter run here on stand-in kernels that follow the kernels' API on the PyTorch engine
(the kernels themselves are tested in test_ops_triton.py)."""

from __future__ import annotations

import sys
import types
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from test_ops_panoptic_conv import (
    HALF_DTYPES,
    UNIT_ROUNDOFF,
    loud_neighbour_case,
    own_terms_bound,
    random_panoptic,
    reference_panoptic_conv2d,
)
from test_ops_panoptic_upsample import random_maps, reference_algorithm_1

from pansynth.ops import PanopticConv2d, conv_plan, mask_plan, panoptic_conv2d, panoptic_upsample
from pansynth.ops import _torch_engine as engine
from pansynth.ops import backend as backend_module
from pansynth.ops.backend import select_backend


def tensor_on(device: str, dtype=torch.float32):
    """Something with a device and a dtype: all the engine choice looks at (no GPU needed)."""
    return types.SimpleNamespace(device=torch.device(device), dtype=dtype)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("PANSYNTH_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return monkeypatch


@pytest.fixture
def triton_present(env):
    env.setattr(backend_module, "triton_available", lambda device: device.type == "cuda")
    return env


@pytest.mark.parametrize(
    ("verified", "env_value", "device", "dtype", "expected"),
    [
        (False, None, "cuda", torch.float32, "torch"),  # not yet proven on a GPU: the PyTorch engine
        (True, None, "cuda", torch.float32, "triton"),
        (True, None, "cuda", torch.bfloat16, "triton"),
        (True, None, "cuda", torch.float64, "torch"),
        (True, None, "cpu", torch.float32, "torch"),
        (True, None, "meta", torch.float32, "torch"),
        (False, "triton", "cuda", torch.float16, "triton"),  # the environment opts in
        (False, "triton", "cuda", torch.float64, "torch"),
        (False, "triton", "cpu", torch.float32, "torch"),  # no interpreter: Triton cannot run it
        (True, "torch", "cuda", torch.float32, "torch"),
        (True, "auto", "cuda", torch.float32, "triton"),
        (True, " Torch ", "cuda", torch.float32, "torch"),
    ],
)
def test_what_auto_picks(triton_present, verified, env_value, device, dtype, expected):
    triton_present.setattr(backend_module, "TRITON_VERIFIED_ON_CUDA", verified)
    if env_value is not None:
        triton_present.setenv("PANSYNTH_BACKEND", env_value)
    assert select_backend("auto", tensor_on(device, dtype)) == expected
    assert select_backend("torch", tensor_on(device, dtype)) == "torch"


def test_auto_never_picks_missing_kernels(env):
    env.setattr(backend_module, "TRITON_VERIFIED_ON_CUDA", True)
    env.setattr(backend_module, "triton_available", lambda device: False)
    env.setenv("PANSYNTH_BACKEND", "triton")
    assert select_backend("auto", tensor_on("cuda")) == "torch"


@pytest.mark.parametrize(
    ("backend", "tensor", "match"),
    [
        ("cuda", tensor_on("cpu"), "backend must be 'auto', 'triton', 'torch' or 'graph', got 'cuda'"),
        ("triton", tensor_on("cpu"), "TRITON_INTERPRET=1"),
        ("triton", tensor_on("cuda", torch.float64), "float64"),
        ("triton", tensor_on("mps"), "CUDA tensors"),
    ],
)
def test_impossible_choices_are_explained(triton_present, backend, tensor, match):
    with pytest.raises(ValueError, match=match):
        select_backend(backend, tensor)


def test_triton_without_kernels_is_explained(env):
    env.setattr(backend_module, "triton_available", lambda device: False)
    with pytest.raises(ValueError, match="needs the Triton kernels"):
        select_backend("triton", tensor_on("cuda"))


def test_bad_environment_value(env):
    env.setenv("PANSYNTH_BACKEND", "cudnn")
    with pytest.raises(ValueError, match="PANSYNTH_BACKEND must be"):
        select_backend("auto", tensor_on("cuda"))


def test_public_ops_check_the_backend(env):
    ids = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        panoptic_conv2d(torch.randn(1, 2, 4, 4), ids, torch.randn(3, 2, 3, 3), backend="triton")
    with pytest.raises(ValueError, match="float64"):
        env.setenv("TRITON_INTERPRET", "1")
        panoptic_upsample(torch.randn(1, 2, 2, 2, dtype=torch.float64), ids[:, ::2, ::2], ids, backend="triton")
    with pytest.raises(ValueError, match="backend must be"):
        PanopticConv2d(2, 3, backend="cudnn")
    conv = PanopticConv2d(2, 3, backend="torch")
    assert "backend='torch'" in repr(conv)


# --- the Triton engine's operators, on stand-in kernels ----------------------------------------


def masked_columns(x, mask, kernel_size):
    """im2col of x with the columns of eq. 1's masked-out neighbours zeroed: (N, C, k², HW)."""
    n, channels = x.shape[:2]
    taps = kernel_size * kernel_size
    columns = F.unfold(x, kernel_size, padding=kernel_size // 2).view(n, channels, taps, -1)
    bits = (mask.view(n, 1, -1) >> torch.arange(taps).view(1, taps, 1)) & 1  # (N, k², HW): bit t = M_t(p)
    return columns * bits[:, None].to(x.dtype), bits


def masked_conv_from_bits(x, mask, scale, weight, bias=None):
    """Eq. 2 written with the neighbour bits instead of the ids."""
    n, channels, height, width = x.shape
    columns, _ = masked_columns(x, mask, weight.shape[-1])
    out = weight.reshape(weight.shape[0], -1) @ columns.view(n, channels * columns.shape[2], -1)
    out = out.view(n, -1, height, width) * scale[:, None].to(x.dtype)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def masked_conv_grads_from_bits(scaled_grad, x, mask, weight_shape, weight):
    """Both gradients of eq. 2 from the bits, for a pre-scaled gradient g~ (no autograd: the custom
    ops run these below it): grad_x = col2im(M ⊙ W^T g~), grad_W = g~ (M ⊙ im2col(x))^T."""
    n, out_channels, height, width = scaled_grad.shape
    kernel_size = weight_shape[-1]
    g = scaled_grad.reshape(n, out_channels, -1)
    if weight is not None:
        taps = kernel_size * kernel_size
        bits = (mask.view(n, 1, -1) >> torch.arange(taps).view(1, taps, 1)) & 1
        columns = weight.reshape(out_channels, -1).t() @ g  # (N, C k², HW)
        columns = columns.view(n, -1, taps, height * width) * bits[:, None].to(g.dtype)
        return F.fold(columns.view(n, -1, height * width), (height, width), kernel_size, padding=kernel_size // 2)
    columns, _ = masked_columns(x, mask, kernel_size)
    grad = torch.einsum("nop,nckp->ock", g, columns)
    return grad.reshape(weight_shape)


def stand_in_kernels(calls: Counter) -> types.ModuleType:
    """pansynth.ops._triton's API computed with autograd from the neighbour bits, checking what it is handed."""
    kernels = types.ModuleType("pansynth.ops._triton")

    def check_neighbours(mask, scale, kernel_size):
        # what the ops hand the kernels is the plan's mask of the map, not the ids
        assert mask.dtype == torch.int32 and scale.dtype == torch.float32
        popcount = sum((mask >> t) & 1 for t in range(kernel_size * kernel_size))
        torch.testing.assert_close(scale, kernel_size * kernel_size / popcount.float())

    def conv2d_forward(input, panoptic, weight, bias, *, neighbours):
        calls["conv2d_forward"] += 1
        assert panoptic is None
        check_neighbours(*neighbours, weight.shape[-1])
        output = masked_conv_from_bits(input, *neighbours, weight, bias)
        return output.contiguous(memory_format=torch.channels_last), neighbours[1]

    def conv2d_input_grad(grad_output, scale, panoptic, weight, prescaled=False, *, mask):
        calls["conv2d_input_grad"] += 1
        assert panoptic is None and prescaled and grad_output.is_contiguous(memory_format=torch.channels_last)
        check_neighbours(mask, scale, weight.shape[-1])
        return masked_conv_grads_from_bits(grad_output, None, mask, weight.shape, weight)

    def conv2d_weight_grad(grad_output, scale, input, panoptic, kernel_size, prescaled=False, *, mask):
        calls["conv2d_weight_grad"] += 1
        assert panoptic is None and prescaled and grad_output.is_contiguous(memory_format=torch.channels_last)
        check_neighbours(mask, scale, kernel_size)
        shape = (grad_output.shape[1], input.shape[1], kernel_size, kernel_size)
        return masked_conv_grads_from_bits(grad_output, input.to(grad_output.dtype), mask, shape, None).float()

    def conv2d_grad_prescale(grad_output, scale, dtype, with_bias):
        calls["conv2d_grad_prescale"] += 1
        scaled = (grad_output.float() * scale.unsqueeze(1)).to(dtype).contiguous(memory_format=torch.channels_last)
        return scaled, grad_output.sum((0, 2, 3), dtype=torch.float32) if with_bias else None

    def upsample_forward(features, panoptic_low, panoptic_high):
        calls["upsample_forward"] += 1
        upsampled, choice = engine.upsample_forward(features, panoptic_low, panoptic_high)
        return upsampled.contiguous(memory_format=torch.channels_last), choice

    def upsample_backward(grad_upsampled, choice, low_size):
        calls["upsample_backward"] += 1
        return engine.upsample_backward(grad_upsampled, choice, low_size)

    kernels.is_available = lambda device: True
    functions = (conv2d_forward, conv2d_grad_prescale, conv2d_input_grad, conv2d_weight_grad)
    for function in (*functions, upsample_forward, upsample_backward):
        setattr(kernels, function.__name__, function)
    return kernels


@pytest.fixture
def calls(env):
    counter = Counter()
    env.setitem(sys.modules, "pansynth.ops._triton", stand_in_kernels(counter))
    env.setenv("TRITON_INTERPRET", "1")
    torch._dynamo.reset()
    yield counter
    torch._dynamo.reset()


@pytest.mark.parametrize("with_bias", [True, False])
def test_triton_conv_operator_forward_and_gradients(calls, with_bias):
    g = torch.Generator().manual_seed(0)
    panoptic = random_panoptic(2, 6, 7, g)
    x = torch.randn(2, 3, 6, 7, generator=g, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    bias = torch.randn(4, generator=g, requires_grad=True) if with_bias else None
    leaves = [x, weight] + ([bias] if with_bias else [])
    out = panoptic_conv2d(x, panoptic, weight, bias, backend="triton")
    assert out.is_contiguous(memory_format=torch.channels_last)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    expected = reference_panoptic_conv2d(leaves64[0], panoptic, *leaves64[1:])
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(out, leaves, grad_out.float())
    expected_grads = torch.autograd.grad(expected, leaves64, grad_out)
    for grad, expected_grad, leaf in zip(grads, expected_grads, leaves):
        assert grad.dtype == leaf.dtype
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-5)
    assert calls == Counter(conv2d_forward=1, conv2d_grad_prescale=1, conv2d_input_grad=1, conv2d_weight_grad=1)


def test_triton_conv_operator_reads_a_given_mask_plan(calls, monkeypatch):
    """With a plan the op reads the plan's mask (forward and backward) and derives nothing from the ids;
    a plan of another engine, map or kernel size is refused naming what to pass."""
    g = torch.Generator().manual_seed(9)
    panoptic = random_panoptic(2, 6, 7, g)
    x = torch.randn(2, 3, 6, 7, generator=g, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    plan = mask_plan(panoptic, 3)
    expected = panoptic_conv2d(x, panoptic, weight, backend="triton")
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, weight))
    import pansynth.ops.panoptic_conv as panoptic_conv_module

    monkeypatch.setattr(panoptic_conv_module, "mask_plan", lambda *args: pytest.fail("mask derived again"))
    out = panoptic_conv2d(x, panoptic, weight, plan=plan, backend="triton")
    grads = torch.autograd.grad(out.square().sum(), (x, weight))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"plan is a ConvPlan but the triton engine .* mask_plan\(panoptic"):
        panoptic_conv2d(x, panoptic, weight, plan=conv_plan(panoptic, 3), backend="triton")
    with pytest.raises(ValueError, match=r"plan is a MaskPlan but the torch engine .* conv_plan\(panoptic"):
        panoptic_conv2d(x, panoptic, weight, plan=plan, backend="torch")
    with pytest.raises(ValueError, match="kernel size 3, but is used with a .* kernel size 5"):
        panoptic_conv2d(x, panoptic, torch.randn(4, 3, 5, 5), plan=plan, backend="triton")
    with pytest.raises(ValueError, match=r"built for a \(2, 6, 7\) map"):
        panoptic_conv2d(x[:1], panoptic[:1], weight, plan=plan, backend="triton")


def test_triton_conv_operator_skips_unneeded_gradients(calls):
    g = torch.Generator().manual_seed(1)
    panoptic = random_panoptic(1, 5, 5, g)
    weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    out = panoptic_conv2d(torch.randn(1, 3, 5, 5, generator=g), panoptic, weight, backend="triton")
    out.sum().backward()
    assert calls == Counter(conv2d_forward=1, conv2d_grad_prescale=1, conv2d_weight_grad=1)


def test_triton_upsample_operator(calls):
    g = torch.Generator().manual_seed(2)
    low, high = random_maps(2, 4, 5, g, 4)
    features = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    out, matched = panoptic_upsample(features, low, high, backend="triton")
    features64 = features.detach().double().requires_grad_()
    expected, expected_matched = reference_algorithm_1(features64, low, high)
    torch.testing.assert_close(out.double(), expected)
    torch.testing.assert_close(matched.double(), expected_matched)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, features, grad_out.float())
    expected_grad = torch.autograd.grad(expected, features64, grad_out)[0]
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-5)
    assert calls == Counter(upsample_forward=1, upsample_backward=1)


def test_environment_makes_auto_take_triton(calls, env):
    env.setenv("PANSYNTH_BACKEND", "triton")
    g = torch.Generator().manual_seed(3)
    panoptic = random_panoptic(1, 5, 5, g)
    conv = PanopticConv2d(3, 4)
    conv(torch.randn(1, 3, 5, 5, generator=g), panoptic)
    panoptic_conv2d(torch.randn(1, 3, 5, 5, dtype=torch.float64), panoptic, conv.weight.double())  # float64: torch
    assert calls == Counter(conv2d_forward=1)


def test_triton_operators_under_autocast_and_compile(calls):
    """The Triton engine's operators in one compiled graph (their fake implementations give the
    shapes and strides), under autocast, equal to eager."""
    g = torch.Generator().manual_seed(4)
    low, high = random_maps(2, 4, 5, g, 4)
    leaves = [
        torch.randn(2, 3, 4, 5, generator=g, requires_grad=True),
        torch.randn(6, 3, 3, 3, generator=g, requires_grad=True),
        torch.randn(6, generator=g, requires_grad=True),
    ]

    def stage(x, weight, bias):
        features = panoptic_conv2d(x, low, weight, bias, backend="triton")
        upsampled, matched = panoptic_upsample(features, low, high, backend="triton")
        return upsampled * matched

    compiled = torch.compile(stage, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(*leaves)
        expected = stage(*leaves)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.float().square().sum(), leaves)
    expected_grads = torch.autograd.grad(expected.float().square().sum(), leaves)
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad, expected_grad)


# --- the Triton engine through the public ops: the real kernels (interpreter on CPU) ------------

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_kernels = pytest.mark.skipif(
    not backend_module.triton_available(torch.device(TRITON_DEVICE)),
    reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 and an importable triton",
)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _leaves(*tensors):
    return [t.to(TRITON_DEVICE).requires_grad_() for t in tensors]


@needs_kernels
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_triton_engine_matches_literal_equation(kernel_size):
    g = torch.Generator().manual_seed(kernel_size)
    panoptic = random_panoptic(2, 5, 7, g)
    x, weight = torch.randn(2, 3, 5, 7, generator=g), torch.randn(4, 3, kernel_size, kernel_size, generator=g)
    bias = torch.randn(4, generator=g)
    leaves = _leaves(x, weight, bias)
    out = panoptic_conv2d(*leaves[:1], panoptic.to(TRITON_DEVICE), *leaves[1:], backend="triton")
    assert out.is_contiguous(memory_format=torch.channels_last)
    leaves64 = [t.double().requires_grad_() for t in (x, weight, bias)]
    expected = reference_panoptic_conv2d(leaves64[0], panoptic, *leaves64[1:])
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-4, atol=1e-4)
    grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(out, leaves, grad_out.float().to(TRITON_DEVICE))
    for grad, expected_grad in zip(grads, torch.autograd.grad(expected, leaves64, grad_out)):
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad.cpu().double(), expected_grad, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_triton_engine_upsample_matches_algorithm_1():
    g = torch.Generator().manual_seed(5)
    low, high = random_maps(2, 3, 4, g, 4)
    features = torch.randn(2, 3, 3, 4, generator=g)
    (leaf,) = _leaves(features)
    out, matched = panoptic_upsample(leaf, low.to(TRITON_DEVICE), high.to(TRITON_DEVICE), backend="triton")
    features64 = features.double().requires_grad_()
    expected, expected_matched = reference_algorithm_1(features64, low, high)
    torch.testing.assert_close(out.cpu().double(), expected)
    torch.testing.assert_close(matched.cpu().double(), expected_matched)
    grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, leaf, grad_out.float().to(TRITON_DEVICE))
    (expected_grad,) = torch.autograd.grad(expected, features64, grad_out)
    torch.testing.assert_close(grad.cpu().double(), expected_grad, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_triton_engine_half_precision_has_no_feature_of_a_louder_neighbour(dtype):
    """The bound of the PyTorch engine's test (test_ops_panoptic_conv.py), on the Triton engine."""
    g = torch.Generator().manual_seed(17)
    x, panoptic, _ = loud_neighbour_case(g, n=1, channels=4, height=6, width=8)
    weight = torch.randn(4, x.shape[1], 3, 3, generator=g, dtype=torch.float64)
    x_low, weight_low = x.to(dtype), weight.to(dtype)
    expected = reference_panoptic_conv2d(x_low.double(), panoptic, weight_low.double())
    out = panoptic_conv2d(
        x_low.to(TRITON_DEVICE), panoptic.to(TRITON_DEVICE), weight_low.to(TRITON_DEVICE), backend="triton"
    )
    assert out.dtype == dtype
    error = (out.cpu().double() - expected).abs()
    bound = 4 * UNIT_ROUNDOFF[dtype] * own_terms_bound(x_low.double(), panoptic, weight_low.double())
    assert (error <= bound).all(), f"worst error / own-terms bound: {(error / bound).max().item():.3g} (<= 1)"


@needs_kernels
def test_triton_engine_under_autocast_and_compile(fresh_dynamo):
    """Autocast casts for the kernels; compiled (one graph, the fake implementations' strides
    must be those of the kernels' results) equals eager; float32 gradients come back."""
    g = torch.Generator().manual_seed(6)
    low, high = random_maps(1, 3, 4, g, 4)
    low, high = low.to(TRITON_DEVICE), high.to(TRITON_DEVICE)
    leaves = _leaves(torch.randn(1, 3, 3, 4, generator=g), torch.randn(4, 3, 3, 3, generator=g))
    leaves.append(torch.randn(4, generator=g).to(TRITON_DEVICE).requires_grad_())

    def stage(x, weight, bias):
        features = panoptic_conv2d(x, low, weight, bias, backend="triton")
        upsampled, matched = panoptic_upsample(features, low, high, backend="triton")
        return upsampled * matched

    autocast = torch.bfloat16
    with torch.autocast(TRITON_DEVICE, dtype=autocast):
        eager = stage(*leaves)
        compiled = torch.compile(stage, backend="aot_eager", fullgraph=True)(*leaves)
    assert eager.dtype == compiled.dtype == autocast
    torch.testing.assert_close(compiled, eager)
    leaves64 = [t.detach().cpu().double().requires_grad_() for t in leaves]
    with torch.no_grad():
        expected = stage_reference(leaves64, low.cpu(), high.cpu())
    assert ((eager.cpu().double() - expected).norm() / expected.norm()).item() < 2e-2
    grads = torch.autograd.grad(compiled.float().sum(), leaves)
    eager_grads = torch.autograd.grad(eager.float().sum(), leaves)
    for grad, eager_grad in zip(grads, eager_grads):
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad, eager_grad)


def stage_reference(leaves64, low, high):
    x, weight, bias = leaves64
    upsampled, matched = reference_algorithm_1(reference_panoptic_conv2d(x, low, weight, bias), low, high)
    return upsampled * matched


@needs_kernels
def test_environment_makes_auto_take_the_kernels(env):
    env.setenv("TRITON_INTERPRET", "1")
    g = torch.Generator().manual_seed(7)
    panoptic = random_panoptic(1, 4, 5, g).to(TRITON_DEVICE)
    x = torch.randn(1, 3, 4, 5, generator=g).to(TRITON_DEVICE)
    conv = PanopticConv2d(3, 4).to(TRITON_DEVICE)
    env.setenv("PANSYNTH_BACKEND", "triton")
    on_kernels = conv(x, panoptic)
    env.setenv("PANSYNTH_BACKEND", "torch")
    on_engine = conv(x, panoptic)
    # The kernels return channels_last, the PyTorch engine the input's layout: which ran shows.
    assert on_kernels.is_contiguous(memory_format=torch.channels_last) and not on_kernels.is_contiguous()
    assert on_engine.is_contiguous()
    torch.testing.assert_close(on_kernels, on_engine, rtol=1e-4, atol=1e-4)
