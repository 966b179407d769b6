"""Autograd and ``torch.library`` registration around the Triton kernels (:mod:`pansynth.ops._triton`).

The kernels compute; this module makes them operators: each launcher is a custom op
(``pansynth::..._triton``) with a fake implementation that gives the shapes, dtypes and
strides to ``torch.compile``, and the forward ops carry their backward formulas. The
convolution's forward also returns k²/sum(M) per pixel, which both gradients reuse.

The kernels module (which imports triton) is looked up when an op runs, not when this
module is imported: machines without triton never load it.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["conv2d", "upsample"]


def _kernels() -> ModuleType:
    # Imported on first use (the kernels bring triton); sys.modules lets tests put stand-ins there.
    from pansynth.ops import _triton

    return sys.modules.get(_triton.__name__, _triton)


def _channels_last_empty(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    n, c, h, w = shape
    return torch.empty_strided((n, c, h, w), (h * w * c, 1, w * c, c), dtype=dtype, device=device)


def _as_channels_last(tensor: Tensor) -> Tensor:
    """The same values with channels_last strides exactly (what the fake implementations promise)."""
    n, c, h, w = tensor.shape
    if tensor.stride() == (h * w * c, 1, w * c, c):
        return tensor
    return _channels_last_empty(tensor.shape, tensor.dtype, tensor.device).copy_(tensor)


# --- convolution (eq. 1-2) ---------------------------------------------------------------------
# The ops take the neighbour mask and scale of the map (pansynth.ops.masks: computed once per map
# and kernel size by the caller's plan, shared by the layers of a scale and by their backward
# passes), not the ids.


@torch.library.custom_op(
    "pansynth::panoptic_conv2d_triton",
    mutates_args=(),
    schema="(Tensor input, Tensor mask, Tensor scale, Tensor weight, Tensor? bias) -> Tensor",
)
def _conv2d_forward(input, mask, scale, weight, bias):
    output, _ = _kernels().conv2d_forward(input, None, weight, bias, neighbours=(mask, scale))
    return _as_channels_last(output)


@_conv2d_forward.register_fake
def _(input, mask, scale, weight, bias):
    n, _, height, width = input.shape
    return _channels_last_empty((n, weight.shape[0], height, width), input.dtype, input.device)


@torch.library.custom_op(
    "pansynth::panoptic_conv2d_triton_input_grad",
    mutates_args=(),
    schema="(Tensor scaled_grad, Tensor mask, Tensor scale, Tensor weight) -> Tensor",
)
def _conv2d_input_grad(scaled_grad, mask, scale, weight):
    grad = _kernels().conv2d_input_grad(scaled_grad, scale, None, weight, prescaled=True, mask=mask)
    return _as_channels_last(grad)


@_conv2d_input_grad.register_fake
def _(scaled_grad, mask, scale, weight):
    n, _, height, width = scaled_grad.shape
    return _channels_last_empty((n, weight.shape[1], height, width), scaled_grad.dtype, scaled_grad.device)


@torch.library.custom_op(
    "pansynth::panoptic_conv2d_triton_weight_grad",
    mutates_args=(),
    schema="(Tensor scaled_grad, Tensor input, Tensor mask, Tensor scale, int kernel_size) -> Tensor",
)
def _conv2d_weight_grad(scaled_grad, input, mask, scale, kernel_size):
    grad = _kernels().conv2d_weight_grad(scaled_grad, scale, input, None, kernel_size, prescaled=True, mask=mask)
    return _as_channels_last(grad.float())  # the layout of the NHWC weights the engine trains


@_conv2d_weight_grad.register_fake
def _(scaled_grad, input, mask, scale, kernel_size):
    shape = (scaled_grad.shape[1], input.shape[1], kernel_size, kernel_size)
    return _channels_last_empty(shape, torch.float32, input.device)


@torch.library.custom_op(
    "pansynth::panoptic_conv2d_triton_grad_prescale",
    mutates_args=(),
    schema="(Tensor grad_output, Tensor scale, ScalarType dtype, bool with_bias) -> (Tensor, Tensor)",
)
def _conv2d_grad_prescale(grad_output, scale, dtype, with_bias):
    scaled, grad_bias = _kernels().conv2d_grad_prescale(grad_output, scale, dtype, with_bias)
    if grad_bias is None:
        grad_bias = grad_output.new_empty((0,), dtype=torch.float32)
    return _as_channels_last(scaled), grad_bias


@_conv2d_grad_prescale.register_fake
def _(grad_output, scale, dtype, with_bias):
    scaled = _channels_last_empty(grad_output.shape, dtype, grad_output.device)
    return scaled, grad_output.new_empty((grad_output.shape[1] if with_bias else 0,), dtype=torch.float32)


def _conv2d_setup_context(ctx, inputs, output) -> None:
    input, mask, scale, weight, bias = inputs
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(input, mask, scale, weight)


def _conv2d_backward(ctx, grad_output):
    input, mask, scale, weight = ctx.saved_tensors
    need_input, _, _, need_weight, need_bias = ctx.needs_input_grad
    need_bias = need_bias and ctx.bias_dtype is not None
    grad_input = grad_weight = grad_bias = scaled = None
    if (need_input or need_weight) and not torch.compiler.is_compiling():
        # Eager: one kernel reads g once for g~ = g * k²/sum(M) (both gradients read it, in their
        # NHWC layout, rounded to the input's dtype) and for the bias gradient.
        scaled, grad_bias = torch.ops.pansynth.panoptic_conv2d_triton_grad_prescale(
            grad_output, scale, input.dtype, need_bias
        )
        grad_bias = grad_bias if need_bias else None
    elif need_input or need_weight:
        # Compiled: the same as tensor ops, which Inductor fuses with whatever made g.
        scaled = _channels_last_empty(grad_output.shape, input.dtype, grad_output.device)
        scaled = torch.mul(grad_output, scale.unsqueeze(1), out=scaled)
    if need_bias and grad_bias is None:
        grad_bias = grad_output.sum((0, 2, 3), dtype=torch.float32)
    if need_bias:
        grad_bias = grad_bias.to(ctx.bias_dtype)
    if need_input:
        grad_input = torch.ops.pansynth.panoptic_conv2d_triton_input_grad(scaled, mask, scale, weight)
    if need_weight:
        grad_weight = torch.ops.pansynth.panoptic_conv2d_triton_weight_grad(
            scaled, input, mask, scale, weight.shape[-1]
        ).to(weight.dtype)
    return grad_input, None, None, grad_weight, grad_bias


_conv2d_forward.register_autograd(_conv2d_backward, setup_context=_conv2d_setup_context)


def conv2d(input: Tensor, mask: Tensor, scale: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 1-2 on the Triton kernels (checked arguments of one dtype; ``mask``, ``scale`` from
    :func:`pansynth.ops.neighbour_mask` of the map): Tensor[N, O, H, W] channels_last."""
    return torch.ops.pansynth.panoptic_conv2d_triton(input, mask, scale, weight, bias)


