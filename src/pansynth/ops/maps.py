"""Helpers for label maps: validation, one-hot encoding, boundary maps and resizing.

Panoptic maps are integer tensors of shape (N, H, W) holding one id per segment
(every thing instance and every stuff class has its own id; the values are arbitrary
int64 numbers, not necessarily contiguous). Semantic maps are integer tensors of
shape (N, H, W) holding a class index per pixel.

Unknown pixels (unlabeled by the annotators, erased in the painter, dropped by a corruption) hold
:data:`UNKNOWN` (-1) in both maps: one segment of their own that has no class. The one-hot
encoding of an unknown pixel is all zeros, or SPADE's don't-care channel for a model built with an
``ignore_index`` (which also accepts that value as unknown). See docs/data.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "UNKNOWN",
    "check_map",
    "mark_unknown",
    "unknown_value",
    "semantic_to_index",
    "check_semantic_values",
    "semantic_one_hot",
    "label_channels",
    "boundary_map",
    "downsample_map",
    "map_stride",
]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# The semantic class and the panoptic id of an unknown pixel in every in-library map.
UNKNOWN = -1


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


def unknown_value(num_classes: int, ignore_index: int | None) -> int:
    """The value that marks unknown pixels in a class-index PNG written for a model.

    The model's ``ignore_index`` when it has one, else 255 when the classes fit in 0..254
    (8-bit maps), else 65535 (16-bit maps). Readers of PNG maps turn it into :data:`UNKNOWN`.
    """
    if ignore_index is not None:
        return int(ignore_index)
    return 255 if num_classes < 255 else 65535


def mark_unknown(semantic: Tensor, panoptic: Tensor, ignore_index: int | None = None) -> tuple[Tensor, Tensor]:
    """Give every unknown pixel the class and the id :data:`UNKNOWN` (-1).

    A pixel is unknown when its class is -1 or ``ignore_index``. Whatever panoptic id it came
    with (the painter sends 0), it joins the one unknown segment, so panoptic-aware layers never
    mix it into a known neighbour that happens to share that id.

    Args:
        semantic (Tensor[N, H, W]): class indices, -1 or ``ignore_index`` where unknown.
        panoptic (Tensor[N, H, W]): segment ids.

    Returns:
        (semantic, panoptic) int64, new tensors; the inputs are not modified.
    """
    semantic, panoptic = semantic.long(), panoptic.long()
    unknown = _unknown_mask(semantic, ignore_index)
    return semantic.masked_fill(unknown, UNKNOWN), panoptic.masked_fill(unknown, UNKNOWN)


def _unknown_mask(semantic: Tensor, ignore_index: int | None) -> Tensor:
    unknown = semantic == UNKNOWN
    if ignore_index is not None:
        unknown = unknown | (semantic == ignore_index)
    return unknown


def semantic_to_index(
    semantic: Tensor, num_classes: int, ignore_index: int | None = None, *, check: bool = True
) -> Tensor:
    """Map class indices to one-hot channel indices, checking their range.

    Unknown pixels (-1, or ``ignore_index``) go to the extra channel ``num_classes`` when
    ``ignore_index`` is set (SPADE's don't-care channel), else to -1: no channel at all (a zero
    one-hot vector). Values out of range raise a ValueError in eager mode
    (:func:`check_semantic_values`); a compiled graph does not check them, nor does ``check=False``
    (for callers that checked the map once already: reading the values is a host synchronisation
    on an accelerator).

    Args:
        semantic (Tensor[N, H, W]): integer class indices in ``[0, num_classes)``, -1 or ``ignore_index``.

    Returns:
        Tensor[N, H, W] int64 channel indices in ``[0, label_channels(num_classes, ignore_index))``,
        or -1 (unknown, no channel) when ``ignore_index`` is None.
    """
    check_map(semantic, "semantic")
    if check:
        check_semantic_values(semantic, num_classes, ignore_index)
    semantic = semantic.long()
    unknown_channel = num_classes if ignore_index is not None else UNKNOWN
    return semantic.masked_fill(_unknown_mask(semantic, ignore_index), unknown_channel)


def check_semantic_values(semantic: Tensor, num_classes: int, ignore_index: int | None = None) -> None:
    """Raise a ValueError naming the first bad value unless every class index of ``semantic`` lies in
    ``[0, num_classes)`` or marks an unknown pixel (-1 or ``ignore_index``).

    It reads the values (a host synchronisation on an accelerator, and a break in a compiled
    graph): it runs in eager mode and is left out while torch.compile traces.
    """
    if semantic.numel() == 0 or torch.compiler.is_compiling():
        return
    index = semantic.long()
    known = index.masked_fill(_unknown_mask(index, ignore_index), 0)
    low, high = torch.stack(torch.aminmax(known)).tolist()  # one read
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        ignore = f" or the ignore index {ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"semantic map holds class index {bad}, expected values in [0, {num_classes - 1}]{ignore} "
            f"or {UNKNOWN} (unknown)"
        )


def semantic_one_hot(
    semantic: Tensor, num_classes: int, ignore_index: int | None = None, *, check: bool = True
) -> Tensor:
    """One-hot encode a semantic map.

    Args:
        semantic (Tensor[N, H, W]): integer class indices; unknown pixels (-1, or ``ignore_index``)
            are encoded in an extra last channel when ``ignore_index`` is set, else as all zeros.
        check: check the values (see :func:`semantic_to_index`).

    Returns:
        Tensor[N, K, H, W] float32 with K = ``num_classes`` (+1 when ``ignore_index`` is set).

    Example:
        >>> semantic_one_hot(torch.tensor([[[0, 2, -1]]]), 3)[0, :, 0].t()
        tensor([[1., 0., 0.],
                [0., 0., 1.],
                [0., 0., 0.]])
    """
    index = semantic_to_index(semantic, num_classes, ignore_index, check=check)
    channels = label_channels(num_classes, ignore_index)
    if ignore_index is None:
        # Unknown pixels (-1) scatter into a spare last channel that is then dropped.
        index = torch.where(index < 0, channels, index)
        one_hot = torch.zeros(index.shape[0], channels + 1, *index.shape[1:], device=index.device)
        return one_hot.scatter_(1, index.unsqueeze(1), 1.0)[:, :channels]
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
