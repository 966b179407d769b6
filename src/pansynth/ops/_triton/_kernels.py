"""The Triton kernels (imported on the first launch, see ``_launch.py``).

``@triton.jit`` decides when a kernel is *defined* whether it runs compiled (CUDA) or in
the interpreter (``TRITON_INTERPRET=1``, CPU tensors): this module is therefore imported
lazily by the launchers, so that the environment seen by the first launch decides, not
the import order of the library. ``INTERPRET`` records the choice.

The convolution kernels read contiguous NHWC tensors and a per-pixel neighbour mask (k² bits,
see :func:`pansynth.ops.neighbour_mask`) instead of ids; their flat offsets are int32 when every
offset fits (``INT32_OFFSETS``), int64 otherwise (8 x 1024 x 256 x 512 elements exceed 2^31).
The upsampling kernels compare ids as int64. Every dot accumulates in fp32.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

_knobs = getattr(triton, "knobs", None)
INTERPRET = bool(_knobs.runtime.interpret) if _knobs is not None else os.environ.get("TRITON_INTERPRET") == "1"


# --- panoptic partial convolution: forward (eq. 2) and input gradient -------------------------


@triton.jit
def panoptic_conv_kernel(
    x_ptr,  # (N*H*W, C) contiguous (NHWC)
    mask_ptr,  # (N*H*W,) int32: bit t set where tap t's neighbour is inside and of the same id (eq. 1)
    w_ptr,  # (O, k*k*C) contiguous, K-major: column t*C + c, tap t in kernel row-major order
    # (with W_FORWARD_LAYOUT: the forward's (C, k*k*O) rows, read as the flipped, transposed kernel)
    bias_ptr,  # (O,) float32 (read when HAS_BIAS)
    scale_ptr,  # (N*H*W,) float32: k²/sum(M) (read when FORWARD)
    out_ptr,  # (N*H*W, O) contiguous
    H,
    W,
    C,
    O,
    M,  # N*H*W
    KSIZE: tl.constexpr,
    FORWARD: tl.constexpr,  # rescale by k²/sum(M) and add the bias
    HAS_BIAS: tl.constexpr,
    INT32_OFFSETS: tl.constexpr,  # every flat offset fits in int32 (the launcher checks)
    UPCAST: tl.constexpr,  # bf16 -> fp32 before tl.dot (the interpreter's bf16 dot is wrong)
    DOT_PRECISION: tl.constexpr,
    W_FORWARD_LAYOUT: tl.constexpr,  # input gradient: B[(t, c), o] = w[c, (k*k-1-t)*O + o] (N-major)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """out[p] = sum_t M_t(p) x[p + d_t] @ w_t: an implicit GEMM whose A tile is masked on load.

    One software-pipelined loop over (channel block, tap) pairs: the taps are the inner index
    (constexpr divisor), the neighbour of tap t is the flat pixel p + dy*W + dx (rows that
    leave the image have bit t clear), and the mask bits replace any id load.
    Forward: x = input; epilogue * k²/sum(M) + b (eq. 2). Input gradient: x = g~ = grad_output
    * scale (pre-scaled), w = the flipped, transposed kernel; M is symmetric, so the same mask
    computes sum_t M_t(q - d_t) W_t^T g~[q - d_t].
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(O, BLOCK_N)
    # Grouped ordering (Triton matmul tutorial): programs that run together share input rows in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    if INT32_OFFSETS:
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    else:
        rm = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    row_valid = rm < M
    col_valid = rn < O
    bits = tl.load(mask_ptr + rm, mask=row_valid, other=0)
    taps = KSIZE * KSIZE
    row_length = taps * C  # of the K-major weight

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in tl.range(0, tl.cdiv(C, BLOCK_K) * taps, num_stages=NUM_STAGES):
        t = i % taps
        ck = (i // taps) * BLOCK_K + rk
        ck_valid = ck < C
        same = ((bits >> t) & 1) != 0
        neighbour = rm + ((t // KSIZE - KSIZE // 2) * W + (t % KSIZE - KSIZE // 2))
        a = tl.load(
            x_ptr + neighbour[:, None] * C + ck[None, :],
            mask=same[:, None] & ck_valid[None, :],
            other=0.0,
        )
        if W_FORWARD_LAYOUT:
            # The forward's weight rows read in place: contiguous along the output channels (an
            # N-major B tile, which 16-bit wgmma takes as it is), the taps flipped.
            b = tl.load(
                w_ptr + ck[:, None] * (taps * O) + ((taps - 1 - t) * O + rn)[None, :],
                mask=ck_valid[:, None] & col_valid[None, :],
                other=0.0,
            )
        else:
            b = tl.load(
                w_ptr + rn[None, :] * row_length + (t * C + ck)[:, None],
                mask=ck_valid[:, None] & col_valid[None, :],
                other=0.0,
            )
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

    if FORWARD:
        scale = tl.load(scale_ptr + rm, mask=row_valid, other=1.0)
        acc = acc * scale[:, None]
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=col_valid, other=0.0)[None, :]
    tl.store(
        out_ptr + rm[:, None] * O + rn[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=row_valid[:, None] & col_valid[None, :],
    )


# --- panoptic partial convolution: weight gradient --------------------------------------------


@triton.jit
def panoptic_conv_weight_grad_kernel(
    g_ptr,  # g~ = grad_output * scale: (N*H*W, O) contiguous (pre-scaled by the launcher)
    x_ptr,  # input: (N*H*W, C) contiguous
    mask_ptr,  # (N*H*W,) int32 neighbour bits
    partial_ptr,  # (SPLITS, O, k*k, C) float32: each split's sum in the (O, k, k, C) order of an NHWC weight
    W,
    C,
    O,
    M,
    PIXELS_PER_SPLIT,
    KSIZE: tl.constexpr,
    INT32_OFFSETS: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_C: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """partial[s, t] = sum over the pixels p of split s of M_t(p) g~[p] x[p + d_t]^T.

    No division, no id load in the loop: the pixel's bit t says whether p + d_t (a flat offset)
    is inside the image and of the same segment."""
    t = tl.program_id(0)  # fastest: the taps of one pixel range run together and share it in L2
    pid_oc = tl.program_id(1)
    split = tl.program_id(2)
    num_c = tl.cdiv(C, BLOCK_C)
    ro = (pid_oc // num_c) * BLOCK_O + tl.arange(0, BLOCK_O)
    rc = (pid_oc % num_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    ro_valid = ro < O
    rc_valid = rc < C
    shift = (t // KSIZE - KSIZE // 2) * W + (t % KSIZE - KSIZE // 2)
    if INT32_OFFSETS:
        start = split * PIXELS_PER_SPLIT
    else:
        start = split.to(tl.int64) * PIXELS_PER_SPLIT
    end = tl.minimum(start + PIXELS_PER_SPLIT, M)

    acc = tl.zeros((BLOCK_O, BLOCK_C), dtype=tl.float32)
    for p0 in tl.range(0, PIXELS_PER_SPLIT, BLOCK_P, num_stages=NUM_STAGES):
        rp = start + p0 + tl.arange(0, BLOCK_P)
        same = (rp < end) & (((tl.load(mask_ptr + rp, mask=rp < end, other=0) >> t) & 1) != 0)
        g = tl.load(g_ptr + rp[:, None] * O + ro[None, :], mask=same[:, None] & ro_valid[None, :], other=0.0)
        a = tl.load(x_ptr + (rp + shift)[:, None] * C + rc[None, :], mask=same[:, None] & rc_valid[None, :], other=0.0)
        if UPCAST:
            g = g.to(tl.float32)
            a = a.to(tl.float32)
        acc = tl.dot(tl.trans(g), a, acc, input_precision=DOT_PRECISION)

    rows = (split.to(tl.int64) * O + ro) * (KSIZE * KSIZE) + t  # row (split, o, t) of C values
    tl.store(
        partial_ptr + rows[:, None] * C + rc[None, :],
        acc,
        mask=ro_valid[:, None] & rc_valid[None, :],
    )


@triton.jit
def panoptic_conv_grad_prescale_kernel(
    g_ptr,  # grad_output as (N, H, W, O) view: any strides
    scale_ptr,  # (N*H*W,) float32: k²/sum(M)
    out_ptr,  # g~ = g * scale: (N*H*W, O) contiguous, in the dtype the gradient kernels read
    bias_ptr,  # (cdiv(N*H*W, BLOCK_P), O) float32: per-block column sums of g (read when HAS_BIAS)
    H,
    W,
    O,
    M,  # N*H*W
    stride_gn,
    stride_gh,
    stride_gw,
    stride_go,
    HAS_BIAS: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """One pass over the gradient for the backward: g~ in the kernels' NHWC layout (whatever the
    layout of g), and the bias gradient's partial sums of the unscaled g (fp32)."""
    pid_p = tl.program_id(0)
    pid_o = tl.program_id(1)
    rp = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    ro = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    valid = rp < M
    ro_valid = ro < O
    n = rp // (H * W)
    rest = rp % (H * W)
    y = rest // W
    x = rest % W
    both = valid[:, None] & ro_valid[None, :]
    g = tl.load(
        g_ptr + (n * stride_gn + y * stride_gh + x * stride_gw)[:, None] + ro[None, :] * stride_go,
        mask=both,
        other=0.0,
    ).to(tl.float32)
    scale = tl.load(scale_ptr + rp, mask=valid, other=0.0)
    scaled = (g * scale[:, None]).to(out_ptr.dtype.element_ty)  # round to nearest even on a GPU
    tl.store(out_ptr + rp[:, None] * O + ro[None, :], scaled, mask=both)
    if HAS_BIAS:
        tl.store(bias_ptr + pid_p * O + ro, tl.sum(g, axis=0), mask=ro_valid)


# --- panoptic upsampling (Algorithm 1) ----------------------------------------------------------


@triton.jit
def panoptic_upsample_kernel(
    f_ptr,  # features as (N, h, w, C) view: any strides
    low_ptr,  # (N, h, w) int64: any strides
    high_ptr,  # (N, 2h, 2w) int64: any strides
    out_ptr,  # (N*2h*2w, C) contiguous
    choice_ptr,  # (N*2h*2w,) uint8
    h,
    w,
    C,
    M,  # N*2h*2w
    stride_fn,
    stride_fh,
    stride_fw,
    stride_fc,
    stride_ln,
    stride_lh,
    stride_lw,
    stride_hn,
    stride_hh,
    stride_hw,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """The choice among the four candidates, the gather of its features and the zeros at holes."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    rp = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    valid = rp < M
    rc_valid = rc < C
    high_w = 2 * w
    high_hw = 4 * h * w
    n = rp // high_hw
    rest = rp % high_hw
    y = rest // high_w
    x = rest % high_w
    r = y // 2
    c = x // 2
    pixel_id = tl.load(high_ptr + n * stride_hn + y * stride_hh + x * stride_hw, mask=valid, other=0)
    choice = tl.full((BLOCK_P,), 4, dtype=tl.int32)
    # Candidates (r, c), (r, c+1), (r+1, c), (r+1, c+1) visited last to first: the first match wins.
    for i in tl.static_range(4):
        k = 3 - i
        rr = r + k // 2
        cc = c + k % 2
        inside = valid & (rr < h) & (cc < w)
        low_id = tl.load(low_ptr + n * stride_ln + rr * stride_lh + cc * stride_lw, mask=inside, other=0)
        choice = tl.where(inside & (low_id == pixel_id), k, choice)
    matched = valid & (choice < 4)
    rr = r + choice // 2
    cc = c + choice % 2
    values = tl.load(
        f_ptr + (n * stride_fn + rr * stride_fh + cc * stride_fw)[:, None] + rc[None, :] * stride_fc,
        mask=matched[:, None] & rc_valid[None, :],
        other=0.0,
    )
    tl.store(out_ptr + rp[:, None] * C + rc[None, :], values, mask=valid[:, None] & rc_valid[None, :])
    tl.store(choice_ptr + rp, choice.to(tl.uint8), mask=valid & (pid_c == 0))


@triton.jit
def panoptic_upsample_backward_kernel(
    g_ptr,  # grad_upsampled as (N, 2h, 2w, C) view: any strides
    choice_ptr,  # (N*2h*2w,) uint8 contiguous
    out_ptr,  # (N*h*w, C) contiguous
    h,
    w,
    C,
    M,  # N*h*w
    stride_gn,
    stride_gh,
    stride_gw,
    stride_gc,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """grad[r, c] = sum of grad_up over the high pixels that chose (r, c): a deterministic gather.

    Candidate k = (dr, dc) of the 2x2 block (r - dr, c - dc) is (r, c): 4 blocks x 4 pixels.
    """
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    rp = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    valid = rp < M
    rc_valid = rc < C
    low_hw = h * w
    n = rp // low_hw
    rest = rp % low_hw
    r = rest // w
    c = rest % w
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    # A runtime loop over the 16 (block, pixel) pairs, not an unrolled one: one gradient tile live at a
    # time (unrolled, the 16 tiles' loads were all in flight: 255 registers and spills in fp32).
    for j in range(16):
        k = j // 4
        q = j % 4
        block_r = r - k // 2
        block_c = c - k % 2
        block_valid = valid & (block_r >= 0) & (block_c >= 0)
        y = 2 * block_r + q // 2
        x = 2 * block_c + q % 2
        chosen = tl.load(choice_ptr + (n * (4 * low_hw) + y * (2 * w) + x), mask=block_valid, other=255)
        takes = block_valid & (chosen.to(tl.int32) == k)
        acc += tl.load(
            g_ptr + (n * stride_gn + y * stride_gh + x * stride_gw)[:, None] + rc[None, :] * stride_gc,
            mask=takes[:, None] & rc_valid[None, :],
            other=0.0,
        ).to(tl.float32)
    tl.store(
        out_ptr + rp[:, None] * C + rc[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=valid[:, None] & rc_valid[None, :],
    )


# --- launch configurations ----------------------------------------------------------------------
#
# Each kernel's configurations are pruned per launch shape before the autotuner times them
# (pure Python, tested without a GPU):
# - blocks no larger than the padded problem (BLOCK_N = 128 for O = 16 only adds masked work);
# - BLOCK_K = 128 only where the reduction has >= 512 channels (below, most of its K is masked);
# - the convolution's pipeline buffers, stages x (BLOCK_M + BLOCK_N) x BLOCK_K elements, within
#   the GPU's shared memory (fp32 tiles are twice bf16's: 128x256x64 fits 3 stages of bf16 only);
# - programs enough to fill the GPU: configurations launching fewer than WAVE_FILL programs per
#   multiprocessor are dropped when another fills it (the 8x16 stage at batch 8: 1024 pixels x
#   1024 channels give 64 programs of 128x128 for 132 multiprocessors, 256 of 64x64), and so are
#   tiles more than SMALL_TILE_SHARE times smaller than the largest one that fills it.
# The autotune keys hold the pixel count M (so the batch), since the number of programs depends on it.

# What the pruning assumes when the tensors are not on a GPU (the report, the tests): an H100/H200.
DEFAULT_MULTIPROCESSORS = 132
DEFAULT_SHARED_BYTES = 232448  # 227 KB: sm_90's opt-in shared memory per block
WAVE_FILL = 0.9
SMALL_TILE_SHARE = 2
WIDE_K_CHANNELS = 512


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, int(value) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def conv_shared_bytes(config, element_size: int) -> int:
    """Shared memory of the convolution's software pipeline: one A (BLOCK_M x BLOCK_K) and one
    B (BLOCK_K x BLOCK_N) tile per stage (what the compiled kernels hold, to within 256 bytes)."""
    kw = config.kwargs
    return config.num_stages * (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * element_size


def fit_blocks(configs, limits: dict[str, tuple[int, int]], keep=lambda config: True) -> list:
    """The configurations whose blocks fit the padded problem (``limits``: block name -> (problem size,
    floor), BLOCK <= max(floor, next power of 2 of the size)) and that ``keep``; if none does, the one
    with the smallest blocks (always launchable)."""
    kept = [
        config
        for config in configs
        if all(config.kwargs[block] <= max(floor, _next_power_of_2(size)) for block, (size, floor) in limits.items())
        and keep(config)
    ]
    return kept or [min(configs, key=lambda config: sum(config.kwargs[block] for block in limits))]


def select_configs(
    configs,
    limits: dict[str, tuple[int, int]],
    programs,
    tile: tuple[str, str],
    multiprocessors: int = DEFAULT_MULTIPROCESSORS,
    wide: tuple[str, int] | None = None,
    shared_bytes=None,
    shared_limit: int = DEFAULT_SHARED_BYTES,
) -> list:
    """The configurations worth timing for one launch shape (see the rules above).

    Args:
        configs: triton.Config list.
        limits: block name -> (problem size, floor): BLOCK <= max(floor, next power of 2 of the size).
        programs: config -> number of programs the launch would have.
        tile: the two block names of the output tile (its area ranks the tiles).
        multiprocessors: of the GPU.
        wide: (reduction block name, reduction channels): a block of 128 only for >= WIDE_K_CHANNELS.
        shared_bytes: config -> shared memory it needs (None: not checked), against ``shared_limit``.
    """

    def launchable(config):
        if wide is not None and config.kwargs[wide[0]] >= 128 and wide[1] < WIDE_K_CHANNELS:
            return False
        return shared_bytes is None or shared_bytes(config) <= shared_limit

    kept = fit_blocks(configs, limits, launchable)

    def area(config):
        return config.kwargs[tile[0]] * config.kwargs[tile[1]]

    filling = [config for config in kept if programs(config) >= WAVE_FILL * multiprocessors]
    if not filling:  # a problem too small to fill the GPU: the configurations with the most programs
        most = max(programs(config) for config in kept)
        return [config for config in kept if programs(config) == most]
    largest = max(area(config) for config in filling)
    return [config for config in filling if area(config) * SMALL_TILE_SHARE >= largest]


def conv_configs(
    configs,
    C: int,
    O: int,
    M: int,
    element_size: int,
    multiprocessors: int = DEFAULT_MULTIPROCESSORS,
    shared_limit: int = DEFAULT_SHARED_BYTES,
) -> list:
    """The convolution configurations timed for C reduction channels (per tap), O output channels
    and M pixels: ``cdiv(M, BLOCK_M) * cdiv(O, BLOCK_N)`` programs (forward and input gradient)."""
    return select_configs(
        configs,
        {"BLOCK_N": (O, 32), "BLOCK_K": (C, 16)},
        lambda config: _cdiv(M, config.kwargs["BLOCK_M"]) * _cdiv(O, config.kwargs["BLOCK_N"]),
        ("BLOCK_M", "BLOCK_N"),
        multiprocessors,
        wide=("BLOCK_K", C),
        shared_bytes=lambda config: conv_shared_bytes(config, element_size),
        shared_limit=shared_limit,
    )


def weight_grad_configs(
    configs, C: int, O: int, M: int, pixels_per_split: int, taps: int, multiprocessors: int = DEFAULT_MULTIPROCESSORS
) -> list:
    """The weight-gradient configurations timed: grid (taps, O-blocks x C-blocks, pixel splits)."""
    splits = _cdiv(M, pixels_per_split)
    return select_configs(
        configs,
        {"BLOCK_O": (O, 32), "BLOCK_C": (C, 16)},
        lambda config: taps * _cdiv(O, config.kwargs["BLOCK_O"]) * _cdiv(C, config.kwargs["BLOCK_C"]) * splits,
        ("BLOCK_O", "BLOCK_C"),
        multiprocessors,
    )


def upsample_configs(configs, C: int, M: int, multiprocessors: int = DEFAULT_MULTIPROCESSORS) -> list:
    """The upsampling configurations timed: ``cdiv(M, BLOCK_P) * cdiv(C, BLOCK_C)`` programs."""
    return select_configs(
        configs,
        {"BLOCK_C": (C, 16)},
        lambda config: _cdiv(M, config.kwargs["BLOCK_P"]) * _cdiv(C, config.kwargs["BLOCK_C"]),
        ("BLOCK_P", "BLOCK_C"),
        multiprocessors,
    )


def device_limits(tensor) -> tuple[int, int]:
    """(multiprocessors, shared memory per block) of the GPU holding ``tensor``; an H100's elsewhere."""
    if not getattr(tensor, "is_cuda", False):
        return DEFAULT_MULTIPROCESSORS, DEFAULT_SHARED_BYTES
    index = tensor.device.index
    if index not in _CUDA_LIMITS:
        import torch

        properties = torch.cuda.get_device_properties(tensor.device)
        # (older torch releases do not report the opt-in shared memory: an H100's is then assumed)
        shared = getattr(properties, "shared_memory_per_block_optin", DEFAULT_SHARED_BYTES)
        _CUDA_LIMITS[index] = properties.multi_processor_count, shared
    return _CUDA_LIMITS[index]


_CUDA_LIMITS: dict[int | None, tuple[int, int]] = {}


# The autotuner's hooks: (configs, the launch's positional arguments by name, its keyword arguments).
def _prune_conv(configs, named_args, **kwargs):
    x = named_args["x_ptr"]
    multiprocessors, shared_limit = device_limits(x)
    C, O, M = named_args["C"], named_args["O"], named_args["M"]
    return conv_configs(configs, C, O, M, x.element_size(), multiprocessors, shared_limit)


def _prune_weight_grad(configs, named_args, **kwargs):
    multiprocessors, _ = device_limits(named_args["g_ptr"])
    C, O, M = named_args["C"], named_args["O"], named_args["M"]
    taps = kwargs["KSIZE"] ** 2
    return weight_grad_configs(configs, C, O, M, named_args["PIXELS_PER_SPLIT"], taps, multiprocessors)


def _prune_upsample(configs, named_args, **kwargs):
    multiprocessors, _ = device_limits(named_args["out_ptr"])
    return upsample_configs(configs, named_args["C"], named_args["M"], multiprocessors)


def _configs(names: tuple[str, ...], rows, pipelined: bool = False, **fixed) -> list[triton.Config]:
    # A pipelined kernel's loop takes its depth from NUM_STAGES (tl.range), the same as num_stages.
    return [
        triton.Config(
            {**dict(zip(names, row[: len(names)])), **fixed, **({"NUM_STAGES": row[-1]} if pipelined else {})},
            num_warps=row[-2],
            num_stages=row[-1],
        )
        for row in rows
    ]


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). Every one compiles for sm_90 without spills in
# bf16 and fp16 (`python -m pansynth.ops._triton.report`); the fp32 rows whose buffers exceed the shared
# memory are pruned (conv_shared_bytes). 128x256 and 256x128 need 8 warps (at 4: 255 registers, spills).
CONV_CONFIGS = _configs(
    ("BLOCK_M", "BLOCK_N", "BLOCK_K"),
    [
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 256, 32, 8, 4),
        (128, 128, 128, 8, 3),  # C >= 512 only
        (128, 128, 64, 8, 3),
        (128, 128, 64, 8, 4),
        (128, 128, 32, 8, 3),
        (128, 128, 32, 8, 5),
        (128, 64, 32, 4, 4),
        (128, 64, 64, 8, 3),
        (64, 128, 32, 4, 4),
        (64, 128, 64, 4, 4),
        (64, 64, 32, 4, 4),
        (64, 64, 64, 4, 3),
        (64, 64, 64, 4, 5),
        (64, 32, 32, 4, 3),
        (64, 32, 16, 4, 2),
        (128, 32, 16, 4, 2),
    ],
    pipelined=True,
    GROUP_M=8,
)
# (BLOCK_P, BLOCK_O, BLOCK_C, num_warps, num_stages); BLOCK_P is the reduction dimension (at most 128:
# the launcher aligns the pixel splits to 128). The compiled loop holds two buffers of tiles whatever the
# depth (its mask load takes a stage): 4 stages compile to the same code as 3, so none are listed.
WEIGHT_GRAD_CONFIGS = _configs(
    ("BLOCK_P", "BLOCK_O", "BLOCK_C"),
    [
        (64, 64, 64, 4, 3),
        (128, 64, 64, 8, 3),
        (64, 128, 64, 8, 3),
        (64, 64, 128, 8, 3),
        (128, 128, 64, 8, 2),
        (128, 128, 64, 8, 3),
        (64, 64, 32, 4, 4),
        (64, 32, 32, 4, 4),
        (128, 32, 32, 4, 3),
        (32, 32, 16, 4, 3),
    ],
    pipelined=True,
)
# (BLOCK_P, BLOCK_C, num_warps, num_stages)
UPSAMPLE_CONFIGS = _configs(
    ("BLOCK_P", "BLOCK_C"),
    [(32, 128, 4, 2), (64, 64, 4, 2), (64, 128, 8, 2), (128, 32, 4, 2), (128, 64, 8, 2), (256, 16, 4, 2)],
)

# Under the interpreter: one small fixed configuration each (no benchmarking, several programs
# per test so that ragged blocks, grouped ordering and split reductions are exercised).
INTERPRETER_CONFIGS = {
    "conv": {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2, "NUM_STAGES": 1},
    "weight_grad": {"BLOCK_P": 16, "BLOCK_O": 16, "BLOCK_C": 16, "NUM_STAGES": 1},
    "upsample": {"BLOCK_P": 32, "BLOCK_C": 16},
    "prescale": {"BLOCK_P": 16, "BLOCK_O": 16},
}
# The gradient's pre-scaling is a bandwidth-bound pass: one configuration (the launcher narrows
# BLOCK_O to the channel count).
PRESCALE_CONFIGS = [triton.Config({"BLOCK_P": 64, "BLOCK_O": 128}, num_warps=8, num_stages=1)]

conv_grad_prescale = panoptic_conv_grad_prescale_kernel
# kernel name (as the launchers look it up) -> (jit kernel, configurations, autotune key, pruning hook).
# The keys are kernel arguments (Triton ignores any other name) and hold M, the pixel count.
AUTOTUNED = {
    "conv": (
        panoptic_conv_kernel,
        CONV_CONFIGS,
        ["C", "O", "H", "W", "M", "KSIZE", "FORWARD", "INT32_OFFSETS"],
        _prune_conv,
    ),
    "conv_weight_grad": (
        panoptic_conv_weight_grad_kernel,
        WEIGHT_GRAD_CONFIGS,
        ["C", "O", "M", "W", "KSIZE", "INT32_OFFSETS"],
        _prune_weight_grad,
    ),
    "upsample": (panoptic_upsample_kernel, UPSAMPLE_CONFIGS, ["C", "h", "w", "M"], _prune_upsample),
    "upsample_backward": (panoptic_upsample_backward_kernel, UPSAMPLE_CONFIGS, ["C", "h", "w", "M"], _prune_upsample),
}


def autotuned(name: str):
    """The ``triton.autotune`` wrapper of one kernel of :data:`AUTOTUNED`."""
    kernel, configs, key, prune = AUTOTUNED[name]
    return triton.autotune(configs, key=key, prune_configs_by={"early_config_prune": prune})(kernel)


if INTERPRET:
    conv = panoptic_conv_kernel
    conv_weight_grad = panoptic_conv_weight_grad_kernel
    upsample = panoptic_upsample_kernel
    upsample_backward = panoptic_upsample_backward_kernel
else:
    conv, conv_weight_grad, upsample, upsample_backward = (
        autotuned(name) for name in ("conv", "conv_weight_grad", "upsample", "upsample_backward")
    )
