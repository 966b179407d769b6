"""Fused Triton kernels of the panoptic-aware ops (CUDA; CPU under ``TRITON_INTERPRET=1``).

Public functions (the dispatch of ``pansynth.ops`` calls them; each checks its arguments,
lays the tensors out and launches one kernel):

- :func:`conv2d_forward` -- eq. 1-2, returns the output and the scale k²/sum(M);
- :func:`conv2d_input_grad`, :func:`conv2d_weight_grad` -- its gradients (the bias gradient
  is ``grad_output.sum((0, 2, 3))``, left to the caller);
- :func:`upsample_forward`, :func:`upsample_backward` -- Algorithm 1 and its gradient;
- :func:`is_available` -- whether the kernels can run on a device.

Importing this package imports neither Triton nor the kernels: the kernels are defined on the
first launch, so ``TRITON_INTERPRET=1`` only has to be set before that launch.

Design
------
Every kernel works on NHWC data (channels contiguous): a channels_last tensor is read in
place (any strides are accepted; an NCHW tensor is converted once) and the results are
returned as channels_last (N, C, H, W) tensors. Pixel indices and memory offsets are int64,
ids are compared as int64, and every product accumulates in fp32 (fp32, bf16 and fp16
inputs; outputs in the input dtype).

Partial convolution, forward (``panoptic_conv_kernel``): the implicit GEMM of Inductor's
convolution template. A program owns BLOCK_M output pixels x BLOCK_N output channels. For
each of the k² taps (unrolled, k a constexpr) it loads the ids of the neighbour pixels once,
compares them with the centre ids to get the mask M_t of eq. 1 and counts sum(M); then it
loops over the input channels in blocks of BLOCK_K, loading the input tile with that mask
(masked rows are neither read nor accumulated: no im2col copy and no dense result corrected
by subtraction) and the weight tile from the weight rearranged as (k²·C, O), and
accumulates with ``tl.dot``. The epilogue multiplies by k²/sum(M), adds the bias and
stores the output and the scale. The input gradient is the same kernel (constexpr flags):
the operand is grad_output, multiplied on load by the scale of the pixel it comes from, and
the weight is the flipped, transposed kernel (M is symmetric, so the same masked gather
gives sum_t M_t(q - d_t) W_t^T g~[q - d_t]).

Weight gradient (``panoptic_conv_weight_grad_kernel``): grid (taps, O-blocks x C-blocks,
pixel splits); each program reduces its pixel range with ``tl.dot(g~^T, masked x)`` and
writes an fp32 partial sum; the launcher adds the splits (deterministic). The number of
splits is chosen so that about 4 programs per multiprocessor exist even when O x C is small.

Upsampling (``panoptic_upsample_kernel``): one program per block of high-resolution pixels
and channels computes the choice among the four candidates (int64 id comparisons), gathers
the chosen low-resolution features (contiguous channel rows) and writes zeros at holes.
The backward pass is a gather, not a scatter: a low pixel (r, c) can only be chosen by the
16 high pixels of the 2x2 blocks (r - dr, c - dc), so each program sums those whose choice
points at it -- no atomics, deterministic.

Tuning: ``triton.autotune`` over 6-10 configurations per kernel (BLOCK_M 64/128, BLOCK_N
32/64/128, BLOCK_K 16/32/64, 4 or 8 warps, 2-4 stages), keyed on the channel counts, the
map size (H, W, not the batch) and k; configurations with blocks much larger than the
channel counts are pruned. The first launch for a new key compiles and times every
remaining configuration (seconds to a minute); later launches reuse the choice. TF32 is
used in fp32 dots exactly when ``torch.backends.cudnn.allow_tf32`` is set. Under the
interpreter one small fixed configuration runs (no benchmarking), and bf16 tiles are
upcast to fp32 before ``tl.dot`` (the interpreter's bf16 dot is wrong).

Expected performance on an H100 -- NOT measured: no GPU was available when this was
written. ``python -m pansynth.ops._triton.check`` measures errors and timings on a GPU;
``python -m pansynth.ops._triton.check --compile-only`` compiles every kernel for sm_90
without one (done: all variants compile; 4-100 KB of shared memory per program).

- Forward and input gradient: the FLOPs of a dense convolution (a masked row is not read
  but is still multiplied as zeros) plus, per tile and tap, one load of BLOCK_M int64 ids,
  small next to the BLOCK_M x C feature reads. Triton lowers ``tl.dot`` to wgmma on
  sm_90, but the masked gathers are ordinary loads (no TMA) and the k² taps are unrolled
  around a pipelined loop over channel blocks, as in Inductor's convolution template. So,
  for C, O >= 64, expect about the speed of that template: roughly 1.2-2x the time of
  cuDNN's dense ``conv2d`` of the same shape and dtype, and well ahead of a dense
  convolution followed by gathered corrections once a sizeable share of the windows
  crosses a segment boundary. When C fits one or two BLOCK_K blocks (C <= 128), the
  channel loop is too short for the software pipeline to hide the load latency; if the
  timings show it, the first thing to try is one flattened loop over (tap, channel
  block) pairs, reloading the ids per pair, so that the pipeline spans the taps.
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
    conv2d_input_grad,
    conv2d_weight_grad,
    is_available,
    upsample_backward,
    upsample_forward,
)

__all__ = [
    "conv2d_forward",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "is_available",
    "upsample_backward",
    "upsample_forward",
]
