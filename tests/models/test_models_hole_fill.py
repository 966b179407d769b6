"""Hole filling (paper eq. 3) against the literal dense formula, for every kind of first layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pansynth.models import HoleFillingUpsample
from pansynth.models.generator import build_label_map
from pansynth.ops import PanopticConv2d, panoptic_conv2d, panoptic_upsample

ID_VALUES = torch.tensor([-3, 11, 5_000_017, 2**41, 26003, 26004])


def random_maps(n, low_h, low_w, generator, num_ids=6):
    high = ID_VALUES[torch.randint(0, num_ids, (n, 2 * low_h, 2 * low_w), generator=generator)]
    # The low-resolution map is a subsampling of the high one, as in the generator.
    return high[:, ::2, ::2].clone(), high


def literal_eq3(layer, features, semantic, low, high):
    """out = upsampled + (1 - matched) * proj(first_layer(label_high, P_high)), computed densely."""
    upsampled, matched = panoptic_upsample(features, low, high)
    label = build_label_map(semantic, high, layer.num_classes, layer.ignore_index, layer.boundary).double()
    first = layer.first_layer
    if isinstance(first, PanopticConv2d):
        fill = panoptic_conv2d(label, high, first.weight, first.bias)
    else:
        fill = F.conv2d(label, first.weight, first.bias, padding=first.weight.shape[-1] // 2)
    if layer.proj is not None:
        fill = layer.proj(fill)
    return upsampled + (1 - matched) * fill


@pytest.mark.parametrize("out_channels", [6, 16])
@pytest.mark.parametrize("ignore_index", [None, 255])
@pytest.mark.parametrize("first", ["panoptic", "standard"])
@pytest.mark.parametrize("boundary", [False, True])
def test_hole_filling_equals_dense_formula(out_channels, ignore_index, first, boundary):
    g = torch.Generator().manual_seed(out_channels + 7 * boundary)
    num_classes = 4
    in_channels = num_classes + (ignore_index is not None) + boundary
    if first == "panoptic":
        first_layer = PanopticConv2d(in_channels, 16, 3).double()
    else:
        first_layer = torch.nn.Conv2d(in_channels, 16, 3, padding=1).double()
    layer = HoleFillingUpsample(first_layer, out_channels, num_classes, ignore_index, boundary).double()
    low, high = random_maps(2, 4, 5, g, 5)
    semantic = torch.randint(0, num_classes, high.shape, generator=g)
    if ignore_index is not None:
        semantic[:, 0, :] = ignore_index
    features = torch.randn(2, out_channels, 4, 5, generator=g, dtype=torch.float64)
    _, matched = panoptic_upsample(features, low, high)
    assert 0 < matched.sum() < matched.numel()  # there are holes, at the border too
    expected = literal_eq3(layer, features, semantic, low, high)
    torch.testing.assert_close(layer(features, semantic, low, high), expected, rtol=1e-12, atol=1e-12)
    # The shared first layer is not a parameter of the stage: only the 1x1 projection is.
    names = {name for name, _ in layer.named_parameters()}
    assert names == (set() if out_channels == 16 else {"proj.weight", "proj.bias"})


def test_hole_filling_gradients_match_dense_formula():
    g = torch.Generator().manual_seed(1)
    first_layer = PanopticConv2d(4, 8, 3).double()
    layer = HoleFillingUpsample(first_layer, 4, 3, boundary=True).double()
    low, high = random_maps(1, 4, 4, g, 5)
    semantic = torch.randint(0, 3, high.shape, generator=g)
    features = torch.randn(1, 4, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    parameters = [features, first_layer.weight, first_layer.bias, layer.proj.weight, layer.proj.bias]
    sparse = torch.autograd.grad((layer(features, semantic, low, high) * weights).sum(), parameters)
    dense = torch.autograd.grad((literal_eq3(layer, features, semantic, low, high) * weights).sum(), parameters)
    for got, expected in zip(sparse, dense):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_no_holes_returns_the_aligned_features():
    first_layer = PanopticConv2d(3, 8, 3)
    layer = HoleFillingUpsample(first_layer, 8, 3)
    high = torch.zeros(1, 8, 8, dtype=torch.long)
    features = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(
        layer(features, high, high[:, ::2, ::2], high), F.interpolate(features, scale_factor=2, mode="nearest")
    )
    with pytest.raises(ValueError, match="expected 8 feature channels"):
        layer(torch.randn(1, 5, 4, 4), high, high[:, ::2, ::2], high)


def test_the_backend_reaches_algorithm_1_and_is_shown():
    layer = HoleFillingUpsample(PanopticConv2d(3, 8, 3, backend="torch"), 4, 3, backend="torch")
    assert "backend='torch'" in repr(layer)
    high = torch.randint(0, 3, (1, 8, 8))
    features = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):  # the Triton engine runs float32/16 only
        HoleFillingUpsample(PanopticConv2d(3, 8, 3), 4, 3, backend="triton")(features, high, high[:, ::2, ::2], high)


@pytest.mark.parametrize("boundary", [False, True])
def test_the_hole_fill_custom_op_passes_opcheck_and_equals_the_eager_code(boundary):
    from pansynth.models.hole_fill import fill_holes

    g = torch.Generator().manual_seed(3)
    first_layer = PanopticConv2d(4 + boundary, 8, 3)
    layer = HoleFillingUpsample(first_layer, 6, 4, boundary=boundary)
    low, high = random_maps(2, 4, 5, g, 5)
    semantic = torch.randint(0, 4, high.shape, generator=g)
    upsampled, matched = panoptic_upsample(torch.randn(2, 6, 4, 5, generator=g), low, high)
    arguments = (
        upsampled.requires_grad_(), matched, semantic, high, first_layer.weight, first_layer.bias,
        layer.proj.weight, layer.proj.bias, True, boundary, 4, None,
    )  # fmt: skip
    torch.testing.assert_close(torch.ops.pansynth.hole_fill(*arguments), fill_holes(*arguments))
    torch.library.opcheck(torch.ops.pansynth.hole_fill.default, arguments)


@pytest.mark.parametrize("ignore_index", [None, 255])
@pytest.mark.parametrize("first", ["panoptic", "standard"])
@pytest.mark.parametrize("boundary", [False, True])
def test_the_dense_fill_of_the_accelerator_path_equals_the_sparse_one(ignore_index, first, boundary):
    """fill_holes_dense (no nonzero: the Triton engine's path) against the literal formula, values and gradients."""
    from pansynth.models.hole_fill import fill_holes_dense

    g = torch.Generator().manual_seed(11 + boundary)
    num_classes = 4
    in_channels = num_classes + (ignore_index is not None) + boundary
    conv = PanopticConv2d(in_channels, 8, 3) if first == "panoptic" else torch.nn.Conv2d(in_channels, 8, 3, padding=1)
    layer = HoleFillingUpsample(conv.double(), 5, num_classes, ignore_index, boundary).double()
    low, high = random_maps(2, 4, 5, g, 5)
    semantic = torch.randint(0, num_classes, high.shape, generator=g)
    if ignore_index is not None:
        semantic[:, 0, :] = ignore_index
    features = torch.randn(2, 5, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    upsampled, matched = panoptic_upsample(features, low, high)
    parameters = [features, conv.weight, conv.bias, layer.proj.weight, layer.proj.bias]
    dense = fill_holes_dense(
        upsampled, matched, semantic, high, conv.weight, conv.bias, layer.proj.weight, layer.proj.bias,
        first == "panoptic", boundary, num_classes, ignore_index,
    )  # fmt: skip
    expected = literal_eq3(layer, features, semantic, low, high)
    torch.testing.assert_close(dense, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((dense * weights).sum(), parameters)
    wanted = torch.autograd.grad((expected * weights).sum(), parameters)
    for a, b in zip(got, wanted):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
