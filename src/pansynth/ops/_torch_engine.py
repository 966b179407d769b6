"""The PyTorch engine of the panoptic-aware layers: the CPU path and the reference on every device.

Partial convolution (eq. 1-2). The arithmetic is that of a plain convolution: the mask M
differs from the all-ones window only where the window crosses a segment boundary or the
image border ("irregular" pixels, 5-15% of a 128x256 map of a real scene). So one dense
``conv2d`` is right everywhere else, and only the irregular pixels need more work:

- float64, and float32 where the dense convolution runs at full precision (CPU; CUDA with
  TF32 off): subtract at the irregular pixels what the masked-out window positions added
  (tap by tap, as small gathered matrix products), then rescale by k²/sum(M). The result
  is exact to the dtype's rounding of the dense sums.
- half precision (bf16/fp16) and TF32: subtracting a rounded sum would leave part of a
  louder neighbouring segment in the output (up to 17% of the value with a 100x louder
  neighbour in bf16). Each irregular pixel's window is instead computed from its mask:
  the masked columns gathered at the irregular pixels times the weight, with fp32
  accumulation, written over the dense result. The backward pass is built the same way
  (the dense gradients of the regular pixels plus those of the irregular windows), so
  no feature or gradient of another segment ever enters a sum.

On small maps, where most windows are irregular, every window is computed from its mask
instead (a masked im2col and one batched matrix product).

What is derived from a map (masks, irregular pixels, their windows) is a :class:`ConvPlan`,
built by :func:`conv_plan` and passed down explicitly: once per map and kernel size for
all the layers fed that map. An autograd function keeps the plan for its backward pass
and saves only the input and the weight.

Panoptic upsampling (Algorithm 1) starts from nearest neighbour and rewrites the pixels
whose first candidate does not match.

Both ops are also registered as ``torch.library`` custom ops (``pansynth::...``) so that
``torch.compile`` keeps them in one graph; those build the plan inside the op (a plan is a
Python object, not something a compiled graph can carry).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.ops.maps import check_map, pad_map

__all__ = [
    "CANDIDATES",
    "ConvPlan",
    "conv_plan",
    "conv2d",
    "irregular_pixels",
    "window_masks",
    "upsample",
    "upsample_choices",
]

# Above this share of irregular pixels (small maps, where the border band and the
# segment boundaries cover most windows) every window is computed from its mask
# instead of running the dense convolution and then correcting most of it.
FULL_RECOMPUTE_SHARE = 0.5
# Maps up to this many pixels get their masks in one batched pass (few, larger operations);
# larger ones first look for the irregular pixels with cheaper shifted comparisons.
SMALL_MAP_PIXELS = 4096
# The masked windows of the irregular pixels are gathered in chunks of at most this many
# elements, which bounds the memory they take on large maps with many channels.
GATHER_CHUNK_ELEMENTS = 1 << 24


def memory_format(tensor: Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor stored that way (and not also plainly contiguous), else contiguous."""
    if tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@contextlib.contextmanager
