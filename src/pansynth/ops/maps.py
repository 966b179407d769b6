"""Helpers for label maps: validation, one-hot encoding, boundary maps and resizing.

Panoptic maps are integer tensors of shape (N, H, W) holding one id per segment
(every thing instance and every stuff class has its own id; the values are arbitrary
int64 numbers, not necessarily contiguous). Semantic maps are integer tensors of
shape (N, H, W) holding a class index per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "check_map",
    "semantic_to_index",
    "semantic_one_hot",
    "label_channels",
    "boundary_map",
    "downsample_map",
    "map_stride",
]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_map(tensor: Tensor, name: str, ndim: int = 3) -> None:
    """Raise a ValueError unless ``tensor`` is an integer map with ``ndim`` dimensions."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _INTEGER_DTYPES or tensor.dim() != ndim:
        layout = "(N, H, W)" if ndim == 3 else f"{ndim}-d"
        raise ValueError(
            f"{name} must be a {layout} integer tensor (int64 ids), "
            f"got {tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}"
        )


def label_channels(num_classes: int, ignore_index: int | None) -> int:
    """Number of one-hot channels for ``num_classes`` classes (+1 for an ignore label)."""
    return num_classes + (1 if ignore_index is not None else 0)


def semantic_to_index(semantic: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Map class indices to one-hot channel indices, checking their range.

    Pixels equal to ``ignore_index`` go to the extra channel ``num_classes``. Values out of
    range raise a ValueError in eager mode; a compiled graph does not check them.

    Args:
        semantic (Tensor[N, H, W]): integer class indices in ``[0, num_classes)`` or ``ignore_index``.

    Returns:
        Tensor[N, H, W] int64 channel indices in ``[0, label_channels(num_classes, ignore_index))``.
    """
    check_map(semantic, "semantic")
    semantic = semantic.long()
    if ignore_index is not None:
        semantic = torch.where(semantic == ignore_index, torch.full_like(semantic, num_classes), semantic)
        valid_max = num_classes
    else:
        valid_max = num_classes - 1
    # The range check reads the values (a device sync, and a break in a compiled graph): it runs
    # in eager mode and is left out while torch.compile traces.
    if semantic.numel() > 0 and not torch.compiler.is_compiling():
        low, high = int(semantic.min()), int(semantic.max())
        if low < 0 or high > valid_max:
            bad = low if low < 0 else high
            ignore = f" or the ignore index {ignore_index}" if ignore_index is not None else ""
            raise ValueError(f"semantic map holds class index {bad}, expected values in [0, {num_classes - 1}]{ignore}")
    return semantic


def semantic_one_hot(semantic: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """One-hot encode a semantic map.

    Args:
        semantic (Tensor[N, H, W]): integer class indices; pixels equal to ``ignore_index``
            are encoded in an extra last channel.

    Returns:
        Tensor[N, K, H, W] float32 with K = ``num_classes`` (+1 when ``ignore_index`` is set).

    Example:
        >>> semantic_one_hot(torch.tensor([[[0, 2]]]), 3).shape
        torch.Size([1, 3, 1, 2])
    """
    index = semantic_to_index(semantic, num_classes, ignore_index)
    channels = label_channels(num_classes, ignore_index)
    one_hot = torch.zeros(index.shape[0], channels, *index.shape[1:], device=index.device)
    return one_hot.scatter_(1, index.unsqueeze(1), 1.0)


def boundary_map(panoptic: Tensor) -> Tensor:
    """Instance boundary map used by SPADE-style baselines.

    A pixel is 1 when any of its 4 neighbours (inside the image) has another id.

    Args:
        panoptic (Tensor[N, H, W]): integer ids.

    Returns:
        Tensor[N, 1, H, W] float32 in {0, 1}.
    """
    check_map(panoptic, "panoptic")
    # Padded differences instead of in-place writes into slices: the same map, and it exports to ONNX.
    vertical = (panoptic[:, 1:, :] != panoptic[:, :-1, :]).float()
    horizontal = (panoptic[:, :, 1:] != panoptic[:, :, :-1]).float()
    edge = F.pad(vertical, (0, 0, 1, 0)) + F.pad(vertical, (0, 0, 0, 1))
    edge = edge + F.pad(horizontal, (1, 0, 0, 0)) + F.pad(horizontal, (0, 1, 0, 0))
    return (edge > 0).unsqueeze(1).float()


def map_stride(source_size: tuple[int, int], target_size: tuple[int, int], name: str = "map") -> tuple[int, int]:
    """Integer strides (sy, sx) that take a map of ``source_size`` to ``target_size``."""
    (height, width), (target_height, target_width) = tuple(source_size), tuple(target_size)
    if target_height <= 0 or target_width <= 0 or height % target_height or width % target_width:
        raise ValueError(
            f"{name} of size {height}x{width} cannot be reduced to {target_height}x{target_width} "
            "by an integer stride: its height and width must be multiples of the target size"
        )
    return height // target_height, width // target_width


def downsample_map(label_map: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour downsampling of a label map by an integer stride: ``P[..., ::s, ::s]``.

    Args:
        label_map (Tensor[..., H, W]): integer (or float) map.
        size: target (h, w); H and W must be multiples of h and w.

    Returns:
        Tensor[..., h, w], a view of the input (no copy).
    """
    stride_y, stride_x = map_stride(label_map.shape[-2:], size)
    if stride_y == 1 and stride_x == 1:
        return label_map
    return label_map[..., ::stride_y, ::stride_x]


def pad_map(label_map: Tensor, radius: int) -> Tensor:
    """Pad the last two dims of a map by ``radius`` (values are irrelevant: callers mask them)."""
    if radius == 0:
        return label_map
    return F.pad(label_map, (radius, radius, radius, radius))
