"""Panoptic-aware layers: partial convolution (eq. 1-2) and upsampling (Algorithm 1).

Each op runs on the PyTorch engine or on Triton kernels (``backend=``, see
:mod:`pansynth.ops.backend`).
"""

from pansynth.ops.backend import BACKEND_ENV, Backend
from pansynth.ops.maps import (
    boundary_map,
    downsample_map,
    label_channels,
    semantic_one_hot,
    semantic_to_index,
)
from pansynth.ops.masks import MaskPlan, mask_plan, neighbour_mask
from pansynth.ops.panoptic_conv import (
    ConvPlan,
    PanopticConv2d,
    conv_plan,
    panoptic_conv2d,
    panoptic_conv2d_labels,
)
from pansynth.ops.panoptic_upsample import panoptic_upsample, upsample_choices, upsample_sources

__all__ = [
    "BACKEND_ENV",
    "Backend",
    "ConvPlan",
    "MaskPlan",
    "PanopticConv2d",
    "boundary_map",
    "conv_plan",
    "downsample_map",
    "label_channels",
    "mask_plan",
    "neighbour_mask",
    "panoptic_conv2d",
    "panoptic_conv2d_labels",
    "panoptic_upsample",
    "semantic_one_hot",
    "semantic_to_index",
    "upsample_choices",
    "upsample_sources",
]
