"""Spatially-adaptive normalization (SPADE) and the SPADE residual block.

SPADE (Park et al., CVPR 2019) normalizes activations with a parameter-free norm and
then modulates them with a per-pixel scale ``gamma`` and shift ``beta`` predicted from
the semantic label map:

    out = norm(x) * (1 + gamma(label)) + beta(label)

Panoptic-based image synthesis (Dundar et al., CVPR 2020, section 3.3) keeps the SPADE
input a semantic map and swaps the 3x3 convolutions of every residual block for
panoptic-aware partial convolutions guided by the panoptic map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from pansynth.choices import CONV_KINDS, NORM_KINDS, ConvKind, NormKind, check_choice
from pansynth.ops import Backend, ConvPlan, MaskPlan, PanopticConv2d, conv_plan, mask_plan
from pansynth.ops.maps import downsample_map

__all__ = [
    "PlanCache",
    "apply_conv",
    "instance_norm_nhwc",
    "is_channels_last",
    "make_conv3x3",
    "param_free_norm",
    "resize_label",
    "SPADENorm",
    "SPADEResBlock",
]

_LRELU_SLOPE = 0.2


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """A normalization layer without learned affine parameters.

    ``"syncbatch"`` gives ``nn.SyncBatchNorm``, which synchronizes statistics across
    processes only when ``torch.distributed`` is initialized; otherwise (single process,
    CPU) it computes ordinary batch statistics, exactly like ``nn.BatchNorm2d``.
    """
    check_choice("norm", kind, NORM_KINDS)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    return nn.SyncBatchNorm(channels, affine=False)


def is_channels_last(tensor: Tensor) -> bool:
    """Whether a 4-d tensor is stored channels_last (NHWC) and not also plainly contiguous.

    (A map with one channel, or one pixel, is both: elementwise ops give it contiguous strides.)
    """
    return tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)


def instance_norm_nhwc(x: Tensor, eps: float) -> Tensor:
    """``nn.InstanceNorm2d(affine=False)`` (biased variance, statistics in fp32 at least) that keeps x's layout.

    ``nn.InstanceNorm2d`` returns a contiguous (NCHW) tensor whatever its input; the kernels of the
    Triton engine read NHWC, so a channels_last generator normalizes with this instead.
    """
    values = x if x.dtype == torch.float64 else x.float()
    var, mean = torch.var_mean(values, dim=(2, 3), keepdim=True, correction=0)
    return ((values - mean) * torch.rsqrt(var + eps)).to(x.dtype)


def resize_label(label: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a label map to ``size`` by integer-stride slicing.

    For integer factors this equals ``F.interpolate(label, size, mode="nearest")`` and
    keeps one-hot maps one-hot (no bilinear blending of classes).

    Args:
        label (Tensor[N, L, H, W]): label map whose H, W are multiples of ``size``.
        size: target (h, w).

    Returns:
        Tensor[N, L, h, w] (a view when no resizing is needed).
    """
    if label.dim() != 4:
        raise ValueError(f"label map must be (N, L, H, W), got {tuple(label.shape)}")
    return downsample_map(label, tuple(size))


def _sync_norm_forward(norm: nn.SyncBatchNorm, x: Tensor) -> Tensor:
    # SyncBatchNorm only supports accelerator tensors when a process group is active;
    # a CPU run under torch.distributed falls back to local batch statistics.
    if x.device.type == "cpu" and torch.distributed.is_available() and torch.distributed.is_initialized():
        use_batch_stats = norm.training or norm.running_mean is None
        return F.batch_norm(
            x,
            norm.running_mean if not norm.training or norm.track_running_stats else None,
            norm.running_var if not norm.training or norm.track_running_stats else None,
            None,
            None,
            use_batch_stats,
            norm.momentum if norm.momentum is not None else 0.0,
            norm.eps,
        )
    return norm(x)


