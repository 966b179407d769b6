"""The panoptic ops under torch.compile: one graph (custom ops), the eager results and gradients."""

from __future__ import annotations

import pytest
import torch
from test_ops_panoptic_conv import random_panoptic, reference_panoptic_conv2d

from pansynth.ops import neighbour_mask, panoptic_conv2d, panoptic_upsample, semantic_one_hot, semantic_to_index
from pansynth.ops.backend import triton_available


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def two_stages(x, weight_low, bias, weight_high, panoptic_low, panoptic_high):
    features = torch.relu(panoptic_conv2d(x, panoptic_low, weight_low, bias, backend="torch"))
    upsampled, matched = panoptic_upsample(features, panoptic_low, panoptic_high, backend="torch")
    return panoptic_conv2d(upsampled * matched, panoptic_high, weight_high, backend="torch")


def make_inputs(dtype=torch.float64, sparse_size=False):
    g = torch.Generator().manual_seed(0)
    low_h, low_w = (36, 40) if sparse_size else (5, 6)
    panoptic_high = random_panoptic(2, 2 * low_h, 2 * low_w, g, block=4)
    panoptic_low = panoptic_high[:, ::2, ::2]
    x = torch.randn(2, 3, low_h, low_w, generator=g, dtype=dtype, requires_grad=True)
    weight_low = torch.randn(4, 3, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=dtype, requires_grad=True)
    weight_high = torch.randn(2, 4, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    return (x, weight_low, bias, weight_high), (panoptic_low, panoptic_high)


@pytest.mark.parametrize("sparse_size", [False, True], ids=["small-maps", "large-maps"])
def test_compiled_ops_equal_eager_in_one_graph(sparse_size):
    """fullgraph=True fails on any graph break: the ops, their autograd and their checks trace."""
    leaves, maps = make_inputs(sparse_size=sparse_size)
    compiled = torch.compile(two_stages, backend="aot_eager", fullgraph=True)
    out = compiled(*leaves, *maps)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    expected = two_stages(*leaves, *maps)
    expected_grads = torch.autograd.grad(expected.square().sum(), leaves)
    torch.testing.assert_close(out, expected)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)
    if not sparse_size:  # and the eager ops against the literal equation
        x, weight_low, bias, _ = leaves
        torch.testing.assert_close(
            panoptic_conv2d(x, maps[0], weight_low, bias), reference_panoptic_conv2d(x, maps[0], weight_low, bias)
        )


def test_compiled_under_autocast_and_channels_last():
    leaves, maps = make_inputs(dtype=torch.float32)
    x = leaves[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    leaves = (x, *leaves[1:])
    compiled = torch.compile(two_stages, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(*leaves, *maps)
        expected = two_stages(*leaves, *maps)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.float().sum(), leaves)
    expected_grads = torch.autograd.grad(expected.float().sum(), leaves)
    for a, b in zip(grads, expected_grads):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)


def test_map_helpers_compile_without_graph_break():
    """The range checks of the label maps read values: eager mode only, no break in a graph."""
    semantic = torch.randint(0, 5, (2, 6, 6))
    compiled = torch.compile(
        lambda s: semantic_one_hot(s, 5, ignore_index=255) * semantic_to_index(s, 5, 255).unsqueeze(1),
        backend="aot_eager",
        fullgraph=True,
    )
    expected = semantic_one_hot(semantic, 5, 255) * semantic_to_index(semantic, 5, 255).unsqueeze(1)
    torch.testing.assert_close(compiled(semantic), expected)
    with pytest.raises(ValueError, match="class index 7"):  # eager mode still checks
        semantic_to_index(torch.full((1, 2, 2), 7), 5)


def opcheck_cases(with_triton: bool):
    g = torch.Generator().manual_seed(3)
    panoptic_high = random_panoptic(2, 6, 8, g)
    panoptic_low = panoptic_high[:, ::2, ::2].contiguous()
    cases = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 6, 8, generator=g).contiguous(memory_format=layout).requires_grad_()
        weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
        bias = torch.randn(4, generator=g, requires_grad=True)
        features = torch.randn(2, 3, 3, 4, generator=g).contiguous(memory_format=layout).requires_grad_()
        grad = torch.randn(2, 4, 6, 8, generator=g)
        cases += [
            ("panoptic_conv2d_torch", (x, panoptic_high, weight, bias)),
            ("panoptic_conv2d_torch", (x, panoptic_high, weight, None)),
            ("panoptic_conv2d_torch_backward", (grad, x.detach(), panoptic_high, weight.detach(), True, False)),
            ("panoptic_upsample_torch", (features, panoptic_low, panoptic_high)),
        ]
        if with_triton:
            mask, scale = neighbour_mask(panoptic_high, 3)
            scaled_grad = (grad * scale.unsqueeze(1)).contiguous(memory_format=torch.channels_last)
            cases += [
                ("panoptic_conv2d_triton", (x, mask, scale, weight, bias)),
                ("panoptic_conv2d_triton", (x, mask, scale, weight, None)),
                ("panoptic_conv2d_triton_grad_prescale", (grad, scale, torch.bfloat16, True)),
                ("panoptic_conv2d_triton_grad_prescale", (grad, scale, torch.float32, False)),
                ("panoptic_conv2d_triton_input_grad", (scaled_grad, mask, scale, weight.detach())),
                ("panoptic_conv2d_triton_weight_grad", (scaled_grad, x.detach(), mask, scale, 3)),
                ("panoptic_upsample_triton", (features, panoptic_low, panoptic_high)),
            ]
    return cases


@pytest.mark.parametrize(
    ("name", "args"),
    opcheck_cases(with_triton=triton_available(torch.device("cuda" if torch.cuda.is_available() else "cpu"))),
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_custom_ops_pass_opcheck(name, args):
    """torch.library.opcheck: schema, fake implementation (shapes, dtypes, strides) and autograd
    registration agree with the real operator."""
    device = "cuda" if "triton" in name and torch.cuda.is_available() else "cpu"
    args = tuple(arg.to(device) if isinstance(arg, torch.Tensor) else arg for arg in args)
    torch.library.opcheck(getattr(torch.ops.pansynth, name).default, args)
