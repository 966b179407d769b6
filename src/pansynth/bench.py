"""Benchmark: the panoptic-aware layers against the plain layers they replace.

``python -m pansynth.bench [--device cpu|cuda] [--rows conv,upsample,generator,serve,export]
[--backend auto|torch|triton]
[--quick] [--no-generator] [--json FILE]`` (also ``make bench``) prints one table. Every row is
measured in this process: the median of several alternating repeats after warm-up (CUDA
events on a GPU), reported as a ratio against its baseline, so that rows taken on the same
machine compare. On every device the table has the layer rows (batch 1), the generator
rows, the painter's request (serve) and ONNX Runtime against PyTorch (export); peak memory
held for backward is the total size of the tensors autograd saves (measured with saved-tensor
hooks), which does not depend on the allocator.

On CUDA it adds, at batch 8 and at the real stage shapes of the paper's generator
(Cityscapes 256x512, ngf 64), in every precision mode (fp32 with TF32 on, as cuDNN runs it by
default, fp32 with TF32 off, bf16 and fp16), per engine (PyTorch, Triton): each stage's
panoptic convolution forward and forward+backward against cuDNN ``conv2d`` (the faster of NCHW
and channels_last); panoptic upsampling with hole filling against nearest, forward and
forward+backward; and the generator forward, the G+D training step and its peak memory
(``torch.cuda.max_memory_allocated``), paper model against the SPADE baseline, in eager and
channels_last modes (and ``torch.compile`` for fp32 TF32 and bf16, the modes of the targets).
Every backward gets its gradient in the layout of the output it differentiates (cuDNN's in the
layout cuDNN chose, the Triton engine's channels_last), so that no side pays a layout copy the
other does not.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from werkzeug.test import Client

from pansynth.data.synthetic import scene
from pansynth.inference import synthesize
from pansynth.models import Generator, HoleFillingUpsample, MultiscaleDiscriminator
from pansynth.models.losses import feature_matching_loss, hinge_loss_d, hinge_loss_g
from pansynth.models.style import code_map, kl_divergence, reparameterize
from pansynth.ops import PanopticConv2d, conv_plan, mask_plan, panoptic_conv2d, upsample_sources
from pansynth.ops._torch_engine import window_masks
from pansynth.ops._triton.check import PRECISION_MODES, PrecisionMode, precision
from pansynth.ops.backend import BACKEND_ENV, select_backend, triton_available
from pansynth.serve.app import PainterApp
from pansynth.serve.classes import build_class_table

__all__ = ["BenchRow", "run_benchmarks", "scene_panoptic", "main"]

ROW_GROUPS = ("conv", "upsample", "generator", "serve", "export")
# The generator's convolution stages at Cityscapes 256x512, ngf 64: (in, out channels, height,
# width) of each residual block's first panoptic convolution.
CITYSCAPES_CONV_STAGES = (
    (1024, 1024, 8, 16),  # head_0
    (1024, 1024, 16, 32),  # middle_0 / middle_1
    (1024, 512, 32, 64),  # up_0
    (512, 256, 64, 128),  # up_1
    (256, 128, 128, 256),  # up_2
    (128, 64, 256, 512),  # up_3
)
# The features each x2 panoptic upsampling takes: (channels, height, width).
CITYSCAPES_UPSAMPLE_STAGES = ((1024, 8, 16), (1024, 16, 32), (512, 32, 64), (256, 64, 128), (128, 128, 256))
CITYSCAPES_SIZE = (256, 512)
NUM_CLASSES = 35


@dataclass
class BenchRow:
    name: str
    shape: str
    baseline_ms: float
    panoptic_ms: float
    extra: str = ""

    @property
    def ratio(self) -> float:
        return self.panoptic_ms / self.baseline_ms


# --- timing --------------------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int = 7, warmup: int = 2) -> float:
    """Median time of ``fn`` in milliseconds."""
    return time_pair_ms(fn, None, device, repeats, warmup)[0]


def time_pair_ms(
    baseline: Callable[[], object],
    candidate: Callable[[], object] | None,
    device: torch.device,
    repeats: int = 7,
    warmup: int = 2,
) -> tuple[float, float]:
    """Median times (ms) of two functions, run alternately so that drifts in the machine's load
    hit both alike: wall time on a CPU, CUDA events on a GPU."""
    functions = [baseline] if candidate is None else [baseline, candidate]
    for _ in range(warmup):
        for fn in functions:
            fn()
    _synchronize(device)
    times: list[list[float]] = [[] for _ in functions]
    if device.type == "cuda":
        events = [[] for _ in functions]
        for _ in range(repeats):
            for fn, bucket in zip(functions, events):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                bucket.append((start, end))
        torch.cuda.synchronize(device)
        times = [[start.elapsed_time(end) for start, end in bucket] for bucket in events]
    else:
        for _ in range(repeats):
            for fn, bucket in zip(functions, times):
                start = time.perf_counter()
                fn()
                _synchronize(device)
                bucket.append((time.perf_counter() - start) * 1000)
    medians = [statistics.median(bucket) for bucket in times]
    return medians[0], medians[-1]


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``fn()``."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    del out
    return sum(storages.values())


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA memory allocated while ``fn`` runs (MB), after a warm-up call."""
    fn()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


