"""Benchmark: the panoptic-aware layers against the plain layers they replace.

``python -m pansynth.bench [--json FILE] [--device cpu|cuda] [--quick]`` (also ``make bench``)
prints one table. Every row is measured in this process: the median of several
repeats after warm-up, reported as a ratio against its baseline, so that rows taken
on the same machine compare. Peak memory held for backward is the total size of the
tensors autograd saves (measured with saved-tensor hooks), which does not depend on
the allocator.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from pansynth.ops import PanopticConv2d, PanopticUpsample, panoptic_conv2d, upsample_sources

__all__ = ["BenchRow", "run_benchmarks", "scene_panoptic", "main"]


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    return time_pair_ms(fn, None, device, repeats, warmup)[0]


def time_pair_ms(
    baseline: Callable[[], object],
    candidate: Callable[[], object] | None,
    device: torch.device,
    repeats: int = 7,
    warmup: int = 2,
) -> tuple[float, float]:
    """Median wall times (ms) of two functions, run alternately so that drifts in the
    machine's load hit both alike."""
    functions = [baseline] if candidate is None else [baseline, candidate]
    for _ in range(warmup):
        for fn in functions:
            fn()
    _synchronize(device)
    times: list[list[float]] = [[] for _ in functions]
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


def scene_panoptic(height: int, width: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """Panoptic maps (Tensor[batch, height, width]) of realistic scenes.

    Taken from the embedded procedural scenes (``pansynth.data.synthetic``): stuff regions
    and many touching, occluding instances. They are drawn at 128 px high and
    nearest-resized, so that segment sizes relative to the image stay those of the dataset.
    """
    from pansynth.data.synthetic import scene

    maps = []
    for index in range(batch):
        base_width = max(64, round(128 * width / height))
        panoptic = torch.as_tensor(scene(seed, index, (128, base_width))[2]).long()
        panoptic = F.interpolate(panoptic[None, None].double(), size=(height, width), mode="nearest")[0, 0]
        maps.append(panoptic.long())
    return torch.stack(maps)


def boundary_share(panoptic: torch.Tensor) -> float:
    """Share of pixels whose 3x3 window holds another id."""
    from pansynth.ops.panoptic_conv import window_masks

    return window_masks(panoptic, 3)[2].float().mean().item()


def bench_conv(channels: int, height: int, width: int, device: torch.device, repeats: int) -> list[BenchRow]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, height, width, generator=generator).to(device)
    weight = (torch.randn(channels, channels, 3, 3, generator=generator) * 0.02).to(device)
    bias = torch.zeros(channels, device=device)
    panoptic = scene_panoptic(height, width).to(device)
    shape = f"C={channels}, {height}x{width}"
    share = f"boundary pixels {100 * boundary_share(panoptic):.1f}%"
    rows = []
    with torch.no_grad():
        dense, partial = time_pair_ms(
            lambda: F.conv2d(x, weight, bias, padding=1), lambda: panoptic_conv2d(x, panoptic, weight, bias),
            device, repeats,
        )
    rows.append(BenchRow("panoptic_conv2d forward", shape, dense, partial, share))

    x_grad = x.clone().requires_grad_(True)
    weight_grad = weight.clone().requires_grad_(True)
    bias_grad = bias.clone().requires_grad_(True)
    grad_out = torch.randn(1, channels, height, width, generator=generator).to(device)

    def dense_step():
        F.conv2d(x_grad, weight_grad, bias_grad, padding=1).backward(grad_out)

    def partial_step():
        panoptic_conv2d(x_grad, panoptic, weight_grad, bias_grad).backward(grad_out)

    rows.append(BenchRow("panoptic_conv2d forward+backward", shape, *time_pair_ms(dense_step, partial_step, device,
                                                                                 repeats)))
    dense_saved = saved_bytes(lambda: F.conv2d(x_grad, weight_grad, bias_grad, padding=1))
    partial_saved = saved_bytes(lambda: panoptic_conv2d(x_grad, panoptic, weight_grad, bias_grad))
    rows.append(
        BenchRow(
            "panoptic_conv2d memory kept for backward (MB)",
            shape,
            dense_saved / 2**20,
            partial_saved / 2**20,
        )
    )
    return rows


def bench_upsample(channels: int, height: int, width: int, device: torch.device, repeats: int) -> BenchRow:
    """Alignment + hole filling at one generator stage vs nearest ``F.interpolate``."""
    num_classes = 35
    generator = torch.Generator().manual_seed(1)
    first_layer = PanopticConv2d(num_classes, 1024, 3).to(device)
    layer = PanopticUpsample(first_layer, channels, num_classes).to(device)
    features = torch.randn(1, channels, height, width, generator=generator).to(device)
    # Maps at strides s and s/2 of a full-resolution scene, as in the generator.
    full = scene_panoptic(height * 8, width * 8).to(device)
    panoptic_low, panoptic_high = full[:, ::8, ::8], full[:, ::4, ::4]
    semantic_high = (panoptic_high.abs() % num_classes).long()
    with torch.no_grad():
        nearest, panoptic = time_pair_ms(
            lambda: F.interpolate(features, scale_factor=2, mode="nearest"),
            lambda: layer(features, semantic_high, panoptic_low, panoptic_high),
            device, repeats,
        )
        holes = 1 - upsample_sources(panoptic_low, panoptic_high)[1].float().mean().item()
    return BenchRow(
        "PanopticUpsample (align + hole fill) vs nearest",
        f"C={channels}, {height}x{width} -> x2",
        nearest,
        panoptic,
        f"holes {100 * holes:.1f}%",
    )


