"""Evaluation of synthesized images: FID, mIoU / accuracy, detAP and instance separation.

:func:`evaluate_images` is the core: it reads ``<name>.png`` for every sample of a dataset
from a folder, compares it with the sample's maps and real image, and returns the metrics
whose networks were given (instance separation needs none); every skipped metric is listed
with the reason. :func:`evaluate_checkpoint` first synthesizes the split with
``pansynth.inference``. Percent units as in the paper's tables: ``mIoU``, ``accuracy``,
``detAP`` and ``detAP50`` are in %, ``FID`` is the plain distance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pansynth.eval.detection import DetectionAP, Detector, boxes_from_panoptic, coco_label_map
from pansynth.eval.fid import FeatureExtractor, FeatureStats, fid_from_stats, frechet_distance, to_uint8
from pansynth.eval.report import colorize_panoptic, image_to_uint8, save_grid
from pansynth.eval.segmentation import ConfusionMatrix, SegmentationModel, apply_mapping, cityscapes_train_ids
from pansynth.eval.separation import SeparationScore

METRIC_ORDER = (
    "FID", "mIoU", "accuracy", "detAP", "detAP50", "separation", "separation_real", "separation_ratio",
)  # fmt: skip


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; other names as given."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}") from None


def read_png(path: Path) -> Tensor:
    """Read an RGB image file as Tensor[3, H, W] float32 in [-1, 1]."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read synthesized image {path}: {error}") from None
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def default_segmentation_mapping(dataset) -> tuple[dict[int, int] | None, int]:
    """(dataset class -> segmentation class mapping or None for identity, number of evaluated classes).

    Cityscapes label ids (35 classes) are mapped to the 19 train ids; other datasets are compared
    class for class.
    """
    names = [str(n).lower() for n in getattr(dataset, "class_names", [])]
    if dataset.num_classes >= 34 and {"road", "sidewalk", "rider", "terrain"} <= set(names):
        return cityscapes_train_ids(), 19
    return None, dataset.num_classes


def _find_image(images_dir: Path, name: str) -> Path:
    for suffix in (".png", ".jpg", ".jpeg"):
        path = images_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"synthesized image for sample {name!r} not found: expected {images_dir / (name + '.png')}"
    )