class SPADENorm(nn.Module):
    """Spatially-adaptive denormalization.

    Args:
        norm_channels: channels C of the features to normalize.
        label_channels: channels L of the label map (one-hot semantic map [+ boundary]).
        hidden: channels of the shared hidden convolution (128 in SPADE).
        param_free: ``"instance"`` | ``"batch"`` | ``"syncbatch"``, the parameter-free norm.

    Shapes:
        forward(x (Tensor[N, C, h, w]), label (Tensor[N, L, H, W])) -> Tensor[N, C, h, w],
        where H, W are integer multiples of h, w (the label map is subsampled by stride).

    Example:
        >>> norm = SPADENorm(8, 3, hidden=16)
        >>> norm(torch.randn(2, 8, 4, 4), torch.ones(2, 3, 16, 16)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self, norm_channels: int, label_channels: int, hidden: int = 128, param_free: NormKind = "instance"
    ) -> None:
        super().__init__()
        self.norm_channels = norm_channels
        self.label_channels = label_channels
        self.param_free = param_free
        self.norm = param_free_norm(param_free, norm_channels)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, norm_channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, norm_channels, 3, padding=1)

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.norm_channels:
            raise ValueError(f"SPADENorm expected x of shape (N, {self.norm_channels}, h, w), got {tuple(x.shape)}")
        if label.dim() != 4 or label.shape[1] != self.label_channels:
            raise ValueError(
                f"SPADENorm expected a label map of shape (N, {self.label_channels}, H, W), got {tuple(label.shape)}"
            )
        if isinstance(self.norm, nn.SyncBatchNorm):
            normalized = _sync_norm_forward(self.norm, x)
        elif isinstance(self.norm, nn.InstanceNorm2d) and is_channels_last(x):
            # (the module stays, for its repr and state dict; batch norms keep channels_last themselves)
            normalized = instance_norm_nhwc(x, self.norm.eps)
        else:
            normalized = self.norm(x)
        hidden = self.shared(resize_label(label.to(x.dtype), x.shape[-2:]))
        return normalized * (1 + self.gamma(hidden)) + self.beta(hidden)

    def extra_repr(self) -> str:
        return f"norm_channels={self.norm_channels}, label_channels={self.label_channels}, {self.param_free}"


def make_conv3x3(in_channels: int, out_channels: int, conv: ConvKind, backend: Backend = "auto") -> nn.Module:
    """A 3x3, stride-1, 'same'-padded convolution: plain or panoptic-aware (run by ``backend``)."""
    check_choice("conv", conv, CONV_KINDS)
    if conv == "standard":
        return nn.Conv2d(in_channels, out_channels, 3, padding=1)
    return PanopticConv2d(in_channels, out_channels, 3, backend=backend)


def apply_conv(conv: nn.Module, x: Tensor, panoptic: Tensor | None, plans: PlanCache | None = None) -> Tensor:
    """Call a layer from :func:`make_conv3x3`, passing the panoptic map (and its plan) to panoptic convs."""
    if not isinstance(conv, PanopticConv2d):
        return conv(x)
    if panoptic is None:
        raise ValueError("a panoptic convolution needs the panoptic map, got None")
    plan = plans.get(tuple(x.shape[-2:]), conv.kernel_size) if plans is not None else None
    return conv(x, panoptic, plan)


class PlanCache:
    """The engine's per-map plans of one forward pass, one per scale and kernel size.

    Every panoptic convolution at a scale sees the same map ``P[::s, ::s]``: what the engine
    derives from it is computed once per forward pass (and reused by the backward pass) instead
    of once per layer -- the PyTorch engine's irregular windows (:func:`conv_plan`), or the
    Triton engine's neighbour mask and scale (:func:`mask_plan`). Built by the generator for
    each forward call; never shared between calls, so an edited map is never served a stale plan.

    Args:
        panoptic (Tensor[N, H, W]): the full-resolution map of this forward pass.
        engine: ``"torch"`` or ``"triton"``, the engine the convolutions run on.
    """

    def __init__(self, panoptic: Tensor, engine: str = "torch") -> None:
        if engine not in ("torch", "triton"):
            raise ValueError(f"engine must be 'torch' or 'triton', got {engine!r}")
        self.panoptic = panoptic
        self.engine = engine
        self.plans: dict[tuple[tuple[int, int], int], ConvPlan | MaskPlan] = {}

    def get(self, size: tuple[int, int], kernel_size: int) -> ConvPlan | MaskPlan:
        key = (tuple(size), kernel_size)
        if key not in self.plans:
            build = mask_plan if self.engine == "triton" else conv_plan
            self.plans[key] = build(downsample_map(self.panoptic, size), kernel_size)
        return self.plans[key]


class SPADEResBlock(nn.Module):
    """SPADE residual block (Figure 5, right), optionally with panoptic-aware convolutions.

    ``dx = conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x))))))``; the shortcut is
    ``conv_s(norm_s(x))`` (1x1, no bias) when the channel count changes, else ``x``.

    Args:
        in_channels, out_channels: feature channels in and out; the middle width is the minimum.
        label_channels: channels of the label map fed to the SPADE norms.
        conv: ``"standard"`` or ``"panoptic"`` for the two 3x3 convolutions. The 1x1
            shortcut stays a plain convolution (a 1x1 partial convolution equals it).
        spectral: apply spectral normalization to conv_0, conv_1 and conv_s.
        norm: parameter-free norm of the SPADE layers.
        hidden: width of the SPADE layers' hidden convolution.
        backend: engine of the panoptic convolutions (``"auto"``, ``"triton"``, ``"torch"``).

    Shapes:
        forward(x (Tensor[N, in, h, w]), label (Tensor[N, L, H, W]), panoptic (Tensor[N, H', W']) int64)
        -> Tensor[N, out, h, w]. The label and panoptic maps may be larger than x by an integer
        stride; they are subsampled. ``panoptic`` may be None when ``conv="standard"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        label_channels: int,
        conv: ConvKind = "standard",
        spectral: bool = True,
        norm: NormKind = "instance",
        hidden: int = 128,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_choice("conv", conv, CONV_KINDS)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.learned_shortcut = in_channels != out_channels
        middle = min(in_channels, out_channels)
        self.conv_0 = make_conv3x3(in_channels, middle, conv, backend)
        self.conv_1 = make_conv3x3(middle, out_channels, conv, backend)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        if spectral:
            self.conv_0 = spectral_norm(self.conv_0)
            self.conv_1 = spectral_norm(self.conv_1)
            if self.learned_shortcut:
                self.conv_s = spectral_norm(self.conv_s)
        self.norm_0 = SPADENorm(in_channels, label_channels, hidden, param_free=norm)
        self.norm_1 = SPADENorm(middle, label_channels, hidden, param_free=norm)
        if self.learned_shortcut:
            self.norm_s = SPADENorm(in_channels, label_channels, hidden, param_free=norm)

    def forward(
        self, x: Tensor, label: Tensor, panoptic: Tensor | None = None, plans: PlanCache | None = None
    ) -> Tensor:
        if self.learned_shortcut:
            shortcut = self.conv_s(self.norm_s(x, label))
        else:
            shortcut = x
        dx = apply_conv(self.conv_0, F.leaky_relu(self.norm_0(x, label), _LRELU_SLOPE), panoptic, plans)
        dx = apply_conv(self.conv_1, F.leaky_relu(self.norm_1(dx, label), _LRELU_SLOPE), panoptic, plans)
        return shortcut + dx

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"
