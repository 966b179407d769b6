"""Fused Triton kernels of the panoptic-aware ops (CUDA; CPU under ``TRITON_INTERPRET=1``).

Public functions (the dispatch of ``pansynth.ops`` calls them; each checks its arguments,
lays the tensors out and launches one kernel):

- :func:`conv2d_forward` -- eq. 1-2, returns the output and the scale k²/sum(M);
- :func:`conv2d_input_grad`, :func:`conv2d_weight_grad` -- its gradients, which read the
  pre-scaled gradient g~ of :func:`conv2d_grad_prescale` (one pass over g: g~ in NHWC and the
  bias gradient);
- :func:`upsample_forward`, :func:`upsample_backward` -- Algorithm 1 and its gradient;
- :func:`is_available` -- whether the kernels can run on a device.

Importing this package imports neither Triton nor the kernels: the kernels are defined on the
first launch, so ``TRITON_INTERPRET=1`` only has to be set before that launch.

Design
------
Every kernel works on NHWC data (channels contiguous) and returns channels_last (N, C, H, W)
tensors that own their storage (not permuted views: hole filling writes into Algorithm 1's
output in place). The convolution kernels read dense NHWC tensors (anything else is copied
once) and, instead of ids, a per-pixel neighbour mask (:func:`pansynth.ops.neighbour_mask`:
bit t = M_t of eq. 1, k² <= 25 bits in an int32) with the scale k²/sum(M); their flat offsets
are int32 where every offset fits (constexpr ``INT32_OFFSETS``), int64 otherwise. The
upsampling kernels compare ids as int64. Every product accumulates in fp32 (fp32, bf16 and
fp16 inputs; outputs in the input dtype).

Partial convolution, forward (``panoptic_conv_kernel``): the implicit GEMM of Inductor's
convolution template with one software-pipelined main loop (``tl.range`` with
``num_stages``) over (channel block, tap) pairs. A program owns BLOCK_M output pixels x
BLOCK_N output channels and loads their mask bits once; at tap t the A tile is the rows of
the flat pixels p + dy*W + dx, loaded where bit t is set (masked rows are neither read nor
accumulated: no im2col copy, no dense result corrected by subtraction), the B tile the
K-major weight (O, k²·C). The epilogue multiplies by k²/sum(M) and adds the bias. The input
gradient is the same kernel (``FORWARD=False``) on g~ = grad_output * k²/sum(M), computed once
by the launcher, with the flipped, transposed kernel (M is symmetric, so the same mask gives
sum_t M_t(q - d_t) W_t^T g~[q - d_t]). ``python -m pansynth.ops._triton.report`` shows what
the compiler makes of them for sm_90 (registers, spills, wgmma, instructions per iteration).

Weight gradient (``panoptic_conv_weight_grad_kernel``): grid (taps, O-blocks x C-blocks,
pixel splits); each program reduces its pixel range in a pipelined loop with
``tl.dot(g~^T, masked x)`` (the pre-scaled g~ and the mask bits: no division, no id load)
and writes an fp32 partial sum; the launcher adds the splits (deterministic). The number of
splits is chosen so that about 4 programs per multiprocessor exist even when O x C is small.

Upsampling (``panoptic_upsample_kernel``): one program per block of high-resolution pixels
and channels computes the choice among the four candidates (int64 id comparisons), gathers
the chosen low-resolution features (contiguous channel rows) and writes zeros at holes.
The backward pass is a gather, not a scatter: a low pixel (r, c) can only be chosen by the
16 high pixels of the 2x2 blocks (r - dr, c - dc), so each program sums those whose choice
points at it -- no atomics, deterministic.

Tuning: ``triton.autotune`` over 18 convolution configurations (up to 128x256 / 256x128 tiles,
BLOCK_K 128 for C >= 512, 2-5 stages), 10 for the weight gradient and 6 for the upsampling,
keyed on the channel counts, the map size, the pixel count M (the batch counts) and k, and
pruned per launch by pure functions (``conv_configs``...): blocks that fit the problem, pipeline
buffers that fit the shared memory, at least 0.9 programs per multiprocessor where some
configuration fills the GPU; at most 8 are timed per shape (docs/gpu.md). The first launch for
a new key compiles and times them (seconds to a minute); later launches reuse the choice. TF32
is used in fp32 dots exactly when ``torch.backends.cudnn.allow_tf32`` is set. Under the
interpreter one small fixed configuration runs (no benchmarking), and bf16 tiles are upcast to
fp32 before ``tl.dot`` (the interpreter's bf16 dot is wrong).

Expected performance on an H100 -- NOT measured: no GPU was available when this was
written. ``python -m pansynth.ops._triton.check`` measures errors and timings on a GPU;
``python -m pansynth.ops._triton.report`` compiles every kernel for sm_90 without one (all
variants compile, none spills).

- Forward and input gradient: the FLOPs of a dense convolution (a masked row is not read
  but is still multiplied as zeros) plus one 4-byte mask load per pixel and tile. Triton
  lowers ``tl.dot`` to wgmma on sm_90 (the report shows it); the masked gathers are
  ordinary loads (no TMA), pipelined across taps and channel blocks in one loop (115
  registers and 146 instructions per iteration at bf16 128x128x64, 8 warps: two blocks
  per SM). Expect roughly 1.2-2x the time of cuDNN's dense ``conv2d`` of the same shape
  and dtype, and well ahead of a dense convolution followed by gathered corrections once
  a sizeable share of the windows crosses a segment boundary.
- Few pixels and many channels (8x16 maps with 1024 channels) give few programs: the
  forward kernels have no split over the reduction, but these shapes are small in
  absolute time.
- Weight gradient: with the pixel splits every shape gets about 4 programs per SM; each
  input tile is read once per tap program (k² times, mostly from L2), so it should be
  bandwidth-bound for C, O <= 128 and close to the forward's speed above.
- Upsampling and its backward are memory-bound gathers of contiguous channel rows and
  should run near the bandwidth of nearest-neighbour ``F.interpolate`` (the backward reads
  16 uint8 choices per low pixel, but each gradient row at most once).
"""

from pansynth.ops._triton._launch import (
    conv2d_forward,
    conv2d_grad_prescale,
    conv2d_input_grad,
    conv2d_weight_grad,
    is_available,
    upsample_backward,
    upsample_forward,
)

__all__ = [
    "conv2d_forward",
    "conv2d_grad_prescale",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "is_available",
    "upsample_backward",
    "upsample_forward",
]
