"""Panoptic-aware layers: partial convolution (eq. 1-2) and upsampling (Algorithm 1)."""

from pansynth.ops.maps import (
    boundary_map,
    downsample_map,
    label_channels,
    semantic_one_hot,
    semantic_to_index,
)
from pansynth.ops.panoptic_conv import PanopticConv2d, panoptic_conv2d, panoptic_conv2d_labels
from pansynth.ops.panoptic_upsample import panoptic_upsample, upsample_choices, upsample_sources

__all__ = [
    "PanopticConv2d",
    "boundary_map",
    "downsample_map",
    "label_channels",
    "panoptic_conv2d",
    "panoptic_conv2d_labels",
    "panoptic_upsample",
    "semantic_one_hot",
    "semantic_to_index",
    "upsample_choices",
    "upsample_sources",
]
