"""Losses of the SPADE / panoptic-synthesis training objective.

- hinge GAN loss (Lim & Ye 2017; Miyato et al. 2018), averaged over discriminator scales;
- discriminator feature matching (pix2pixHD), L1 over every layer but the logits,
  summed over layers and averaged over scales;
- VGG19 perceptual loss (pix2pixHD / SPADE weights 1/32, 1/16, 1/8, 1/4, 1).

Discriminator outputs are accepted as returned by :class:`MultiscaleDiscriminator`
(a list per scale of a list of feature maps, logits last), as a list of logit tensors,
or as a single logit tensor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pansynth.choices import VGG_INPUTS, VggInput, check_choice
from pansynth.models.vgg import VGG19_SLICES, load_vgg19_features

__all__ = [
    "GANHingeLoss",
    "hinge_loss_d",
    "hinge_loss_g",
    "feature_matching_loss",
    "VGGPerceptualLoss",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def _logits(outputs) -> list[Tensor]:
    """The patch logits of every scale."""
    if isinstance(outputs, Tensor):
        return [outputs]
    if not isinstance(outputs, Sequence) or len(outputs) == 0:
        raise ValueError("discriminator outputs must be a tensor or a non-empty list (one entry per scale)")
    logits = []
    for scale in outputs:
        if isinstance(scale, Tensor):
            logits.append(scale)
        elif isinstance(scale, Sequence) and len(scale) > 0 and isinstance(scale[-1], Tensor):
            logits.append(scale[-1])
        else:
            raise ValueError("each scale's output must be a tensor or a non-empty list of feature maps (logits last)")
    return logits


class GANHingeLoss(nn.Module):
    """Hinge GAN loss averaged over discriminator scales.

    ``forward(outputs, target_is_real, for_discriminator=True)``:

    - discriminator, real: ``mean(relu(1 - D(x)))``;
    - discriminator, fake: ``mean(relu(1 + D(G(z))))``;
    - generator (``for_discriminator=False``; the target must be real): ``-mean(D(G(z)))``.

    Each term is the mean over the pixels of a scale's patch logits, then the mean over scales.

    Example:
        >>> loss = GANHingeLoss()
        >>> float(loss(torch.tensor([0.5, 2.0]), target_is_real=True))
        0.25
    """

    def forward(self, outputs, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
        logits = _logits(outputs)
        if for_discriminator:
            sign = -1.0 if target_is_real else 1.0
            terms = [F.relu(1.0 + sign * scale).mean() for scale in logits]
        else:
            if not target_is_real:
                raise ValueError("the hinge generator loss is defined for target_is_real=True only")
            terms = [-scale.mean() for scale in logits]
        return torch.stack(terms).mean()


def hinge_loss_d(real_outputs, fake_outputs) -> Tensor:
    """Discriminator hinge loss: ``mean(relu(1 - real)) + mean(relu(1 + fake))``, each averaged over scales."""
    loss = GANHingeLoss()
    return loss(real_outputs, target_is_real=True) + loss(fake_outputs, target_is_real=False)


def hinge_loss_g(fake_outputs) -> Tensor:
    """Generator hinge loss: ``-mean(D(G(z)))`` averaged over scales."""
    return GANHingeLoss()(fake_outputs, target_is_real=True, for_discriminator=False)


def feature_matching_loss(real_outputs: Sequence[Sequence[Tensor]], fake_outputs: Sequence[Sequence[Tensor]]) -> Tensor:
    """Discriminator feature matching: ``(1 / S) * sum_s sum_l L1(fake_sl, real_sl.detach())``.

    ``l`` runs over every feature map of a scale except the final logits; each L1 is the
    mean absolute difference. The weight (10 in SPADE) is the trainer's.

    Args:
        real_outputs, fake_outputs: per scale, lists of feature maps (logits last), as
            returned by :class:`MultiscaleDiscriminator` for the real and generated images.
    """
    if len(real_outputs) != len(fake_outputs) or len(real_outputs) == 0:
        raise ValueError(
            f"feature matching needs the same, non-zero number of scales, got {len(real_outputs)} real "
            f"and {len(fake_outputs)} fake"
        )
    total = None
    for real_scale, fake_scale in zip(real_outputs, fake_outputs):
        if isinstance(real_scale, Tensor) or isinstance(fake_scale, Tensor) or len(real_scale) != len(fake_scale):
            raise ValueError("feature matching needs, per scale, two lists of feature maps of the same length")
        for real, fake in zip(real_scale[:-1], fake_scale[:-1]):
            term = F.l1_loss(fake, real.detach())
            total = term if total is None else total + term
    if total is None:  # discriminators with a single (logit) layer have no features to match
        return fake_outputs[0][-1].new_zeros(())
    return total / len(real_outputs)


class VGGPerceptualLoss(nn.Module):
    """VGG19 perceptual loss: ``sum_i w_i * L1(phi_i(fake), phi_i(real).detach())``.

    ``phi_i`` are the activations relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of an ImageNet
    VGG19 read from a local file (see :func:`pansynth.models.vgg.load_vgg19_features`), with
    weights ``w = (1/32, 1/16, 1/8, 1/4, 1)``. The VGG weights are frozen (and are buffers,
    so they are not trained and not saved in the loss module's state dict).

    What VGG19 sees: with ``input="raw"`` (SPADE's ``VGGLoss``, and the paper presets) the
    [-1, 1] images as they are; with ``input="imagenet"`` the images mapped to [0, 1] and
    normalised with the ImageNet mean and std, the statistics VGG19 was trained on. The
    loss weights of the paper (lambda_vgg = 10) were tuned with the raw input.

    Args:
        weights_path: local torchvision VGG19 state dict (``.pth`` / ``.pt`` / ``.safetensors``).
        layer_weights: weight of each of the five layers.
        input: ``"raw"`` or ``"imagenet"`` (see above).

    Shapes:
        forward(fake (Tensor[N, 3, H, W]), real (Tensor[N, 3, H, W])) -> scalar.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike,
        layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS,
        input: VggInput = "raw",
    ) -> None:
        super().__init__()
        check_choice("input", input, VGG_INPUTS)
        self.input = input
        if len(layer_weights) != len(VGG19_SLICES):
            raise ValueError(f"layer_weights needs {len(VGG19_SLICES)} values, got {len(layer_weights)}")
        features = load_vgg19_features(weights_path)
        # Kept out of parameters(): an optimizer over the trainer's modules never sees them.
        self.slices = nn.ModuleList(features[start:stop] for start, stop in VGG19_SLICES)
        for module in self.slices.modules():
            for name, parameter in list(module.named_parameters(recurse=False)):
                delattr(module, name)
                module.register_buffer(name, parameter.detach(), persistent=False)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        # VGG has no dropout/batch norm in ``features``, but stay in eval mode regardless.
        return super().train(False)

    def features(self, image: Tensor) -> list[Tensor]:
        """VGG19 activations (relu1_1 .. relu5_1) of images in [-1, 1]."""
        if self.input == "imagenet":
            x = ((image + 1) / 2 - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        else:
            x = image
        activations = []
        for block in self.slices:
            x = block(x)
            activations.append(x)
        return activations

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        if fake.shape != real.shape or fake.dim() != 4 or fake.shape[1] != 3:
            raise ValueError(
                f"VGG loss needs two (N, 3, H, W) images of the same shape, got {tuple(fake.shape)} "
                f"and {tuple(real.shape)}"
            )
        with torch.no_grad():
            real_features = self.features(real)
        loss = fake.new_zeros(())
        for weight, fake_act, real_act in zip(self.layer_weights, self.features(fake), real_features):
            loss = loss + weight * F.l1_loss(fake_act, real_act)
        return loss