# --- upsampling (Algorithm 1) -------------------------------------------------------------------


@torch.library.custom_op(
    "pansynth::panoptic_upsample_triton",
    mutates_args=(),
    schema="(Tensor features, Tensor panoptic_low, Tensor panoptic_high) -> (Tensor, Tensor)",
)
def _upsample_forward(features, panoptic_low, panoptic_high):
    upsampled, choice = _kernels().upsample_forward(features, panoptic_low, panoptic_high)
    return _as_channels_last(upsampled), choice.to(torch.uint8).contiguous()


@_upsample_forward.register_fake
def _(features, panoptic_low, panoptic_high):
    n, channels, low_h, low_w = features.shape
    upsampled = _channels_last_empty((n, channels, 2 * low_h, 2 * low_w), features.dtype, features.device)
    return upsampled, panoptic_high.new_empty(panoptic_high.shape, dtype=torch.uint8)


@torch.library.custom_op(
    "pansynth::panoptic_upsample_triton_backward",
    mutates_args=(),
    schema="(Tensor grad_upsampled, Tensor choice, int low_h, int low_w) -> Tensor",
)
def _upsample_backward(grad_upsampled, choice, low_h, low_w):
    return _as_channels_last(_kernels().upsample_backward(grad_upsampled, choice, (low_h, low_w)))


@_upsample_backward.register_fake
def _(grad_upsampled, choice, low_h, low_w):
    n, channels = grad_upsampled.shape[:2]
    return _channels_last_empty((n, channels, low_h, low_w), grad_upsampled.dtype, grad_upsampled.device)


def _upsample_setup_context(ctx, inputs, output) -> None:
    features = inputs[0]
    ctx.low_size = tuple(features.shape[-2:])
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _upsample_grad(ctx, grad_upsampled, _grad_choice):
    (choice,) = ctx.saved_tensors
    # Read in place by the kernel when its channels are contiguous (an NHWC gradient, or a channel
    # slice of one); the launcher copies anything else once.
    grad = torch.ops.pansynth.panoptic_upsample_triton_backward(grad_upsampled, choice, *ctx.low_size)
    return grad, None, None


_upsample_forward.register_autograd(_upsample_grad, setup_context=_upsample_setup_context)


def upsample(features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1 on the Triton kernel (checked arguments): (upsampled channels_last, choice uint8)."""
    return torch.ops.pansynth.panoptic_upsample_triton(features, panoptic_low, panoptic_high)