def bench_generator(
    label: str, crop_size: int, aspect_ratio: float, ngf: int, device: torch.device, repeats: int
) -> list[BenchRow]:
    """Paper's generator vs the SPADE baseline: inference forward and one G+D training step."""
    from pansynth.models import Generator, MultiscaleDiscriminator
    from pansynth.models.losses import feature_matching_loss, hinge_loss_d, hinge_loss_g

    num_classes = 35
    height = round(crop_size / aspect_ratio)
    panoptic = scene_panoptic(height, crop_size, batch=1).to(device)
    semantic = (panoptic.abs() % num_classes).long()
    real = torch.rand(1, 3, height, crop_size, device=device) * 2 - 1
    forwards, steps = [], []
    for conv, upsample in (("standard", "nearest"), ("panoptic", "panoptic")):
        torch.manual_seed(0)
        generator = Generator(
            num_classes, ngf=ngf, conv=conv, upsample=upsample, crop_size=crop_size, aspect_ratio=aspect_ratio
        ).to(device)
        discriminator = MultiscaleDiscriminator(num_classes, ndf=ngf).to(device)
        opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.999))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.999))

        def forward(generator=generator):
            generator.eval()
            with torch.no_grad():
                generator(semantic, panoptic)

        def train_step(generator=generator, discriminator=discriminator, opt_g=opt_g, opt_d=opt_d):
            generator.train()
            fake = generator(semantic, panoptic)
            fake_out = discriminator(fake, semantic, panoptic)
            with torch.no_grad():
                real_out = discriminator(real, semantic, panoptic)
            loss_g = hinge_loss_g(fake_out) + 10 * feature_matching_loss(real_out, fake_out)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            loss_d = hinge_loss_d(
                discriminator(real, semantic, panoptic), discriminator(fake.detach(), semantic, panoptic)
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

        forwards.append(forward)
        steps.append(train_step)
    shape = f"{label}: {height}x{crop_size}, ngf {ngf}"
    return [
        BenchRow("generator forward (paper vs SPADE)", shape, *time_pair_ms(*forwards, device, repeats, warmup=1)),
        BenchRow("training step G+D (paper vs SPADE)", shape,
                 *time_pair_ms(*steps, device, max(3, repeats // 2), warmup=1)),
    ]


def bench_serve_synthesis(device: torch.device, repeats: int) -> BenchRow:
    """`pansynth serve`: one painted 256x256 map -> image with the demo preset's generator (ngf 8, 6 classes).

    Baseline: ``synthesize`` alone. Measured: the whole request inside the server (multipart parsing,
    PNG decoding and checks, hand-over to the synthesis thread, synthesis, PNG encoding) through
    werkzeug's in-process test client, i.e. what a stroke costs minus the browser and the socket.
    """
    import io

    from PIL import Image
    from werkzeug.test import Client

    from pansynth.inference import synthesize
    from pansynth.models import Generator
    from pansynth.serve.app import PainterApp
    from pansynth.serve.classes import build_class_table

    num_classes, size = 6, 256
    torch.manual_seed(0)
    model = Generator(num_classes, ngf=8, crop_size=size).to(device).eval()
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


def run_benchmarks(device: torch.device, quick: bool = False, generator: bool = True) -> list[BenchRow]:
    repeats = 3 if quick else 7
    rows: list[BenchRow] = []
    for channels, height, width in ((128, 128, 256), (256, 64, 128)):
        if quick:
            height, width = height // 2, width // 2
        rows += bench_conv(channels, height, width, device, repeats)
    for channels, height, width in ((1024, 16, 32), (256, 64, 128), (64, 128, 256)):
        if quick:
            height, width = height // 2, width // 2
        rows.append(bench_upsample(channels, height, width, device, repeats))
    if generator:
        if not quick:
            rows += bench_generator("cityscapes", 512, 2.0, 64, device, 3)
        rows += bench_generator("demo", 64, 1.0, 16, device, repeats)
    rows.append(bench_serve_synthesis(device, repeats))
    return rows


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pansynth.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--quick", action="store_true", help="half-size inputs and fewer repeats")
    parser.add_argument("--no-generator", action="store_true", help="skip the whole-generator rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = run_benchmarks(device, quick=args.quick, generator=not args.no_generator)
    machine = machine_description(device)
    print(f"pansynth benchmark on {machine}")
    print(format_table(rows, "times in ms (median after warm-up), memory rows in MB; ratio = panoptic / baseline"))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "rows": [asdict(row) | {"ratio": row.ratio} for row in rows]}, handle,
                      indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
