"""Panoptic-aware 2x upsampling (Dundar et al., CVPR 2020, section 3.2, Algorithm 1).

Nearest-neighbour upsampling copies the top-left low-resolution feature into each 2x2
block, which gives a pixel the feature of another segment wherever the segment
boundaries of the high-resolution map do not fall on even coordinates. Algorithm 1
("upsampling alignment correction") instead takes, for each high-resolution pixel
(y, x) with r = y // 2 and c = x // 2, the first of the candidates

    (r, c), (r, c + 1), (r + 1, c), (r + 1, c + 1)

(inside the low-resolution map) whose panoptic id equals the pixel's id at the high
resolution (the paper's i indexes columns, so its second loop is (r, c + 1)). Pixels
with no matching candidate belong to a segment that is new at this scale: they get
zero here and ``matched = 0``, and the generator fills them from the semantic map
("hole filling", eq. 3: :class:`pansynth.models.hole_fill.HoleFillingUpsample`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pansynth.ops import _graph_engine, _torch_engine, _triton_ops
from pansynth.ops._torch_engine import CANDIDATES, HOLE
from pansynth.ops.backend import Backend, select_backend
from pansynth.ops.maps import check_map

__all__ = ["panoptic_upsample", "upsample_choices", "upsample_sources", "CANDIDATES"]


def _check_pair(panoptic_low: Tensor, panoptic_high: Tensor) -> None:
    check_map(panoptic_low, "panoptic_low")
    check_map(panoptic_high, "panoptic_high")
    n, low_h, low_w = panoptic_low.shape
    if tuple(panoptic_high.shape) != (n, 2 * low_h, 2 * low_w):
        raise ValueError(
            f"panoptic_high must be (N, 2h, 2w) = {(n, 2 * low_h, 2 * low_w)} for panoptic_low "
            f"{tuple(panoptic_low.shape)}, got {tuple(panoptic_high.shape)}"
        )


def upsample_choices(panoptic_low: Tensor, panoptic_high: Tensor) -> Tensor:
    """Which candidate of Algorithm 1 each high-resolution pixel takes.

    Args:
        panoptic_low (Tensor[N, h, w]): integer ids at the low resolution.
        panoptic_high (Tensor[N, 2h, 2w]): integer ids at the high resolution.

    Returns:
        Tensor[N, 2h, 2w] uint8: the index k into ``CANDIDATES`` of the first candidate whose
        id equals the pixel's id, or 4 where none does (a hole). 0 is nearest neighbour.
    """
    _check_pair(panoptic_low, panoptic_high)
    return _torch_engine.upsample_choices(panoptic_low, panoptic_high)


def upsample_sources(panoptic_low: Tensor, panoptic_high: Tensor) -> tuple[Tensor, Tensor]:
    """Which low-resolution pixel each high-resolution pixel copies (Algorithm 1).

    Args:
        panoptic_low (Tensor[N, h, w]): integer ids at the low resolution.
        panoptic_high (Tensor[N, 2h, 2w]): integer ids at the high resolution.

    Returns:
        ``(source, matched)``: ``source`` (Tensor[N, 2h, 2w] int64) is the flat index
        r * w + c of the matched candidate (that of nearest neighbour where none matched);
        ``matched`` (Tensor[N, 2h, 2w] bool).
    """
    choice = upsample_choices(panoptic_low, panoptic_high)
    low_h, low_w = panoptic_low.shape[-2:]
    matched = choice < HOLE
    offsets = torch.tensor([d_row * low_w + d_col for d_row, d_col in CANDIDATES] + [0], device=choice.device)
    rows = torch.arange(2 * low_h, device=choice.device) // 2
    cols = torch.arange(2 * low_w, device=choice.device) // 2
    nearest = rows[:, None] * low_w + cols[None, :]
    return nearest + offsets[choice.long()], matched


def panoptic_upsample(
    features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor, *, backend: Backend = "auto"
) -> tuple[Tensor, Tensor]:
    """Panoptic-aware 2x upsampling: Algorithm 1 of the paper (alignment correction).

    Args:
        features (Tensor[N, C, h, w]): low-resolution features (contiguous or channels_last).
        panoptic_low (Tensor[N, h, w]): integer ids at the features' resolution.
        panoptic_high (Tensor[N, 2h, 2w]): integer ids at the output resolution.
        backend: ``"auto"``, ``"triton"``, ``"torch"`` or ``"graph"`` (see :mod:`pansynth.ops.backend`).

    Returns:
        ``(upsampled, matched)``: upsampled (Tensor[N, C, 2h, 2w], in the features' memory
        format on the PyTorch engine, channels_last on the Triton engine) holds the feature of
        the first candidate with the pixel's id, 0 where none; matched (Tensor[N, 1, 2h, 2w])
        is 1 where a candidate matched, in the features' dtype.

    Example:
        >>> ids = torch.zeros(1, 4, 4, dtype=torch.long)
        >>> up, matched = panoptic_upsample(torch.randn(1, 3, 2, 2), ids[:, ::2, ::2], ids)
        >>> bool(matched.all())
        True
    """
    if not isinstance(features, Tensor) or features.dim() != 4 or not features.is_floating_point():
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a (N, C, h, w) floating-point tensor, got {shape}")
    check_map(panoptic_low, "panoptic_low")
    n, channels, low_h, low_w = features.shape
    if tuple(panoptic_low.shape) != (n, low_h, low_w):
        raise ValueError(
            f"panoptic_low must be (N, h, w) = {(n, low_h, low_w)} to match the features, "
            f"got {tuple(panoptic_low.shape)}"
        )
    _check_pair(panoptic_low, panoptic_high)
    for name, label_map in (("panoptic_low", panoptic_low), ("panoptic_high", panoptic_high)):
        if label_map.device != features.device:
            raise ValueError(f"{name} is on {label_map.device} but the features are on {features.device}")
    engine = select_backend(backend, features)
    if engine == "triton":
        upsampled, choice = _triton_ops.upsample(features, panoptic_low, panoptic_high)
    elif engine == "graph":
        upsampled, choice = _graph_engine.upsample(features, panoptic_low, panoptic_high)
    else:
        upsampled, choice = _torch_engine.upsample(features, panoptic_low, panoptic_high)
    matched = (choice < HOLE).unsqueeze(1).to(features.dtype)
    return upsampled, matched
