"""SPADE's initialisation (xavier normal, gain 0.02; zero biases; batch norm N(1, 0.02)) in both networks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from pansynth.models import Generator, MultiscaleDiscriminator, init_weights
from pansynth.ops import PanopticConv2d


def _weighted_layers(network: nn.Module):
    for name, module in network.named_modules():
        if isinstance(module, (nn.Conv2d, PanopticConv2d, nn.Linear)):
            weight = (
                module.parametrizations.weight.original
                if parametrize.is_parametrized(module, "weight")
                else module.weight
            )
            yield name, module, weight


def _xavier_std(weight: torch.Tensor, gain: float) -> float:
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


@pytest.mark.parametrize(
    "network",
    [
        lambda: Generator(5, size=(64, 64), ngf=8, spade_hidden=32),
        lambda: Generator(5, size=(64, 64), ngf=8, spade_hidden=32, conv="standard", upsample="nearest"),
        lambda: MultiscaleDiscriminator(5, ndf=16, num_layers=3),
    ],
    ids=["paper-generator", "spade-generator", "discriminator"],
)
def test_spade_init_statistics(network):
    torch.manual_seed(0)
    net = network()
    layers = list(_weighted_layers(net))
    assert len(layers) > 5
    pooled = []  # weight / expected std, pooled over every layer: a standard normal sample
    for name, module, weight in layers:
        if module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0, name
        pooled.append((weight / _xavier_std(weight, 0.02)).flatten())
        # Each big layer on its own is near the xavier std with gain 0.02 (far from PyTorch's default).
        if weight.numel() >= 4096:
            ratio = weight.std().item() / _xavier_std(weight, 0.02)
            assert 0.9 < ratio < 1.1, (name, ratio)
    sample = torch.cat(pooled)
    assert abs(sample.mean().item()) < 0.02
    assert abs(sample.std().item() - 1) < 0.02


def test_default_init_keeps_pytorch_initialisation():
    torch.manual_seed(0)
    net = Generator(5, size=(64, 64), ngf=8, spade_hidden=32, init="default")
    # PyTorch's default conv init is uniform with bound 1/sqrt(fan_in) (kaiming_uniform, a=sqrt(5)),
    # and non-zero biases: nowhere near gain 0.02.
    _, module, weight = next((n, m, w) for n, m, w in _weighted_layers(net) if n.endswith("norm_0.shared.0"))
    fan_in = weight[0].numel()
    assert weight.abs().max() <= 1 / math.sqrt(fan_in) + 1e-6
    assert weight.std().item() > 5 * _xavier_std(weight, 0.02)
    assert torch.count_nonzero(module.bias) > 0


def test_batch_norm_weights_and_spectral_norm_vectors():
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(4096), nn.utils.parametrizations.spectral_norm(nn.Conv2d(8, 16, 3)))
    init_weights(net, "spade")
    batch_norm = net[0]
    assert abs(batch_norm.weight.mean().item() - 1) < 0.002 and abs(batch_norm.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(batch_norm.bias) == 0
    # The spectral norm is re-estimated for the new weight (15 power iterations, as at its creation).
    conv = net[1]
    conv.eval()
    sigma = torch.linalg.matrix_norm(conv.weight.reshape(16, -1), ord=2)
    assert abs(sigma.item() - 1) < 0.1  # stale vectors of the old weight would give a norm far from 1
    with pytest.raises(ValueError, match="init must be one of"):
        init_weights(net, "orthogonal")


def test_generators_saved_by_earlier_versions_still_load(tmp_path):
    """Exports of earlier versions: SPADE's crop_size/aspect_ratio and the names fc / G_middle_k."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(1)
    generator = Generator(5, size=(32, 64), ngf=4, spade_hidden=16).eval()
    directory = generator.save_pretrained(tmp_path / "old")
    config = json.loads((directory / "config.json").read_text())
    del config["size"], config["init"]
    config.update(crop_size=64, aspect_ratio=2.0)
    (directory / "config.json").write_text(json.dumps(config))
    renamed = {}
    for key, value in load_file(str(directory / "model.safetensors")).items():
        key = key.replace("first_layer.", "fc.", 1) if key.startswith("first_layer.") else key
        renamed[key.replace("middle_", "G_middle_", 1) if key.startswith("middle_") else key] = value
    assert any(key.startswith("fc.") for key in renamed) and any(key.startswith("G_middle_0.") for key in renamed)
    save_file(renamed, str(directory / "model.safetensors"))
    loaded = Generator.from_pretrained(directory)
    assert loaded.output_size == (32, 64)
    semantic = torch.randint(0, 5, (1, 32, 64))
    torch.testing.assert_close(loaded(semantic, semantic * 3), generator(semantic, semantic * 3))
