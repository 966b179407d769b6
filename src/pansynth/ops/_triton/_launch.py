"""Launchers: check the arguments, lay the tensors out for the kernels, pick the grid.

Imports only torch at module level; the kernels module (and with it the choice between
compiled and interpreted kernels) is imported on the first launch.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import nullcontext
from types import ModuleType

import torch
from torch import Tensor

KERNEL_SIZES = (1, 3, 5)
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Number of upsampling candidates (Algorithm 1); the choice of a hole.
NUM_CANDIDATES = 4

_KERNELS_MODULE = "pansynth.ops._triton._kernels"


# --- availability ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401  (imported on first use: TRITON_INTERPRET must be set before)
    except Exception:  # a missing or broken install: the kernels are unavailable, not the library
        return False
    return True


def _interpreting() -> bool:
    """Whether the kernels run (or will run, once built) in the Triton interpreter."""
    kernels = sys.modules.get(_KERNELS_MODULE)
    if kernels is not None:
        return kernels.INTERPRET
    return os.environ.get("TRITON_INTERPRET") == "1"


def is_available(device: torch.device) -> bool:
    """Whether the kernels can run on ``device``: Triton is importable and the device is CUDA,
    or CPU with ``TRITON_INTERPRET=1`` set before the first launch (the interpreter, for tests)."""
    device = torch.device(device)
    if not _triton_importable():
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and _interpreting()


def _neighbour_mask(panoptic: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    from pansynth.ops.masks import neighbour_mask

    return neighbour_mask(panoptic, kernel_size)


def _check_mask(mask, shape: tuple[int, ...], against: str) -> Tensor:
    if not isinstance(mask, Tensor) or mask.dtype != torch.int32 or tuple(mask.shape) != shape:
        raise ValueError(f"mask must be {shape} int32 (from neighbour_mask) to match {against}, got {_describe(mask)}")
    return mask.contiguous()


def _mask_and_scale(
    panoptic, neighbours, kernel_size: int, shape: tuple[int, ...], against: str
) -> tuple[Tensor, Tensor]:
    """The neighbour mask and scale: given (``neighbours``, a plan's), or computed from the ids."""
    if neighbours is None:
        _check_ids(panoptic, "panoptic", shape, against)
        return _neighbour_mask(panoptic, kernel_size)
    mask, scale = neighbours
    _check_scale(scale, shape)
    return _check_mask(mask, shape, against), scale.to(torch.float32).contiguous()


def _kernels() -> ModuleType:
    # The jit kernels are defined on first launch, when the interpreter setting is known.
    from pansynth.ops._triton import _kernels as kernels

    return kernels


# --- argument checks -------------------------------------------------------------------------


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


def _check_features(tensor, name: str, layout: str) -> None:
    if not isinstance(tensor, Tensor) or tensor.dim() != 4 or tensor.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be a {layout} float32, bfloat16 or float16 tensor, got {_describe(tensor)}")
    if tensor.shape[1] == 0:
        raise ValueError(f"{name} must have at least one channel, got {_describe(tensor)}")


def _check_ids(tensor, name: str, shape: tuple[int, ...], against: str) -> None:
    integer = isinstance(tensor, Tensor) and not tensor.is_floating_point() and not tensor.is_complex()
    if not integer or tensor.dtype == torch.bool or tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must be {shape} integer ids to match {against}, got {_describe(tensor)}")


def _check_kernel_size(kernel_size: int) -> None:
    if kernel_size not in KERNEL_SIZES:
        raise ValueError(f"kernel_size must be 1, 3 or 5 (odd, square), got {kernel_size}")


def _check_weight(weight, in_channels: int, out_channels: int | None = None) -> int:
    if not isinstance(weight, Tensor) or weight.dim() != 4 or not weight.is_floating_point():
        raise ValueError(f"weight must be a (O, C, k, k) floating-point tensor, got {_describe(weight)}")
    out, inp, kernel_h, kernel_w = weight.shape
    if kernel_h != kernel_w or kernel_h not in KERNEL_SIZES:
        raise ValueError(f"weight must have a square kernel of size 1, 3 or 5, got {kernel_h}x{kernel_w}")
    if inp != in_channels:
        raise ValueError(f"weight expects {inp} input channels, got {in_channels}")
    if out_channels is not None and out != out_channels:
        raise ValueError(f"weight has {out} output channels but grad_output has {out_channels}")
    if out == 0:
        raise ValueError(f"weight must have at least one output channel, got {_describe(weight)}")
    return kernel_h


def _check_scale(scale, shape: tuple[int, ...]) -> None:
    if not isinstance(scale, Tensor) or tuple(scale.shape) != shape or not scale.is_floating_point():
        raise ValueError(f"scale must be {shape} floating-point (from conv2d_forward), got {_describe(scale)}")


def _check_devices(reference: Tensor, reference_name: str, **others: Tensor | None) -> None:
    for name, tensor in others.items():
        if tensor is not None and tensor.device != reference.device:
            raise ValueError(f"{name} is on {tensor.device} but {reference_name} is on {reference.device}")
    if not is_available(reference.device):
        raise ValueError(
            "the Triton kernels run on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1 set before "
            f"the first launch), got {reference_name} on {reference.device}"
        )


# --- layout helpers ---------------------------------------------------------------------------


def _channels_inner(tensor: Tensor) -> Tensor:
    """(N, C, H, W) with the channels contiguous (NHWC in memory): a channels_last tensor or a
    view of one as is, any other layout copied once."""
    if tensor.stride(1) == 1 or tensor.shape[1] == 1:
        return tensor
    return tensor.contiguous(memory_format=torch.channels_last)


def _nhwc_empty(n: int, height: int, width: int, channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An (N, C, H, W) channels_last tensor that owns its storage: not a permuted view, so that a
    caller may write into an op's output in place (autograd forbids that on a custom op's views)."""
    return torch.empty((n, channels, height, width), dtype=dtype, device=device, memory_format=torch.channels_last)


def _nhwc_contiguous(tensor: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The values as a dense NHWC tensor of ``dtype`` (what the convolution kernels' flat offsets read):
    a channels_last contiguous tensor as is, anything else copied once."""
    n, c, h, w = tensor.shape
    dtype = dtype or tensor.dtype
    strides = (h * w * c, 1, w * c, c)
    if tensor.dtype == dtype and tensor.stride() == strides:
        return tensor
    if tensor.dtype == dtype and tensor.is_contiguous(memory_format=torch.channels_last):
        # Dense NHWC memory whose size-1 dims carry other strides (one channel, one row...): a view.
        return tensor.as_strided(tensor.shape, strides)
    return _nhwc_empty(n, h, w, c, dtype, tensor.device).copy_(tensor)


def _forward_rows(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """(O, k*k*C), K-major: column t*C + c holds W[:, c, t] -- the forward's B operand. A view of a
    channels_last weight of ``dtype`` (memory O, kh, kw, C), a copy of any other."""
    out_channels = weight.shape[0]
    return weight.to(dtype).permute(0, 2, 3, 1).reshape(out_channels, -1).contiguous()


def _input_grad_rows(weight: Tensor) -> Tensor:
    """(C, k*k*O), K-major: column t*O + o holds W[o, :, k*k-1-t], the flipped kernel transposed."""
    return weight.flip(2, 3).permute(1, 2, 3, 0).reshape(weight.shape[1], -1).contiguous()


def _prescaled(grad_output: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """g~ = grad_output * k²/sum(M), computed once (in fp32, rounded to ``dtype``) into a dense NHWC tensor."""
    n, c, h, w = grad_output.shape
    out = _nhwc_empty(n, h, w, c, dtype, grad_output.device)
    return torch.mul(grad_output, scale.to(torch.float32).unsqueeze(1), out=out)


def _fits_int32(*sizes: int) -> bool:
    # Flat offsets (plus a window's reach, which is masked) stay below 2^31.
    return max(sizes) < 2**31 - 2**24


def _nhwc_strides(tensor: Tensor) -> tuple[int, int, int, int]:
    return tensor.stride(0), tensor.stride(2), tensor.stride(3), tensor.stride(1)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    # TF32 exactly when cuDNN would use it for an fp32 convolution.
    if dtype == torch.float32 and device.type == "cuda" and torch.backends.cudnn.allow_tf32 and not _interpreting():
        return "tf32"
    return "ieee"


def _upcast(dtype: torch.dtype) -> bool:
    # The interpreter computes tl.dot of two bf16 tiles wrongly; fp32 operands give the exact result.
    return dtype == torch.bfloat16 and _interpreting()


def _launch(kernel_name: str, config_name: str, device: torch.device, grid, *args, **meta) -> None:
    kernels = _kernels()
    if kernels.INTERPRET:
        # One fixed configuration: autotuning would time every configuration in Python.
        meta.update(kernels.INTERPRETER_CONFIGS[config_name])
    with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
        getattr(kernels, kernel_name)[grid](*args, **meta)


@functools.lru_cache(maxsize=8)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


# --- partial convolution ------------------------------------------------------------------------


def conv2d_forward(
    input: Tensor,
    panoptic: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    *,
    neighbours: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Panoptic-aware partial convolution (eq. 1-2), stride 1, same padding, one fused kernel.

    Args:
        input (Tensor[N, C, H, W]): float32, bfloat16 or float16, any strides (channels_last is read in place).
        panoptic (Tensor[N, H, W]): integer ids (compared as int64); None with ``neighbours``.
        weight (Tensor[O, C, k, k]): k in 1, 3, 5; cast to the input dtype. A channels_last
            weight of the input's dtype is read in place (no per-call re-layout).
        bias (Tensor[O], optional): added after the rescaling, in fp32.
        neighbours: ``(mask, scale)`` of :func:`pansynth.ops.neighbour_mask` for this map and
            kernel size (a plan shared by the layers of a scale), instead of computing them here.

    Returns:
        ``(output, scale)``: output (Tensor[N, O, H, W], channels_last, input dtype) is
        ``(sum_t M_t W_t x[p + d_t]) * k²/sum(M) + b``; scale (Tensor[N, H, W] float32) is k²/sum(M),
        which the backward launchers take.
    """
    _check_features(input, "input", "(N, C, H, W)")
    n, channels, height, width = input.shape
    kernel_size = _check_weight(weight, channels)
    out_channels = weight.shape[0]
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (out_channels,)):
        raise ValueError(f"bias must be ({out_channels},) to match the weight, got {_describe(bias)}")
    mask, scale = _mask_and_scale(panoptic, neighbours, kernel_size, (n, height, width), "the input")
    _check_devices(input, "the input", mask=mask, weight=weight, bias=bias)
    device, dtype = input.device, input.dtype
    output = _nhwc_empty(n, height, width, out_channels, dtype, device)
    pixels = n * height * width
    if pixels == 0:
        return output, scale
    x = _nhwc_contiguous(input)
    # (O, k*k*C), K-major: column t*C + c holds W[:, c, t] -- the B operand of the implicit GEMM.
    weight_rows = _forward_rows(weight, dtype)
    bias_values = bias.to(torch.float32).contiguous() if bias is not None else scale

    def grid(meta):
        return (_cdiv(pixels, meta["BLOCK_M"]) * _cdiv(out_channels, meta["BLOCK_N"]),)

    _launch(
        "conv", "conv", device, grid,
        x, mask, weight_rows, bias_values, scale, output,
        height, width, channels, out_channels, pixels,
        KSIZE=kernel_size, FORWARD=True, HAS_BIAS=bias is not None, W_FORWARD_LAYOUT=False,
        INT32_OFFSETS=_fits_int32(pixels * channels, pixels * out_channels, weight_rows.numel()),
        UPCAST=_upcast(dtype), DOT_PRECISION=_dot_precision(dtype, device),
    )  # fmt: skip
    return output, scale


def conv2d_input_grad(
    grad_output: Tensor,
    scale: Tensor,
    panoptic: Tensor | None,
    weight: Tensor,
    prescaled: bool = False,
    *,
    mask: Tensor | None = None,
) -> Tensor:
    """Gradient of eq. 2 with respect to its input, one fused kernel.

    ``grad_input[q] = sum_t M_t(q - d_t) W_t^T g~[q - d_t]`` with ``g~ = grad_output * scale``
    (the scale is applied on load); as M is symmetric this is the masked convolution of g~ with
    the flipped, transposed kernel.

    Args:
        grad_output (Tensor[N, O, H, W]): float32, bfloat16 or float16, any strides.
        scale (Tensor[N, H, W]): k²/sum(M) from :func:`conv2d_forward`.
        panoptic (Tensor[N, H, W]): integer ids; None with ``mask``.
        weight (Tensor[O, C, k, k]): cast to grad_output's dtype.
        prescaled: grad_output is g~ already (the caller multiplied it by the scale once for both gradients).
        mask (Tensor[N, H, W] int32, optional): :func:`pansynth.ops.neighbour_mask` of the map (a plan's).

    Returns:
        Tensor[N, C, H, W] in grad_output's dtype, channels_last.
    """
    _check_features(grad_output, "grad_output", "(N, O, H, W)")
    n, out_channels, height, width = grad_output.shape
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be a (O, C, k, k) floating-point tensor, got {_describe(weight)}")
    in_channels = weight.shape[1]
    if in_channels == 0:
        raise ValueError(f"weight must have at least one input channel, got {_describe(weight)}")
    kernel_size = _check_weight(weight, in_channels, out_channels)
    _check_scale(scale, (n, height, width))
    neighbours = None if mask is None else (mask, scale)
    mask, _ = _mask_and_scale(panoptic, neighbours, kernel_size, (n, height, width), "grad_output")
    _check_devices(grad_output, "grad_output", mask=mask, weight=weight, scale=scale)
    device, dtype = grad_output.device, grad_output.dtype
    grad_input = _nhwc_empty(n, height, width, in_channels, dtype, device)
    pixels = n * height * width
    if pixels == 0:
        return grad_input
    g = _nhwc_contiguous(grad_output) if prescaled else _prescaled(grad_output, scale, dtype)
    # (C, k*k*O), K-major: column t*O + o holds W[o, :, k*k-1-t], the flipped kernel transposed.
    if dtype == torch.float32:
        # (C, k*k*O), K-major: column t*O + o holds W[o, :, k*k-1-t], the flipped kernel transposed
        # (TF32 wgmma takes K-major tiles only): one conversion per backward.
        weight_rows, forward_layout = _input_grad_rows(weight.to(dtype)), False
    else:
        # 16-bit: the forward's (O, k*k*C) rows read in place (no conversion with NHWC weights).
        weight_rows, forward_layout = _forward_rows(weight, dtype), True

    def grid(meta):
        return (_cdiv(pixels, meta["BLOCK_M"]) * _cdiv(in_channels, meta["BLOCK_N"]),)

    _launch(
        "conv", "conv", device, grid,
        g, mask, weight_rows, g, g, grad_input,
        height, width, out_channels, in_channels, pixels,
        KSIZE=kernel_size, FORWARD=False, HAS_BIAS=False, W_FORWARD_LAYOUT=forward_layout,
        INT32_OFFSETS=_fits_int32(pixels * out_channels, pixels * in_channels, weight_rows.numel()),
        UPCAST=_upcast(dtype), DOT_PRECISION=_dot_precision(dtype, device),
    )  # fmt: skip
    return grad_input


def conv2d_grad_prescale(
    grad_output: Tensor, scale: Tensor, dtype: torch.dtype, with_bias: bool
) -> tuple[Tensor, Tensor | None]:
    """The backward's one pass over the gradient: ``(g~, grad_bias)``.

    g~ = grad_output * k²/sum(M) (computed in fp32, rounded to ``dtype``) as a dense channels_last
    tensor, which both gradient kernels read, and, with ``with_bias``, the bias gradient
    ``grad_output.sum((0, 2, 3))`` in fp32 (per-block column sums added afterwards).

    Args:
        grad_output (Tensor[N, O, H, W]): float32, bfloat16 or float16, any strides.
        scale (Tensor[N, H, W]): float32 k²/sum(M).
    """
    _check_features(grad_output, "grad_output", "(N, O, H, W)")
    n, out_channels, height, width = grad_output.shape
    _check_scale(scale, (n, height, width))
    _check_devices(grad_output, "grad_output", scale=scale)
    device = grad_output.device
    scaled = _nhwc_empty(n, height, width, out_channels, dtype, device)
    pixels = n * height * width
    if pixels == 0:
        zeros = torch.zeros(out_channels, dtype=torch.float32, device=device)
        return scaled, zeros if with_bias else None
    kernels = _kernels()
    if kernels.INTERPRET:
        meta = dict(kernels.INTERPRETER_CONFIGS["prescale"])
    else:
        config = kernels.PRESCALE_CONFIGS[0]
        meta = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
    meta["BLOCK_O"] = min(meta["BLOCK_O"], max(16, 1 << (out_channels - 1).bit_length()))
    blocks = _cdiv(pixels, meta["BLOCK_P"])
    partial = torch.empty((blocks, out_channels) if with_bias else (1,), dtype=torch.float32, device=device)
    scale = scale.to(torch.float32).contiguous()
    with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
        kernels.conv_grad_prescale[(blocks, _cdiv(out_channels, meta["BLOCK_O"]))](
            grad_output, scale, scaled, partial,
            height, width, out_channels, pixels,
            *_nhwc_strides(grad_output),
            HAS_BIAS=with_bias, **meta,
        )  # fmt: skip
    return scaled, partial.sum(0) if with_bias else None


def _weight_grad_splits(pixels: int, tiles: int, device: torch.device) -> tuple[int, int]:
    """(splits, pixels per split) of the pixel reduction: enough programs to fill the GPU
    (about 4 per multiprocessor) when taps x O-blocks x C-blocks alone do not."""
    if _interpreting():
        splits, align = max(1, min(3, pixels // 32)), 16  # several splits, to be tested
    else:
        target = 4 * _multiprocessors(device)
        splits, align = max(1, min(_cdiv(target, tiles), pixels // 512)), 128  # 128: the largest BLOCK_P
    per_split = _cdiv(_cdiv(pixels, splits), align) * align
    return _cdiv(pixels, per_split), per_split


def conv2d_weight_grad(
    grad_output: Tensor,
    scale: Tensor,
    input: Tensor,
    panoptic: Tensor | None,
    kernel_size: int,
    prescaled: bool = False,
    *,
    mask: Tensor | None = None,
) -> Tensor:
    """Gradient of eq. 2 with respect to the weight: ``grad_W_t = sum_p M_t(p) g~[p] x[p + d_t]^T``.

    A masked implicit GEMM reducing over pixels, split over pixel ranges whose fp32 partial
    sums are added afterwards (deterministic, no atomics). Mixed dtypes are promoted.

    Args:
        grad_output (Tensor[N, O, H, W]), input (Tensor[N, C, H, W]): float32, bfloat16 or float16.
        scale (Tensor[N, H, W]): k²/sum(M) from :func:`conv2d_forward`.
        panoptic (Tensor[N, H, W]): integer ids; None with ``mask``.
        kernel_size: 1, 3 or 5.
        prescaled: grad_output is g~ already.
        mask (Tensor[N, H, W] int32, optional): :func:`pansynth.ops.neighbour_mask` of the map (a plan's).

    Returns:
        Tensor[O, C, k, k] float32, channels_last (the layout of NHWC weights: no copy where it accumulates).
    """
    _check_features(grad_output, "grad_output", "(N, O, H, W)")
    _check_features(input, "input", "(N, C, H, W)")
    n, out_channels, height, width = grad_output.shape
    in_channels = input.shape[1]
    if (input.shape[0], *input.shape[2:]) != (n, height, width):
        raise ValueError(
            f"input must be (N, C, H, W) with (N, H, W) = {(n, height, width)} to match grad_output, "
            f"got {_describe(input)}"
        )
    _check_kernel_size(kernel_size)
    _check_scale(scale, (n, height, width))
    neighbours = None if mask is None else (mask, scale)
    mask, _ = _mask_and_scale(panoptic, neighbours, kernel_size, (n, height, width), "grad_output")
    _check_devices(grad_output, "grad_output", input=input, mask=mask, scale=scale)
    device = grad_output.device
    taps = kernel_size * kernel_size
    pixels = n * height * width
    if pixels == 0:
        return torch.zeros((out_channels, in_channels, kernel_size, kernel_size), dtype=torch.float32, device=device)
    dtype = torch.promote_types(grad_output.dtype, input.dtype)
    g = _nhwc_contiguous(grad_output, dtype) if prescaled else _prescaled(grad_output, scale, dtype)
    x = _nhwc_contiguous(input, dtype)
    splits, per_split = _weight_grad_splits(pixels, taps * _cdiv(out_channels, 64) * _cdiv(in_channels, 64), device)
    partial = torch.empty((splits, out_channels, taps, in_channels), dtype=torch.float32, device=device)

    def grid(meta):
        return (taps, _cdiv(out_channels, meta["BLOCK_O"]) * _cdiv(in_channels, meta["BLOCK_C"]), splits)

    _launch(
        "conv_weight_grad", "weight_grad", device, grid,
        g, x, mask, partial,
        width, in_channels, out_channels, pixels, per_split,
        KSIZE=kernel_size, INT32_OFFSETS=_fits_int32(pixels * out_channels, pixels * in_channels, partial.numel()),
        UPCAST=_upcast(dtype), DOT_PRECISION=_dot_precision(dtype, device),
    )  # fmt: skip
    total = partial.sum(0) if splits > 1 else partial[0]  # (O, k*k, C)
    # (O, C, k, k) with channels_last strides: the layout of the NHWC weights it is the gradient of.
    return total.view(out_channels, kernel_size, kernel_size, in_channels).permute(0, 3, 1, 2)


# --- upsampling ---------------------------------------------------------------------------------


def upsample_forward(features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> tuple[Tensor, Tensor]:
    """Panoptic-aware 2x upsampling (Algorithm 1) in one kernel: choice, gather, zeros at holes.

    Args:
        features (Tensor[N, C, h, w]): float32, bfloat16 or float16, any strides.
        panoptic_low (Tensor[N, h, w]), panoptic_high (Tensor[N, 2h, 2w]): integer ids.

    Returns:
        ``(upsampled, choice)``: upsampled (Tensor[N, C, 2h, 2w], channels_last, features' dtype)
        holds the features of the first candidate among (r, c), (r, c+1), (r+1, c), (r+1, c+1)
        whose id equals the pixel's, 0 where none does; choice (Tensor[N, 2h, 2w] uint8) is the
        candidate's index, 4 at holes.
    """
    _check_features(features, "features", "(N, C, h, w)")
    n, channels, low_h, low_w = features.shape
    _check_ids(panoptic_low, "panoptic_low", (n, low_h, low_w), "the features")
    _check_ids(panoptic_high, "panoptic_high", (n, 2 * low_h, 2 * low_w), "the features (2h, 2w)")
    _check_devices(features, "the features", panoptic_low=panoptic_low, panoptic_high=panoptic_high)
    device = features.device
    upsampled = _nhwc_empty(n, 2 * low_h, 2 * low_w, channels, features.dtype, device)
    choice = torch.empty((n, 2 * low_h, 2 * low_w), dtype=torch.uint8, device=device)
    pixels = choice.numel()
    if pixels == 0:
        return upsampled, choice
    f = _channels_inner(features)
    low = panoptic_low.to(torch.int64)
    high = panoptic_high.to(torch.int64)

    def grid(meta):
        return (_cdiv(pixels, meta["BLOCK_P"]), _cdiv(channels, meta["BLOCK_C"]))

    _launch(
        "upsample", "upsample", device, grid,
        f, low, high, upsampled, choice,
        low_h, low_w, channels, pixels,
        *_nhwc_strides(f), *low.stride(), *high.stride(),
    )  # fmt: skip
    return upsampled, choice


def upsample_backward(grad_upsampled: Tensor, choice: Tensor, low_size: tuple[int, int]) -> Tensor:
    """Gradient of Algorithm 1: each low pixel sums the gradients of the high pixels that chose it.

    Args:
        grad_upsampled (Tensor[N, C, 2h, 2w]): float32, bfloat16 or float16, any strides.
        choice (Tensor[N, 2h, 2w]): from :func:`upsample_forward` (0..3, or 4 at holes).
        low_size: (h, w).

    Returns:
        Tensor[N, C, h, w] in grad_upsampled's dtype, channels_last (fp32 accumulation).
    """
    _check_features(grad_upsampled, "grad_upsampled", "(N, C, 2h, 2w)")
    low_h, low_w = (int(size) for size in low_size)
    n, channels = grad_upsampled.shape[:2]
    if tuple(grad_upsampled.shape[2:]) != (2 * low_h, 2 * low_w):
        raise ValueError(
            f"grad_upsampled must be (N, C, 2h, 2w) with (2h, 2w) = {(2 * low_h, 2 * low_w)} for "
            f"low_size {(low_h, low_w)}, got {_describe(grad_upsampled)}"
        )
    _check_ids(choice, "choice", (n, 2 * low_h, 2 * low_w), "grad_upsampled")
    _check_devices(grad_upsampled, "grad_upsampled", choice=choice)
    device = grad_upsampled.device
    grad_features = _nhwc_empty(n, low_h, low_w, channels, grad_upsampled.dtype, device)
    pixels = n * low_h * low_w
    if pixels == 0:
        return grad_features
    g = _channels_inner(grad_upsampled)
    choice = choice.to(torch.uint8).contiguous()

    def grid(meta):
        return (_cdiv(pixels, meta["BLOCK_P"]), _cdiv(channels, meta["BLOCK_C"]))

    _launch(
        "upsample_backward", "upsample", device, grid,
        g, choice, grad_features,
        low_h, low_w, channels, pixels,
        *_nhwc_strides(g),
    )  # fmt: skip
    return grad_features