def autocast_off(device_type: str):
    """Run the engine at the dtype of its inputs: the public ops cast them for autocast already."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        enabled = False
    if not enabled:
        yield
        return
    with torch.autocast(device_type, enabled=False):
        yield


def subtraction_is_exact(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether dense sums minus the excluded taps equal eq. 2 to this dtype's rounding.

    True for float64, and for float32 unless the dense products run in TF32 on CUDA.
    In half precision (and TF32) the rounding of a sum that includes a louder neighbour
    survives the subtraction, so the irregular windows are computed from their masks.
    """
    if dtype == torch.float64:
        return True
    if dtype != torch.float32:
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return not (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    return False


# --- masks and the irregular pixels ----------------------------------------------------------


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


class SparseWindows:
    """The windows of some pixels of one image, as flat indices.

    Attributes:
        pixels (Tensor[n]): flat indices y * W + x of the pixels (sorted).
        neighbours (Tensor[n, k*k]): flat indices of their window positions (clamped into the image).
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

    def __len__(self) -> int:
        return len(self.pixels)

    def scale(self, dtype: torch.dtype) -> Tensor:
        """k² / sum(M) per pixel (Tensor[n])."""
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


def _use_full_recompute(irregular: Tensor) -> bool:
    return irregular.numel() > 0 and irregular.float().mean().item() > FULL_RECOMPUTE_SHARE


class ConvPlan:
    """How eq. 2 is computed for one panoptic map and kernel size (built by :func:`conv_plan`).

    Either every window from its mask (``full``: the dense masks ``same`` and their sums
    ``count``), or a dense convolution plus exact work at the irregular pixels (``windows``:
    one :class:`SparseWindows` per image). A plan holds what is derived from the map, not
    the map: it stays right only as long as the map it was built from is not changed.
    """

    def __init__(self, panoptic: Tensor, kernel_size: int) -> None:
        self.shape = tuple(panoptic.shape)
        self.kernel_size = kernel_size
        self.device = panoptic.device
        small = panoptic.shape[1] * panoptic.shape[2] <= SMALL_MAP_PIXELS
        if small:
            # Small maps: one batched pass gives the masks and the choice of strategy.
            same, count, _ = window_masks(panoptic, kernel_size)
            irregular = count[:, 0] < kernel_size * kernel_size
        else:
            irregular = irregular_pixels(panoptic, kernel_size)
        self.full = _use_full_recompute(irregular)
        self.same: Tensor | None = None
        self.count: Tensor | None = None
        self.windows: list[SparseWindows] | None = None
        if self.full:
            if not small:
                same, count, _ = window_masks(panoptic, kernel_size)
            self.same, self.count = same, count
        else:
            radius = kernel_size // 2
            self.windows = [
                SparseWindows(panoptic[b], irregular[b].reshape(-1).nonzero().squeeze(1), radius)
                for b in range(panoptic.shape[0])
            ]

    def check(self, panoptic_shape: tuple[int, ...], kernel_size: int, device: torch.device) -> None:
        """Raise a ValueError unless this plan was built for such a map and kernel size."""
        if tuple(panoptic_shape) != self.shape or kernel_size != self.kernel_size:
            raise ValueError(
                f"plan was built for a {self.shape} map and kernel size {self.kernel_size}, but is used with a "
                f"{tuple(panoptic_shape)} map and kernel size {kernel_size}: build it with conv_plan(panoptic, "
                "kernel_size) from the map the layer is fed"
            )
        if torch.device(device) != self.device:
            raise ValueError(f"plan was built on {self.device} but the input is on {device}")

    def __repr__(self) -> str:
        if self.full:
            detail = "every window from its mask"
        else:
            irregular = sum(len(windows) for windows in self.windows)
            detail = f"dense + {irregular} irregular pixels"
        return f"ConvPlan(shape={self.shape}, kernel_size={self.kernel_size}, {detail})"


def conv_plan(panoptic: Tensor, kernel_size: int = 3) -> ConvPlan:
    """What the PyTorch engine derives from a panoptic map for eq. 1-2, computed once.

    Build it once per map and kernel size, and pass it to every layer fed that map
    (``panoptic_conv2d(..., plan=plan)``, ``PanopticConv2d.forward(x, panoptic, plan)``):
    the generator does this per scale. Without a plan each call builds its own (and keeps
    it for its backward pass). The plan holds the irregular pixels and their masks, not the
    map: build a new one after changing the map. The Triton engine needs no plan.

    Args:
        panoptic (Tensor[N, H, W]): integer ids at the resolution of the features.
        kernel_size: odd k of the layers the plan is for.

    Returns:
        A :class:`ConvPlan`.

    Example:
        >>> ids = torch.zeros(1, 8, 8, dtype=torch.long); ids[:, :, 4:] = 7
        >>> plan = conv_plan(ids, 3)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> panoptic_conv2d(x, ids, torch.randn(6, 4, 3, 3), plan=plan).shape
        torch.Size([1, 6, 8, 8])
    """
    check_map(panoptic, "panoptic")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    with torch.no_grad():
        return ConvPlan(panoptic, kernel_size)


# --- every window from its mask, batched (small maps) -----------------------------------------


def _masked_columns(values: Tensor, same: Tensor, kernel_size: int) -> Tensor:
    """im2col of values (Tensor[N, C, H, W]) times the masks: Tensor[N, C*k*k, H*W]."""
    n, channels = values.shape[:2]
    columns = F.unfold(values, kernel_size, padding=kernel_size // 2)
    columns = columns.view(n, channels, kernel_size * kernel_size, -1) * same.flatten(2).unsqueeze(1)
    return columns.view(n, channels * kernel_size * kernel_size, -1)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Where sums and scale factors are held: float32 for half-precision values, else their own dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _rescale(values: Tensor, window_size: int, count: Tensor) -> Tensor:
    """values * k²/sum(M) (``count`` broadcast against values), rounded once."""
    dtype = accumulation_dtype(values.dtype)
    return (values.to(dtype) * (window_size / count.to(dtype))).to(values.dtype)


def _full_forward(input: Tensor, plan: ConvPlan, weight: Tensor, bias: Tensor | None) -> Tensor:
    kernel_size = weight.shape[-1]
    columns = _masked_columns(input, plan.same.to(input.dtype), kernel_size)
    output = weight.reshape(weight.shape[0], -1) @ columns  # (N, O, H*W)
    output = _rescale(output.view(*output.shape[:2], *input.shape[2:]), kernel_size * kernel_size, plan.count)
    return output if bias is None else output + bias.view(1, -1, 1, 1)


def _full_backward(grad_output, input, plan, weight, need_input, need_weight):
    kernel_size = weight.shape[-1]
    same = plan.same.to(grad_output.dtype)
    grad_scaled = _rescale(grad_output, kernel_size * kernel_size, plan.count).flatten(2)
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


# --- dense convolution + subtraction of the excluded taps (float64, full-precision float32) ---


def _excluded_sums(windows: SparseWindows, values: Tensor, taps: Tensor, dtype: torch.dtype) -> Tensor:
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


def _subtract_forward(input, image_windows, weight, bias) -> Tensor:
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
            exact = exact - bias[:, None]
        exact = exact * windows.scale(exact.dtype)
        if bias is not None:
            exact = exact + bias[:, None]
        output_b.index_copy_(1, windows.pixels, exact)
    return output


def _scaled_grad(grad_output: Tensor, image_windows: list[SparseWindows], fmt: torch.memory_format) -> Tensor:
    """grad_output with the irregular pixels' gradients times k²/sum(M) (a new tensor)."""
    out_channels = grad_output.shape[1]
    grad_scaled = grad_output.clone(memory_format=fmt)
    for b, windows in enumerate(image_windows):
        if len(windows) == 0:
            continue
        grad_b = grad_scaled[b].view(out_channels, -1)
        scaled = _rescale(grad_b.index_select(1, windows.pixels), windows.window_size, windows.count)
        grad_b.index_copy_(1, windows.pixels, scaled)
    return grad_scaled


def _subtract_backward(grad_output, input, plan, weight, need_input, need_weight):
    kernel_size = weight.shape[-1]
    radius = kernel_size // 2
    out_channels, in_channels = weight.shape[:2]
    image_windows = plan.windows
    # Output pixel p received k²/sum(M_p) times its masked sum: scale its gradient likewise.
    grad_scaled = _scaled_grad(grad_output, image_windows, torch.contiguous_format)
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_scaled, input, weight, None, [1, 1], [radius, radius], [1, 1], False, [0, 0], 1,
        [need_input, need_weight, False],
    )  # fmt: skip
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