def evaluate_images(
    dataset,
    images_dir: str | Path,
    *,
    inception: FeatureExtractor | None = None,
    fid_stats: tuple[np.ndarray, np.ndarray] | None = None,
    seg_model: SegmentationModel | None = None,
    seg_label_map: Mapping[int, int] | None = None,
    seg_num_classes: int | None = None,
    detector: Detector | None = None,
    det_label_map: Mapping[int, int] | None = None,
    separation_width: int = 3,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    grid_path: str | Path | None = None,
    grid_rows: int = 4,
    skipped: Mapping[str, str] | None = None,
) -> dict:
    """Evaluate the images ``images_dir/<name>.png`` against ``dataset`` (the maps they were made from).

    Args:
        dataset: a pansynth dataset (samples with ``image``, ``semantic``, ``panoptic``, ``name``).
        images_dir: folder with one synthesized image per sample, at the map's resolution.
        inception: FID feature extractor (uint8 images -> features); None skips FID.
        fid_stats: reference ``(mu, sigma)``; default: computed from the dataset's real images.
        seg_model: segmentation network; None skips mIoU / accuracy.
        seg_label_map: dataset class -> segmentation class (default: Cityscapes train ids for
            Cityscapes, identity otherwise); unmapped classes are ignored.
        seg_num_classes: number of evaluated classes (default from the mapping / dataset).
        detector: object detector; None skips detAP.
        det_label_map: dataset thing class -> detector label (default: by COCO class names).
        separation_width: band width (pixels) of the instance separation metric.
        limit: evaluate only the first ``limit`` samples.
        grid_path: where to write a grid PNG (panoptic | generated | real) of the first samples.
        skipped: metrics already known to be skipped, ``{metric: reason}``.

    Returns:
        ``{"metrics": {...}, "skipped": {...}, "images": n, "per_class_iou": [...] (when mIoU ran),
        "gt_boxes": n (when detAP ran), "seconds": t}``.
    """
    start = time.time()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images folder {images_dir} not found")
    device = resolve_device(device)
    skipped = dict(skipped or {})
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise ValueError("the dataset has no samples to evaluate")

    fake_stats: FeatureStats | None = None
    real_stats: FeatureStats | None = None
    if inception is None:
        skipped.setdefault("FID", "no Inception weights (--inception-weights)")
    elif isinstance(inception, torch.nn.Module):
        inception = inception.to(device)

    confusion = None
    if seg_model is None:
        skipped.setdefault("mIoU", "no segmentation network (--seg-model or --seg-arch/--seg-weights)")
        skipped.setdefault("accuracy", skipped["mIoU"])
    else:
        default_map, default_classes = default_segmentation_mapping(dataset)
        if seg_label_map is None:
            seg_label_map = default_map
        if seg_num_classes is None:
            seg_num_classes = max(seg_label_map.values()) + 1 if seg_label_map else default_classes
        confusion = ConfusionMatrix(seg_num_classes)
        seg_model = seg_model.to(device).eval()

    detection = None
    if detector is None:
        skipped.setdefault("detAP", "no detector weights (--det-weights)")
        skipped.setdefault("detAP50", skipped["detAP"])
    else:
        if det_label_map is None:
            det_label_map = coco_label_map(dataset.class_names, dataset.thing_classes)
        if not det_label_map:
            skipped["detAP"] = "no thing class of the dataset matches a detector category"
            skipped["detAP50"] = skipped["detAP"]
        else:
            detection = DetectionAP(labels=sorted(set(det_label_map.values())))
            detector = detector.to(device).eval()

    separation = SeparationScore(dataset.thing_classes, width=separation_width)
    grid_rows_images: list[list[np.ndarray]] = []

    def flush(batch: list[dict], generated: list[Tensor]) -> None:
        nonlocal fake_stats, real_stats
        fake = torch.stack(generated).to(device)
        real = torch.stack([s["image"] for s in batch]).to(device)
        semantic = torch.stack([s["semantic"] for s in batch])
        panoptic = torch.stack([s["panoptic"] for s in batch])
        with torch.no_grad():
            if inception is not None:
                features = inception(to_uint8(fake)).reshape(len(batch), -1).cpu()
                fake_stats = fake_stats or FeatureStats(features.shape[1])
                fake_stats.update(features)
                if fid_stats is None:
                    real_features = inception(to_uint8(real)).reshape(len(batch), -1).cpu()
                    real_stats = real_stats or FeatureStats(real_features.shape[1])
                    real_stats.update(real_features)
            if confusion is not None:
                prediction = seg_model(fake, tuple(semantic.shape[-2:])).cpu()
                target = semantic.clone()
                if dataset.ignore_index is not None:
                    target[target == dataset.ignore_index] = -1
                target = apply_mapping(target, seg_label_map)
                confusion.update(prediction, target)
            if detection is not None:
                predictions = detector(fake)
                targets = []
                for sample in batch:
                    boxes, labels = boxes_from_panoptic(sample["panoptic"], sample["semantic"], det_label_map)
                    targets.append({"boxes": boxes, "labels": labels})
                detection.update(predictions, targets)
        for index, sample in enumerate(batch):
            separation.update(generated[index], sample["image"], panoptic[index], semantic[index])

    batch: list[dict] = []
    generated: list[Tensor] = []
    for index in range(count):
        sample = dataset[index]
        image = read_png(_find_image(images_dir, sample["name"]))
        if tuple(image.shape[1:]) != tuple(sample["semantic"].shape):
            raise ValueError(
                f"{images_dir / sample['name']}.png is {image.shape[1]}x{image.shape[2]} (HxW) but its "
                f"maps are {sample['semantic'].shape[0]}x{sample['semantic'].shape[1]}: synthesize at the "
                "map's resolution"
            )
        if grid_path is not None and len(grid_rows_images) < grid_rows:
            grid_rows_images.append(
                [
                    colorize_panoptic(sample["panoptic"]),
                    image_to_uint8(image),
                    image_to_uint8(sample["image"]),
                ]
            )
        if batch and image.shape != generated[0].shape:
            flush(batch, generated)
            batch, generated = [], []
        batch.append(sample)
        generated.append(image)
        if len(batch) == batch_size:
            flush(batch, generated)
            batch, generated = [], []
    if batch:
        flush(batch, generated)

    metrics: dict[str, float | None] = {}
    result: dict = {"metrics": metrics, "skipped": skipped, "images": count}
    if fake_stats is not None:
        if count < 2:
            skipped["FID"] = "FID needs at least 2 images"
        elif fid_stats is not None:
            metrics["FID"] = fid_from_stats(fake_stats, *fid_stats)
            result["fid_reference"] = "statistics file"
        else:
            metrics["FID"] = frechet_distance(
                fake_stats.mean(), fake_stats.cov(), real_stats.mean(), real_stats.cov()
            )
            result["fid_reference"] = f"the {count} real images of the evaluated split"
    if confusion is not None:
        seg = confusion.compute()
        metrics["mIoU"] = 100 * seg["miou"]
        metrics["accuracy"] = 100 * seg["accuracy"]
        result["per_class_iou"] = seg["per_class_iou"]
    if detection is not None:
        det = detection.compute()
        result["gt_boxes"] = det["gt_boxes"]
        if det["gt_boxes"] == 0:
            skipped["detAP"] = "no ground-truth thing instance of a detector category in the maps"
            skipped["detAP50"] = skipped["detAP"]
        else:
            metrics["detAP"] = 100 * det["detAP"]
            metrics["detAP50"] = 100 * det["detAP50"]
    sep = separation.compute()
    result["separation_pairs"] = sep.pop("separation_pairs")
    if result["separation_pairs"] == 0:
        skipped["separation"] = "no pair of touching instances of the same thing class in the maps"
    else:
        metrics.update(sep)
    result["metrics"] = {k: metrics[k] for k in METRIC_ORDER if k in metrics}
    result["skipped"] = {k: v for k, v in skipped.items() if k not in result["metrics"]}
    if grid_path is not None and grid_rows_images:
        keep_old(Path(grid_path))
        result["grid"] = str(save_grid(grid_rows_images, grid_path))
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


