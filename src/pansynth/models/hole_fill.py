"""Panoptic-aware upsampling with hole filling: the generator's x2 upsampling (paper section 3.2, eq. 3).

Algorithm 1 (:func:`pansynth.ops.panoptic_upsample`) moves every high-resolution pixel's
feature to a low-resolution neighbour of the same segment; the pixels that have none
("holes": a segment that is new at this scale) are filled from the label map through the
generator's first layer, shared by every stage (section 3.3)::

    out = F'_u + (1 - M) ⊙ proj(first_layer(S_high, P_high))                    (eq. 3)

``proj`` is a 1x1 convolution to the stage's channel count (present where that differs from
the first layer's 16·ngf). The first layer's input is one-hot (plus the instance boundary
channel when the generator takes it), so its output at a pixel is a sum of weight columns:
it is computed at the holes only, with :func:`pansynth.ops.panoptic_conv2d_labels`, on the
PyTorch engine (the CPU path: finding the holes is a ``nonzero``). On the Triton engine (the
accelerators' path) nothing may wait for the device: :func:`fill_holes_dense` computes the
fill at every pixel, with ``proj`` folded into the first layer's weight (C channels, a k²-tap
lookup per pixel: small next to the stage's convolutions), and selects it at the holes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pansynth.ops import Backend, PanopticConv2d, panoptic_conv2d, panoptic_conv2d_labels, panoptic_upsample
from pansynth.ops.backend import select_backend
from pansynth.ops.maps import boundary_map, semantic_one_hot, semantic_to_index

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
        layer, proj = self.first_layer, self.proj
        arguments = (
            upsampled, matched, semantic_high, panoptic_high, layer.weight, layer.bias,
            None if proj is None else proj.weight, None if proj is None else proj.bias,
            isinstance(layer, PanopticConv2d), self.boundary, self.num_classes, self.ignore_index,
        )  # fmt: skip
        if self.backend == "graph":
            # Exported graphs: the fill at every pixel, kept where no candidate matched (no data-dependent shape).
            return fill_holes_graph(*arguments)
        if select_backend(self.backend, features) == "triton":
            # The engine of accelerators: no host synchronisation, and plain ops torch.compile traces.
            return fill_holes_dense(*arguments)
        if torch.compiler.is_compiling():
            # The holes are found with a data-dependent nonzero: one opaque op keeps the graph whole.
            return torch.ops.pansynth.hole_fill(*arguments)
        # upsampled is this call's own tensor (on either engine a fresh tensor, never a view, which autograd
        # would forbid writing into): the fill is written into it rather than into a copy.
        return fill_holes(*arguments, inplace=True)

    def hole_features(self, semantic_high: Tensor, panoptic_high: Tensor, positions: Tensor) -> Tensor:
        """``proj(first_layer(S_high [⊕ B_high], P_high))`` at ``positions`` (Tensor[n, 3] of (batch, y, x)).

        Returns:
            Tensor[n, C].
        """
        layer, proj = self.first_layer, self.proj
        return hole_features(
            semantic_high, panoptic_high, positions, layer.weight, layer.bias,
            None if proj is None else proj.weight, None if proj is None else proj.bias,
            isinstance(layer, PanopticConv2d), self.boundary, self.num_classes, self.ignore_index,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"out_channels={self.out_channels}, boundary={self.boundary}, backend={self.backend!r}, "
            "shares the generator's first layer"
        )


def hole_features(
    semantic_high: Tensor,
    panoptic_high: Tensor,
    positions: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    proj_weight: Tensor | None,
    proj_bias: Tensor | None,
    partial: bool,
    boundary: bool,
    num_classes: int,
    ignore_index: int | None,
) -> Tensor:
    """The hole-filling features of eq. 3 at ``positions``: Tensor[n, C].

    ``proj(first_layer(S [⊕ B], P))`` where the first layer (``weight`` (Tensor[O, L, k, k]),
    ``bias``) is a panoptic-aware partial convolution (``partial``, eq. 2) or a zero-padded plain one,
    its input the one-hot semantic map (``num_classes`` channels, +1 for ``ignore_index``) followed,
    with ``boundary``, by the instance boundary map; ``proj`` is a 1x1 convolution or None.
    """
    panoptic_high = panoptic_high.long()
    labels = semantic_to_index(semantic_high, num_classes, ignore_index)
    # A plain convolution masks nothing but the image border: eq. 2 with one id everywhere,
    # without its k²/sum(M) rescaling (undone below).
    ids = panoptic_high if partial else torch.zeros_like(panoptic_high)
    label_weight = weight[:, : weight.shape[1] - int(boundary)]
    fill = panoptic_conv2d_labels(labels, ids, label_weight, None, positions)
    if boundary:
        # The boundary channel is binary: a second one-hot map with labels {0: no edge, 1: edge},
        # whose weight column for "no edge" is zero.
        edges = boundary_map(panoptic_high)[:, 0].long()
        edge_weight = torch.stack([torch.zeros_like(weight[:, -1]), weight[:, -1]], dim=1)
        fill = fill + panoptic_conv2d_labels(edges, ids, edge_weight, None, positions)
    if not partial:
        inside = _inside_counts(positions, panoptic_high.shape[-2:], weight.shape[-1]).to(fill.dtype)
        fill = fill * (inside / weight.shape[-1] ** 2)
    if bias is not None:
        fill = fill + bias
    if proj_weight is not None:
        fill = fill @ proj_weight.view(proj_weight.shape[0], -1).t() + proj_bias
    return fill


def fill_holes(
    upsampled: Tensor,
    matched: Tensor,
    semantic_high: Tensor,
    panoptic_high: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    proj_weight: Tensor | None,
    proj_bias: Tensor | None,
    partial: bool,
    boundary: bool,
    num_classes: int,
    ignore_index: int | None,
    inplace: bool = False,
) -> Tensor:
    """Eq. 3 given Algorithm 1's result: ``upsampled + (1 - matched) * hole_features`` (Tensor[N, C, 2h, 2w]).

    With ``inplace`` the features are written into ``upsampled`` (which must be the caller's own).
    """
    holes = (matched[:, 0] == 0).nonzero()
    if len(holes) == 0:
        return upsampled
    fill = hole_features(
        semantic_high, panoptic_high, holes, weight, bias, proj_weight, proj_bias, partial, boundary, num_classes,
        ignore_index,
    ).to(upsampled.dtype)  # fmt: skip
    # upsampled is 0 at the holes, so writing the fill there equals adding (1 - M) * fill (eq. 3).
    batch, rows, cols = (index[:, None] for index in holes.unbind(1))
    channels = torch.arange(upsampled.shape[1], device=holes.device)[None, :]
    if inplace:
        return upsampled.index_put_((batch, channels, rows, cols), fill)
    return upsampled.index_put((batch, channels, rows, cols), fill)


def fill_holes_dense(
    upsampled: Tensor,
    matched: Tensor,
    semantic_high: Tensor,
    panoptic_high: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    proj_weight: Tensor | None,
    proj_bias: Tensor | None,
    partial: bool,
    boundary: bool,
    num_classes: int,
    ignore_index: int | None,
) -> Tensor:
    """Eq. 3 as :func:`fill_holes`, without reading any value on the host (no ``nonzero``, no ``item``).

    The fill ``proj(first_layer(S [⊕ B], P))`` is computed at every pixel -- ``proj`` folded into the
    first layer: ``(P W) x + P b + b_proj`` -- and selected where no candidate matched. The semantic
    map's values are not checked here (the generator checks them once per call, before its layers).
    """
    out_channels = weight.shape[0] if proj_weight is None else proj_weight.shape[0]
    if proj_weight is not None:
        projection = proj_weight.reshape(out_channels, -1)
        weight = torch.einsum("co,olij->clij", projection, weight)
        bias = projection @ bias + proj_bias if bias is not None else proj_bias
    panoptic_high = panoptic_high.long()
    labels = semantic_to_index(semantic_high, num_classes, ignore_index, check=False)
    # A plain convolution masks nothing but the image border (one id everywhere), without eq. 2's rescaling.
    ids = panoptic_high if partial else torch.zeros_like(panoptic_high)
    fill = panoptic_conv2d_labels(labels, ids, weight[:, : weight.shape[1] - int(boundary)], check=False)
    if boundary:
        # The boundary channel as a one-hot map with labels {0: no edge, 1: edge} (see hole_features).
        edges = boundary_map(panoptic_high)[:, 0].long()
        edge_weight = torch.stack([torch.zeros_like(weight[:, -1]), weight[:, -1]], dim=1)
        fill = fill + panoptic_conv2d_labels(edges, ids, edge_weight, check=False)
    if not partial:
        kernel_size = weight.shape[-1]
        fill = fill * (_inside_counts_dense(panoptic_high.shape[-2:], kernel_size, fill) / kernel_size**2)
    if bias is not None:
        fill = fill + bias[:, None, None]
    # upsampled is 0 at the holes: selecting the fill there equals adding (1 - M) * fill (eq. 3).
    return torch.where(matched > 0, upsampled, fill.to(upsampled.dtype))


def fill_holes_graph(
    upsampled: Tensor,
    matched: Tensor,
    semantic_high: Tensor,
    panoptic_high: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    proj_weight: Tensor | None,
    proj_bias: Tensor | None,
    partial: bool,
    boundary: bool,
    num_classes: int,
    ignore_index: int | None,
) -> Tensor:
    """Eq. 3 for the graph engine (exports): :func:`fill_holes` with the fill at every pixel (Tensor[N, C, 2h, 2w]).

    The first layer runs densely on the stage's label map (the same one-hot semantic map and
    boundary map of ``panoptic_high`` that :func:`hole_features` reads) and ``where`` keeps it at
    the holes: equal to :func:`fill_holes`, with shapes that do not depend on the map's values.
    """
    label = semantic_one_hot(semantic_high, num_classes, ignore_index).to(weight.dtype)
    if boundary:
        label = torch.cat([label, boundary_map(panoptic_high).to(weight.dtype)], dim=1)
    if partial:
        fill = panoptic_conv2d(label, panoptic_high.long(), weight, bias, backend="graph")
    else:
        fill = F.conv2d(label, weight, bias, padding=weight.shape[-1] // 2)
    if proj_weight is not None:
        fill = F.conv2d(fill, proj_weight, proj_bias)
    return torch.where(matched > 0, upsampled, fill.to(upsampled.dtype))


# --- one opaque op for torch.compile: forward and backward run the eager code above ---------------

_HOLE_FILL_SCHEMA = (
    "(Tensor upsampled, Tensor matched, Tensor semantic_high, Tensor panoptic_high, Tensor weight, Tensor? bias, "
    "Tensor? proj_weight, Tensor? proj_bias, bool partial, bool boundary, int num_classes, int? ignore_index)"
)


@torch.library.custom_op("pansynth::hole_fill", mutates_args=(), schema=_HOLE_FILL_SCHEMA + " -> Tensor")
def _hole_fill_op(upsampled, matched, semantic_high, panoptic_high, weight, bias, proj_weight, proj_bias, partial,
                  boundary, num_classes, ignore_index):  # fmt: skip
    out = fill_holes(upsampled, matched, semantic_high, panoptic_high, weight, bias, proj_weight, proj_bias, partial,
                     boundary, num_classes, ignore_index)  # fmt: skip
    return out.clone() if out is upsampled else out  # an op's output never aliases its input


@_hole_fill_op.register_fake
def _(upsampled, *args):
    return torch.empty_like(upsampled)


@torch.library.custom_op(
    "pansynth::hole_fill_backward",
    mutates_args=(),
    schema=_HOLE_FILL_SCHEMA.replace("(Tensor upsampled", "(Tensor grad_output, Tensor upsampled")
    + " -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def _hole_fill_backward_op(grad_output, upsampled, matched, semantic_high, panoptic_high, weight, bias, proj_weight,
                           proj_bias, partial, boundary, num_classes, ignore_index):  # fmt: skip
    # Differentiate the (cheap, sparse) forward again. Autograd does not record inside a custom op;
    # torch.func's vjp does its own bookkeeping and works here.
    inputs = [upsampled, weight, bias, proj_weight, proj_bias]
    present = [index for index, t in enumerate(inputs) if t is not None]

    def forward(*tensors: Tensor) -> Tensor:
        values = list(inputs)
        for index, tensor in zip(present, tensors):
            values[index] = tensor
        up, w, b, pw, pb = values
        out = fill_holes(up, matched, semantic_high, panoptic_high, w, b, pw, pb, partial, boundary, num_classes,
                         ignore_index)  # fmt: skip
        return out.clone() if out is up else out

    _, vjp = torch.func.vjp(forward, *[inputs[index] for index in present])
    grads = dict(zip(present, vjp(grad_output)))
    # An empty tensor stands for an absent input; no output may alias an input.
    return tuple(grads[index].clone() if index in grads else upsampled.new_empty(0) for index in range(5))


@_hole_fill_backward_op.register_fake
def _(grad_output, upsampled, matched, semantic_high, panoptic_high, weight, bias, proj_weight, proj_bias, *args):
    return tuple(
        torch.empty_like(t) if t is not None else upsampled.new_empty(0)
        for t in (upsampled, weight, bias, proj_weight, proj_bias)
    )


def _hole_fill_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*[t if t is not None else torch.empty(0) for t in inputs[:8]])
    ctx.present = [t is not None for t in inputs[:8]]
    ctx.flags = inputs[8:]


def _hole_fill_op_backward(ctx, grad_output):
    saved = [t if present else None for t, present in zip(ctx.saved_tensors, ctx.present)]
    upsampled, matched, semantic_high, panoptic_high, weight, bias, proj_weight, proj_bias = saved
    grads = torch.ops.pansynth.hole_fill_backward(
        grad_output, upsampled, matched, semantic_high, panoptic_high, weight, bias, proj_weight, proj_bias, *ctx.flags
    )
    grad_up, grad_w, grad_b, grad_pw, grad_pb = (
        g if p else None for g, p in zip(grads, [True, True, *ctx.present[5:]])
    )
    return grad_up, None, None, None, grad_w, grad_b, grad_pw, grad_pb, None, None, None, None


_hole_fill_op.register_autograd(_hole_fill_op_backward, setup_context=_hole_fill_setup_context)


def _inside_counts_dense(size: torch.Size, kernel_size: int, like: Tensor) -> Tensor:
    """Window positions inside the image of the k x k window of every pixel: Tensor[H, W] of ``like``'s dtype."""
    radius = kernel_size // 2
    counts = []
    for length in size:
        index = torch.arange(length, device=like.device)
        counts.append((index + radius).clamp(max=length - 1) - (index - radius).clamp(min=0) + 1)
    return (counts[0][:, None] * counts[1][None, :]).to(like.dtype)


def _inside_counts(positions: Tensor, size: torch.Size, kernel_size: int) -> Tensor:
    """Window positions inside the image of a k x k window centred at each position: Tensor[n, 1]."""
    radius = kernel_size // 2
    height, width = size
    rows, cols = positions[:, 1], positions[:, 2]
    inside_rows = (rows + radius).clamp(max=height - 1) - (rows - radius).clamp(min=0) + 1
    inside_cols = (cols + radius).clamp(max=width - 1) - (cols - radius).clamp(min=0) + 1
    return (inside_rows * inside_cols).unsqueeze(1)
