"""The graph engine of the panoptic-aware layers: plain tensor operations with static shapes.

The PyTorch engine finds the irregular windows with ``nonzero`` and loops over images, and the
Triton engine launches kernels: neither can be written into a standard graph. This engine
computes eq. 1-2 and Algorithm 1 from shifted id comparisons, masks and ``where`` selections
only, so every intermediate shape follows from the input shapes, never from the map's values.
``torch.export`` traces it without custom ops, and the ONNX exporter writes it with standard
operators (Pad, Gather, Equal, And, Where, Conv, ReduceSum). The window positions and the
candidates of Algorithm 1 are read with one gather each, at flat indices that depend on the map's
size only (numpy-built constants, so a traced graph stays small).

It computes every window from its mask (k*k shifted copies of the input), so it costs k*k
times the input's memory for the convolution: meant for exported inference, not training.
The results equal the other engines' to the dtype's rounding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.ops._torch_engine import CANDIDATES, HOLE

__all__ = ["conv2d", "upsample", "window_masks"]


def _window_index(height: int, width: int, kernel_size: int) -> tuple[Tensor, Tensor]:
    """Flat indices into the map padded by k // 2 of every window position (Tensor[k*k*H*W] int32,
    tap-major), and whether each lies inside the image (Tensor[1, k*k, H, W] bool)."""
    # The TorchScript tracer hands sizes over as tensors: they are fixed here.
    height, width, kernel_size = int(height), int(width), int(kernel_size)
    radius = kernel_size // 2
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    index, inside = [], []
    for dy in range(kernel_size):
        for dx in range(kernel_size):
            index.append(((rows + dy) * (width + 2 * radius) + cols + dx).reshape(-1))
            row_in = (rows + dy - radius >= 0) & (rows + dy - radius < height)
            col_in = (cols + dx - radius >= 0) & (cols + dx - radius < width)
            inside.append(row_in & col_in)
    index_t = torch.from_numpy(np.concatenate(index).astype(np.int32))  # int32: half the bytes in a file
    inside_t = torch.from_numpy(np.stack(inside)[None].copy())
    return index_t, inside_t


def _windows(values: Tensor, index: Tensor, kernel_size: int) -> Tensor:
    """The k*k window positions of every pixel of values (Tensor[N, ..., H, W], zero-padded):
    Tensor[N, ..., k*k, H, W]."""
    kernel_size = int(kernel_size)
    radius = kernel_size // 2
    height, width = (int(size) for size in values.shape[-2:])
    padded = F.pad(values, (radius, radius, radius, radius)).flatten(-2)
    gathered = padded.index_select(-1, index.to(values.device))
    return gathered.unflatten(-1, (kernel_size * kernel_size, height, width))


def window_masks(panoptic: Tensor, kernel_size: int) -> Tensor:
    """The masks M of eq. 1: Tensor[N, k*k, H, W] bool, window offsets in kernel row-major order.

    M is 1 where the window position lies inside the image and holds the centre's id.
    """
    kernel_size = int(kernel_size)
    height, width = panoptic.shape[-2:]
    index, inside = _window_index(height, width, kernel_size)
    same = _windows(panoptic, index, kernel_size) == panoptic.unsqueeze(1)
    return same & inside.to(panoptic.device)


def conv2d(input: Tensor, panoptic: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Eq. 1-2 (checked arguments of one dtype, odd kernel size > 1): Tensor[N, O, H, W].

    The k*k masked window positions of the input are stacked as channels and multiplied by the
    weight in one 1x1 convolution: W^T (X ⊙ M), then rescaled by k²/sum(M) and biased.
    """
    out_channels, in_channels, kernel_size, _ = (int(size) for size in weight.shape)
    height, width = input.shape[-2:]
    index, inside = _window_index(height, width, kernel_size)
    same = (_windows(panoptic, index, kernel_size) == panoptic.unsqueeze(1)) & inside.to(panoptic.device)
    same = same.to(input.dtype)  # (N, k*k, H, W)
    count = same.sum(1, keepdim=True)
    # (N, C, k*k, H, W) -> (N, C*k*k, H, W): channel c, tap t at c*k*k + t, as in weight.reshape(O, C*k*k)
    columns = (_windows(input, index, kernel_size) * same.unsqueeze(1)).flatten(1, 2)
    output = F.conv2d(columns, weight.reshape(out_channels, in_channels * kernel_size * kernel_size, 1, 1))
    output = output * (kernel_size * kernel_size / count)
    if bias is not None:
        output = output + bias.view(1, -1, 1, 1)
    return output


def _candidate_index(height: int, width: int) -> tuple[Tensor, Tensor]:
    """For every high-resolution pixel of a (2h, 2w) map, the flat index into the low-resolution map
    padded by one row and column (bottom, right) of each of Algorithm 1's candidates
    (Tensor[4 * 2h * 2w] int32, candidate-major), and whether it lies inside (Tensor[1, 4, 2h, 2w] bool)."""
    height, width = int(height), int(width)
    rows, cols = np.arange(2 * height)[:, None] // 2, np.arange(2 * width)[None, :] // 2
    index, inside = [], []
    for d_row, d_col in CANDIDATES:
        index.append(((rows + d_row) * (width + 1) + cols + d_col).reshape(-1))
        inside.append((rows + d_row < height) & (cols + d_col < width))
    index_t = torch.from_numpy(np.concatenate(index).astype(np.int32))  # int32: half the bytes in a file
    inside_t = torch.from_numpy(np.stack(inside)[None].copy())
    return index_t, inside_t


def _candidates(values: Tensor, index: Tensor) -> Tensor:
    """The candidates of every high-resolution pixel: values (Tensor[N, ..., h, w]) -> Tensor[N, ..., 4, 2h, 2w]."""
    height, width = (int(size) for size in values.shape[-2:])
    padded = F.pad(values, (0, 1, 0, 1)).flatten(-2)
    gathered = padded.index_select(-1, index.to(values.device))
    return gathered.unflatten(-1, (len(CANDIDATES), 2 * height, 2 * width))


def upsample(features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1 (checked arguments): (upsampled (Tensor[N, C, 2h, 2w], 0 at holes), choice (Tensor[N, 2h, 2w])).

    The four candidates of every pixel are gathered at once; the first whose id equals the
    pixel's is selected with ``where``, later candidates first so that earlier ones take precedence.
    """
    height, width = panoptic_low.shape[-2:]
    index, inside = _candidate_index(height, width)
    match = (_candidates(panoptic_low, index) == panoptic_high.unsqueeze(1)) & inside.to(panoptic_low.device)
    values = _candidates(features, index)  # (N, C, 4, 2h, 2w)
    # Scalars, not zeros_like/full_like: a traced *_like of a batch-sized tensor can be folded into a
    # constant of the traced batch size.
    upsampled = torch.where(match[:, HOLE - 1 : HOLE], values[:, :, HOLE - 1], 0.0)
    choice = torch.where(match[:, HOLE - 1], HOLE - 1, HOLE)
    for k in reversed(range(len(CANDIDATES) - 1)):
        upsampled = torch.where(match[:, k : k + 1], values[:, :, k], upsampled)
        choice = torch.where(match[:, k], k, choice)
    return upsampled, choice.to(torch.uint8)
