"""Weight initialisation shared by the generator and the discriminator.

SPADE's released code, whose training settings the paper adopts, initialises every
convolution and linear layer with ``xavier_normal_(gain=0.02)`` and a zero bias, and the
affine batch-norm weights with N(1, 0.02) (its ``init_type='xavier'``, ``init_variance=0.02``).
``init="default"`` keeps PyTorch's own initialisation of each layer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from pansynth.choices import INIT_KINDS, InitKind, check_choice
from pansynth.ops import PanopticConv2d

__all__ = ["SPADE_INIT_GAIN", "init_weights"]

SPADE_INIT_GAIN = 0.02
_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, PanopticConv2d)
_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def _original_weight(module: nn.Module) -> torch.Tensor:
    """The trained weight tensor: the parametrization's original under spectral norm."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _restart_spectral_norm(module: nn.Module) -> None:
    """Re-estimate the spectral norm's singular vectors for the new weight (as at its creation)."""
    if not parametrize.is_parametrized(module, "weight"):
        return
    weight = module.parametrizations.weight.original
    for parametrization in module.parametrizations.weight:
        if hasattr(parametrization, "_power_method") and hasattr(parametrization, "_reshape_weight_to_matrix"):
            parametrization._power_method(parametrization._reshape_weight_to_matrix(weight), 15)


@torch.no_grad()
def init_weights(network: nn.Module, init: InitKind = "spade", gain: float = SPADE_INIT_GAIN) -> nn.Module:
    """Initialise the layers of ``network`` in place; returns it.

    Args:
        network: any module; its convolutions (plain and panoptic), linear layers and affine
            batch norms are initialised, everything else is left as it is.
        init: ``"spade"`` (xavier normal with ``gain``, zero bias; batch-norm weight N(1, gain),
            zero bias) or ``"default"`` (leave PyTorch's initialisation).
        gain: the xavier gain and the batch-norm weight's standard deviation.
    """
    check_choice("init", init, INIT_KINDS)
    if init == "default":
        return network
    for module in network.modules():
        if isinstance(module, _BATCH_NORMS):
            if module.weight is not None:
                nn.init.normal_(module.weight, 1.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _WEIGHTED):
            nn.init.xavier_normal_(_original_weight(module), gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            _restart_spectral_norm(module)
    return network
