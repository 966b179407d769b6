"""Multi-scale PatchGAN discriminator conditioned on the label map (as in pix2pixHD / SPADE)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from pansynth.choices import InitKind
from pansynth.models.generator import build_label_map, check_label_inputs, label_map_channels
from pansynth.models.init import init_weights

__all__ = ["NLayerDiscriminator", "MultiscaleDiscriminator"]

_LRELU_SLOPE = 0.2
_KERNEL = 4
_PADDING = math.ceil((_KERNEL - 1) / 2)
_MAX_CHANNELS = 512


class NLayerDiscriminator(nn.Module):
    """PatchGAN: strided 4x4 convolutions down to a map of real/fake logits.

    Layer 0: conv 4x4 stride 2 -> ndf, LeakyReLU(0.2). Layers 1 .. num_layers-1: conv 4x4
    (channels doubling up to 512, stride 2 except the last, stride 1) with spectral norm,
    then InstanceNorm2d and LeakyReLU(0.2). Final: conv 4x4 stride 1 -> 1 channel.

    Args:
        in_channels: channels of the input (image + label map).
        ndf: width of the first layer.
        num_layers: number of feature layers before the logit layer (>= 1).
        spectral: spectral normalization on the middle layers.

    Shapes:
        forward(x (Tensor[N, in_channels, H, W])) -> list of num_layers + 1 feature maps;
        the last is the patch logits (Tensor[N, 1, h, w]).
    """

    def __init__(self, in_channels: int, ndf: int = 64, num_layers: int = 4, spectral: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, ndf, _KERNEL, stride=2, padding=_PADDING), nn.LeakyReLU(_LRELU_SLOPE))
        ]
        channels = ndf
        for index in range(1, num_layers):
            previous, channels = channels, min(channels * 2, _MAX_CHANNELS)
            stride = 1 if index == num_layers - 1 else 2
            conv = nn.Conv2d(previous, channels, _KERNEL, stride=stride, padding=_PADDING, bias=False)
            if spectral:
                conv = spectral_norm(conv)
            layers.append(nn.Sequential(conv, nn.InstanceNorm2d(channels, affine=False), nn.LeakyReLU(_LRELU_SLOPE)))
        layers.append(nn.Sequential(nn.Conv2d(channels, 1, _KERNEL, stride=1, padding=_PADDING)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` PatchGAN discriminators on image ⊕ one-hot semantic map (⊕ boundary map).

    Scale s sees the input average-pooled s times (3x3, stride 2, padding 1, padding not counted).

    Args:
        num_classes: number of semantic classes K.
        ignore_index: class value of unlabeled pixels (extra one-hot channel), or None.
        ndf: width of each discriminator's first layer.
        num_scales: number of discriminators (2 in SPADE).
        num_layers: feature layers of each discriminator (4 in SPADE).
        boundary: append the instance boundary map computed from the panoptic map.
        spectral: spectral normalization on the middle layers.
        init: ``"spade"`` (SPADE's xavier-normal, gain 0.02) or ``"default"`` (PyTorch's).

    Shapes:
        forward(image (Tensor[N, 3, H, W]), semantic (Tensor[N, H, W]) int64, panoptic (Tensor[N, H, W]) int64)
        -> list (per scale, finest first) of lists of feature maps, the patch logits last.

    Example:
        >>> d = MultiscaleDiscriminator(num_classes=4, ndf=8)
        >>> semantic = torch.randint(0, 4, (2, 32, 32))
        >>> outputs = d(torch.zeros(2, 3, 32, 32), semantic, semantic)
        >>> len(outputs), len(outputs[0]), outputs[0][-1].shape[1]
        (2, 5, 1)
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        ndf: int = 64,
        num_scales: int = 2,
        num_layers: int = 4,
        boundary: bool = True,
        spectral: bool = True,
        init: InitKind = "spade",
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary = boundary
        self.in_channels = 3 + label_map_channels(num_classes, ignore_index, boundary)
        self.discriminators = nn.ModuleList(
            NLayerDiscriminator(self.in_channels, ndf, num_layers, spectral) for _ in range(num_scales)
        )
        init_weights(self, init)

    def forward(self, image: Tensor, semantic: Tensor, panoptic: Tensor) -> list[list[Tensor]]:
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be an (N, 3, H, W) floating-point tensor, got {shape}")
        check_label_inputs(semantic, panoptic)
        if semantic.shape[0] != image.shape[0] or semantic.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"semantic/panoptic maps {tuple(semantic.shape)} must match the image {tuple(image.shape)} "
                "in batch size and spatial size"
            )
        label = build_label_map(semantic, panoptic.long(), self.num_classes, self.ignore_index, self.boundary)
        x = torch.cat([image, label.to(image.dtype)], dim=1)
        outputs = []
        for index, discriminator in enumerate(self.discriminators):
            if index > 0:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            outputs.append(discriminator(x))
        return outputs
