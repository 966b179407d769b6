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
    partial_ptr,  # (SPLITS, k*k, O, C) float32
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

    base = (split.to(tl.int64) * (KSIZE * KSIZE) + t) * O
    tl.store(
        partial_ptr + (base + ro)[:, None] * C + rc[None, :],
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


def _next_power_of_2(value: int) -> int:
    return 1 << max(0, int(value) - 1).bit_length()


def _prune(limits: dict[str, tuple[str, int]]):
    """Drop the configurations whose blocks exceed the padded problem size (BLOCK_N = 128 for
    O = 16 only adds masked work); keep the smallest one if nothing is left."""

    def prune(configs, named_args, **kwargs):
        def fits(config):
            return all(
                config.kwargs[block] <= max(floor, _next_power_of_2(named_args[dim]))
                for block, (dim, floor) in limits.items()
            )

        kept = [config for config in configs if fits(config)]
        if kept:
            return kept
        return [min(configs, key=lambda config: sum(config.kwargs[block] for block in limits))]

    return prune


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


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
CONV_CONFIGS = _configs(
    ("BLOCK_M", "BLOCK_N", "BLOCK_K"),
    [
        (128, 128, 32, 8, 3),
        (128, 128, 64, 8, 3),
        (128, 64, 32, 4, 4),
        (128, 64, 64, 8, 3),
        (64, 128, 32, 4, 4),
        (64, 64, 32, 4, 4),
        (64, 64, 64, 4, 3),
        (64, 32, 32, 4, 3),
        (64, 32, 16, 4, 2),
        (128, 32, 16, 4, 2),
    ],
    pipelined=True,
    GROUP_M=8,
)
# (BLOCK_P, BLOCK_O, BLOCK_C, num_warps, num_stages); BLOCK_P is the reduction dimension.
WEIGHT_GRAD_CONFIGS = _configs(
    ("BLOCK_P", "BLOCK_O", "BLOCK_C"),
    [
        (64, 64, 64, 4, 3),
        (128, 64, 64, 8, 3),
        (64, 128, 64, 8, 3),
        (64, 64, 128, 8, 3),
        (128, 128, 64, 8, 2),
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
if INTERPRET:
    conv = panoptic_conv_kernel
    conv_weight_grad = panoptic_conv_weight_grad_kernel
    upsample = panoptic_upsample_kernel
    upsample_backward = panoptic_upsample_backward_kernel
else:
    conv = triton.autotune(
        CONV_CONFIGS,
        key=["C", "O", "H", "W", "KSIZE", "FORWARD", "INT32_OFFSETS"],
        prune_configs_by={"early_config_prune": _prune({"BLOCK_N": ("O", 32), "BLOCK_K": ("C", 16)})},
    )(panoptic_conv_kernel)
    conv_weight_grad = triton.autotune(
        WEIGHT_GRAD_CONFIGS,
        key=["C", "O", "M", "W", "KSIZE", "INT32_OFFSETS"],
        prune_configs_by={"early_config_prune": _prune({"BLOCK_O": ("O", 32), "BLOCK_C": ("C", 16)})},
    )(panoptic_conv_weight_grad_kernel)
    upsample = triton.autotune(
        UPSAMPLE_CONFIGS,
        key=["C", "h", "w"],
        prune_configs_by={"early_config_prune": _prune({"BLOCK_C": ("C", 16)})},
    )(panoptic_upsample_kernel)
    upsample_backward = triton.autotune(
        UPSAMPLE_CONFIGS,
        key=["C", "h", "w"],
        prune_configs_by={"early_config_prune": _prune({"BLOCK_C": ("C", 16)})},
    )(panoptic_upsample_backward_kernel)
