"""Panoptic-aware partial convolution (Dundar et al., CVPR 2020, eq. 1-2): public functions, module, dispatch.

For every output pixel p with window W(p) (k x k, stride 1, "same" zero padding)::

    M_q = 1 if q lies inside the image and P[q] == P[p], else 0          (eq. 1)
    x'_p = W^T (X ⊙ M) * k² / sum(M) + b                                   (eq. 2)

sum(M) >= 1 always holds because the centre matches itself, so the "else 0" branch
of eq. 2 never triggers for a same-padded, stride-1 convolution.

Two engines compute it (``backend=``, see :mod:`pansynth.ops.backend`): the PyTorch engine
(:mod:`pansynth.ops._torch_engine`: a dense convolution made exact at the pixels whose
window crosses a segment or the border, driven by a per-map :class:`ConvPlan`) and the
Triton kernels (:mod:`pansynth.ops._triton`: an implicit-GEMM convolution that applies the
mask while it loads the input). Under autocast the input, weight and bias are cast to
autocast's dtype first, as ``conv2d`` would be.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pansynth.ops import _graph_engine, _torch_engine, _triton_ops
from pansynth.ops._torch_engine import ConvPlan, SparseWindows, conv_plan, irregular_pixels, window_masks
from pansynth.ops.backend import BACKENDS, Backend, compute_dtype, select_backend
from pansynth.ops.maps import check_map, map_stride, semantic_to_index
from pansynth.ops.masks import MaskPlan, mask_plan

__all__ = [
    "ConvPlan",
    "MaskPlan",
    "PanopticConv2d",
    "conv_plan",
    "irregular_pixels",
    "panoptic_conv2d",
    "panoptic_conv2d_labels",
    "window_masks",
]


def _check_conv_args(input: Tensor, panoptic: Tensor, weight: Tensor, bias: Tensor | None, padding) -> int:
    if not isinstance(input, Tensor) or input.dim() != 4 or not input.is_floating_point():
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input must be a (N, C, H, W) floating-point tensor, got {shape}")
    check_map(panoptic, "panoptic")
    if weight.dim() != 4:
        raise ValueError(f"weight must be (O, C, k, k), got {tuple(weight.shape)}")
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if kernel_h != kernel_w or kernel_h % 2 == 0:
        raise ValueError(f"the kernel must be square with an odd size, got {kernel_h}x{kernel_w}")
    if input.shape[1] != in_channels:
        raise ValueError(f"input has {input.shape[1]} channels but the weight expects {in_channels}")
    n, _, height, width = input.shape
    if tuple(panoptic.shape) != (n, height, width):
        raise ValueError(
            f"panoptic must be (N, H, W) = {(n, height, width)} to match the input, got {tuple(panoptic.shape)}"
        )
    if panoptic.device != input.device:
        raise ValueError(f"panoptic is on {panoptic.device} but the input is on {input.device}")
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {tuple(bias.shape)}")
    radius = kernel_h // 2
    if padding is not None and padding != radius:
        raise ValueError(
            f"only 'same' padding (padding = kernel_size // 2 = {radius}) is supported, got padding={padding}"
        )
    return radius


def _cast(input: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Input, weight and bias in one dtype: autocast's, or the input's (which the weight must have)."""
    dtype = compute_dtype(input)
    if dtype != input.dtype or compute_dtype(weight) != weight.dtype:
        return input.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
    if weight.dtype != input.dtype or (bias is not None and bias.dtype != input.dtype):
        bias_dtype = "" if bias is None else f" and bias {str(bias.dtype).replace('torch.', '')}"
        raise ValueError(
            f"input is {str(input.dtype).replace('torch.', '')} but weight is "
            f"{str(weight.dtype).replace('torch.', '')}{bias_dtype}: pass one dtype, or run under torch.autocast"
        )
    return input, weight, bias


