"""Check the Triton kernels on a GPU: errors against float64 references, and timings.

Run ``python -m pansynth.ops._triton.check`` (``--quick`` for two shapes, errors only) on a
machine with CUDA. The shapes are the paper generator's at Cityscapes 256x512, batch 8. For
each shape and precision mode (fp32 with TF32 on, as cuDNN runs it by default, fp32 with TF32
off, bf16, fp16) it prints the largest error of every kernel relative to the largest reference
value, then median timings (``triton.testing.do_bench``) next to cuDNN's dense convolution of
the same shape, dtype and TF32 setting: each kernel against its cuDNN counterpart, and the
forward+backward total of a layer (Triton forward + g * k²/sum(M) once + input gradient +
weight gradient + bias gradient, as the custom op runs them, against ``F.conv2d`` +
``convolution_backward``). Both engines read the same channels_last input and get the gradient
in the layout of their output (channels_last for both here), so neither pays a layout copy the
other does not. The upsampling is timed next to nearest-neighbour ``F.interpolate``, forward and
forward+backward. Not imported by the library.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.ops import _triton

# (N, C, O, H, W, k) at batch 8: the first layer on the one-hot map of 35 classes (8x16), residual
# stages of the generator at Cityscapes 256x512 (ngf 64: 1024 channels at 16x32 ... 64 at 256x512),
# and a 5x5 kernel.
CONV_SHAPES = [
    (8, 35, 1024, 8, 16, 3),
    (8, 1024, 1024, 16, 32, 3),
    (8, 512, 512, 64, 128, 3),
    (8, 128, 128, 128, 256, 3),
    (8, 64, 64, 256, 512, 3),
    (8, 64, 64, 128, 256, 5),
]
# (N, C, h, w) of the low-resolution features.
UPSAMPLE_SHAPES = [(8, 1024, 16, 32), (8, 256, 64, 128), (8, 64, 128, 256)]


@dataclass(frozen=True)
class PrecisionMode:
    """A dtype, and whether float32 products run in TF32 (cuDNN's default for convolutions; the
    Triton engine follows ``torch.backends.cudnn.allow_tf32``). In bf16 and fp16 modes the flag
    only concerns what stays in fp32 (left on, as by default)."""

    dtype: torch.dtype
    tf32: bool = True

    @property
    def name(self) -> str:
        if self.dtype == torch.float32:
            return "fp32 TF32" if self.tf32 else "fp32 TF32 off"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


# Every mode the GPU checks and benchmarks measure, TF32 on first (what an fp32 user gets by default).
PRECISION_MODES = (
    PrecisionMode(torch.float32, tf32=True),
    PrecisionMode(torch.float32, tf32=False),
    PrecisionMode(torch.bfloat16),
    PrecisionMode(torch.float16),
)


@contextlib.contextmanager
def precision(mode: PrecisionMode) -> Iterator[None]:
    """Set torch's TF32 flags (cuDNN convolutions and matmuls) for ``mode`` meanwhile."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode.tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


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


