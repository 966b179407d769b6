"""Check the Triton kernels on a GPU: errors against float64 references, and timings.

Run ``python -m pansynth.ops._triton.check`` (``--quick`` for two shapes) on a machine
with CUDA. For each shape it prints the largest error of every kernel relative to the
largest reference value (fp32 with TF32 off, bf16, fp16), then median timings
(``triton.testing.do_bench``) next to cuDNN's dense convolution of the same shape and dtype
and, for the upsampling, next to nearest-neighbour ``F.interpolate``. Not imported by the
library.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.ops import _triton

# (N, C, O, H, W, k): generator-like stages (ngf = 64 at 256x512 ... 1024 channels at 16x32),
# the first layer on a one-hot map of 35 classes, and a 5x5 kernel.
CONV_SHAPES = [
    (2, 35, 1024, 16, 32, 3),
    (4, 1024, 1024, 16, 32, 3),
    (4, 512, 512, 64, 128, 3),
    (4, 128, 128, 128, 256, 3),
    (2, 64, 64, 256, 512, 3),
    (2, 64, 64, 128, 256, 5),
]
# (N, C, h, w) of the low-resolution features.
UPSAMPLE_SHAPES = [(4, 1024, 16, 32), (4, 256, 64, 128), (2, 64, 128, 256)]


def blocky_ids(n: int, height: int, width: int, device: str, block: int = 8, num_ids: int = 12) -> Tensor:
    """Segments of block x block pixels with ids near 2^62, and single-pixel segments."""
    coarse = torch.randint(0, num_ids, (n, -(-height // block), -(-width // block)), device=device)
    ids = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :height, :width]
    single = torch.rand(n, height, width, device=device) < 0.01
    ids = torch.where(single, num_ids + torch.arange(ids.numel(), device=device).view_as(ids), ids)
    return ids + (2**62)


def reference_conv(x: Tensor, ids: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Eq. 1-2 in float64 with a masked im2col (differentiable: autograd gives the references of
    the gradients)."""
    n, channels, height, width = x.shape
    kernel_size = weight.shape[-1]
    radius = kernel_size // 2
    padded = F.pad(ids, (radius,) * 4, value=0)
    inside = F.pad(torch.ones_like(ids, dtype=torch.bool), (radius,) * 4, value=False)
    windows = padded.unfold(1, kernel_size, 1).unfold(2, kernel_size, 1)
    inside = inside.unfold(1, kernel_size, 1).unfold(2, kernel_size, 1)
    same = ((windows == ids[..., None, None]) & inside).flatten(3).permute(0, 3, 1, 2).flatten(2)  # (N, k², HW)
    columns = F.unfold(x, kernel_size, padding=radius).view(n, channels, kernel_size**2, -1) * same[:, None]
    out = weight.reshape(weight.shape[0], -1) @ columns.view(n, channels * kernel_size**2, -1)
    scale = kernel_size**2 / same.sum(1, keepdim=True).to(x.dtype)
    return (out * scale).view(n, -1, height, width) + bias.view(1, -1, 1, 1)


def reference_upsample(features: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Algorithm 1 in float64 with gathers (differentiable)."""
    n, channels, low_h, low_w = features.shape
    rows = torch.arange(2 * low_h, device=features.device)[:, None] // 2
    cols = torch.arange(2 * low_w, device=features.device)[None, :] // 2
    choice = torch.full(high.shape, 4, device=features.device)
    for k, (d_row, d_col) in reversed(list(enumerate(((0, 0), (0, 1), (1, 0), (1, 1))))):
        inside = (rows + d_row < low_h) & (cols + d_col < low_w)
        candidate = low[:, (rows + d_row).clamp(max=low_h - 1), (cols + d_col).clamp(max=low_w - 1)]
        choice = torch.where(inside & (candidate == high), k, choice)
    matched = choice < 4
    source = (rows + torch.where(matched, choice // 2, 0)) * low_w + cols + torch.where(matched, choice % 2, 0)
    gathered = features.flatten(2).gather(2, source.flatten(1)[:, None].expand(-1, channels, -1))
    return gathered.view(n, channels, 2 * low_h, 2 * low_w) * matched[:, None]


def relative_max_error(actual: Tensor, expected: Tensor) -> float:
    return ((actual.double() - expected).abs().max() / expected.abs().max()).item()


def check_conv(shape, dtypes, bench: bool, device: str = "cuda") -> None:
    """Print the errors of the three convolution kernels (exact fp32 dots) and, with ``bench``,
    their timings next to cuDNN's dense convolution (fp32 with TF32 on both sides)."""
    n, channels, out_channels, height, width, kernel_size = shape
    ids = blocky_ids(n, height, width, device)
    x64 = torch.randn(n, channels, height, width, device=device, dtype=torch.float64, requires_grad=True)
    w64 = torch.randn(out_channels, channels, kernel_size, kernel_size, device=device, dtype=torch.float64)
    w64 = (w64 / (channels * kernel_size**2) ** 0.5).requires_grad_()
    b64 = torch.randn(out_channels, device=device, dtype=torch.float64)
    g64 = torch.randn(n, out_channels, height, width, device=device, dtype=torch.float64)
    ref = reference_conv(x64, ids, w64, b64)
    ref.backward(g64)
    print(f"conv N={n} C={channels} O={out_channels} {height}x{width} k={kernel_size}")
    tf32 = torch.backends.cudnn.allow_tf32
    for dtype in dtypes:
        x = x64.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        w, g = w64.detach().to(dtype), g64.to(dtype).contiguous(memory_format=torch.channels_last)
        torch.backends.cudnn.allow_tf32 = False
        out, scale = _triton.conv2d_forward(x, ids, w, b64.float())
        grad_x = _triton.conv2d_input_grad(g, scale, ids, w)
        grad_w = _triton.conv2d_weight_grad(g, scale, x, ids, kernel_size)
        errors = [relative_max_error(*pair) for pair in ((out, ref), (grad_x, x64.grad), (grad_w, w64.grad))]
        line = f"  {str(dtype)[6:]:9s} max error / max |ref|: forward {errors[0]:.1e}  "
        print(line + f"input grad {errors[1]:.1e}  weight grad {errors[2]:.1e}")
        torch.backends.cudnn.allow_tf32 = True
        if bench:
            _bench_conv(x, ids, w, g, scale, kernel_size)
    torch.backends.cudnn.allow_tf32 = tf32


def _bench_conv(x: Tensor, ids: Tensor, w: Tensor, g: Tensor, scale: Tensor, kernel_size: int) -> None:
    padding = [kernel_size // 2] * 2

    def dense_backward(mask):
        return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], padding, [1, 1], False, [0, 0], 1, mask)

    timings = {
        "forward": (
            lambda: _triton.conv2d_forward(x, ids, w, None),
            lambda: F.conv2d(x, w, None, padding=padding),
        ),
        "input grad": (
            lambda: _triton.conv2d_input_grad(g, scale, ids, w),
            lambda: dense_backward([True, False, False]),
        ),
        "weight grad": (
            lambda: _triton.conv2d_weight_grad(g, scale, x, ids, kernel_size),
            lambda: dense_backward([False, True, False]),
        ),
    }
    for name, (ours, dense) in timings.items():
        ours_ms, dense_ms = _median_ms(ours), _median_ms(dense)
        print(
            f"    {name:11s} triton {ours_ms:8.3f} ms   cuDNN dense {dense_ms:8.3f} ms   "
            f"triton / cuDNN {ours_ms / dense_ms:5.2f}"
        )


