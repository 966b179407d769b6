"""SPADE normalization and residual block against literal formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pansynth.models.spade import SPADENorm, SPADEResBlock, instance_norm_nhwc, is_channels_last, resize_label
from pansynth.ops import PanopticConv2d, panoptic_conv2d


def _one_hot(n: int, classes: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    semantic = torch.randint(0, classes, (n, size, size), generator=generator)
    return F.one_hot(semantic, classes).permute(0, 3, 1, 2).double()


def _instance_norm_literal(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)  # biased variance
    return (x - mean) / torch.sqrt(var + eps)


def _batch_norm_literal(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _spade_literal(norm: SPADENorm, x: torch.Tensor, label: torch.Tensor, normalized: torch.Tensor) -> torch.Tensor:
    stride = label.shape[-1] // x.shape[-1]
    small = label[..., ::stride, ::stride]
    conv_shared = norm.shared[0]
    hidden = torch.relu(F.conv2d(small, conv_shared.weight, conv_shared.bias, padding=1))
    gamma = F.conv2d(hidden, norm.gamma.weight, norm.gamma.bias, padding=1)
    beta = F.conv2d(hidden, norm.beta.weight, norm.beta.bias, padding=1)
    return normalized * (1 + gamma) + beta


@pytest.mark.parametrize("param_free", ["instance", "batch", "syncbatch"])
def test_spade_norm_matches_literal_formula(param_free):
    torch.manual_seed(0)
    norm = SPADENorm(6, 4, hidden=8, param_free=param_free).double().train()
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64) * 3 + 1
    label = _one_hot(3, 4, 16)
    out = norm(x, label)
    literal_norm = _instance_norm_literal(x) if param_free == "instance" else _batch_norm_literal(x)
    torch.testing.assert_close(out, _spade_literal(norm, x, label, literal_norm))


@pytest.mark.parametrize("param_free", ["instance", "batch", "syncbatch"])
def test_spade_norm_keeps_channels_last_with_the_literal_values_and_gradients(param_free):
    """A channels_last input gives a channels_last output and input gradient (what the Triton engine's
    kernels read in place); a plainly contiguous input keeps nn.InstanceNorm2d's path and layout."""
    torch.manual_seed(2)
    norm = SPADENorm(6, 4, hidden=8, param_free=param_free).double().train()
    x = (torch.randn(3, 6, 4, 5, dtype=torch.float64) * 3 + 1).to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    label = F.interpolate(_one_hot(3, 4, 16, seed=3), size=(16, 20), mode="nearest")
    out = norm(x, label)
    assert is_channels_last(x) and is_channels_last(out)
    literal_norm = _instance_norm_literal(x) if param_free == "instance" else _batch_norm_literal(x)
    torch.testing.assert_close(out, _spade_literal(norm, x, label, literal_norm))
    out.square().sum().backward()
    assert is_channels_last(x.grad)
    plain = x.detach().contiguous().requires_grad_(True)
    plain_out = norm(plain, label)
    assert plain_out.is_contiguous() and not is_channels_last(plain_out)
    torch.testing.assert_close(plain_out, out)
    plain_out.square().sum().backward()
    torch.testing.assert_close(plain.grad, x.grad)