def keep_old(path: Path) -> None:
    """Rename an existing ``path`` to ``<name>.bak`` (``.bak2``, ...) so that nothing is lost."""
    if not path.exists():
        return
    backup = path.with_name(path.name + ".bak")
    index = 1
    while backup.exists():
        index += 1
        backup = path.with_name(f"{path.name}.bak{index}")
    path.replace(backup)


def write_text_keeping_old(path: Path, text: str) -> Path:
    """Write ``text``; a different existing file is kept as ``<name>.bak`` (``.bak2`` ...), not lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text() == text:
        return path
    keep_old(path)
    path.write_text(text)
    return path


def write_json_new(path: Path, payload: Mapping) -> Path:
    """Write JSON with :func:`write_text_keeping_old`."""
    return write_text_keeping_old(path, json.dumps(payload, indent=2))


# --------------------------------------------------------------------------- orchestration


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
) -> dict:
    """Build the keyword arguments of :func:`evaluate_images` from file paths (all optional).

    Everything is checked before any image is synthesized, so a wrong path fails at once.
    """
    from pansynth.eval.detection import load_detector
    from pansynth.eval.fid import load_inception, load_stats
    from pansynth.eval.segmentation import load_segmentation_model

    kwargs: dict = {"skipped": {}}
    if fid_stats is not None and inception_weights is None:
        raise ValueError("--fid-stats needs --inception-weights PATH (the features are computed with it)")
    if inception_weights is not None:
        kwargs["inception"] = load_inception(inception_weights)
        if fid_stats is not None:
            kwargs["fid_stats"] = load_stats(fid_stats)
    if seg_model is not None or seg_arch is not None:
        kwargs["seg_model"] = load_segmentation_model(seg_model, seg_arch, seg_weights, seg_num_classes)
        kwargs["seg_num_classes"] = seg_num_classes
        kwargs["seg_label_map"] = read_label_map(seg_label_map, "--seg-label-map")
    elif seg_weights is not None:
        raise ValueError("--seg-weights needs --seg-arch NAME")
    if det_weights is not None:
        kwargs["detector"] = load_detector(det_weights)
        kwargs["det_label_map"] = read_label_map(det_label_map, "--det-label-map")
    return kwargs


def eval_transform(dataset_name: str, run_dir: str | Path | None = None, size: Sequence[int] | None = None):
    """Evaluation transform: ``size`` when given, else the run's training resolution
    (``data.crop_size`` or ``data.load_size`` of ``run_dir/config.yaml``), else the dataset's
    evaluation preset (Cityscapes 256x512, COCO 256x256; folders keep their size)."""
    from pansynth.data.transforms import PRESET_NAMES, PairedTransform, preset

    if size is not None:
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"--size must be two positive integers H W, got {list(size)}")
        return PairedTransform(size=tuple(size))
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        import yaml

        data = (yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}).get("data") or {}
        run_size = data.get("crop_size") or data.get("load_size")
        if run_size:
            return PairedTransform(size=tuple(run_size))
    if dataset_name in PRESET_NAMES:
        return preset(dataset_name, train=False)
    return None


def _weights_fingerprint(checkpoint: Path) -> str | None:
    """sha256 of the run's exported weights (identifies what an evaluation measured)."""
    import hashlib

    candidates = [checkpoint / "export" / "model.safetensors", checkpoint / "model.safetensors", checkpoint]
    for path in candidates:
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            return digest.hexdigest()
    return None


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset,
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    extra: Mapping | None = None,
    **metric_kwargs,
) -> dict:
    """Synthesize ``dataset`` with the generator of ``checkpoint`` into ``out_dir/images`` and evaluate.

    Writes ``out_dir/metrics.json`` (with ``extra`` entries added) and ``out_dir/grid.png``; an
    existing ``out_dir/images`` folder is never written over (choose another ``out_dir`` or
    evaluate it with :func:`evaluate_images`).
    """
    from torch.utils.data import Subset

    from pansynth.inference import load_generator, synthesize_dataset

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    device = resolve_device(device)
    images_dir = out_dir / "images"
    if images_dir.exists() and any(images_dir.iterdir()):
        raise FileExistsError(
            f"{images_dir} already holds images; evaluate them with --images {images_dir} "
            "or choose another --out"
        )
    generator = load_generator(checkpoint, device=device)
    subset = dataset if limit is None else Subset(dataset, range(min(limit, len(dataset))))
    synthesize_dataset(generator, subset, images_dir, batch_size=batch_size, device=device, progress=False)
    result = evaluate_images(
        dataset, images_dir, batch_size=batch_size, device=device, limit=limit,
        grid_path=out_dir / "grid.png", **metric_kwargs,
    )  # fmt: skip
    result["checkpoint"] = str(checkpoint)
    result["weights_sha256"] = _weights_fingerprint(checkpoint)
    result["limit"] = limit
    result.update(extra or {})
    write_json_new(out_dir / "metrics.json", result)
    return result
