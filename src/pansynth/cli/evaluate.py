"""``pansynth evaluate``, ``fid-stats``, ``analyze upsampling`` and ``report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pansynth.cli.common import (
    CHECKPOINT_HELP,
    add_dataset_arguments,
    add_device_argument,
    check_limit,
    load_checkpoint_argument,
)
from pansynth.data import build_dataset
from pansynth.data.corrupt import CORRUPTIONS, Corruption, parse_corruption
from pansynth.devices import resolve_device
from pansynth.eval.evaluate import (
    eval_transform,
    evaluate_images,
    format_metrics,
    load_metric_networks,
)
from pansynth.eval.fid import accumulate_features, dataset_image_batches, load_inception
from pansynth.eval.report import write_run_report
from pansynth.eval.upsampling import analyze_dataset, format_table, write_analysis
from pansynth.experiments.evaluation import evaluate_generator
from pansynth.files import write_json_keeping_old

SIZE_HELP = "resize maps and images to H W (default: the run's training size, else the dataset's evaluation size)"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="FID, mIoU/accuracy, detAP and instance separation of a generator on a dataset split",
        description="Synthesize a split with a trained generator (or read already synthesized images) and "
        "compute every metric whose network was given; instance separation needs none.",
    )
    evaluate.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    evaluate.add_argument("--images", type=Path, help="folder of already synthesized <name>.png (no --checkpoint)")
    add_dataset_arguments(evaluate, size=True, size_help=SIZE_HELP)
    add_device_argument(evaluate)
    add_metric_arguments(evaluate)
    add_corrupt_arguments(evaluate)
    evaluate.add_argument(
        "--out",
        type=Path,
        help="output folder (default RUN/eval, RUN/eval-<corruptions> with --corrupt, or IMAGES_eval)",
    )
    evaluate.set_defaults(func=_evaluate)

    stats = subparsers.add_parser(
        "fid-stats",
        help="save a dataset's FID reference statistics (Inception mean/covariance) to an .npz",
        description="Compute the mean and covariance of the FID Inception-v3 features of a dataset split's real "
        "images, for `pansynth evaluate --fid-stats`.",
    )
    add_dataset_arguments(stats, size=True, size_help="resize the images to H W (default: the dataset's "
                          "evaluation size)")  # fmt: skip
    add_device_argument(stats)
    stats.add_argument("--out", type=Path, required=True, help="output .npz file (must not exist)")
    stats.add_argument("--inception-weights", type=Path, help="local FID Inception weights (pt_inception-*.pth)")
    stats.set_defaults(func=_fid_stats)

    analyze = subparsers.add_parser(
        "analyze",
        help="analyses of the data (upsampling: the paper's Figure 4)",
        description="Analyses of a dataset's maps.",
    )
    analyses = analyze.add_subparsers(dest="analysis", metavar="ANALYSIS")
    upsampling = analyses.add_parser(
        "upsampling",
        help="share of new pixels misaligned / needing hole filling at each 2x nearest upsampling (Figure 4)",
        description="For each 2x upsampling of the generator, the share of the newly generated pixels that "
        "nearest-neighbour upsampling gives a feature of another segment (misaligned) and that match none of "
        "Algorithm 1's candidates (holes), as in the paper's Figure 4; shares of all pixels are given too.",
    )
    add_dataset_arguments(upsampling, size=True, size_help="resize the maps to H W first (default: the dataset's "
                          "evaluation size; folders keep their size)")  # fmt: skip
    upsampling.add_argument(
        "--levels", type=int, default=5, help="number of 2x upsampling steps: strides 2**levels ... 2 (default 5)"
    )
    upsampling.add_argument("--out", type=Path, help="output folder for upsampling.json/.png (default ./analysis)")
    upsampling.set_defaults(func=_analyze_upsampling)
    analyze.set_defaults(func=lambda args: _help(analyze))

    report = subparsers.add_parser(
        "report",
        help="write RUN/report.html: metrics, loss curves, samples, Figure 4",
        description="Write a self-contained HTML page of a run: its evaluation metrics, loss curves, sample grids "
        "and (when given) the Figure 4 chart.",
    )
    report.add_argument("run", type=Path, help="run directory")
    report.add_argument("--out", type=Path, help="output HTML file (default RUN/report.html)")
    report.add_argument("--upsampling-chart", type=Path, help="a Figure 4 chart to include (upsampling.png)")
    report.set_defaults(func=_report)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metric networks (each metric runs only when its weights are given)")
    group.add_argument(
        "--inception-weights", type=Path, help="FID Inception-v3 weights (pt_inception-2015-12-05-*.pth)"
    )
    group.add_argument("--fid-stats", type=Path, help="reference statistics from `pansynth fid-stats` (.npz)")
    group.add_argument("--seg-model", type=Path, help="segmentation network as a TorchScript file")
    group.add_argument("--seg-arch", help="torchvision segmentation architecture (e.g. deeplabv3_resnet101)")
    group.add_argument("--seg-weights", type=Path, help="state dict for --seg-arch")
    group.add_argument("--seg-num-classes", type=int, help="number of classes of the segmentation network")
    group.add_argument("--seg-label-map", type=Path, help='JSON {"dataset class": network class} mapping')
    group.add_argument("--det-weights", type=Path, help="torchvision Faster R-CNN R50-FPN COCO weights")
    group.add_argument("--det-label-map", type=Path, help='JSON {"dataset class": COCO label} mapping')
    group.add_argument("--separation-width", type=int, default=3, help="instance separation band width (default 3)")


CORRUPT_HELP = (
    "corrupt the maps given to the generator (the metrics compare with the clean ones): NAME[:LEVEL], "
    "repeatable or comma-separated, applied in order; NAME one of " + ", ".join(CORRUPTIONS) + " (see docs/eval.md)"
)


def add_corrupt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corrupt", action="append", default=[], metavar="NAME[:LEVEL]", help=CORRUPT_HELP)
    parser.add_argument(
        "--corrupt-seed", type=int, default=0, help="seed of the corruptions (sample i draws from (seed, i); default 0)"
    )
    parser.add_argument(
        "--unknown-classes", type=int, nargs="+", default=[], metavar="ID",
        help="cityscapes: label ids read as unknown pixels (its void classes are 0 1 2 3 4 5 6; default none)",
    )  # fmt: skip


def corruptions_argument(values: list[str]) -> list[Corruption]:
    """The corruptions of ``--corrupt`` options (each may hold a comma-separated list)."""
    return [parse_corruption(text) for value in values for text in value.split(",") if text.strip()]


def metric_networks(args: argparse.Namespace):
    return load_metric_networks(
        inception_weights=args.inception_weights,
        fid_stats=args.fid_stats,
        seg_model=args.seg_model,
        seg_arch=args.seg_arch,
        seg_weights=args.seg_weights,
        seg_num_classes=args.seg_num_classes,
        seg_label_map=args.seg_label_map,
        det_weights=args.det_weights,
        det_label_map=args.det_label_map,
    )


def _dataset(args: argparse.Namespace, run_dir: Path | None = None):
    transform = eval_transform(args.dataset, run_dir, args.size)
    unknown_classes = getattr(args, "unknown_classes", [])
    return build_dataset(
        args.dataset, args.root, split=args.split, transform=transform, unknown_classes=unknown_classes
    )


def _evaluate(args: argparse.Namespace) -> int:
    check_limit(args)
    if (args.checkpoint is None) == (args.images is None):
        raise ValueError("give either --checkpoint RUN (synthesize the split) or --images DIR (already synthesized)")
    source = args.checkpoint or args.images
    if not source.exists():
        raise FileNotFoundError(f"{'--checkpoint' if args.checkpoint else '--images'} {source} does not exist")
    corruptions = corruptions_argument(args.corrupt)
    if corruptions and args.checkpoint is None:
        raise ValueError("--corrupt needs --checkpoint RUN: the corrupted maps are given to the generator")
    run_dir = args.checkpoint if args.checkpoint is not None and args.checkpoint.is_dir() else None
    dataset = _dataset(args, run_dir)
    networks = metric_networks(args)
    common = {"separation_width": args.separation_width, "batch_size": args.batch_size, "device": args.device,
              "limit": args.limit}  # fmt: skip
    if args.checkpoint is not None:
        generator = load_checkpoint_argument(args.checkpoint, device=args.device)
        name = "eval" + "".join(f"-{c.name}{c.level:g}" for c in corruptions)
        out = args.out or (args.checkpoint / name if args.checkpoint.is_dir() else args.checkpoint.parent / name)
        result = evaluate_generator(
            generator, dataset, out, networks, extra={"checkpoint": str(args.checkpoint)}, corruptions=corruptions,
            corrupt_seed=args.corrupt_seed, **common,
        )  # fmt: skip
    else:
        out = args.out or args.images.with_name(args.images.name + "_eval")
        result = evaluate_images(dataset, args.images, networks, grid_path=out / "grid.png", **common)
        result.update(images_dir=str(args.images), limit=args.limit)
        write_json_keeping_old(out / "metrics.json", result)
    corrupted = f", maps corrupted by {', '.join(map(str, corruptions))}" if corruptions else ""
    print(f"{args.dataset} {args.split or '(default split)'}: {result['images']} images{corrupted}")
    print(format_metrics(result))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _fid_stats(args: argparse.Namespace) -> int:
    check_limit(args)
    if args.out.suffix != ".npz":
        raise ValueError(f"--out {args.out} must be an .npz file")
    if args.out.exists():
        raise FileExistsError(f"--out {args.out} already exists; remove it or choose another name")
    device = resolve_device(args.device)
    inception = load_inception(args.inception_weights).to(device)
    dataset = _dataset(args)
    stats = accumulate_features(dataset_image_batches(dataset, args.batch_size, device, args.limit), inception)
    stats.save(args.out)
    print(f"wrote {args.out}: mean/covariance of {stats.count} images of {args.dataset}")
    return 0


def _analyze_upsampling(args: argparse.Namespace) -> int:
    check_limit(args)
    if args.levels < 1:
        raise ValueError(f"--levels must be >= 1, got {args.levels}")
    out = args.out or Path("analysis")
    for name in ("upsampling.json", "upsampling.png"):
        if (out / name).exists():
            raise FileExistsError(f"{out / name} already exists; choose another --out")
    dataset = _dataset(args)
    stats, meta = analyze_dataset(dataset, args.levels, args.limit)
    meta = {"dataset": args.dataset, "root": str(args.root), "split": args.split, **meta,
            "denominator": "misaligned/holes: shares of the newly generated pixels (the paper's Figure 4); "
                           "*_all: shares of all pixels"}  # fmt: skip
    paths = write_analysis(stats, out, meta)
    size = meta["map_size"]
    where = f"{size[0]}x{size[1]} maps" if size else "maps of several sizes"
    print(
        f"{args.dataset}: {meta['images']} {where}, nearest-neighbour upsampling vs the panoptic map "
        "(% of the newly generated pixels, as in the paper's Figure 4)"
    )
    print(format_table(stats, tuple(size) if size else None))
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    if not args.run.is_dir():
        raise FileNotFoundError(f"run directory {args.run} not found")
    extra = {}
    if args.upsampling_chart is not None:
        if not args.upsampling_chart.is_file():
            raise FileNotFoundError(f"--upsampling-chart {args.upsampling_chart} not found")
        extra["Figure 4: nearest-neighbour upsampling misalignment and holes"] = args.upsampling_chart
    metrics = None
    metrics_path = args.run / "eval" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
    path = write_run_report(args.run, args.out, metrics=metrics, extra_images=extra)
    print(f"wrote {path}")
    return 0