# --- dense convolution at the regular pixels + masked windows at the irregular ones -----------
# (half precision and TF32: no sum ever holds a term of another segment)


def _tap_major(weight: Tensor) -> Tensor:
    """weight (Tensor[O, C, k, k]) as Tensor[O, k*k*C] with the channel fastest: (tap, channel) columns."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _gather_windows(values: Tensor, neighbours: Tensor, same: Tensor) -> Tensor:
    """The masked windows of some pixels of one image.

    Args:
        values (Tensor[C, H*W]): one image (any strides).
        neighbours (Tensor[n, k*k]), same (Tensor[n, k*k] bool): from :class:`SparseWindows`.

    Returns:
        Tensor[n, k*k*C]: values at each window position, 0 where M is 0 (also for inf/nan there).
    """
    n, taps = neighbours.shape
    channels = values.shape[0]
    if values.stride(0) == 1:  # pixel-major storage (channels_last): gather whole rows
        columns = values.t()[neighbours]  # (n, k*k, C)
    else:
        columns = values.index_select(1, neighbours.reshape(-1)).t().reshape(n, taps, channels)
    return columns.masked_fill(~same[..., None], 0).reshape(n, taps * channels)


def _chunks(windows: SparseWindows, row_elements: int):
    step = max(1, GATHER_CHUNK_ELEMENTS // max(1, row_elements))
    for start in range(0, len(windows), step):
        yield slice(start, min(start + step, len(windows)))


def _masked_forward(input, image_windows, weight, bias) -> Tensor:
    kernel_size = weight.shape[-1]
    out_channels, in_channels = weight.shape[:2]
    output = F.conv2d(input, weight, bias, padding=kernel_size // 2)
    weight_matrix = _tap_major(weight).t()  # (k*k*C, O)
    accumulate = accumulation_dtype(input.dtype)
    for b, windows in enumerate(image_windows):
        output_b, input_b = output[b].view(out_channels, -1), input[b].reshape(in_channels, -1)
        for rows in _chunks(windows, weight_matrix.shape[0]):
            columns = _gather_windows(input_b, windows.neighbours[rows], windows.same[rows])
            exact = (columns @ weight_matrix).to(accumulate) * windows.scale(accumulate)[rows, None]  # (n, O)
            if bias is not None:
                exact = exact + bias.to(accumulate)
            output_b.index_copy_(1, windows.pixels[rows], exact.to(output.dtype).t())
    return output


def _masked_backward(grad_output, input, plan, weight, need_input, need_weight):
    kernel_size = weight.shape[-1]
    radius = kernel_size // 2
    out_channels, in_channels = weight.shape[:2]
    image_windows = plan.windows
    grad_scaled = _scaled_grad(grad_output, image_windows, memory_format(input))
    # Regular output pixels: their whole window is inside the image and of their own segment,
    # so the dense gradients restricted to them are exact. The irregular ones are added below.
    grad_regular = grad_scaled.clone()
    for b, windows in enumerate(image_windows):
        grad_regular[b].view(out_channels, -1).index_fill_(1, windows.pixels, 0)
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_regular, input, weight, None, [1, 1], [radius, radius], [1, 1], False, [0, 0], 1,
        [need_input, need_weight, False],
    )  # fmt: skip
    weight_matrix = _tap_major(weight)  # (O, k*k*C)
    accumulate = accumulation_dtype(input.dtype)
    weight_sum = torch.zeros(weight_matrix.shape, dtype=accumulate, device=weight.device) if need_weight else None
    for b, windows in enumerate(image_windows):
        grad_b, input_b = grad_scaled[b].view(out_channels, -1), input[b].reshape(in_channels, -1)
        for rows in _chunks(windows, weight_matrix.shape[1]):
            neighbours, same = windows.neighbours[rows], windows.same[rows]
            grad_rows = grad_b.index_select(1, windows.pixels[rows])  # (O, n)
            if need_weight:
                weight_sum += (grad_rows @ _gather_windows(input_b, neighbours, same)).to(accumulate)
            if need_input:
                # Each irregular window sends W^T g to the positions of its own segment only.
                spread = (grad_rows.t() @ weight_matrix).view(len(neighbours), -1, in_channels)
                spread = spread.masked_fill(~same[..., None], 0).view(-1, in_channels)  # (n*k*k, C)
                grad_input_b = grad_input[b].view(in_channels, -1)
                if grad_input_b.stride(0) == 1:
                    grad_input_b.t().index_add_(0, neighbours.reshape(-1), spread)
                else:
                    grad_input_b.index_add_(1, neighbours.reshape(-1), spread.t())
    if need_weight:
        irregular = weight_sum.view(out_channels, kernel_size, kernel_size, in_channels).permute(0, 3, 1, 2)
        grad_weight = (grad_weight.to(accumulate) + irregular).to(weight.dtype)
    return grad_input, grad_weight


# --- the op: forward, backward, autograd function, custom op -----------------------------------


def conv2d_forward(input: Tensor, weight: Tensor, bias: Tensor | None, plan: ConvPlan) -> Tensor:
    """Eq. 2 at the dtype of ``input`` (weight and bias of the same dtype), in its memory format."""
    with autocast_off(input.device.type):
        if plan.full:
            output = _full_forward(input, plan, weight, bias)
        elif subtraction_is_exact(input.dtype, input.device):
            output = _subtract_forward(input, plan.windows, weight, bias)
        else:
            output = _masked_forward(input, plan.windows, weight, bias)
    return output.contiguous(memory_format=memory_format(input))


def conv2d_backward(
    grad_output: Tensor, input: Tensor, weight: Tensor, plan: ConvPlan, need_input: bool, need_weight: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of eq. 2 with respect to the input and the weight (None where not needed)."""
    grad_output = grad_output.to(input.dtype)
    with autocast_off(input.device.type):
        if plan.full:
            backward = _full_backward
        elif subtraction_is_exact(input.dtype, input.device):
            backward = _subtract_backward
        else:
            backward = _masked_backward
        grad_input, grad_weight = backward(grad_output, input, plan, weight, need_input, need_weight)
    if grad_input is not None:
        grad_input = grad_input.contiguous(memory_format=memory_format(input))
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype).contiguous()
    return grad_input, grad_weight


