"""Panoptic-aware upsampling with hole filling: the generator's x2 upsampling (paper section 3.2, eq. 3).

Algorithm 1 (:func:`pansynth.ops.panoptic_upsample`) moves every high-resolution pixel's
feature to a low-resolution neighbour of the same segment; the pixels that have none
("holes": a segment that is new at this scale) are filled from the label map through the
generator's first layer, shared by every stage (section 3.3)::

    out = F'_u + (1 - M) ⊙ proj(first_layer(S_high, P_high))                    (eq. 3)

``proj`` is a 1x1 convolution to the stage's channel count (present where that differs from
the first layer's 16·ngf). The first layer's input is one-hot (plus the instance boundary
channel when the generator takes it), so its output at a pixel is a sum of weight columns:
it is computed at the holes only, with :func:`pansynth.ops.panoptic_conv2d_labels`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pansynth.ops import Backend, PanopticConv2d, panoptic_conv2d_labels, panoptic_upsample
from pansynth.ops.maps import boundary_map, semantic_to_index

__all__ = ["HoleFillingUpsample"]


class HoleFillingUpsample(nn.Module):
    """Panoptic-aware x2 upsampling with hole filling (Algorithm 1 + eq. 3).

    Args:
        first_layer: the generator's first layer (a 3x3 :class:`PanopticConv2d` in the paper,
            a plain ``nn.Conv2d`` in the ``conv="standard"`` variant). It is shared, not owned:
            it is kept out of this module's parameters, which are only ``proj``'s.
        out_channels: channels C of the features upsampled at this stage.
        num_classes / ignore_index: how class indices map to the label map's one-hot channels.
        boundary: the first layer's input has the instance boundary map as its last channel.
        backend: engine of Algorithm 1 (``"auto"``, ``"triton"``, ``"torch"``; see :mod:`pansynth.ops`).

    Shapes:
        forward(features (Tensor[N, C, h, w]), semantic_high (Tensor[N, 2h, 2w]) int,
        panoptic_low (Tensor[N, h, w]) int, panoptic_high (Tensor[N, 2h, 2w]) int) -> Tensor[N, C, 2h, 2w]

    Example:
        >>> first = PanopticConv2d(3, 16, 3)
        >>> up = HoleFillingUpsample(first, 8, num_classes=3)
        >>> ids = torch.randint(0, 3, (1, 8, 8))
        >>> up(torch.randn(1, 8, 4, 4), ids, ids[:, ::2, ::2], ids).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(
        self,
        first_layer: nn.Module,
        out_channels: int,
        num_classes: int,
        ignore_index: int | None = None,
        boundary: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.backend = backend
        # A tuple keeps the shared layer out of this module's parameters and state dict.
        self._first_layer = (first_layer,)
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary = boundary
        fill_channels = first_layer.weight.shape[0]
        self.proj = None if fill_channels == out_channels else nn.Conv2d(fill_channels, out_channels, 1)

    @property
    def first_layer(self) -> nn.Module:
        return self._first_layer[0]

    def forward(self, features: Tensor, semantic_high: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> Tensor:
        if features.shape[1] != self.out_channels:
            raise ValueError(f"expected {self.out_channels} feature channels, got {features.shape[1]}")
        upsampled, matched = panoptic_upsample(features, panoptic_low, panoptic_high, backend=self.backend)
        holes = (matched[:, 0] == 0).nonzero()
        if len(holes) == 0:
            return upsampled
        fill = self.hole_features(semantic_high, panoptic_high, holes).to(upsampled.dtype)
        # upsampled is 0 at the holes, so writing the fill there equals adding (1 - M) * fill (eq. 3).
        batch, rows, cols = (index[:, None] for index in holes.unbind(1))
        channels = torch.arange(self.out_channels, device=holes.device)[None, :]
        return upsampled.index_put((batch, channels, rows, cols), fill)

    def hole_features(self, semantic_high: Tensor, panoptic_high: Tensor, positions: Tensor) -> Tensor:
        """``proj(first_layer(S_high [⊕ B_high], P_high))`` at ``positions`` (Tensor[n, 3] of (batch, y, x)).

        Returns:
            Tensor[n, C].
        """
        layer = self.first_layer
        weight = layer.weight
        panoptic_high = panoptic_high.long()
        labels = semantic_to_index(semantic_high, self.num_classes, self.ignore_index)
        partial = isinstance(layer, PanopticConv2d)
        # A plain convolution masks nothing but the image border: eq. 2 with one id everywhere,
        # without its k²/sum(M) rescaling (undone below).
        ids = panoptic_high if partial else torch.zeros_like(panoptic_high)
        label_weight = weight[:, : weight.shape[1] - int(self.boundary)]
        fill = panoptic_conv2d_labels(labels, ids, label_weight, None, positions)
        if self.boundary:
            # The boundary channel is binary: a second one-hot map with labels {0: no edge, 1: edge},
            # whose weight column for "no edge" is zero.
            edges = boundary_map(panoptic_high)[:, 0].long()
            edge_weight = torch.stack([torch.zeros_like(weight[:, -1]), weight[:, -1]], dim=1)
            fill = fill + panoptic_conv2d_labels(edges, ids, edge_weight, None, positions)
        if not partial:
            inside = _inside_counts(positions, panoptic_high.shape[-2:], weight.shape[-1]).to(fill.dtype)
            fill = fill * (inside / weight.shape[-1] ** 2)
        if layer.bias is not None:
            fill = fill + layer.bias
        if self.proj is not None:
            fill = fill @ self.proj.weight.view(self.out_channels, -1).t() + self.proj.bias
        return fill

    def extra_repr(self) -> str:
        return (
            f"out_channels={self.out_channels}, boundary={self.boundary}, backend={self.backend!r}, "
            "shares the generator's first layer"
        )


def _inside_counts(positions: Tensor, size: torch.Size, kernel_size: int) -> Tensor:
    """Window positions inside the image of a k x k window centred at each position: Tensor[n, 1]."""
    radius = kernel_size // 2
    height, width = size
    rows, cols = positions[:, 1], positions[:, 2]
    inside_rows = (rows + radius).clamp(max=height - 1) - (rows - radius).clamp(min=0) + 1
    inside_cols = (cols + radius).clamp(max=width - 1) - (cols - radius).clamp(min=0) + 1
    return (inside_rows * inside_cols).unsqueeze(1)
