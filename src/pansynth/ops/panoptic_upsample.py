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
import torch.nn.functional as F
from torch import Tensor

from pansynth.ops.maps import check_map

__all__ = ["panoptic_upsample", "upsample_choices", "upsample_sources", "CANDIDATES"]

# Candidate offsets (row, column) in the order of Algorithm 1's four loops.
CANDIDATES = ((0, 0), (0, 1), (1, 0), (1, 1))


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
    n, low_h, low_w = panoptic_low.shape
    # Work on 2x2 blocks: block (r, c) of the high map holds the pixels whose candidates
    # are low[r + dr, c + dc]; all comparisons are on strided views, without copies.
    blocks = panoptic_high.view(n, low_h, 2, low_w, 2)
    choice = torch.full(blocks.shape, len(CANDIDATES), dtype=torch.uint8, device=panoptic_low.device)
    # Later candidates are written first so that earlier ones take precedence.
    for k in reversed(range(len(CANDIDATES))):
        d_row, d_col = CANDIDATES[k]
        candidate = panoptic_low[:, d_row:, d_col:, None, None].transpose(2, 3)  # (N, h', 1, w', 1)
        region = (slice(None), slice(0, low_h - d_row), slice(None), slice(0, low_w - d_col), slice(None))
        choice[region].masked_fill_(blocks[region] == candidate, k)
    return choice.view(n, 2 * low_h, 2 * low_w)


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
    low_w = panoptic_low.shape[-1]
    matched = choice < len(CANDIDATES)
    offsets = torch.tensor([d_row * low_w + d_col for d_row, d_col in CANDIDATES] + [0], device=choice.device)
    source = _nearest_sources(*panoptic_low.shape[-2:], choice.device) + offsets[choice.long()]
    return source, matched


def panoptic_upsample(features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> tuple[Tensor, Tensor]:
    """Panoptic-aware 2x upsampling: Algorithm 1 of the paper (alignment correction).

    Args:
        features (Tensor[N, C, h, w]): low-resolution features.
        panoptic_low (Tensor[N, h, w]): integer ids at the features' resolution.
        panoptic_high (Tensor[N, 2h, 2w]): integer ids at the output resolution.

    Returns:
        ``(upsampled, matched)``: upsampled (Tensor[N, C, 2h, 2w]) holds the feature of the
        first candidate with the pixel's id, 0 where none; matched (Tensor[N, 1, 2h, 2w])
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
    choice = upsample_choices(panoptic_low, panoptic_high)
    # Nearest neighbour is right wherever the first candidate matched; only the other
    # pixels (misaligned or holes, a small share) are gathered or zeroed.
    upsampled = F.interpolate(features, scale_factor=2, mode="nearest")
    # The offset of each candidate; holes read the nearest source and are zeroed.
    offsets = torch.tensor([d_row * low_w + d_col for d_row, d_col in CANDIDATES] + [0], device=features.device)
    for b in range(n):
        choice_b = choice[b].reshape(-1)
        pixels = (choice_b != 0).nonzero().squeeze(1)
        if len(pixels) == 0:
            continue
        chosen = choice_b[pixels].long()
        hole = chosen == len(CANDIDATES)
        nearest = (pixels // (4 * low_w)) * low_w + (pixels % (2 * low_w)) // 2  # r * w + c
        source = nearest + offsets[chosen]
        values = features[b].reshape(channels, -1).index_select(1, source)
        values = values.masked_fill(hole, 0)
        upsampled[b].view(channels, -1).index_copy_(1, pixels, values)
    matched = (choice < len(CANDIDATES)).unsqueeze(1).to(features.dtype)
    return upsampled, matched


def _nearest_sources(low_h: int, low_w: int, device: torch.device) -> Tensor:
    """Flat low-resolution index r * w + c that nearest upsampling copies to each pixel."""
    rows = torch.arange(2 * low_h, device=device) // 2
    cols = torch.arange(2 * low_w, device=device) // 2
    return rows[:, None] * low_w + cols[None, :]
