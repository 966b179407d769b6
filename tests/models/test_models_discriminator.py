"""Multi-scale PatchGAN discriminator: structure, input, scales, gradients, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pansynth.models import MultiscaleDiscriminator
from pansynth.ops import boundary_map, semantic_one_hot


def _conv_out(size: int, stride: int) -> int:
    # 4x4 kernel, padding 2
    return (size + 2 * 2 - 4) // stride + 1


def _inputs(n: int = 2, size: int = 32):
    generator = torch.Generator().manual_seed(0)
    semantic = torch.randint(0, 4, (n, size, size), generator=generator)
    semantic[:, :4] = 255
    panoptic = semantic * 10 + (torch.arange(size) // 9)[None, None, :]
    image = torch.rand(n, 3, size, size, generator=generator) * 2 - 1
    return image, semantic, panoptic


def test_structure_shapes_and_gradients():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(4, ignore_index=255, ndf=8, num_scales=2, num_layers=4)
    assert d.in_channels == 3 + 4 + 1 + 1  # image, classes, ignore channel, boundary
    image, semantic, panoptic = _inputs()
    image.requires_grad_(True)
    outputs = d(image, semantic, panoptic)
    assert len(outputs) == 2
    size = 32
    for scale, features in enumerate(outputs):
        if scale:
            size = (size + 1) // 2  # 3x3 avg-pool, stride 2, padding 1
        expected, s = [], size
        for channels, stride in [(8, 2), (16, 2), (32, 2), (64, 1), (1, 1)]:
            s = _conv_out(s, stride)
            expected.append((2, channels, s, s))
        assert [tuple(f.shape) for f in features] == expected
    loss = sum(features[-1].mean() for features in outputs) + sum(f.abs().mean() for f in outputs[1][:-1])
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    for name, parameter in d.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    names = {name for name, _ in d.named_parameters()}
    # Spectral norm on the middle layers (no bias before InstanceNorm), plain first and last convs.
    assert "discriminators.0.layers.1.0.parametrizations.weight.original" in names
    assert "discriminators.0.layers.1.0.bias" not in names
    assert "discriminators.0.layers.0.0.weight" in names and "discriminators.0.layers.4.0.weight" in names


def test_input_is_image_label_boundary_and_second_scale_is_pooled():
    torch.manual_seed(1)
    d = MultiscaleDiscriminator(4, ignore_index=255, ndf=8).eval()
    image, semantic, panoptic = _inputs()
    outputs = d(image, semantic, panoptic)
    # Unknown (ignore-value) pixels form one segment of their own, whatever ids they came with.
    boundary = boundary_map(panoptic.masked_fill(semantic == 255, -1))
    full = torch.cat([image, semantic_one_hot(semantic, 4, 255), boundary], dim=1)
    for got, want in zip(outputs[0], d.discriminators[0](full)):
        torch.testing.assert_close(got, want)
    # Literal 3x3 average over the in-image neighbours, stride 2.
    pooled = torch.zeros(2, full.shape[1], 16, 16)
    for y in range(16):
        for x in range(16):
            window = full[:, :, max(2 * y - 1, 0) : 2 * y + 2, max(2 * x - 1, 0) : 2 * x + 2]
            pooled[:, :, y, x] = window.mean(dim=(2, 3))
    for got, want in zip(outputs[1], d.discriminators[1](pooled)):
        torch.testing.assert_close(got, want)
    no_boundary = MultiscaleDiscriminator(4, ndf=8, boundary=False, num_scales=3)
    assert no_boundary.in_channels == 7 and len(no_boundary(image, semantic.clamp(max=3), panoptic)) == 3


def test_bad_inputs():
    d = MultiscaleDiscriminator(4, ndf=8)
    image, semantic, panoptic = _inputs()
    semantic = semantic.clamp(max=3)
    with pytest.raises(ValueError, match=r"image must be an \(N, 3, H, W\)"):
        d(image[:, :1], semantic, panoptic)
    with pytest.raises(ValueError, match="must match the image"):
        d(F.interpolate(image, scale_factor=0.5), semantic, panoptic)
    with pytest.raises(ValueError, match="panoptic must be"):
        d(image, semantic, panoptic.float())
    with pytest.raises(ValueError, match="class index 255"):
        d(image, torch.full_like(semantic, 255), panoptic)
