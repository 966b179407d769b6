"""Networks: SPADE blocks, the panoptic-aware generator, the multi-scale discriminator, losses."""

from pansynth.models import losses
from pansynth.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from pansynth.models.generator import Generator, build_label_map, label_map_channels
from pansynth.models.hole_fill import HoleFillingUpsample
from pansynth.models.init import init_weights
from pansynth.models.losses import (
    GANHingeLoss,
    VGGPerceptualLoss,
    feature_matching_loss,
    hinge_loss_d,
    hinge_loss_g,
)
from pansynth.models.spade import SPADENorm, SPADEResBlock
from pansynth.models.vgg import load_vgg19_features

__all__ = [
    "Generator",
    "HoleFillingUpsample",
    "init_weights",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "SPADENorm",
    "SPADEResBlock",
    "GANHingeLoss",
    "VGGPerceptualLoss",
    "hinge_loss_d",
    "hinge_loss_g",
    "feature_matching_loss",
    "load_vgg19_features",
    "build_label_map",
    "label_map_channels",
    "losses",
]