# --- inputs --------------------------------------------------------------------------------------


def scene_panoptic(height: int, width: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Panoptic maps (Tensor[batch, height, width]) of realistic scenes.

    Taken from the embedded procedural scenes (``pansynth.data.synthetic``): stuff regions
    and many touching, occluding instances. They are drawn at 128 px high and
    nearest-resized, so that segment sizes relative to the image stay those of the dataset.
    """
    maps = []
    for index in range(batch):
        base_width = max(64, round(128 * width / height))
        panoptic = torch.as_tensor(scene(seed, index, (128, base_width))[2]).long()
        panoptic = F.interpolate(panoptic[None, None].double(), size=(height, width), mode="nearest")[0, 0]
        maps.append(panoptic.long())
    return torch.stack(maps)


def boundary_share(panoptic: torch.Tensor) -> float:
    """Share of pixels whose 3x3 window holds another id."""
    return window_masks(panoptic, 3)[2].float().mean().item()


@contextlib.contextmanager
def engine_for_auto(engine: str) -> Iterator[None]:
    """Make ``backend="auto"`` (what the generator's layers use) mean ``engine`` meanwhile."""
    previous = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = engine
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = previous


# --- rows on every device: one layer at batch 1 ---------------------------------------------------


def bench_conv(
    channels: int, height: int, width: int, device: torch.device, repeats: int, backend: str = "torch"
) -> list[BenchRow]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, height, width, generator=generator).to(device)
    weight = (torch.randn(channels, channels, 3, 3, generator=generator) * 0.02).to(device)
    bias = torch.zeros(channels, device=device)
    panoptic = scene_panoptic(height, width).to(device)
    shape = f"C={channels}, {height}x{width}"
    # The plan is built once per map and scale and shared by the layers fed that map (as the
    # generator does); its cost is shown next to the forward row.
    plan_ms = time_ms(lambda: conv_plan(panoptic, 3), device, repeats)
    plan = conv_plan(panoptic, 3)
    share = f"boundary pixels {100 * boundary_share(panoptic):.1f}%; plan {plan_ms:.2f} ms once per map"
    engine = f" [{backend}]" if backend != "torch" else ""
    rows = []
    with torch.no_grad():
        dense, partial = time_pair_ms(
            lambda: F.conv2d(x, weight, bias, padding=1),
            lambda: panoptic_conv2d(x, panoptic, weight, bias, plan=plan, backend=backend),
            device,
            repeats,
        )
    rows.append(BenchRow(f"panoptic_conv2d forward{engine}", shape, dense, partial, share))

    x_grad = x.clone().requires_grad_(True)
    weight_grad = weight.clone().requires_grad_(True)
    bias_grad = bias.clone().requires_grad_(True)
    grad_out = torch.randn(1, channels, height, width, generator=generator).to(device)

    def dense_step():
        F.conv2d(x_grad, weight_grad, bias_grad, padding=1).backward(grad_out)

    def partial_step():
        panoptic_conv2d(x_grad, panoptic, weight_grad, bias_grad, plan=plan, backend=backend).backward(grad_out)

    rows.append(
        BenchRow(
            f"panoptic_conv2d forward+backward{engine}",
            shape,
            *time_pair_ms(dense_step, partial_step, device, repeats),
        )
    )
    dense_saved = saved_bytes(lambda: F.conv2d(x_grad, weight_grad, bias_grad, padding=1))
    partial_saved = saved_bytes(
        lambda: panoptic_conv2d(x_grad, panoptic, weight_grad, bias_grad, plan=plan, backend=backend)
    )
    rows.append(
        BenchRow(
            f"panoptic_conv2d memory kept for backward (MB){engine}",
            shape,
            dense_saved / 2**20,
            partial_saved / 2**20,
        )
    )
    return rows


def bench_upsample(
    channels: int, height: int, width: int, device: torch.device, repeats: int, backend: str = "torch"
) -> BenchRow:
    """Alignment + hole filling at one generator stage vs nearest ``F.interpolate``."""
    generator = torch.Generator().manual_seed(1)
    first_layer = PanopticConv2d(NUM_CLASSES, 1024, 3, backend=backend).to(device)
    layer = HoleFillingUpsample(first_layer, channels, NUM_CLASSES, backend=backend).to(device)
    features = torch.randn(1, channels, height, width, generator=generator).to(device)
    # Maps at strides s and s/2 of a full-resolution scene, as in the generator.
    full = scene_panoptic(height * 8, width * 8).to(device)
    panoptic_low, panoptic_high = full[:, ::8, ::8], full[:, ::4, ::4]
    semantic_high = (panoptic_high.abs() % NUM_CLASSES).long()
    with torch.no_grad():
        nearest, panoptic = time_pair_ms(
            lambda: F.interpolate(features, scale_factor=2, mode="nearest"),
            lambda: layer(features, semantic_high, panoptic_low, panoptic_high),
            device,
            repeats,
        )
        holes = 1 - upsample_sources(panoptic_low, panoptic_high)[1].float().mean().item()
    engine = f" [{backend}]" if backend != "torch" else ""
    return BenchRow(
        f"panoptic upsampling (align + hole fill) vs nearest{engine}",
        f"C={channels}, {height}x{width} -> x2",
        nearest,
        panoptic,
        f"holes {100 * holes:.1f}%",
    )


def build_generator(conv: str, upsample: str, height: int, width: int, ngf: int) -> torch.nn.Module:
    """The paper's generator (``conv=upsample="panoptic"``) or the SPADE baseline at (height, width)."""
    return Generator(NUM_CLASSES, size=(height, width), ngf=ngf, conv=conv, upsample=upsample)


def _gan_step(generator, discriminator, opt_g, opt_d, semantic, panoptic, real, autocast: torch.dtype | None):
    """One G step and one D step of the hinge GAN with feature matching, as the trainer runs them."""
    device_type = real.device.type
    region = torch.autocast(device_type, dtype=autocast) if autocast else contextlib.nullcontext()
    generator.train()
    with region:
        fake = generator(semantic, panoptic)
        fake_out = discriminator(fake, semantic, panoptic)
        with torch.no_grad():
            real_out = discriminator(real, semantic, panoptic)
        loss_g = hinge_loss_g(fake_out) + 10 * feature_matching_loss(real_out, fake_out)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    with region:
        loss_d = hinge_loss_d(discriminator(real, semantic, panoptic), discriminator(fake.detach(), semantic, panoptic))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()


def bench_generator(
    label: str, height: int, width: int, ngf: int, device: torch.device, repeats: int
) -> list[BenchRow]:
    """Paper's generator vs the SPADE baseline: inference forward and one G+D training step."""
    panoptic = scene_panoptic(height, width, batch=1).to(device)
    semantic = (panoptic.abs() % NUM_CLASSES).long()
    real = torch.rand(1, 3, height, width, device=device) * 2 - 1
    forwards, steps = [], []
    for conv, upsample in (("standard", "nearest"), ("panoptic", "panoptic")):
        torch.manual_seed(0)
        generator = build_generator(conv, upsample, height, width, ngf).to(device)
        discriminator = MultiscaleDiscriminator(NUM_CLASSES, ndf=ngf).to(device)
        opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.999))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.999))

        def forward(generator=generator):
            generator.eval()
            with torch.no_grad():
                generator(semantic, panoptic)

        def train_step(generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d):
            _gan_step(generator, discriminator, opt_g, opt_d, semantic, panoptic, real, None)

        forwards.append(forward)
        steps.append(train_step)
    shape = f"{label}: {height}x{width}, ngf {ngf}"
    return [
        BenchRow("generator forward (paper vs SPADE)", shape, *time_pair_ms(*forwards, device, repeats, warmup=1)),
        BenchRow(
            "training step G+D (paper vs SPADE)", shape, *time_pair_ms(*steps, device, max(3, repeats // 2), warmup=1)
        ),
    ]


def bench_style_step(height: int, width: int, ngf: int, device: torch.device, repeats: int) -> BenchRow:
    """One G+D training step of the paper's generator with per-segment styles (E, codes, KL) vs without."""
    panoptic = scene_panoptic(height, width, batch=1).to(device)
    semantic = (panoptic.abs() % NUM_CLASSES).long()
    real = torch.rand(1, 3, height, width, device=device) * 2 - 1
    steps = []
    for style in ("none", "instance"):
        torch.manual_seed(0)
        generator = Generator(NUM_CLASSES, size=(height, width), ngf=ngf, style=style).to(device)
        discriminator = MultiscaleDiscriminator(NUM_CLASSES, ndf=ngf).to(device)
        opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.999))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.999))

        def step(generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d):
            generator.train()
            kld = 0.0
            style_map = None
            if generator.style_encoder is not None:
                mu, logvar, index, _ = generator.encode(real, panoptic)
                style_map = code_map(reparameterize(mu, logvar), index)
                kld = 0.05 * kl_divergence(mu, logvar)
            fake = generator(semantic, panoptic, style_map)
            fake_out = discriminator(fake, semantic, panoptic)
            with torch.no_grad():
                real_out = discriminator(real, semantic, panoptic)
            loss_g = hinge_loss_g(fake_out) + 10 * feature_matching_loss(real_out, fake_out) + kld
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            loss_d = hinge_loss_d(
                discriminator(real, semantic, panoptic), discriminator(fake.detach(), semantic, panoptic)
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

        steps.append(step)
    shape = f"demo: {height}x{width}, ngf {ngf}"
    return BenchRow(
        "training step G+D (style vs none)",
        shape,
        *time_pair_ms(*steps, device, max(3, repeats // 2), warmup=1),
        "baseline = the paper's generator without styles",
    )


# --- CUDA rows: batch 8 at the generator's stage shapes -------------------------------------------

# Generator rows compiled with torch.compile: the modes of the performance targets only (compiling both
# models takes minutes per mode).
COMPILED_PRECISIONS = (PrecisionMode(torch.float32, tf32=True), PrecisionMode(torch.bfloat16))


def cuda_layer_modes() -> tuple[PrecisionMode, ...]:
    """The precision modes of the CUDA layer rows (convolution and upsampling stages): all of them."""
    return PRECISION_MODES


def cuda_generator_cases(quick: bool = False) -> list[tuple[PrecisionMode, str]]:
    """(precision mode, execution mode) of the CUDA generator rows: every precision mode in eager and
    channels_last, and compiled for fp32 TF32 and bf16 (``quick``: not compiled)."""
    cases = []
    for mode in PRECISION_MODES:
        for execution in ("eager", "channels_last", "compile"):
            if execution == "compile" and (quick or mode not in COMPILED_PRECISIONS):
                continue
            cases.append((mode, execution))
    return cases


def _gradient_like(output: torch.Tensor) -> torch.Tensor:
    """A random gradient in the layout of ``output``: what autograd hands a layer's backward."""
    return torch.randn_like(output, memory_format=torch.preserve_format)


def _faster_cudnn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, backward: bool, device, repeats):
    """cuDNN conv2d at its faster layout (NCHW or channels_last), its gradient in its output's layout: (ms, layout)."""
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x_l = x.detach().contiguous(memory_format=layout).requires_grad_(backward)
        w_l = weight.detach().contiguous(memory_format=layout).requires_grad_(backward)
        b_l = bias.detach().requires_grad_(backward)
        with torch.no_grad():
            grad_out = _gradient_like(F.conv2d(x_l, w_l, b_l, padding=weight.shape[-1] // 2))

        def run(x_l=x_l, w_l=w_l, b_l=b_l, grad_out=grad_out):
            with torch.set_grad_enabled(backward):
                out = F.conv2d(x_l, w_l, b_l, padding=weight.shape[-1] // 2)
                if backward:
                    out.backward(grad_out)

        results.append((time_ms(run, device, repeats), "NCHW" if layout == torch.contiguous_format else "NHWC"))
    return min(results)


def _panoptic_conv_ms(x, weight, bias, panoptic, plan, engine: str, backward: bool, device, repeats) -> float:
    """One engine's panoptic convolution in its own layout (NCHW for the PyTorch engine; NHWC input and
    weight for Triton, as the trainer stores them on CUDA), its gradient in the layout of its output.
    ``plan`` is the engine's plan of the map (``conv_plan`` or ``mask_plan``), built once per map."""
    fmt = torch.channels_last if engine == "triton" else torch.contiguous_format
    x = x.detach().contiguous(memory_format=fmt).requires_grad_(backward)
    weight = weight.detach().clone(memory_format=fmt).requires_grad_(backward)
    bias = bias.detach().clone().requires_grad_(backward)
    with torch.no_grad():
        grad_out = _gradient_like(panoptic_conv2d(x, panoptic, weight, bias, plan=plan, backend=engine))

    def run():
        with torch.set_grad_enabled(backward):
            out = panoptic_conv2d(x, panoptic, weight, bias, plan=plan, backend=engine)
            if backward:
                out.backward(grad_out)

    return time_ms(run, device, repeats)


def bench_cuda_conv_stages(device: torch.device, engines: list[str], repeats: int, batch: int = 8) -> list[BenchRow]:
    generator = torch.Generator().manual_seed(2)
    full = scene_panoptic(*CITYSCAPES_SIZE, batch=batch).to(device)
    rows = []
    for mode in cuda_layer_modes():
        for in_channels, out_channels, height, width in CITYSCAPES_CONV_STAGES:
            stride = CITYSCAPES_SIZE[0] // height
            panoptic = full[:, ::stride, ::stride]
            x = torch.randn(batch, in_channels, height, width, generator=generator).to(device, mode.dtype)
            weight = (torch.randn(out_channels, in_channels, 3, 3, generator=generator) * 0.02).to(device, mode.dtype)
            bias = torch.zeros(out_channels, device=device, dtype=mode.dtype)
            shape = f"N={batch}, {in_channels}->{out_channels}, {height}x{width}"
            plans = {"torch": conv_plan(panoptic, 3), "triton": mask_plan(panoptic, 3)}
            for backward in (False, True):
                with precision(mode):
                    dense_ms, layout = _faster_cudnn(x, weight, bias, backward, device, repeats)
                    for engine in engines:
                        panoptic_ms = _panoptic_conv_ms(
                            x, weight, bias, panoptic, plans[engine], engine, backward, device, repeats
                        )
                        what = "forward+backward" if backward else "forward"
                        rows.append(
                            BenchRow(
                                f"conv stage {what} [{mode.name}, {engine}] vs cuDNN",
                                shape,
                                dense_ms,
                                panoptic_ms,
                                f"cuDNN {layout}",
                            )
                        )
    return rows


def bench_cuda_upsample_stages(
    device: torch.device, engines: list[str], repeats: int, batch: int = 8
) -> list[BenchRow]:
    generator = torch.Generator().manual_seed(3)
    full = scene_panoptic(*CITYSCAPES_SIZE, batch=batch).to(device)
    rows = []
    for mode in cuda_layer_modes():
        for channels, height, width in CITYSCAPES_UPSAMPLE_STAGES:
            stride = CITYSCAPES_SIZE[0] // height
            maps = full[:, ::stride, ::stride], full[:, :: stride // 2, :: stride // 2]
            features = torch.randn(batch, channels, height, width, generator=generator).to(device, mode.dtype)
            for backward in (False, True):
                with precision(mode):
                    nearest_ms = _nearest_ms(features, backward, device, repeats)
                    for engine in engines:
                        what = "forward+backward" if backward else "forward"
                        rows.append(
                            BenchRow(
                                f"panoptic upsampling (align + hole fill) {what} [{mode.name}, {engine}] vs nearest",
                                f"N={batch}, C={channels}, {height}x{width} -> x2",
                                nearest_ms,
                                _panoptic_upsample_ms(features, *maps, engine, backward, device, repeats),
                            )
                        )
    return rows


def _nearest_ms(features, backward: bool, device, repeats) -> float:
    features = features.detach().requires_grad_(backward)
    with torch.no_grad():
        grad_out = _gradient_like(F.interpolate(features, scale_factor=2, mode="nearest"))

    def run():
        with torch.set_grad_enabled(backward):
            out = F.interpolate(features, scale_factor=2, mode="nearest")
            if backward:
                out.backward(grad_out)

    return time_ms(run, device, repeats)


def _panoptic_upsample_ms(features, panoptic_low, panoptic_high, engine: str, backward: bool, device, repeats):
    channels, dtype = features.shape[1], features.dtype
    first_layer = PanopticConv2d(NUM_CLASSES, 1024, 3, backend=engine).to(device, dtype)
    layer = HoleFillingUpsample(first_layer, channels, NUM_CLASSES, backend=engine).to(device, dtype)
    fmt = torch.channels_last if engine == "triton" else torch.contiguous_format
    features = features.detach().contiguous(memory_format=fmt).requires_grad_(backward)
    semantic_high = (panoptic_high.abs() % NUM_CLASSES).long()
    with torch.no_grad():
        grad_out = _gradient_like(layer(features, semantic_high, panoptic_low, panoptic_high))

    def run():
        with torch.set_grad_enabled(backward):
            out = layer(features, semantic_high, panoptic_low, panoptic_high)
            if backward:
                out.backward(grad_out)

    return time_ms(run, device, repeats)


def bench_cuda_generator(
    device: torch.device, engines: list[str], repeats: int, quick: bool, batch: int = 8, ngf: int = 64
) -> list[BenchRow]:
    """Paper model vs SPADE baseline at Cityscapes 256x512: forward, G+D step, peak memory, per
    precision and execution mode (:func:`cuda_generator_cases`), per engine of the paper model. In
    bf16 and fp16 both models run under autocast (fp16 without a gradient scaler: timings only)."""
    height, width = CITYSCAPES_SIZE
    panoptic = scene_panoptic(height, width, batch=batch).to(device)
    semantic = (panoptic.abs() % NUM_CLASSES).long()
    real = torch.rand(batch, 3, height, width, device=device) * 2 - 1
    rows = []
    for engine in engines:
        for mode, execution in cuda_generator_cases(quick):
            results = {}
            for model, (conv, upsample) in (("spade", ("standard", "nearest")), ("paper", ("panoptic",) * 2)):
                with engine_for_auto(engine), precision(mode):
                    results[model] = _time_generator_pair(
                        build_generator(conv, upsample, height, width, ngf),
                        MultiscaleDiscriminator(NUM_CLASSES, ndf=ngf),
                        execution,
                        mode.dtype,
                        semantic,
                        panoptic,
                        real,
                        device,
                        repeats,
                    )
                gc.collect()
                torch.cuda.empty_cache()
            shape = f"cityscapes N={batch}, {height}x{width}, ngf {ngf}"
            tag = f"[{mode.name}, {execution}, paper on {engine}]"
            spade, paper = results["spade"], results["paper"]
            rows += [
                BenchRow(f"generator forward {tag} (paper vs SPADE)", shape, spade[0], paper[0]),
                BenchRow(f"training step G+D {tag} (paper vs SPADE)", shape, spade[1], paper[1]),
                BenchRow(f"peak memory G+D step (MB) {tag} (paper vs SPADE)", shape, spade[2], paper[2]),
            ]
    return rows


def _time_generator_pair(generator, discriminator, mode, dtype, semantic, panoptic, real, device, repeats):
    """(forward ms, G+D step ms, peak MB of a step) of one model in one mode."""
    torch.manual_seed(0)
    generator, discriminator = generator.to(device), discriminator.to(device)
    if mode == "channels_last":
        generator = generator.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.999))
    run_generator, run_discriminator = generator, discriminator
    if mode == "compile":
        # The generator's stages are frames of their own (one per upsampling, in train and eval
        # mode): let each keep its compiled variants instead of falling back to eager.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        run_generator, run_discriminator = torch.compile(generator), torch.compile(discriminator)
    autocast = dtype if dtype != torch.float32 else None

    def forward():
        generator.eval()
        region = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.no_grad(), region:
            run_generator(semantic, panoptic)

    def step():
        _gan_step(run_generator, run_discriminator, opt_g, opt_d, semantic, panoptic, real, autocast)

    forward_ms = time_ms(forward, device, repeats, warmup=2)
    step_ms = time_ms(step, device, max(3, repeats // 2), warmup=2)
    return forward_ms, step_ms, peak_memory_mb(step, device)


# --- the table -----------------------------------------------------------------------------------


def engines_for(device: torch.device, backend: str) -> tuple[list[str], list[str]]:
    """The engines to measure for ``--backend`` on ``device``, and notes on those left out."""
    if backend in ("torch", "triton"):
        select_backend(backend, torch.empty(0, device=device))  # a clear error if it cannot run here
        return [backend], []
    engines, notes = ["torch"], []
    if device.type == "cuda":
        if triton_available(device):
            engines.append("triton")
        else:
            notes.append("Triton rows skipped: the Triton kernels are not available on this machine")
    return engines, notes


def bench_serve_synthesis(device: torch.device, repeats: int) -> BenchRow:
    """`pansynth serve`: one painted 256x256 map -> image with the demo preset's generator (ngf 8, 6 classes).

    Baseline: ``synthesize`` alone. Measured: the whole request inside the server (multipart parsing,
    PNG decoding and checks, hand-over to the synthesis thread, synthesis, PNG encoding) through
    werkzeug's in-process test client, i.e. what a stroke costs minus the browser and the socket.
    """
    num_classes, size = 6, 256
    torch.manual_seed(0)
    model = Generator(num_classes, size=(size, size), ngf=8).to(device).eval()
    panoptic = scene_panoptic(size, size)[0]
    semantic = torch.where(panoptic >= 1000, panoptic // 1000, panoptic)  # stuff id c, thing id c * 1000 + k
    pngs = {}
    maps = {"semantic": semantic.numpy().astype("uint8"), "panoptic": panoptic.numpy().astype("uint16")}
    for name, array in maps.items():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        pngs[name] = buffer.getvalue()
    app = PainterApp(model, build_class_table(num_classes, None))
    client = Client(app)

    def request() -> None:
        files = {name: (io.BytesIO(data), f"{name}.png") for name, data in pngs.items()}
        response = client.post("/api/synthesize", data=files)
        if response.status_code != 200:
            raise RuntimeError(f"serve benchmark: the request failed: {response.get_data(as_text=True)}")

    try:
        direct, served = time_pair_ms(lambda: synthesize(model, semantic, panoptic), request, device, repeats)
    finally:
        app.close()
    return BenchRow(
        "serve: one stroke's synthesis (synthesize vs whole request)",
        f"{size}x{size}, demo model ngf 8",
        direct,
        served,
        "target: request < 1000 ms on a 2-core CPU",
    )


def bench_export(size: int, repeats: int, ngf: int = 8, num_classes: int = 6) -> BenchRow:
    """`pansynth export`: the paper model on ONNX Runtime (CPU provider) vs PyTorch eager, one map.

    The demo preset's width (ngf 8, 6 classes); the exported file sizes are in the note.
    """
    import tempfile
    from pathlib import Path

    from pansynth.export import OnnxGenerator, export_onnx, export_program

    torch.manual_seed(0)
    model = Generator(num_classes, size=(size, size), ngf=ngf).eval()
    panoptic = scene_panoptic(size, size)
    semantic = torch.where(panoptic >= 1000, panoptic // 1000, panoptic)  # stuff id c, thing id c * 1000 + k
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = export_onnx(model, Path(folder) / "model.onnx")
        program_path = export_program(model, Path(folder) / "model.pt2")
        onnx_mib, program_mib = (path.stat().st_size / 2**20 for path in (onnx_path, program_path))
        sizes = f"files: .onnx {onnx_mib:.1f} MiB, .pt2 {program_mib:.1f} MiB"
        runtime = OnnxGenerator(onnx_path, threads=torch.get_num_threads())
        with torch.no_grad():
            eager_ms, onnx_ms = time_pair_ms(
                lambda: model(semantic, panoptic), lambda: runtime(semantic, panoptic), torch.device("cpu"), repeats
            )
    return BenchRow(
        "export: paper model, PyTorch eager vs ONNX Runtime (CPU)",
        f"{size}x{size}, ngf {ngf}, batch 1",
        eager_ms,
        onnx_ms,
        sizes,
    )


def run_benchmarks(
    device: torch.device,
    quick: bool = False,
    generator: bool = True,
    rows: tuple[str, ...] = ROW_GROUPS,
    backend: str = "auto",
) -> tuple[list[BenchRow], list[str]]:
    """The rows of the groups in ``rows``, and notes on what was skipped."""
    repeats = 3 if quick else 7
    engines, notes = engines_for(device, backend)
    # Batch-1 layer rows run the engine asked for, or the PyTorch engine (the CPU path).
    layer_engine = engines[-1] if backend != "auto" else "torch"
    table: list[BenchRow] = []
    if "conv" in rows:
        for channels, height, width in ((128, 128, 256), (256, 64, 128)):
            if quick:
                height, width = height // 2, width // 2
            table += bench_conv(channels, height, width, device, repeats, layer_engine)
    if "upsample" in rows:
        for channels, height, width in ((1024, 16, 32), (256, 64, 128), (64, 128, 256)):
            if quick:
                height, width = height // 2, width // 2
            table.append(bench_upsample(channels, height, width, device, repeats, layer_engine))
    if "generator" in rows and generator:
        with engine_for_auto(layer_engine):
            if not quick:
                table += bench_generator("cityscapes", 256, 512, 64, device, 3)
            table += bench_generator("demo", 64, 64, 16, device, repeats)
            table.append(bench_style_step(64, 64, 16, device, repeats))
    if "serve" in rows:
        table.append(bench_serve_synthesis(device, repeats))
    if "export" in rows:
        for size in (64, 256):  # the demo size, and 256x256 with the demo's width
            table.append(bench_export(size, repeats))
    if device.type == "cuda":
        if "conv" in rows:
            table += bench_cuda_conv_stages(device, engines, repeats)
        if "upsample" in rows:
            table += bench_cuda_upsample_stages(device, engines, repeats)
        if "generator" in rows and generator:
            table += bench_cuda_generator(device, engines, repeats, quick)
    else:
        notes.append(
            f"CUDA-only rows skipped on {device.type} (batch-8 generator stages, Triton vs PyTorch engine, "
            "channels_last and compiled modes, peak memory): run with --device cuda"
        )
    return table, notes


def format_table(rows: list[BenchRow], unit_note: str) -> str:
    lines = [
        "| benchmark | shape | baseline | panoptic | ratio | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.shape} | {row.baseline_ms:.2f} | {row.panoptic_ms:.2f} | "
            f"{row.ratio:.2f}x | {row.extra} |"
        )
    lines.append(unit_note)
    return "\n".join(lines)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    processor = platform.processor() or platform.machine()
    return f"CPU {processor}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _row_groups(value: str) -> tuple[str, ...]:
    groups = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(set(groups) - set(ROW_GROUPS))
    if unknown or not groups:
        raise argparse.ArgumentTypeError(
            f"--rows takes a comma-separated subset of {','.join(ROW_GROUPS)}, got {value!r}"
        )
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pansynth.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda when available); cuda adds the batch-8 Cityscapes rows in "
        + ", ".join(mode.name for mode in PRECISION_MODES),
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--quick", action="store_true", help="half-size inputs and fewer repeats")
    parser.add_argument("--no-generator", action="store_true", help="skip the whole-generator rows")
    parser.add_argument(
        "--rows",
        type=_row_groups,
        default=ROW_GROUPS,
        help=f"comma-separated groups of rows to run, of {','.join(ROW_GROUPS)} (default: all; serve is the "
        "painter's request, export ONNX Runtime against PyTorch)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "triton"),
        default="auto",
        help="engine of the panoptic layers: auto measures the PyTorch engine and, on CUDA, the Triton one too",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    try:
        rows, notes = run_benchmarks(
            device, quick=args.quick, generator=not args.no_generator, rows=args.rows, backend=args.backend
        )
    except ValueError as error:  # e.g. --backend triton where it cannot run
        print(f"error: {error}", file=sys.stderr)
        return 2
    machine = machine_description(device)
    print(f"pansynth benchmark on {machine}")
    print(format_table(rows, "times in ms (median after warm-up), memory rows in MB; ratio = panoptic / baseline"))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"machine": machine, "rows": [asdict(row) | {"ratio": row.ratio} for row in rows], "notes": notes},
                handle,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
