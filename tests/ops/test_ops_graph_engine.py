"""The graph engine (backend="graph"): eq. 1-2, Algorithm 1 and eq. 3 as plain tensor operations,
against literal float64 transcriptions of the paper and against the PyTorch engine."""

from __future__ import annotations

import pytest
import torch
from test_ops_panoptic_conv import reference_panoptic_conv2d
from test_ops_panoptic_upsample import reference_algorithm_1

from pansynth.models import Generator
from pansynth.models.hole_fill import HoleFillingUpsample
from pansynth.ops import PanopticConv2d, panoptic_conv2d, panoptic_upsample

# Irregular ids: negative, huge (beyond float precision), consecutive.
ID_VALUES = torch.tensor([-7, 0, 3, 2**40 + 5, 2**40 + 6, 24001])


def maps(n, height, width, seed):
    g = torch.Generator().manual_seed(seed)
    ids = ID_VALUES[torch.randint(0, len(ID_VALUES), (n, height, width), generator=g)]
    ids[:, ::3] = ids[:, ::3, :1]  # some larger segments next to one-pixel ones
    return ids


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_conv_equals_literal_equation_in_float64(kernel_size):
    g = torch.Generator().manual_seed(kernel_size)
    panoptic = maps(2, 7, 9, kernel_size)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, kernel_size, kernel_size, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    graph = panoptic_conv2d(x, panoptic, weight, bias, backend="graph")
    torch.testing.assert_close(graph, reference_panoptic_conv2d(x, panoptic, weight, bias), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(graph, panoptic_conv2d(x, panoptic, weight, bias, backend="torch"), rtol=1e-12,
                               atol=1e-12)  # fmt: skip


def test_upsample_equals_literal_algorithm_in_float64():
    g = torch.Generator().manual_seed(1)
    high = maps(2, 10, 8, 1)
    low = high[:, ::2, ::2].clone()
    low[0, 1, 1] = 99  # a low-resolution segment absent at the high resolution: holes around it
    features = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    up, matched = panoptic_upsample(features, low, high, backend="graph")
    expected, expected_matched = reference_algorithm_1(features, low, high)
    assert 0 < int(expected_matched.sum()) < expected_matched.numel()
    torch.testing.assert_close(up, expected, rtol=0, atol=0)
    torch.testing.assert_close(matched, expected_matched, rtol=0, atol=0)


@pytest.mark.parametrize("boundary", [False, True])
@pytest.mark.parametrize("first", ["panoptic", "standard"])
def test_hole_filling_equals_the_sparse_eager_fill(first, boundary):
    torch.manual_seed(0)
    num_classes, label_channels = 3, 3 + boundary
    if first == "panoptic":
        layer = PanopticConv2d(label_channels, 8, 3).double()
    else:
        layer = torch.nn.Conv2d(label_channels, 8, 3, padding=1).double()
    eager = HoleFillingUpsample(layer, 4, num_classes, boundary=boundary, backend="torch").double()
    graph = HoleFillingUpsample(layer, 4, num_classes, boundary=boundary, backend="graph").double()
    graph.load_state_dict(eager.state_dict())
    high = maps(2, 8, 10, 3)
    semantic = (high.abs() % num_classes).long()
    low = high[:, ::2, ::2].clone()
    low[:, 0, 0] = 12345  # holes
    features = torch.randn(2, 4, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = eager(features, semantic, low, high)
        got = graph(features, semantic, low, high)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("conv", "upsample"), [("panoptic", "panoptic"), ("standard", "nearest")])
def test_generator_on_the_graph_engine_equals_the_pytorch_engine(conv, upsample):
    torch.manual_seed(0)
    eager = Generator(num_classes=4, size=(64, 64), ngf=2, spade_hidden=4, conv=conv, upsample=upsample,
                      ignore_index=255, backend="torch").double().eval()  # fmt: skip
    graph = Generator(**{**eager.config, "backend": "graph"}).double().eval()
    graph.load_state_dict(eager.state_dict())
    semantic = (maps(2, 64, 64, 5).abs() % 4).long()
    semantic[0, :2, :2] = 255
    panoptic = semantic * 7 + maps(2, 64, 64, 6) % 2
    with torch.no_grad():
        torch.testing.assert_close(graph(semantic, panoptic), eager(semantic, panoptic), rtol=1e-10, atol=1e-10)


def test_graph_backend_is_never_chosen_by_auto():
    x = torch.randn(1, 2, 4, 4)
    from pansynth.ops.backend import select_backend

    assert select_backend("auto", x) in ("torch", "triton")
    assert select_backend("graph", x) == "graph"
    with pytest.raises(ValueError, match="'graph'"):
        select_backend("onnx", x)