def check_upsample(shape, dtypes, bench: bool, device: str = "cuda") -> None:
    """Print the errors of the upsampling kernels and, with ``bench``, their timings next to
    nearest-neighbour interpolation."""
    n, channels, low_h, low_w = shape
    high = blocky_ids(n, 2 * low_h, 2 * low_w, device, block=5)
    low = high[:, ::2, ::2].clone()
    low[:, ::7] += 1  # some segments new at the high resolution: holes
    f64 = torch.randn(n, channels, low_h, low_w, device=device, dtype=torch.float64, requires_grad=True)
    g64 = torch.randn(n, channels, 2 * low_h, 2 * low_w, device=device, dtype=torch.float64)
    ref = reference_upsample(f64, low, high)
    ref.backward(g64)
    print(f"upsample N={n} C={channels} {low_h}x{low_w} -> {2 * low_h}x{2 * low_w}")
    for dtype in dtypes:
        f = f64.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        g = g64.to(dtype).contiguous(memory_format=torch.channels_last)
        up, choice = _triton.upsample_forward(f, low, high)
        grad = _triton.upsample_backward(g, choice, (low_h, low_w))
        errors = relative_max_error(up, ref), relative_max_error(grad, f64.grad)
        print(f"  {str(dtype)[6:]:9s} max error / max |ref|: forward {errors[0]:.1e}  backward {errors[1]:.1e}")
        if bench:
            _bench_upsample(f, low, high, g, choice)


def _bench_upsample(f: Tensor, low: Tensor, high: Tensor, g: Tensor, choice: Tensor) -> None:
    low_size = tuple(f.shape[2:])
    forward = _median_ms(lambda: _triton.upsample_forward(f, low, high))
    nearest = _median_ms(lambda: F.interpolate(f, scale_factor=2, mode="nearest"))
    backward = _median_ms(lambda: _triton.upsample_backward(g, choice, low_size))
    nearest_backward = _median_ms(
        lambda: torch.ops.aten.upsample_nearest2d_backward(g, list(g.shape[2:]), list(f.shape))
    )
    print(f"    forward  triton {forward:8.3f} ms   nearest interpolate {nearest:8.3f} ms")
    print(f"    backward triton {backward:8.3f} ms   nearest backward    {nearest_backward:8.3f} ms")


def _median_ms(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, return_mode="median")


def compile_kernels(capability: int = 90, quick: bool = False) -> list[str]:
    """Compile every kernel for a CUDA target of the given compute capability, without a GPU: catches
    what the interpreter does not check (types, layouts, lowering). One line per variant; the
    figures are those of :mod:`pansynth.ops._triton.report` (``quick``: its preferred configurations)."""
    from pansynth.ops._triton.report import report

    return [
        f"{row.kernel} {row.dtype} {row.config}: {row.shared_bytes} bytes of shared memory, {row.registers} registers"
        for row in report(quick=quick, capability=capability)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pansynth.ops._triton.check", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes per op, errors only (no timings)")
    parser.add_argument(
        "--compile-only", type=int, metavar="CAPABILITY", nargs="?", const=90,
        help="only compile every kernel for this compute capability (default 90, H100); needs no GPU",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.compile_only is not None:
        for line in compile_kernels(args.compile_only):
            print(line)
        return 0
    if not torch.cuda.is_available() or not _triton.is_available(torch.device("cuda")):
        print("this check needs CUDA and triton", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), "| torch", torch.__version__)
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    for shape in CONV_SHAPES[:2] if args.quick else CONV_SHAPES:
        check_conv(shape, dtypes, bench=not args.quick)
    for shape in UPSAMPLE_SHAPES[:2] if args.quick else UPSAMPLE_SHAPES:
        check_upsample(shape, dtypes, bench=not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