class PanopticConv2dFunction(torch.autograd.Function):
    """Eq. 2 with a hand-written backward; keeps the plan and saves only the input and the weight."""

    @staticmethod
    def forward(ctx, input: Tensor, weight: Tensor, bias: Tensor | None, plan: ConvPlan) -> Tensor:
        ctx.plan = plan
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, weight)
        return conv2d_forward(input, weight, bias, plan)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        input, weight = ctx.saved_tensors
        need_input, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_bias = grad_output.sum((0, 2, 3)).to(weight.dtype) if ctx.has_bias and need_bias else None
        grad_input, grad_weight = conv2d_backward(grad_output, input, weight, ctx.plan, need_input, need_weight)
        return grad_input, grad_weight, grad_bias, None


@torch.library.custom_op(
    "pansynth::panoptic_conv2d_torch",
    mutates_args=(),
    schema="(Tensor input, Tensor panoptic, Tensor weight, Tensor? bias) -> Tensor",
)
def _conv2d_op(input: Tensor, panoptic: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return conv2d_forward(input, weight, bias, ConvPlan(panoptic, weight.shape[-1]))


@_conv2d_op.register_fake
def _(input, panoptic, weight, bias):
    shape = (input.shape[0], weight.shape[0], *input.shape[2:])
    return input.new_empty(shape).contiguous(memory_format=memory_format(input))


@torch.library.custom_op(
    "pansynth::panoptic_conv2d_torch_backward",
    mutates_args=(),
    schema=(
        "(Tensor grad_output, Tensor input, Tensor panoptic, Tensor weight, bool need_input, bool need_weight)"
        " -> (Tensor, Tensor)"
    ),
)
def _conv2d_backward_op(grad_output, input, panoptic, weight, need_input, need_weight):
    # A compiled graph cannot carry the plan from the forward op: it is built again here.
    plan = ConvPlan(panoptic, weight.shape[-1])
    grad_input, grad_weight = conv2d_backward(grad_output, input, weight, plan, need_input, need_weight)
    # A custom op returns tensors: an empty one stands for a gradient that was not asked for.
    return (
        grad_input if grad_input is not None else input.new_empty(0),
        grad_weight if grad_weight is not None else weight.new_empty(0),
    )


@_conv2d_backward_op.register_fake
def _(grad_output, input, panoptic, weight, need_input, need_weight):
    grad_input = input.new_empty(input.shape if need_input else (0,))
    if need_input:
        grad_input = grad_input.contiguous(memory_format=memory_format(input))
    return grad_input, weight.new_empty(weight.shape if need_weight else (0,))


def _conv2d_setup_context(ctx, inputs, output) -> None:
    input, panoptic, weight, bias = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, panoptic, weight)