def test_instance_norm_nhwc_takes_its_statistics_in_float32():
    torch.manual_seed(3)
    x = (torch.randn(2, 8, 6, 6) * 50 + 200).to(torch.bfloat16).to(memory_format=torch.channels_last)
    out = instance_norm_nhwc(x, 1e-5)
    assert out.dtype == torch.bfloat16 and is_channels_last(out)
    expected = _instance_norm_literal(x.double()).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_spade_norm_label_is_resized_by_stride_not_blended():
    label = _one_hot(2, 5, 32, seed=1)
    small = resize_label(label, (8, 8))
    # For integer factors, stride slicing is nearest neighbour and keeps the map one-hot.
    torch.testing.assert_close(small, F.interpolate(label, size=(8, 8), mode="nearest"))
    assert torch.equal(small.sum(1), torch.ones(2, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="integer stride"):
        resize_label(label, (6, 6))


def test_spade_norm_rejects_wrong_channels():
    norm = SPADENorm(6, 4, hidden=8)
    with pytest.raises(ValueError, match=r"label map of shape \(N, 4, H, W\)"):
        norm(torch.randn(1, 6, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"x of shape \(N, 6, h, w\)"):
        norm(torch.randn(1, 5, 4, 4), torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="norm must be one of"):
        SPADENorm(6, 4, param_free="layer")


def _res_block_literal(block: SPADEResBlock, x, label, panoptic, conv_kind):
    def conv3(layer, h):
        if conv_kind == "panoptic":
            stride = panoptic.shape[-1] // h.shape[-1]
            return panoptic_conv2d(h, panoptic[..., ::stride, ::stride], layer.weight, layer.bias)
        return F.conv2d(h, layer.weight, layer.bias, padding=1)

    def spade(norm, h):
        return _spade_literal(norm, h, label, _instance_norm_literal(h))

    dx = conv3(block.conv_0, F.leaky_relu(spade(block.norm_0, x), 0.2))
    dx = conv3(block.conv_1, F.leaky_relu(spade(block.norm_1, dx), 0.2))
    if block.learned_shortcut:
        shortcut = F.conv2d(spade(block.norm_s, x), block.conv_s.weight)
    else:
        shortcut = x
    return shortcut + dx


@pytest.mark.parametrize("conv", ["standard", "panoptic"])
@pytest.mark.parametrize("channels", [(6, 6), (6, 3)])
def test_res_block_matches_literal_composition(conv, channels):
    torch.manual_seed(1)
    in_ch, out_ch = channels
    block = SPADEResBlock(in_ch, out_ch, 4, conv=conv, spectral=False, hidden=8).double()
    x = torch.randn(2, in_ch, 8, 8, dtype=torch.float64)
    label = _one_hot(2, 4, 16, seed=2)
    panoptic = torch.randint(0, 3, (2, 16, 16)) * 7 + 100
    out = block(x, label, panoptic)
    assert out.shape == (2, out_ch, 8, 8)
    torch.testing.assert_close(out, _res_block_literal(block, x, label, panoptic, conv))
    assert hasattr(block, "conv_s") == (in_ch != out_ch)
    assert block.conv_0.weight.shape == (min(in_ch, out_ch), in_ch, 3, 3)


def test_res_block_spectral_norm_and_panoptic_convs():
    block = SPADEResBlock(6, 3, 4, conv="panoptic", spectral=True, hidden=8)
    names = {name for name, _ in block.named_parameters()}
    for layer in ("conv_0", "conv_1", "conv_s"):
        assert f"{layer}.parametrizations.weight.original" in names
    assert isinstance(block.conv_0, PanopticConv2d) and isinstance(block.conv_1, PanopticConv2d)
    assert not isinstance(block.conv_s, PanopticConv2d)
    with pytest.raises(ValueError, match="needs the panoptic map"):
        block(torch.randn(1, 6, 4, 4), torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="conv must be one of"):
        SPADEResBlock(6, 3, 4, conv="deformable")


def test_syncbatch_falls_back_to_local_batch_norm_on_cpu_under_distributed(monkeypatch):
    torch.manual_seed(3)
    norm = SPADENorm(6, 4, hidden=8, param_free="syncbatch").double().train()
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64)
    label = _one_hot(3, 4, 16)
    # nn.SyncBatchNorm refuses CPU tensors once a process group exists (e.g. gloo on CPU).
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    out = norm(x, label)
    torch.testing.assert_close(out, _spade_literal(norm, x, label, _batch_norm_literal(x)))
    torch.testing.assert_close(norm.norm.running_mean, 0.1 * x.mean(dim=(0, 2, 3)))
