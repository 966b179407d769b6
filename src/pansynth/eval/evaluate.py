"""Evaluation of synthesized images: a short loop over the metrics asked for.

:func:`evaluate_images` reads ``<name>.png`` for every sample of a dataset from a folder, groups
them in batches with the samples' real images and maps (:class:`~pansynth.eval.metric.EvalBatch`),
feeds every metric and collects what they report. :func:`build_metrics` turns the networks
the user gave (:func:`load_metric_networks`) into metrics; instance separation needs none and
always runs; a metric whose network is missing is listed with the reason.
(:func:`pansynth.experiments.evaluation.evaluate_generator` synthesizes a split first.) Units as in the
paper's tables:
``mIoU``, ``accuracy``, ``detAP`` and ``detAP50`` are in %, ``FID`` is the plain distance.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from pansynth.data.io import read_image
from pansynth.data.transforms import PRESET_NAMES, PairedTransform, preset
from pansynth.devices import resolve_device
from pansynth.errors import yaml_error_line
from pansynth.eval.detection import DetectionMetric, Detector, coco_label_map, load_detector
from pansynth.eval.fid import FeatureExtractor, FIDMetric, load_inception, load_stats
from pansynth.eval.metric import EvalBatch, Metric, MetricResult
from pansynth.eval.segmentation import (
    SegmentationMetric,
    SegmentationModel,
    cityscapes_train_ids,
    load_segmentation_model,
)
from pansynth.eval.separation import SeparationMetric
from pansynth.files import keep_old
from pansynth.run_files import CONFIG_FILE
from pansynth.viz import colorize_panoptic, image_to_uint8, save_grid

__all__ = [
    "MetricNetworks",
    "build_metrics",
    "eval_transform",
    "evaluate_images",
    "format_metrics",
    "load_metric_networks",
    "weights_fingerprint",
]

METRIC_ORDER = (
    "FID", "mIoU", "accuracy", "detAP", "detAP50", "separation", "separation_real", "separation_ratio",
)  # fmt: skip


@dataclass
class MetricNetworks:
    """The networks some metrics need (each optional: a metric whose network is missing is skipped).

    Attributes:
        inception: FID feature extractor; ``fid_stats``: reference ``(mu, sigma)`` (default: the real images).
        seg_model: segmentation network; ``seg_label_map`` dataset class -> network class (default:
            Cityscapes train ids for Cityscapes, identity otherwise); ``seg_num_classes`` K.
        detector: object detector; ``det_label_map`` dataset thing class -> detector label
            (default: by COCO class names).
    """

    inception: FeatureExtractor | None = None
    fid_stats: tuple[np.ndarray, np.ndarray] | None = None
    seg_model: SegmentationModel | None = None
    seg_label_map: Mapping[int, int] | None = None
    seg_num_classes: int | None = None
    detector: Detector | None = None
    det_label_map: Mapping[int, int] | None = None

    def setup(self) -> dict[str, Any]:
        """Which networks were given (identifies what an evaluation measured)."""
        return {
            "FID": self.inception is not None,
            "fid_stats": self.fid_stats is not None,
            "segmentation": self.seg_model is not None,
            "detection": self.detector is not None,
        }


def default_segmentation_mapping(dataset) -> tuple[dict[int, int] | None, int]:
    """(dataset class -> segmentation class mapping or None for identity, number of evaluated classes).

    Cityscapes label ids (35 classes) are mapped to the 19 train ids; other datasets are compared
    class for class.
    """
    names = [str(n).lower() for n in getattr(dataset, "class_names", [])]
    if dataset.num_classes >= 34 and {"road", "sidewalk", "rider", "terrain"} <= set(names):
        return cityscapes_train_ids(), 19
    return None, dataset.num_classes


def _to_device(module: Any, device: torch.device) -> Any:
    return module.to(device).eval() if isinstance(module, torch.nn.Module) else module


def build_metrics(
    dataset, networks: MetricNetworks, device: torch.device, separation_width: int = 3
) -> tuple[list[Metric], dict[str, str]]:
    """The metrics the given networks allow, and ``{metric: reason}`` for the others."""
    metrics: list[Metric] = []
    skipped: dict[str, str] = {}
    if networks.inception is None:
        skipped["FID"] = "no Inception weights (--inception-weights)"
    else:
        metrics.append(FIDMetric(_to_device(networks.inception, device), networks.fid_stats))
    if networks.seg_model is None:
        skipped["mIoU"] = skipped["accuracy"] = "no segmentation network (--seg-model or --seg-arch/--seg-weights)"
    else:
        label_map, num_classes = networks.seg_label_map, networks.seg_num_classes
        default_map, default_classes = default_segmentation_mapping(dataset)
        label_map = default_map if label_map is None else label_map
        if num_classes is None:
            num_classes = max(label_map.values()) + 1 if label_map else default_classes
        model = _to_device(networks.seg_model, device)
        metrics.append(SegmentationMetric(model, num_classes, label_map, dataset.ignore_index))
    if networks.detector is None:
        skipped["detAP"] = skipped["detAP50"] = "no detector weights (--det-weights)"
    else:
        label_map = networks.det_label_map
        if label_map is None:
            label_map = coco_label_map(dataset.class_names, dataset.thing_classes)
        if not label_map:
            skipped["detAP"] = skipped["detAP50"] = "no thing class of the dataset matches a detector category"
        else:
            metrics.append(DetectionMetric(_to_device(networks.detector, device), label_map))
    metrics.append(SeparationMetric(dataset.thing_classes, width=separation_width))
    return metrics, skipped


def read_png(path: Path) -> Tensor:
    """Read an RGB image file as Tensor[3, H, W] float32 in [-1, 1]."""
    try:
        return read_image(path)  # the dataset readers' checks, decompression bombs included
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read synthesized image {error}") from None


def _find_image(images_dir: Path, name: str) -> Path:
    for suffix in (".png", ".jpg", ".jpeg"):
        path = images_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"synthesized image for sample {name!r} not found: expected {images_dir / (name + '.png')}")


def _batches(dataset, images_dir: Path, count: int, batch_size: int, device: torch.device):
    """(samples, EvalBatch) of consecutive samples of one size, with their synthesized images."""
    samples: list[dict] = []
    images: list[Tensor] = []

    def batch() -> tuple[list[dict], EvalBatch]:
        return samples, EvalBatch(
            fake=torch.stack(images).to(device),
            real=torch.stack([s["image"] for s in samples]).to(device),
            semantic=torch.stack([s["semantic"] for s in samples]),
            panoptic=torch.stack([s["panoptic"] for s in samples]),
        )

    for index in range(count):
        sample = dataset[index]
        image = read_png(_find_image(images_dir, sample["name"]))
        if tuple(image.shape[1:]) != tuple(sample["semantic"].shape):
            raise ValueError(
                f"{images_dir / sample['name']}.png is {image.shape[1]}x{image.shape[2]} (HxW) but its "
                f"maps are {sample['semantic'].shape[0]}x{sample['semantic'].shape[1]}: synthesize at the "
                "map's resolution"
            )
        if images and (image.shape != images[0].shape or len(images) == batch_size):
            yield batch()
            samples, images = [], []
        samples.append(sample)
        images.append(image)
    if images:
        yield batch()


@torch.no_grad()
def evaluate_images(
    dataset,
    images_dir: str | Path,
    networks: MetricNetworks | None = None,
    *,
    separation_width: int = 3,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    grid_path: str | Path | None = None,
    grid_rows: int = 4,
) -> dict:
    """Evaluate the images ``images_dir/<name>.png`` against ``dataset`` (the maps they were made from).

    Args:
        dataset: a pansynth dataset (samples with ``image``, ``semantic``, ``panoptic``, ``name``;
            ``num_classes``, ``ignore_index``, ``class_names``, ``thing_classes``).
        images_dir: folder with one synthesized image per sample, at the map's resolution.
        networks: the metric networks (default: none, so instance separation only).
        separation_width: band width (pixels) of the instance separation metric.
        limit: evaluate only the first ``limit`` samples.
        grid_path: where to write a grid PNG (panoptic | generated | real) of the first samples.

    Returns:
        ``{"metrics": {...}, "skipped": {...}, "images": n, "seconds": t, ...details}``.
    """
    start = time.time()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images folder {images_dir} not found")
    device = resolve_device(device)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise ValueError("the dataset has no samples to evaluate")
    metrics, skipped = build_metrics(dataset, networks or MetricNetworks(), device, separation_width)
    grid: list[list[np.ndarray]] = []
    for samples, batch in _batches(dataset, images_dir, count, batch_size, device):
        for metric in metrics:
            metric.update(batch)
        for sample, fake in zip(samples, batch.fake):
            if len(grid) < grid_rows:
                grid.append(
                    [colorize_panoptic(sample["panoptic"]), image_to_uint8(fake), image_to_uint8(sample["image"])]
                )
    total = MetricResult(skipped=skipped)
    for metric in metrics:
        result = metric.compute()
        total.values.update(result.values)
        total.details.update(result.details)
        total.skipped.update(result.skipped)
    result = {
        "metrics": {k: total.values[k] for k in METRIC_ORDER if k in total.values},
        "skipped": {k: v for k, v in total.skipped.items() if k not in total.values},
        "images": count,
        **total.details,
    }
    if grid_path is not None and grid:
        keep_old(Path(grid_path))
        result["grid"] = str(save_grid(grid, grid_path))
    result["seconds"] = round(time.time() - start, 2)
    return result


def format_metrics(result: Mapping) -> str:
    """A plain-text table of an :func:`evaluate_images` result."""
    lines = [f"{'metric':<18} {'value':>10}"]
    for key, value in result["metrics"].items():
        text = "n/a" if value is None else f"{value:10.3f}"
        lines.append(f"{key:<18} {text:>10}")
    for key, reason in result.get("skipped", {}).items():
        lines.append(f"{key:<18} {'skipped':>10}  ({reason})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- set-up


def read_label_map(path: str | Path | None, argument: str) -> dict[int, int] | None:
    """Read a JSON object ``{"dataset class index": target index}`` (e.g. ``{"24": 1}``)."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument} {path} not found")
    try:
        values = json.loads(path.read_text())
        return {int(k): int(v) for k, v in values.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as error:
        raise ValueError(
            f'{argument} {path}: expected a JSON object of integer pairs like {{"24": 1}} ({error})'
        ) from None


def load_metric_networks(
    inception_weights: str | Path | None = None,
    fid_stats: str | Path | None = None,
    seg_model: str | Path | None = None,
    seg_arch: str | None = None,
    seg_weights: str | Path | None = None,
    seg_num_classes: int | None = None,
    seg_label_map: str | Path | None = None,
    det_weights: str | Path | None = None,
    det_label_map: str | Path | None = None,
) -> MetricNetworks:
    """Load the metric networks from local files (all optional; nothing is downloaded).

    Everything is checked before any image is synthesized, so a wrong path fails at once.
    """
    networks = MetricNetworks()
    if fid_stats is not None and inception_weights is None:
        raise ValueError("--fid-stats needs --inception-weights PATH (the features are computed with it)")
    if inception_weights is not None:
        networks.inception = load_inception(inception_weights)
        if fid_stats is not None:
            networks.fid_stats = load_stats(fid_stats)
    if seg_model is not None or seg_arch is not None:
        networks.seg_model = load_segmentation_model(seg_model, seg_arch, seg_weights, seg_num_classes)
        networks.seg_num_classes = seg_num_classes
        networks.seg_label_map = read_label_map(seg_label_map, "--seg-label-map")
    elif seg_weights is not None:
        raise ValueError("--seg-weights needs --seg-arch NAME")
    if det_weights is not None:
        networks.detector = load_detector(det_weights)
        networks.det_label_map = read_label_map(det_label_map, "--det-label-map")
    return networks


def eval_transform(dataset_name: str, run_dir: str | Path | None = None, size: Sequence[int] | None = None):
    """Evaluation transform: ``size`` when given, else the run's training resolution
    (``data.crop_size`` or ``data.load_size`` of ``run_dir/config.yaml``), else the dataset's
    evaluation preset (Cityscapes 256x512, COCO 256x256; folders keep their size)."""
    if size is not None:
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"--size must be two positive integers H W, got {list(size)}")
        return PairedTransform(size=tuple(size))
    if run_dir is not None and (Path(run_dir) / CONFIG_FILE).is_file():
        config_path = Path(run_dir) / CONFIG_FILE
        try:
            data = (yaml.safe_load(config_path.read_text()) or {}).get("data") or {}
        except (yaml.YAMLError, AttributeError) as error:
            reason = yaml_error_line(error) if isinstance(error, yaml.YAMLError) else "not a mapping of keys"
            raise ValueError(f"{config_path} is not a readable run configuration ({reason})") from None
        run_size = data.get("crop_size") or data.get("load_size")
        if run_size:
            return PairedTransform(size=tuple(run_size))
    if dataset_name in PRESET_NAMES:
        return preset(dataset_name, train=False)
    return None


def weights_fingerprint(generator: torch.nn.Module) -> str:
    """sha256 of a generator's weights (names, shapes and values): identifies what an evaluation measured."""
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