def _conv2d_op_backward(ctx, grad_output):
    input, panoptic, weight = ctx.saved_tensors
    need_input, _, need_weight, need_bias = ctx.needs_input_grad
    grad_input = grad_weight = grad_bias = None
    if need_input or need_weight:
        grad_input, grad_weight = torch.ops.pansynth.panoptic_conv2d_torch_backward(
            grad_output, input, panoptic, weight, need_input, need_weight
        )
    if ctx.has_bias and need_bias:
        grad_bias = grad_output.sum((0, 2, 3)).to(weight.dtype)
    return grad_input if need_input else None, None, grad_weight if need_weight else None, grad_bias


_conv2d_op.register_autograd(_conv2d_op_backward, setup_context=_conv2d_setup_context)


def _needs_graph(*tensors: Tensor | None) -> bool:
    """Whether autograd records this call (else the autograd function's overhead is skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def conv2d(input: Tensor, panoptic: Tensor, weight: Tensor, bias: Tensor | None, plan: ConvPlan | None) -> Tensor:
    """Eq. 1-2 on the PyTorch engine (checked arguments of one dtype; kernel size > 1).

    Eager calls run the autograd function with the given plan (or one built here and kept
    for the backward pass). While ``torch.compile`` traces, the custom op is used instead.
    """
    if torch.compiler.is_compiling():
        return torch.ops.pansynth.panoptic_conv2d_torch(input, panoptic, weight, bias)
    kernel_size = weight.shape[-1]
    if plan is None:
        plan = conv_plan(panoptic, kernel_size)
    else:
        plan.check(panoptic.shape, kernel_size, input.device)
    if not _needs_graph(input, weight, bias):
        return conv2d_forward(input, weight, bias, plan)
    return PanopticConv2dFunction.apply(input, weight, bias, plan)


# --- panoptic upsampling (Algorithm 1) ---------------------------------------------------------

# Candidate offsets (row, column) in the order of Algorithm 1's four loops.
CANDIDATES = ((0, 0), (0, 1), (1, 0), (1, 1))
HOLE = len(CANDIDATES)


def upsample_choices(panoptic_low: Tensor, panoptic_high: Tensor) -> Tensor:
    """Index into ``CANDIDATES`` of the first candidate with the pixel's id, ``HOLE`` where none
    (Tensor[N, 2h, 2w] uint8) for checked maps of shapes (N, h, w) and (N, 2h, 2w)."""
    n, low_h, low_w = panoptic_low.shape
    # Work on 2x2 blocks: block (r, c) of the high map holds the pixels whose candidates
    # are low[r + dr, c + dc]; all comparisons are on strided views, without copies.
    blocks = panoptic_high.view(n, low_h, 2, low_w, 2)
    choice = torch.full(blocks.shape, HOLE, dtype=torch.uint8, device=panoptic_low.device)
    # Later candidates are written first so that earlier ones take precedence.
    for k in reversed(range(len(CANDIDATES))):
        d_row, d_col = CANDIDATES[k]
        candidate = panoptic_low[:, d_row:, d_col:, None, None].transpose(2, 3)  # (N, h', 1, w', 1)
        region = (slice(None), slice(0, low_h - d_row), slice(None), slice(0, low_w - d_col), slice(None))
        choice[region].masked_fill_(blocks[region] == candidate, k)
    return choice.view(n, 2 * low_h, 2 * low_w)


def _candidate_offsets(low_w: int, device: torch.device) -> Tensor:
    """Flat offset of each candidate from the nearest-neighbour source; holes read the nearest."""
    return torch.tensor([d_row * low_w + d_col for d_row, d_col in CANDIDATES] + [0], device=device)


def _rewritten(choice_b: Tensor, low_w: int, offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pixels of one image that do not copy their nearest neighbour: (pixels, sources, hole)."""
    pixels = (choice_b != 0).nonzero().squeeze(1)
    chosen = choice_b[pixels].long()
    nearest = (pixels // (4 * low_w)) * low_w + (pixels % (2 * low_w)) // 2  # r * w + c
    return pixels, nearest + offsets[chosen], chosen == HOLE


def upsample_forward(features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1: (upsampled (Tensor[N, C, 2h, 2w], 0 at holes), choice (Tensor[N, 2h, 2w] uint8))."""
    n, channels, low_h, low_w = features.shape
    choice = upsample_choices(panoptic_low, panoptic_high)
    # Nearest neighbour is right wherever the first candidate matched; only the other
    # pixels (misaligned or holes, a small share) are gathered or zeroed.
    upsampled = F.interpolate(features, scale_factor=2, mode="nearest")
    offsets = _candidate_offsets(low_w, features.device)
    for b in range(n):
        pixels, sources, hole = _rewritten(choice[b].reshape(-1), low_w, offsets)
        if len(pixels) == 0:
            continue
        values = features[b].reshape(channels, -1).index_select(1, sources).masked_fill(hole, 0)
        upsampled[b].view(channels, -1).index_copy_(1, pixels, values)
    return upsampled.contiguous(memory_format=memory_format(features)), choice


def upsample_backward(grad_upsampled: Tensor, choice: Tensor, low_size: tuple[int, int]) -> Tensor:
    """Gradient of :func:`upsample_forward` with respect to the features (Tensor[N, C, h, w])."""
    n, channels = grad_upsampled.shape[:2]
    low_h, low_w = low_size
    # Pixels that copied their nearest neighbour send their gradient back as nearest
    # upsampling does (a sum over the 2x2 block); the others are sent to their source.
    nearest_grad = grad_upsampled.masked_fill((choice != 0).unsqueeze(1), 0)
    # (4 * the mean is the sum exactly: scaling by a power of two does not round.)
    grad = (F.avg_pool2d(nearest_grad, 2) * 4).contiguous(memory_format=memory_format(grad_upsampled))
    offsets = _candidate_offsets(low_w, grad.device)
    for b in range(n):
        pixels, sources, hole = _rewritten(choice[b].reshape(-1), low_w, offsets)
        keep = ~hole
        pixels, sources = pixels[keep], sources[keep]
        if len(pixels) == 0:
            continue
        values = grad_upsampled[b].reshape(channels, -1).index_select(1, pixels)
        grad[b].view(channels, -1).index_add_(1, sources, values)
    return grad


class PanopticUpsampleFunction(torch.autograd.Function):
    """Algorithm 1 with a backward pass that reuses the candidate choice."""

    @staticmethod
    def forward(ctx, features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor):
        upsampled, choice = upsample_forward(features, panoptic_low, panoptic_high)
        ctx.low_size = tuple(features.shape[-2:])
        ctx.save_for_backward(choice)
        ctx.mark_non_differentiable(choice)
        return upsampled, choice

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_upsampled: Tensor, _grad_choice):
        (choice,) = ctx.saved_tensors
        return upsample_backward(grad_upsampled, choice, ctx.low_size), None, None


@torch.library.custom_op(
    "pansynth::panoptic_upsample_torch",
    mutates_args=(),
    schema="(Tensor features, Tensor panoptic_low, Tensor panoptic_high) -> (Tensor, Tensor)",
)
def _upsample_op(features, panoptic_low, panoptic_high):
    return upsample_forward(features, panoptic_low, panoptic_high)


@_upsample_op.register_fake
def _(features, panoptic_low, panoptic_high):
    n, channels, low_h, low_w = features.shape
    upsampled = features.new_empty(n, channels, 2 * low_h, 2 * low_w).contiguous(memory_format=memory_format(features))
    return upsampled, panoptic_high.new_empty(panoptic_high.shape, dtype=torch.uint8)


@torch.library.custom_op(
    "pansynth::panoptic_upsample_torch_backward",
    mutates_args=(),
    schema="(Tensor grad_upsampled, Tensor choice, int low_h, int low_w) -> Tensor",
)
def _upsample_backward_op(grad_upsampled, choice, low_h, low_w):
    return upsample_backward(grad_upsampled, choice, (low_h, low_w))


@_upsample_backward_op.register_fake
def _(grad_upsampled, choice, low_h, low_w):
    n, channels = grad_upsampled.shape[:2]
    grad = grad_upsampled.new_empty(n, channels, low_h, low_w)
    return grad.contiguous(memory_format=memory_format(grad_upsampled))


def _upsample_setup_context(ctx, inputs, output) -> None:
    features = inputs[0]
    ctx.low_size = tuple(features.shape[-2:])
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])


def _upsample_op_backward(ctx, grad_upsampled, _grad_choice):
    (choice,) = ctx.saved_tensors
    grad = torch.ops.pansynth.panoptic_upsample_torch_backward(grad_upsampled, choice, *ctx.low_size)
    return grad, None, None


_upsample_op.register_autograd(_upsample_op_backward, setup_context=_upsample_setup_context)


def upsample(features: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1 on the PyTorch engine (checked arguments): (upsampled, choice)."""
    if torch.compiler.is_compiling():
        return torch.ops.pansynth.panoptic_upsample_torch(features, panoptic_low, panoptic_high)
    if not _needs_graph(features):
        return upsample_forward(features, panoptic_low, panoptic_high)
    return PanopticUpsampleFunction.apply(features, panoptic_low, panoptic_high)
