"""The GAN objective of SPADE and the paper (section 4), and the generator's moving average.

Generator: hinge adversarial loss + lambda_feat * discriminator feature matching + lambda_vgg *
VGG19 perceptual loss (+ lambda_kld * the style codes' KL divergence to N(0, I), with styles).
Discriminator: hinge loss on real and generated images. Both networks see the real and the
generated images in one batch (real and fake concatenated), as SPADE does.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from pansynth.models.losses import GANHingeLoss, VGGPerceptualLoss, feature_matching_loss
from pansynth.models.style import kl_divergence
from pansynth.train.config import LossConfig

__all__ = ["EMA", "GANObjective", "ema_decay"]

Outputs = list[list[Tensor]]


def _split(outputs: Outputs, count: int) -> tuple[Outputs, Outputs]:
    """Discriminator outputs of a [fake; real] batch -> (fake outputs, real outputs)."""
    return [[f[:count] for f in scale] for scale in outputs], [[f[count:] for f in scale] for scale in outputs]


class GANObjective:
    """The losses of one generator step and one discriminator step.

    Args:
        config: the ``loss`` section of the training configuration.
        device: where the VGG network (when lambda_vgg > 0) is put.

    The VGG19 weights are read here, so a missing or bad file fails before training starts.
    """

    def __init__(self, config: LossConfig, device: torch.device) -> None:
        self.config = config
        self.hinge = GANHingeLoss()
        self.vgg = None
        if config.lambda_vgg > 0:
            self.vgg = VGGPerceptualLoss(config.vgg_weights, input=config.vgg_input).to(device)

    def _discriminate(
        self, discriminator: nn.Module, fake: Tensor, real: Tensor, semantic: Tensor, panoptic: Tensor
    ) -> tuple[Outputs, Outputs]:
        both = torch.cat([fake, real.to(fake.dtype)])
        outputs = discriminator(both, torch.cat([semantic, semantic]), torch.cat([panoptic, panoptic]))
        return _split(outputs, fake.shape[0])

    def generator_losses(
        self,
        discriminator: nn.Module,
        fake: Tensor,
        real: Tensor,
        semantic: Tensor,
        panoptic: Tensor,
        style_stats: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """``{"G_gan", "G_feat" (if lambda_feat > 0), "G_vgg" (if lambda_vgg > 0), "G_kld", "G_total"}``.

        ``G_kld`` is there when ``style_stats`` (the per-segment ``mu, logvar`` of the style
        encoder) is given. The discriminator's own gradients are not wanted here: the caller freezes it.
        """
        fake_out, real_out = self._discriminate(discriminator, fake, real, semantic, panoptic)
        real_out = [[f.detach() for f in scale] for scale in real_out]
        losses = {"G_gan": self.hinge(fake_out, target_is_real=True, for_discriminator=False)}
        if self.config.lambda_feat > 0:
            losses["G_feat"] = self.config.lambda_feat * feature_matching_loss(real_out, fake_out)
        if self.vgg is not None:
            losses["G_vgg"] = self.config.lambda_vgg * self.vgg(fake.float(), real.float())
        if style_stats is not None:
            losses["G_kld"] = self.config.lambda_kld * kl_divergence(*style_stats, num_images=fake.shape[0])
        losses["G_total"] = sum(losses.values())
        return losses

    def discriminator_losses(
        self, discriminator: nn.Module, fake: Tensor, real: Tensor, semantic: Tensor, panoptic: Tensor
    ) -> dict[str, Tensor]:
        """``{"D_real", "D_fake", "D_total"}`` on the (detached) generated images."""
        fake_out, real_out = self._discriminate(discriminator, fake.detach(), real, semantic, panoptic)
        losses = {
            "D_real": self.hinge(real_out, target_is_real=True),
            "D_fake": self.hinge(fake_out, target_is_real=False),
        }
        losses["D_total"] = losses["D_real"] + losses["D_fake"]
        return losses


def ema_decay(decay: float, step: int) -> float:
    """EMA decay with warm-up, ``min(decay, (1 + step) / (10 + step))``: early averages follow G quickly."""
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """An exponential moving average of a generator's weights (its buffers are copied as they are).

    Args:
        model: the generator being trained; the average starts as a copy of it.
        decay: the long-run decay (e.g. 0.999), warmed up by :func:`ema_decay`.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        weight = 1.0 - ema_decay(self.decay, step)
        for averaged, current in zip(self.model.parameters(), model.parameters()):
            averaged.lerp_(current.detach().to(averaged.dtype), weight)
        for averaged, current in zip(self.model.buffers(), model.buffers()):
            averaged.copy_(current)
