"""Panoptic-aware partial convolution (Dundar et al., CVPR 2020, eq. 1-2).

For every output pixel p with window W(p) (k x k, stride 1, "same" zero padding)::

    M_q = 1 if q lies inside the image and P[q] == P[p], else 0          (eq. 1)
    x'_p = W^T (X ⊙ M) * k² / sum(M) + b                                   (eq. 2)

sum(M) >= 1 always holds because the centre matches itself, so the "else 0" branch
of eq. 2 never triggers for a same-padded, stride-1 convolution.

Implementation. The arithmetic is that of a plain convolution: M differs from the
all-ones window only where the window crosses a segment boundary or the image border
("irregular" pixels, 5-15% of a 128x256 map of a real scene). So the forward pass runs
one dense ``conv2d``, subtracts at the irregular pixels what the masked-out window
positions added (tap by tap, as small gathered matrix products) and rescales them by
k²/sum(M). The backward pass corrects the dense input- and weight-gradient
convolutions the same way. On small maps, where most windows are irregular, every
window is computed from its mask instead (a masked im2col and one batched matrix
product). A custom autograd function saves only the input, the weight and the ids,
so the memory kept for backward is that of ``conv2d`` plus the id map.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pansynth.ops.maps import check_map, map_stride, pad_map, semantic_to_index

__all__ = ["panoptic_conv2d", "panoptic_conv2d_labels", "PanopticConv2d", "irregular_pixels", "window_masks"]


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


def irregular_pixels(panoptic: Tensor, kernel_size: int) -> Tensor:
    """Pixels whose k x k window is not a full, single-segment window.

    These are the only pixels where eq. 2 differs from a plain convolution: their
    window holds another id, or reaches outside the image (sum(M) < k²).

    Args:
        panoptic (Tensor[N, H, W]): integer ids.

    Returns:
        Tensor[N, H, W] bool.
    """
    radius = kernel_size // 2
    n, height, width = panoptic.shape
    irregular = torch.zeros(n, height, width, dtype=torch.bool, device=panoptic.device)
    if radius == 0:
        return irregular
    irregular[:, :radius] = True
    irregular[:, height - radius :] = True
    irregular[:, :, :radius] = True
    irregular[:, :, width - radius :] = True
    # The relation "q is in the window of p and has another id" is symmetric: half of
    # the offsets suffice, each marking both pixels of a differing pair.
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx <= 0:
                continue
            rows, rows_shifted = slice(0, height - dy), slice(dy, height)
            cols, cols_shifted = slice(max(0, -dx), width - max(0, dx)), slice(max(0, dx), width - max(0, -dx))
            differ = panoptic[:, rows, cols] != panoptic[:, rows_shifted, cols_shifted]
            irregular[:, rows, cols] |= differ
            irregular[:, rows_shifted, cols_shifted] |= differ
    return irregular


def window_masks(panoptic: Tensor, kernel_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """The masks M of eq. 1 for every window, as dense maps.

    Returns:
        ``(same, count, boundary)``: ``same`` (Tensor[N, k*k, H, W] bool) is M for the window
        centred at each pixel, offsets in kernel row-major order; ``count`` (Tensor[N, 1, H, W])
        is sum(M); ``boundary`` (Tensor[N, H, W] bool) marks windows holding another id inside
        the image.
    """
    radius = kernel_size // 2
    # (N, H, W, k, k) views of every window, without copies.
    windows = pad_map(panoptic, radius).unfold(1, kernel_size, 1).unfold(2, kernel_size, 1)
    inside = pad_map(torch.ones_like(panoptic, dtype=torch.bool), radius)
    inside = inside.unfold(1, kernel_size, 1).unfold(2, kernel_size, 1)
    equal = windows == panoptic[..., None, None]
    same = (equal & inside).flatten(3)
    boundary = (inside & ~equal).flatten(3).any(-1)
    same = same.permute(0, 3, 1, 2).contiguous()
    return same, same.sum(1, keepdim=True), boundary


class _SparseWindows:
    """The windows of the irregular pixels of one image, as flat indices.

    Attributes:
        pixels (Tensor[n]): flat indices y * W + x of the irregular pixels (sorted).
        neighbours (Tensor[n, k*k]): flat indices of their window positions (clamped).
        inside (Tensor[n, k*k] bool): window position lies inside the image.
        same (Tensor[n, k*k] bool): the mask M of eq. 1.
        count (Tensor[n]): sum(M).
    """

    def __init__(self, panoptic: Tensor, pixels: Tensor, radius: int) -> None:
        height, width = panoptic.shape
        self.pixels = pixels
        ys, xs = self.pixels // width, self.pixels % width
        offsets = torch.arange(-radius, radius + 1, device=panoptic.device)
        rows, cols = ys[:, None] + offsets, xs[:, None] + offsets
        size = 2 * radius + 1
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        self.inside = inside.reshape(len(self.pixels), size * size)
        flat = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
        self.neighbours = flat.reshape(len(self.pixels), size * size)
        ids = panoptic.reshape(-1)
        self.same = self.inside & (ids[self.neighbours] == ids[self.pixels][:, None])
        self.window_size = size * size
        self.count = self.same.sum(1)
        self._excluded: list[tuple[int, Tensor]] | None = None

    def scale(self, dtype: torch.dtype) -> Tensor:
        """k² / sum(M) per irregular pixel (Tensor[n])."""
        return self.window_size / self.count.to(dtype)

    def excluded(self) -> list[tuple[int, Tensor]]:
        """(tap t, rows) pairs: the rows (into ``pixels``) whose window position t lies inside
        the image but holds another id, i.e. what a dense convolution adds and eq. 2 does not."""
        if self._excluded is None:
            excluded = self.inside & ~self.same
            self._excluded = []
            for t in range(self.window_size):
                rows = excluded[:, t].nonzero().squeeze(1)
                if len(rows):
                    self._excluded.append((t, rows))
        return self._excluded


def _excluded_sums(windows: _SparseWindows, values: Tensor, taps: Tensor, dtype: torch.dtype) -> Tensor:
    """What the masked-out window positions add to a dense convolution at the irregular pixels.

    Args:
        values (Tensor[C, H*W]): the convolved map of one image.
        taps (Tensor[k*k, O, C]): the kernel, one (O, C) matrix per window position.

    Returns:
        Tensor[O, n]: sum over excluded positions t of taps[t] @ values[:, neighbour_t].
    """
    sums = values.new_zeros(len(windows.pixels), taps.shape[1], dtype=dtype)
    for t, rows in windows.excluded():
        neighbours = values.index_select(1, windows.neighbours[rows, t]).to(dtype)
        # Rows of (n, O) are contiguous: index_add_ along dim 0 is much faster than along dim 1.
        sums.index_add_(0, rows, neighbours.t() @ taps[t].t().to(dtype))
    return sums.t()


def _image_windows(panoptic: Tensor, irregular: Tensor, kernel_size: int) -> list[_SparseWindows]:
    """The windows of the irregular pixels, per image."""
    return [
        _SparseWindows(panoptic[b], irregular[b].reshape(-1).nonzero().squeeze(1), kernel_size // 2)
        for b in range(panoptic.shape[0])
    ]


# Above this share of irregular pixels (small maps, where the border band and the
# segment boundaries cover most windows) every window is computed from its mask
# instead of running the dense convolution and then correcting most of it.
FULL_RECOMPUTE_SHARE = 0.5
# Maps up to this many pixels get their masks in one batched pass (few, larger operations);
# larger ones first look for the irregular pixels with cheaper shifted comparisons.
SMALL_MAP_PIXELS = 4096


def _use_full_recompute(irregular: Tensor) -> bool:
    return irregular.numel() > 0 and irregular.float().mean().item() > FULL_RECOMPUTE_SHARE


class _Plan:
    """How eq. 2 is computed for one panoptic map and kernel size: every window from its
    mask (``full``, with the dense masks) or dense conv + corrections (``windows`` per image)."""

    def __init__(self, panoptic: Tensor, kernel_size: int) -> None:
        small = panoptic.shape[1] * panoptic.shape[2] <= SMALL_MAP_PIXELS
        if small:
            # Small maps: one batched pass gives the masks and the choice of strategy.
            same, count, _ = window_masks(panoptic, kernel_size)
            irregular = count[:, 0] < kernel_size * kernel_size
        else:
            irregular = irregular_pixels(panoptic, kernel_size)
        self.full = _use_full_recompute(irregular)
        self.same = self.count = self.windows = None
        if self.full:
            if not small:
                same, count, _ = window_masks(panoptic, kernel_size)
            self.same, self.count = same, count
        else:
            self.windows = _image_windows(panoptic, irregular, kernel_size)


# The layers of a generator block, and the backward pass, see the same panoptic map (views of
# one tensor): their plan is computed once. A cache entry holds the map itself, so that its
# memory cannot be reused by another tensor while the entry lives; the version counter
# catches in-place changes.
_PLAN_CACHE: OrderedDict[tuple, tuple[Tensor, _Plan]] = OrderedDict()
_PLAN_CACHE_SIZE = 8


def _plan_for(panoptic: Tensor, kernel_size: int) -> _Plan:
    key = (
        panoptic.device, panoptic.dtype, panoptic.untyped_storage().data_ptr(), panoptic.storage_offset(),
        tuple(panoptic.shape), panoptic.stride(), panoptic._version, kernel_size,
        FULL_RECOMPUTE_SHARE, SMALL_MAP_PIXELS,
    )
    entry = _PLAN_CACHE.get(key)
    if entry is not None:
        _PLAN_CACHE.move_to_end(key)
        return entry[1]
    plan = _Plan(panoptic, kernel_size)
    _PLAN_CACHE[key] = (panoptic, plan)
    while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
        _PLAN_CACHE.popitem(last=False)
    return plan


def _autocast_state(device_type: str) -> dict:
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device-type argument
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    if not enabled:
        return {"enabled": False}
    return {"enabled": True, "dtype": torch.get_autocast_dtype(device_type)}


class _PanopticConv2dFunction(torch.autograd.Function):
    """Eq. 2 with a hand-written backward; saves only the input, the ids and the weight."""

    @staticmethod
    def forward(ctx, input: Tensor, panoptic: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        kernel_size = weight.shape[-1]
        plan = _plan_for(panoptic, kernel_size)
        ctx.autocast = _autocast_state(input.device.type)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, panoptic, weight)
        if plan.full:
            dtype = ctx.autocast["dtype"] if ctx.autocast["enabled"] else input.dtype
            return _full_forward(input, plan.same, plan.count, weight, bias, dtype)
        return _sparse_forward(input, plan.windows, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        input, panoptic, weight = ctx.saved_tensors
        need_input, _, need_weight, need_bias = ctx.needs_input_grad
        grad_bias = grad_output.sum((0, 2, 3)).to(weight.dtype) if ctx.has_bias and need_bias else None
        dtype = ctx.autocast["dtype"] if ctx.autocast["enabled"] else grad_output.dtype
        with torch.autocast(input.device.type, **ctx.autocast):
            plan = _plan_for(panoptic, weight.shape[-1])
            backward = _full_backward if plan.full else _sparse_backward
            grad_input, grad_weight = backward(
                grad_output.to(dtype), input.to(dtype), plan, weight.to(dtype), need_input, need_weight
            )
        if grad_input is not None:
            grad_input = grad_input.to(input.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_input, None, grad_weight, grad_bias


# --- every window from its mask, batched (small maps) --------------------------------------


def _masked_columns(values: Tensor, same: Tensor, kernel_size: int) -> Tensor:
    """im2col of values (Tensor[N, C, H, W]) times the masks: Tensor[N, C*k*k, H*W]."""
    n, channels = values.shape[:2]
    columns = F.unfold(values, kernel_size, padding=kernel_size // 2)
    columns = columns.view(n, channels, kernel_size * kernel_size, -1) * same.flatten(2).unsqueeze(1)
    return columns.view(n, channels * kernel_size * kernel_size, -1)


def _full_forward(input, same, count, weight, bias, dtype) -> Tensor:
    kernel_size = weight.shape[-1]
    columns = _masked_columns(input.to(dtype), same.to(dtype), kernel_size)
    output = weight.reshape(weight.shape[0], -1).to(dtype) @ columns  # (N, O, H*W)
    output = output.view(*output.shape[:2], *input.shape[2:]) * (kernel_size * kernel_size / count.to(dtype))
    return output if bias is None else output + bias.to(dtype).view(1, -1, 1, 1)


def _full_backward(grad_output, input, plan, weight, need_input, need_weight):
    kernel_size = weight.shape[-1]
    same, count = plan.same.to(grad_output.dtype), plan.count
    grad_scaled = (grad_output * (kernel_size * kernel_size / count.to(grad_output.dtype))).flatten(2)
    weight_matrix = weight.reshape(weight.shape[0], -1)
    grad_input = grad_weight = None
    if need_input:
        grad_columns = _masked_columns_t(weight_matrix.t() @ grad_scaled, same, kernel_size)
        grad_input = F.fold(grad_columns, input.shape[2:], kernel_size, padding=kernel_size // 2)
    if need_weight:
        columns = _masked_columns(input, same, kernel_size)
        grad_weight = (grad_scaled @ columns.transpose(1, 2)).sum(0).view_as(weight)
    return grad_input, grad_weight


def _masked_columns_t(columns: Tensor, same: Tensor, kernel_size: int) -> Tensor:
    """columns (Tensor[N, C*k*k, H*W]) times the masks, in place."""
    n = columns.shape[0]
    view = columns.view(n, -1, kernel_size * kernel_size, columns.shape[-1])
    view.mul_(same.flatten(2).unsqueeze(1))
    return columns


# --- dense convolution + exact corrections at the irregular pixels (large maps) -------------


def _sparse_forward(input, image_windows, weight, bias) -> Tensor:
    kernel_size = weight.shape[-1]
    out_channels, in_channels = weight.shape[:2]
    output = F.conv2d(input, weight, bias, padding=kernel_size // 2)
    weight_taps = weight.flatten(2).permute(2, 0, 1)  # (k*k, O, C)
    for b, windows in enumerate(image_windows):
        if len(windows.pixels) == 0:
            continue
        output_b, input_b = output[b].view(out_channels, -1), input[b].reshape(in_channels, -1)
        # Remove from the dense sums what the masked-out positions added, tap by tap (at a
        # boundary pixel only a few of the k*k positions are masked out), then rescale.
        exact = output_b.index_select(1, windows.pixels)
        exact = exact - _excluded_sums(windows, input_b, weight_taps, exact.dtype)
        if bias is not None:
            exact = exact - bias.to(exact.dtype)[:, None]
        exact = exact * windows.scale(exact.dtype)
        if bias is not None:
            exact = exact + bias.to(exact.dtype)[:, None]
        output_b.index_copy_(1, windows.pixels, exact)
    return output


def _sparse_backward(grad_output, input, plan, weight, need_input, need_weight):
    kernel_size = weight.shape[-1]
    radius = kernel_size // 2
    out_channels, in_channels = weight.shape[:2]
    image_windows = plan.windows
    # Output pixel p received k²/sum(M_p) times its masked sum: scale its gradient likewise.
    grad_scaled = grad_output.contiguous(memory_format=torch.contiguous_format).clone()
    for b, windows in enumerate(image_windows):
        grad_b = grad_scaled[b].view(out_channels, -1)
        grad_b.index_copy_(1, windows.pixels, grad_b.index_select(1, windows.pixels) * windows.scale(grad_b.dtype))
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_scaled, input, weight, None, [1, 1], [radius, radius], [1, 1], False, [0, 0], 1,
        [need_input, need_weight, False],
    )
    weight_taps = weight.flatten(2).permute(2, 0, 1)  # (k*k, O, C)
    flipped_taps = weight_taps.flip(0).transpose(1, 2)  # (k*k, C, O): the transposed conv's taps
    weight_corrections = torch.zeros_like(weight_taps)
    for b, windows in enumerate(image_windows):
        if len(windows.pixels) == 0:
            continue
        grad_b = grad_scaled[b].view(out_channels, -1)
        # The window relation is symmetric (q in the window of p iff p in the window of q, and
        # M_p(q) = M_q(p)): the excluded pairs of the forward pass carry every correction.
        if need_input:
            # Pixel q received from p = q + d_t through tap -d_t, i.e. the flipped taps.
            grad_input_b = grad_input[b].view(in_channels, -1)
            excluded = _excluded_sums(windows, grad_b, flipped_taps, grad_input_b.dtype)
            grad_input_b.index_copy_(1, windows.pixels, grad_input_b.index_select(1, windows.pixels) - excluded)
        if need_weight:
            input_b = input[b].reshape(in_channels, -1)
            for t, rows in windows.excluded():
                neighbours = input_b.index_select(1, windows.neighbours[rows, t])
                weight_corrections[t] += grad_b.index_select(1, windows.pixels[rows]) @ neighbours.t()
    if need_weight:
        grad_weight = grad_weight - weight_corrections.permute(1, 2, 0).reshape_as(grad_weight)
    return grad_input, grad_weight


def panoptic_conv2d(
    input: Tensor,
    panoptic: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    padding: int | None = None,
) -> Tensor:
    """Panoptic-aware partial convolution (paper eq. 1-2), stride 1, same padding.

    A window only sees the pixels whose panoptic id equals the id of its centre; the
    result is rescaled by k²/sum(M) (positions outside the image count in k² but are
    masked out), then the bias is added. A 1x1 kernel equals a plain convolution.

    Args:
        input (Tensor[N, C, H, W]): features (float32/float64; half precision under CUDA autocast).
        panoptic (Tensor[N, H, W]): integer ids (any int64 values, not necessarily contiguous).
        weight (Tensor[O, C, k, k]): filter with an odd kernel size k.
        bias (Tensor[O], optional): added after the rescaling.
        padding: must be ``k // 2`` (the default) when given.

    Returns:
        Tensor[N, O, H, W]

    Example:
        >>> x = torch.randn(1, 4, 8, 8)
        >>> ids = torch.zeros(1, 8, 8, dtype=torch.long); ids[:, :, 4:] = 7
        >>> panoptic_conv2d(x, ids, torch.randn(6, 4, 3, 3)).shape
        torch.Size([1, 6, 8, 8])
    """
    _check_conv_args(input, panoptic, weight, bias, padding)
    if weight.shape[-1] == 1:
        return F.conv2d(input, weight, bias)
    return _PanopticConv2dFunction.apply(input, panoptic, weight, bias)


def panoptic_conv2d_labels(
    labels: Tensor,
    panoptic: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    positions: Tensor | None = None,
) -> Tensor:
    """Panoptic-aware convolution of a one-hot map, computed as an embedding lookup.

    Equals ``panoptic_conv2d(one_hot(labels), panoptic, weight, bias)`` exactly, but costs
    k*k*O per pixel instead of k*k*K*O: with a one-hot input, W^T (X ⊙ M) is a sum of
    the weight columns of the classes seen in the window. With ``positions`` it is
    computed only at those pixels (the hole-filling layer needs it at unmatched pixels only).

    Args:
        labels (Tensor[N, H, W]): channel indices in ``[0, K)`` (see ``semantic_to_index``).
        panoptic (Tensor[N, H, W]): integer ids.
        weight (Tensor[O, K, k, k]): filter with an odd kernel size.
        bias (Tensor[O], optional)
        positions (Tensor[n, 3], optional): (batch, y, x) of the pixels to compute.

    Returns:
        Tensor[N, O, H, W], or Tensor[n, O] when ``positions`` is given.
    """
    check_map(labels, "labels")
    check_map(panoptic, "panoptic")
    if labels.shape != panoptic.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and panoptic {tuple(panoptic.shape)} differ in shape")
    out_channels, num_labels, kernel_size, kernel_w = weight.shape
    if kernel_size != kernel_w or kernel_size % 2 == 0:
        raise ValueError(f"the kernel must be square with an odd size, got {kernel_size}x{kernel_w}")
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
        raise ValueError(f"labels must lie in [0, {num_labels - 1}] for a weight with {num_labels} input channels")
    radius = kernel_size // 2
    n, height, width = labels.shape
    dense = positions is None
    if dense:
        positions = torch.ones(n, height, width, dtype=torch.bool, device=labels.device).nonzero()
    elif positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be (n, 3) rows of (batch, y, x), got {tuple(positions.shape)}")
    # taps[t, label] is the weight column W[:, label, t]: (k*k, K, O)
    taps = weight.permute(2, 3, 1, 0).reshape(kernel_size * kernel_size, num_labels, out_channels)
    tap_index = torch.arange(kernel_size * kernel_size, device=labels.device)
    out = weight.new_empty(len(positions), out_channels)
    for b in range(n):
        rows = (positions[:, 0] == b).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        pixels = positions[rows, 1] * width + positions[rows, 2]
        windows = _SparseWindows(panoptic[b], pixels, radius)
        window_labels = labels[b].reshape(-1)[windows.neighbours]  # (n_b, k*k)
        columns = taps[tap_index, window_labels]  # (n_b, k*k, O)
        values = (columns * windows.same.unsqueeze(-1).to(columns.dtype)).sum(1)
        values = values * windows.scale(values.dtype)[:, None]
        out[rows] = values if bias is None else values + bias
    if dense:
        return out.view(n, height, width, out_channels).permute(0, 3, 1, 2)
    return out


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

    Example:
        >>> conv = PanopticConv2d(4, 8, 3)
        >>> conv(torch.randn(2, 4, 16, 16), torch.randint(0, 3, (2, 32, 32))).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
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

    def forward(self, input: Tensor, panoptic: Tensor) -> Tensor:
        """input (Tensor[N, C, H, W]), panoptic (Tensor[N, sH, sW]) -> Tensor[N, O, H, W]."""
        return panoptic_conv2d(input, self._panoptic_at(panoptic, input.shape[-2:]), self.weight, self.bias)

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
            f"bias={self.bias is not None}"
        )
