"""The named choices of the package, each defined once.

Every ``Literal`` alias below is used by the constructors that take the choice, by the
training configuration (which validates its keys against them) and by the command line
(``choices=`` of argparse), so that a name means the same thing from YAML to constructor.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "CONV_KINDS",
    "DATASET_NAMES",
    "DEVICE_NAMES",
    "INIT_KINDS",
    "NORM_KINDS",
    "PRECISIONS",
    "STYLE_KINDS",
    "UPSAMPLE_KINDS",
    "UPSAMPLING_LAYERS",
    "VGG_INPUTS",
    "ConvKind",
    "DatasetName",
    "DeviceName",
    "InitKind",
    "NormKind",
    "Precision",
    "StyleKind",
    "UpsampleKind",
    "UpsamplingLayers",
    "VggInput",
    "check_choice",
]

# Dataset formats that pansynth reads (see pansynth.data).
DatasetName = Literal["folder", "cityscapes", "coco-stuff", "coco-panoptic"]
# The generator's convolutions: plain (SPADE) or panoptic-aware partial convolutions (paper eq. 1-2).
ConvKind = Literal["panoptic", "standard"]
# The generator's x2 upsampling: nearest neighbour (SPADE) or panoptic-aware (Algorithm 1 + eq. 3).
UpsampleKind = Literal["panoptic", "nearest"]
# Parameter-free normalisation inside SPADE.
NormKind = Literal["instance", "batch", "syncbatch"]
# SPADE's generator depth: 5, 6 or 7 x2 upsamplings.
UpsamplingLayers = Literal["normal", "more", "most"]
# Weight initialisation: SPADE's (xavier normal, gain 0.02) or PyTorch's defaults.
InitKind = Literal["spade", "default"]
# What the VGG loss feeds VGG19: the [-1, 1] images as they are (SPADE) or ImageNet-normalised ones.
VggInput = Literal["raw", "imagenet"]
# Training precision: float32, or autocast to bfloat16 / float16 (the latter with a gradient scaler).
Precision = Literal["fp32", "bf16", "fp16"]
# Device names accepted everywhere (``cuda:N`` is accepted too, see pansynth.devices).
DeviceName = Literal["auto", "cpu", "cuda"]

# Per-segment styles of the generator: none (the paper's model) or instance (an encoder + a code per segment).
StyleKind = Literal["none", "instance"]

DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
CONV_KINDS: tuple[str, ...] = get_args(ConvKind)
UPSAMPLE_KINDS: tuple[str, ...] = get_args(UpsampleKind)
NORM_KINDS: tuple[str, ...] = get_args(NormKind)
UPSAMPLING_LAYERS: tuple[str, ...] = get_args(UpsamplingLayers)
INIT_KINDS: tuple[str, ...] = get_args(InitKind)
VGG_INPUTS: tuple[str, ...] = get_args(VggInput)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEVICE_NAMES: tuple[str, ...] = get_args(DeviceName)
STYLE_KINDS: tuple[str, ...] = get_args(StyleKind)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
