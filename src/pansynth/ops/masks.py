"""The per-pixel neighbour mask of eq. 1, packed in bits: what the Triton kernels read instead of ids.

For a k x k window (k <= 5: k² <= 25 bits fit an int32), bit ``t = i * k + j`` of pixel p is
M_t(p): the neighbour ``p + (i - k // 2, j - k // 2)`` lies inside the image and has p's id.
The scale of eq. 2 is ``k² / popcount``. Computed once per map and kernel size (a
:class:`MaskPlan`, which the generator builds per scale and hands to every layer of that
scale, forward and backward); every convolution of that map reads it (4 bytes per pixel
instead of k² int64 id loads).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.ops.maps import check_map

__all__ = ["MAX_MASK_KERNEL", "MaskPlan", "mask_plan", "neighbour_mask"]

MAX_MASK_KERNEL = 5


def neighbour_mask(panoptic: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """Eq. 1's mask of every window, as bits, and eq. 2's scale.

    Args:
        panoptic (Tensor[N, H, W]): integer ids.
        kernel_size: odd k <= 5.

    Returns:
        ``(mask, scale)``: mask (Tensor[N, H, W] int32, contiguous) with bit ``i * k + j`` set where
        the window position (i, j) is inside the image and of the centre's id; scale (Tensor[N, H, W]
        float32, contiguous) is k² / sum(M).

    Example:
        >>> ids = torch.tensor([[[1, 1, 2]]])
        >>> mask, scale = neighbour_mask(ids, 3)
        >>> [bin(int(m)) for m in mask[0, 0]], scale[0, 0].tolist()
        (['0b110000', '0b11000', '0b10000'], [4.5, 4.5, 9.0])
    """
    check_map(panoptic, "panoptic")
    if kernel_size % 2 == 0 or not 1 <= kernel_size <= MAX_MASK_KERNEL:
        raise ValueError(f"kernel_size must be 1, 3 or 5 for a 32-bit neighbour mask, got {kernel_size}")
    radius = kernel_size // 2
    n, height, width = panoptic.shape
    ids = panoptic.long()
    padding = (radius, radius, radius, radius)
    padded = F.pad(ids, padding)
    inside = F.pad(torch.ones_like(ids, dtype=torch.bool), padding)
    mask = torch.zeros((n, height, width), dtype=torch.int32, device=panoptic.device)
    count = torch.zeros((n, height, width), dtype=torch.int32, device=panoptic.device)
    for tap in range(kernel_size * kernel_size):
        dy, dx = divmod(tap, kernel_size)
        window = (slice(None), slice(dy, dy + height), slice(dx, dx + width))
        same = (inside[window] & (padded[window] == ids)).to(torch.int32)
        mask |= same << tap
        count += same
    return mask, (kernel_size * kernel_size) / count.to(torch.float32)


class MaskPlan(NamedTuple):
    """What the Triton engine derives from a panoptic map for eq. 1-2, once per map and kernel size.

    Built by :func:`mask_plan`; pass it as ``plan=`` to every convolution fed that map (the
    generator keeps one per scale): the layers of a scale, and their backward passes, then read
    one mask instead of each computing it from the ids.
    """

    mask: Tensor  # (N, H, W) int32, bit i*k + j = M of window position (i, j)
    scale: Tensor  # (N, H, W) float32, k²/sum(M)
    kernel_size: int

    def check(self, panoptic_shape: tuple[int, ...], kernel_size: int, device: torch.device) -> None:
        """Raise a ValueError unless this plan was built for such a map and kernel size."""
        shape = tuple(self.mask.shape)
        if tuple(panoptic_shape) != shape or kernel_size != self.kernel_size:
            raise ValueError(
                f"plan was built for a {shape} map and kernel size {self.kernel_size}, but is used with a "
                f"{tuple(panoptic_shape)} map and kernel size {kernel_size}: build it with mask_plan(panoptic, "
                "kernel_size) from the map the layer is fed"
            )
        if torch.device(device) != self.mask.device:
            raise ValueError(f"plan was built on {self.mask.device} but the input is on {device}")


def mask_plan(panoptic: Tensor, kernel_size: int = 3) -> MaskPlan:
    """The Triton engine's plan of a map: :func:`neighbour_mask` with its kernel size.

    Example:
        >>> plan = mask_plan(torch.tensor([[[1, 1, 2]]]), 3)
        >>> plan.scale.tolist()
        [[[4.5, 4.5, 9.0]]]
    """
    mask, scale = neighbour_mask(panoptic, kernel_size)
    return MaskPlan(mask, scale, kernel_size)