def conv_references(
    x: Tensor, ids: Tensor, weight: Tensor, bias: Tensor, grad_output: Tensor, chunk: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """(output, input gradient, weight gradient) of eq. 1-2 in float64 for ``grad_output``, computed
    ``chunk`` batch items at a time: a batch of 8 at 256x512 would not fit a float64 im2col at once."""
    outputs, input_grads = [], []
    weight_grad = torch.zeros_like(weight)
    for start in range(0, x.shape[0], chunk):
        items = slice(start, start + chunk)
        x_items = x[items].detach().requires_grad_()
        w_items = weight.detach().requires_grad_()
        out = reference_conv(x_items, ids[items], w_items, bias)
        out.backward(grad_output[items])
        outputs.append(out.detach())
        input_grads.append(x_items.grad)
        weight_grad += w_items.grad
    return torch.cat(outputs), torch.cat(input_grads), weight_grad


def triton_conv_pass(x: Tensor, ids: Tensor, weight: Tensor, bias: Tensor | None, grad_output: Tensor):
    """One layer's forward and backward on the Triton kernels, as the custom op runs them: the forward,
    g~ = grad_output * k²/sum(M) once (in the kernels' layout and the input's dtype), both gradients from
    g~, and the bias gradient. Returns (output, input gradient, weight gradient, bias gradient)."""
    out, scale = _triton.conv2d_forward(x, ids, weight, bias)
    scaled = torch.empty_like(out, dtype=x.dtype)
    torch.mul(grad_output, scale.unsqueeze(1), out=scaled)
    grad_x = _triton.conv2d_input_grad(scaled, scale, ids, weight, prescaled=True)
    grad_w = _triton.conv2d_weight_grad(scaled, scale, x, ids, weight.shape[-1], prescaled=True)
    grad_b = grad_output.sum((0, 2, 3), dtype=torch.float32) if bias is not None else None
    return out, grad_x, grad_w, grad_b


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


def conv_inputs(shape, device: str = "cuda"):
    """float64 (input, ids, weight, bias, grad_output) of one shape: weights scaled to unit gain."""
    n, channels, out_channels, height, width, kernel_size = shape
    ids = blocky_ids(n, height, width, device)
    x = torch.randn(n, channels, height, width, device=device, dtype=torch.float64)
    w = torch.randn(out_channels, channels, kernel_size, kernel_size, device=device, dtype=torch.float64)
    w = w / (channels * kernel_size**2) ** 0.5
    b = torch.randn(out_channels, device=device, dtype=torch.float64)
    g = torch.randn(n, out_channels, height, width, device=device, dtype=torch.float64)
    return x, ids, w, b, g


def conv_errors(inputs, references, mode: PrecisionMode) -> dict[str, float]:
    """Largest error / largest |reference| of the layer's forward and two gradients on the Triton
    kernels in ``mode`` (inputs rounded to its dtype, channels_last)."""
    x64, ids, w64, b64, g64 = inputs
    x = x64.to(mode.dtype).contiguous(memory_format=torch.channels_last)
    g = g64.to(mode.dtype).contiguous(memory_format=torch.channels_last)
    with precision(mode):
        out, grad_x, grad_w, _ = triton_conv_pass(x, ids, w64.to(mode.dtype), b64.float(), g)
    names = ("forward", "input grad", "weight grad")  # (the bias gradient is torch's sum over g)
    return {name: relative_max_error(a, e) for name, a, e in zip(names, (out, grad_x, grad_w), references)}


def check_conv(shape, modes=PRECISION_MODES, bench: bool = True, device: str = "cuda") -> list[dict]:
    """Print (and return, one dict per mode) the errors of the convolution kernels and, with ``bench``,
    their timings next to cuDNN's dense convolution in the same mode. A plain dtype in ``modes`` stands
    for that dtype without TF32."""
    modes = [mode if isinstance(mode, PrecisionMode) else PrecisionMode(mode, tf32=False) for mode in modes]
    n, channels, out_channels, height, width, kernel_size = shape
    inputs = conv_inputs(shape, device)
    references = conv_references(*inputs[:4], inputs[4])
    print(f"conv N={n} C={channels} O={out_channels} {height}x{width} k={kernel_size}")
    results = []
    for mode in modes:
        errors = conv_errors(inputs, references, mode)
        print(f"  {mode.name:13s} max error / max |ref|: " + "  ".join(f"{k} {v:.1e}" for k, v in errors.items()))
        timings = _bench_conv(inputs, mode) if bench else {}
        results.append({"shape": shape, "mode": mode.name, "errors": errors, "timings": timings})
    return results


def _bench_conv(inputs, mode: PrecisionMode) -> dict[str, tuple[float, float]]:
    """(Triton ms, cuDNN ms) per kernel and for the layer's forward+backward, printed as they come."""
    x64, ids, w64, b64, g64 = inputs
    kernel_size = w64.shape[-1]
    padding = [kernel_size // 2] * 2
    x = x64.to(mode.dtype).contiguous(memory_format=torch.channels_last)
    w, b = w64.to(mode.dtype), b64.to(mode.dtype)
    with precision(mode):
        # Each engine's gradient in the layout of its own output (both channels_last here).
        out, scale = _triton.conv2d_forward(x, ids, w, b)
        g = torch.empty_like(out).copy_(g64)
        g_dense = torch.empty_like(F.conv2d(x, w, b, padding=padding)).copy_(g64)

        def dense_backward(mask):
            return torch.ops.aten.convolution_backward(
                g_dense, x, w, [b.shape[0]], [1, 1], padding, [1, 1], False, [0, 0], 1, mask
            )

        def dense_pass():
            F.conv2d(x, w, b, padding=padding)
            dense_backward([True, True, True])

        timings = {
            "forward": (lambda: _triton.conv2d_forward(x, ids, w, b), lambda: F.conv2d(x, w, b, padding=padding)),
            "input grad": (
                lambda: _triton.conv2d_input_grad(g, scale, ids, w),
                lambda: dense_backward([True, False, False]),
            ),
            "weight grad": (
                lambda: _triton.conv2d_weight_grad(g, scale, x, ids, kernel_size),
                lambda: dense_backward([False, True, False]),
            ),
            "forward+backward": (lambda: triton_conv_pass(x, ids, w, b, g), dense_pass),
        }
        results = {}
        for name, (ours, dense) in timings.items():
            ours_ms, dense_ms = _median_ms(ours), _median_ms(dense)
            results[name] = ours_ms, dense_ms
            print(
                f"    {name:16s} triton {ours_ms:8.3f} ms   cuDNN {dense_ms:8.3f} ms   "
                f"triton / cuDNN {ours_ms / dense_ms:5.2f}"
            )
    return results


def upsample_dtypes(modes=PRECISION_MODES) -> list[torch.dtype]:
    """The dtypes of ``modes``, once each: the upsampling has no products, TF32 does not concern it."""
    return list(dict.fromkeys(mode.dtype for mode in modes))


def check_upsample(shape, dtypes=None, bench: bool = True, device: str = "cuda") -> list[dict]:
    """Print (and return, one dict per dtype) the errors of the upsampling kernels and, with ``bench``,
    their timings next to nearest-neighbour interpolation."""
    n, channels, low_h, low_w = shape
    high = blocky_ids(n, 2 * low_h, 2 * low_w, device, block=5)
    low = high[:, ::2, ::2].clone()
    low[:, ::7] += 1  # some segments new at the high resolution: holes
    f64 = torch.randn(n, channels, low_h, low_w, device=device, dtype=torch.float64, requires_grad=True)
    g64 = torch.randn(n, channels, 2 * low_h, 2 * low_w, device=device, dtype=torch.float64)
    ref = reference_upsample(f64, low, high)
    ref.backward(g64)
    print(f"upsample N={n} C={channels} {low_h}x{low_w} -> {2 * low_h}x{2 * low_w}")
    results = []
    for dtype in dtypes or upsample_dtypes():
        f = f64.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        up, choice = _triton.upsample_forward(f, low, high)
        g = torch.empty_like(up).copy_(g64)  # in the layout of the output
        grad = _triton.upsample_backward(g, choice, (low_h, low_w))
        errors = {"forward": relative_max_error(up, ref), "backward": relative_max_error(grad, f64.grad)}
        name = str(dtype).removeprefix("torch.")
        print(f"  {name:13s} max error / max |ref|: forward {errors['forward']:.1e}  backward {errors['backward']:.1e}")
        timings = _bench_upsample(f, low, high, g64) if bench else {}
        results.append({"shape": shape, "dtype": name, "errors": errors, "timings": timings})
    return results


def _bench_upsample(f: Tensor, low: Tensor, high: Tensor, g64: Tensor) -> dict[str, tuple[float, float]]:
    low_size = tuple(f.shape[2:])
    up, choice = _triton.upsample_forward(f, low, high)
    g = torch.empty_like(up).copy_(g64)
    nearest_out = F.interpolate(f, scale_factor=2, mode="nearest")
    g_nearest = torch.empty_like(nearest_out).copy_(g64)  # each in the layout of its own output

    def nearest_backward():
        return torch.ops.aten.upsample_nearest2d_backward(g_nearest, list(g.shape[2:]), list(f.shape))

    def ours_pass():
        _, chosen = _triton.upsample_forward(f, low, high)
        _triton.upsample_backward(g, chosen, low_size)

    def nearest_pass():
        F.interpolate(f, scale_factor=2, mode="nearest")
        nearest_backward()

    timings = {
        "forward": (lambda: _triton.upsample_forward(f, low, high), lambda: F.interpolate(f, scale_factor=2)),
        "backward": (lambda: _triton.upsample_backward(g, choice, low_size), nearest_backward),
        "forward+backward": (ours_pass, nearest_pass),
    }
    results = {}
    for name, (ours, nearest) in timings.items():
        ours_ms, nearest_ms = _median_ms(ours), _median_ms(nearest)
        results[name] = ours_ms, nearest_ms
        ratio = ours_ms / nearest_ms
        print(f"    {name:16s} triton {ours_ms:8.3f} ms   nearest {nearest_ms:8.3f} ms   ratio {ratio:5.2f}")
    return results


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
    import triton

    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__)
    for shape in CONV_SHAPES[:2] if args.quick else CONV_SHAPES:
        check_conv(shape, PRECISION_MODES, bench=not args.quick)
    for shape in UPSAMPLE_SHAPES[:2] if args.quick else UPSAMPLE_SHAPES:
        check_upsample(shape, upsample_dtypes(), bench=not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