def panoptic_conv2d(
    input: Tensor,
    panoptic: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    padding: int | None = None,
    *,
    plan: ConvPlan | MaskPlan | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Panoptic-aware partial convolution (paper eq. 1-2), stride 1, same padding.

    A window only sees the pixels whose panoptic id equals the id of its centre; the
    result is rescaled by k²/sum(M) (positions outside the image count in k² but are
    masked out), then the bias is added. A 1x1 kernel equals a plain convolution.

    Args:
        input (Tensor[N, C, H, W]): features, float32/float64/bfloat16/float16, contiguous or
            channels_last; under ``torch.autocast`` the op computes in autocast's dtype.
        panoptic (Tensor[N, H, W]): integer ids (any int64 values, not necessarily contiguous).
        weight (Tensor[O, C, k, k]): filter with an odd kernel size k, of the input's dtype.
        bias (Tensor[O], optional): added after the rescaling.
        padding: must be ``k // 2`` (the default) when given.
        plan: what the engine derives from ``panoptic`` and k, shared by every layer fed this map
            (each call builds its own without it): :func:`conv_plan` for the PyTorch engine,
            :func:`~pansynth.ops.masks.mask_plan` (the neighbour mask) for the Triton engine.
            The graph engine ignores plans.
        backend: ``"auto"`` (the Triton kernels for CUDA tensors once verified there, else
            the PyTorch engine; see :mod:`pansynth.ops.backend`), ``"triton"``, ``"torch"`` or
            ``"graph"`` (plain tensor operations for torch.export and ONNX).

    Returns:
        Tensor[N, O, H, W] in the computing dtype; in the input's memory format on the
        PyTorch engine, channels_last on the Triton engine.

    Example:
        >>> x = torch.randn(1, 4, 8, 8)
        >>> ids = torch.zeros(1, 8, 8, dtype=torch.long); ids[:, :, 4:] = 7
        >>> panoptic_conv2d(x, ids, torch.randn(6, 4, 3, 3)).shape
        torch.Size([1, 6, 8, 8])
    """
    _check_conv_args(input, panoptic, weight, bias, padding)
    engine = select_backend(backend, input)
    kernel_size = weight.shape[-1]
    if plan is not None and engine != "graph":
        wanted = MaskPlan if engine == "triton" else ConvPlan
        if not isinstance(plan, wanted):
            raise ValueError(
                f"plan is a {type(plan).__name__} but the {engine} engine runs this call: pass "
                f"{'mask_plan' if engine == 'triton' else 'conv_plan'}(panoptic, kernel_size), or no plan"
            )
        plan.check(panoptic.shape, kernel_size, input.device)
    input, weight, bias = _cast(input, weight, bias)
    if kernel_size == 1:
        return F.conv2d(input, weight, bias)
    if engine == "triton":
        neighbours = plan if plan is not None else mask_plan(panoptic, kernel_size)
        return _triton_ops.conv2d(input, neighbours.mask, neighbours.scale, weight, bias)
    if engine == "graph":
        return _graph_engine.conv2d(input, panoptic, weight, bias)
    return _torch_engine.conv2d(input, panoptic, weight, bias, plan)


def _check_labels_range(labels: Tensor, num_labels: int) -> None:
    # A data-dependent check: run in eager mode, left out of compiled graphs.
    if torch.compiler.is_compiling() or labels.numel() == 0:
        return
    if int(labels.min()) < -1 or int(labels.max()) >= num_labels:
        raise ValueError(
            f"labels must lie in [0, {num_labels - 1}] (or -1: unknown, no channel) for a weight with "
            f"{num_labels} input channels"
        )


def panoptic_conv2d_labels(
    labels: Tensor,
    panoptic: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    positions: Tensor | None = None,
    *,
    check: bool = True,
) -> Tensor:
    """Panoptic-aware convolution of a one-hot map, computed as an embedding lookup.

    Equals ``panoptic_conv2d(one_hot(labels), panoptic, weight, bias)`` exactly (eq. 1-2), but
    costs k*k*O per pixel instead of k*k*K*O: with a one-hot input, W^T (X ⊙ M) is a sum of
    the weight columns of the classes seen in the window. With ``positions`` it is
    computed only at those pixels (the hole-filling layer needs it at unmatched pixels only).
    Runs on the PyTorch engine on every device. Without ``positions`` and with ``check=False``
    it reads no values on the host (no ``nonzero``, no ``item``): one embedding lookup per tap.

    Args:
        labels (Tensor[N, H, W]): channel indices in ``[0, K)`` (see ``semantic_to_index``), or -1
            for an unknown pixel whose one-hot vector is all zeros.
        panoptic (Tensor[N, H, W]): integer ids.
        weight (Tensor[O, K, k, k]): filter with an odd kernel size.
        bias (Tensor[O], optional)
        positions (Tensor[n, 3], optional): (batch, y, x) of the pixels to compute.
        check: check that the labels lie in ``[0, K)`` (reads them: a host synchronisation).

    Returns:
        Tensor[N, O, H, W] (channels_last), or Tensor[n, O] when ``positions`` is given.

    Example:
        >>> labels = torch.randint(0, 5, (1, 6, 6))
        >>> panoptic_conv2d_labels(labels, labels * 10, torch.randn(8, 5, 3, 3)).shape
        torch.Size([1, 8, 6, 6])
    """
    check_map(labels, "labels")
    check_map(panoptic, "panoptic")
    if labels.shape != panoptic.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and panoptic {tuple(panoptic.shape)} differ in shape")
    out_channels, num_labels, kernel_size, kernel_w = weight.shape
    if kernel_size != kernel_w or kernel_size % 2 == 0:
        raise ValueError(f"the kernel must be square with an odd size, got {kernel_size}x{kernel_w}")
    labels = labels.long()
    if check:
        _check_labels_range(labels, num_labels)
    radius = kernel_size // 2
    n, height, width = labels.shape
    # taps[t, label] is the weight column W[:, label, t]: (k*k, K, O)
    taps = weight.permute(2, 3, 1, 0).reshape(kernel_size * kernel_size, num_labels, out_channels)
    if positions is None:
        return _labels_conv_dense(labels, panoptic, taps, bias, kernel_size)
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be (n, 3) rows of (batch, y, x), got {tuple(positions.shape)}")
    tap_index = torch.arange(kernel_size * kernel_size, device=labels.device)
    out = weight.new_empty(len(positions), out_channels)
    for b in range(n):
        rows = (positions[:, 0] == b).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        pixels = positions[rows, 1] * width + positions[rows, 2]
        windows = SparseWindows(panoptic[b], pixels, radius)
        window_labels = labels[b].reshape(-1)[windows.neighbours]  # (n_b, k*k)
        columns = taps[tap_index, window_labels.clamp(min=0)]  # (n_b, k*k, O)
        # An unknown neighbour (label -1) has a zero one-hot vector: it adds nothing.
        seen = windows.same & (window_labels >= 0)
        values = (columns * seen.unsqueeze(-1).to(columns.dtype)).sum(1)
        values = values * windows.scale(values.dtype)[:, None]
        out[rows] = values if bias is None else values + bias
    return out


def _labels_conv_dense(labels: Tensor, panoptic: Tensor, taps: Tensor, bias: Tensor | None, kernel_size: int) -> Tensor:
    """Eq. 1-2 of a one-hot map at every pixel, tap by tap: sum_t M_t taps[t, label(p + d_t)] * k²/sum(M) + b.

    Shapes only: no value of the maps is read on the host (a fixed number of ops per call,
    which torch.compile fuses). Returns Tensor[N, O, H, W] channels_last.
    """
    radius = kernel_size // 2
    n, height, width = labels.shape
    padding = (radius, radius, radius, radius)
    labels_padded, ids_padded = F.pad(labels, padding), F.pad(panoptic.long(), padding)
    inside = F.pad(torch.ones_like(labels, dtype=torch.bool), padding)
    out = taps.new_zeros(n, height, width, taps.shape[-1])
    count = torch.zeros(n, height, width, dtype=taps.dtype, device=labels.device)
    for tap in range(kernel_size * kernel_size):
        dy, dx = divmod(tap, kernel_size)
        window = (slice(None), slice(dy, dy + height), slice(dx, dx + width))
        same = inside[window] & (ids_padded[window] == panoptic)  # M_t (eq. 1)
        neighbour = labels_padded[window]
        # An unknown neighbour (label -1) has a zero one-hot vector: it adds nothing, but counts in M.
        seen = (same & (neighbour >= 0)).to(taps.dtype)
        out = out + F.embedding(neighbour.clamp(min=0), taps[tap]) * seen.unsqueeze(-1)
        count = count + same.to(taps.dtype)
    out = out * (kernel_size * kernel_size / count).unsqueeze(-1)
    if bias is not None:
        out = out + bias
    return out.permute(0, 3, 1, 2)


class PanopticConv2d(nn.Module):
    """Panoptic-aware partial convolution layer (paper section 3.1).

    Holds the weights; the math is :func:`panoptic_conv2d`. When the panoptic map given
    to ``forward`` is larger than the features by an integer stride s, it is reduced by
    nearest neighbour (``P[..., ::s, ::s]``), as the generator feeds the full-resolution map.

    Args:
        in_channels: C.
        out_channels: O.
        kernel_size: odd k (3 in the generator).
        bias: learn an additive bias.
        backend: engine of :func:`panoptic_conv2d` (``"auto"``, ``"triton"`` or ``"torch"``).

    Example:
        >>> conv = PanopticConv2d(4, 8, 3)
        >>> conv(torch.randn(2, 4, 16, 16), torch.randint(0, 3, (2, 32, 32))).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True, backend: Backend = "auto"
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto', 'triton', 'torch' or 'graph', got {backend!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same initialisation as nn.Conv2d.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def _panoptic_at(self, panoptic: Tensor, size: tuple[int, int]) -> Tensor:
        check_map(panoptic, "panoptic")
        if tuple(panoptic.shape[-2:]) == tuple(size):
            return panoptic
        stride = map_stride(panoptic.shape[-2:], size, "panoptic map")
        return panoptic[..., :: stride[0], :: stride[1]]

    def forward(self, input: Tensor, panoptic: Tensor, plan: ConvPlan | MaskPlan | None = None) -> Tensor:
        """input (Tensor[N, C, H, W]), panoptic (Tensor[N, sH, sW]) -> Tensor[N, O, H, W].

        ``plan`` is the engine's plan (:func:`conv_plan` or :func:`~pansynth.ops.masks.mask_plan`)
        of the map at the input's resolution (``P[..., ::s, ::s]``) for this kernel size, shared
        with the other layers fed that map.
        """
        panoptic = self._panoptic_at(panoptic, input.shape[-2:])
        return panoptic_conv2d(input, panoptic, self.weight, self.bias, plan=plan, backend=self.backend)

    def forward_labels(
        self,
        labels: Tensor,
        panoptic: Tensor,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Apply the layer to the one-hot encoding of ``labels`` without building it.

        ``labels`` (Tensor[N, H, W]) are class indices; with ``num_classes`` they are checked
        and ``ignore_index`` is mapped to the extra last channel (see ``semantic_to_index``).
        ``positions`` (Tensor[n, 3]) restricts the computation to those pixels.
        """
        if num_classes is not None:
            labels = semantic_to_index(labels, num_classes, ignore_index)
        panoptic = self._panoptic_at(panoptic, labels.shape[-2:])
        return panoptic_conv2d_labels(labels, panoptic, self.weight, self.bias, positions)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"bias={self.bias is not None}, backend={self.backend!r}"
        )
