"""Sub-commands ``evaluate``, ``fid-stats``, ``analyze upsampling``, ``ablate`` and ``report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATASETS = ("folder", "cityscapes", "coco-stuff", "coco-panoptic")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="FID, mIoU/accuracy, detAP and instance separation of a generator on a dataset split",
        description="Synthesize a split with a trained generator (or read already synthesized images) and "
        "compute every metric whose network was given; instance separation needs none.",
    )
    evaluate.add_argument("--checkpoint", type=Path, help="run directory, export/ folder or checkpoint file")
    evaluate.add_argument(
        "--images", type=Path, help="folder of already synthesized <name>.png (no --checkpoint)"
    )
    _add_dataset_arguments(evaluate, default_split="val")
    _add_metric_arguments(evaluate)
    evaluate.add_argument("--out", type=Path, help="output folder (default RUN/eval, or IMAGES_eval)")
    evaluate.set_defaults(func=_evaluate)

    stats = subparsers.add_parser(
        "fid-stats",
        help="save a dataset's FID reference statistics (Inception mean/covariance) to an .npz",
    )
    _add_dataset_arguments(stats, default_split="val")
    stats.add_argument("--out", type=Path, required=True, help="output .npz file (must not exist)")
    stats.add_argument(
        "--inception-weights", type=Path, help="local FID Inception weights (pt_inception-*.pth)"
    )
    stats.set_defaults(func=_fid_stats)

    analyze = subparsers.add_parser("analyze", help="analyses of the data (upsampling: the paper's Figure 4)")
    analyses = analyze.add_subparsers(dest="analysis", metavar="ANALYSIS")
    upsampling = analyses.add_parser(
        "upsampling",
        help="share of pixels misaligned / needing hole filling at each 2x nearest upsampling (Figure 4)",
    )
    _add_dataset_arguments(upsampling, default_split="val")
    upsampling.add_argument(
        "--levels",
        type=int,
        default=5,
        help="number of 2x upsampling steps: strides 2**levels ... 2 (default 5)",
    )
    upsampling.add_argument(
        "--out", type=Path, help="output folder for upsampling.json/.png (default ./analysis)"
    )
    upsampling.set_defaults(func=_analyze_upsampling)
    analyze.set_defaults(func=lambda args: _help(analyze))

    ablate = subparsers.add_parser(
        "ablate",
        help="train and evaluate baseline / +panoptic conv / +panoptic upsampling (the paper's Table 4)",
    )
    ablate.add_argument("--config", required=True, help="training preset name or YAML file")
    ablate.add_argument("--root", type=Path, required=True, help="dataset root")
    ablate.add_argument("--budget", type=int, required=True, help="training steps per variant")
    ablate.add_argument(
        "--out", type=Path, default=Path("runs/ablation"), help="output folder (default runs/ablation)"
    )
    ablate.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="seed(s); several are averaged (default 0)"
    )
    ablate.add_argument("--split", default="val", help="evaluation split (default val)")
    ablate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every variant (repeatable)")  # fmt: skip
    ablate.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda", "auto"), help="device (default cpu)"
    )
    ablate.add_argument("--limit", type=int, help="evaluate only the first N samples of the split")
    ablate.add_argument("--batch-size", type=int, default=8, help="evaluation batch size (default 8)")
    ablate.add_argument(
        "--train-segmenter", type=int, default=0, metavar="STEPS",
        help="without --seg-model/--seg-arch: train a small proxy segmenter on the real training images "
        "for STEPS steps (saved as OUT/segmenter.pt) to report mIoU/accuracy (default 0: off)",
    )  # fmt: skip
    _add_metric_arguments(ablate)
    ablate.set_defaults(func=_ablate)

    report = subparsers.add_parser(
        "report", help="write RUN/report.html: metrics, loss curves, samples, Figure 4"
    )
    report.add_argument("run", type=Path, help="run directory")
    report.add_argument("--out", type=Path, help="output HTML file (default RUN/report.html)")
    report.add_argument("--upsampling-chart", type=Path, help="a Figure 4 chart to include (upsampling.png)")
    report.set_defaults(func=_report)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_dataset_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="dataset format")
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--split", default=default_split, help=f"split (default {default_split})")
    parser.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"),
        help="resize maps and images to H W (default: the run's or dataset's eval size)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, help="only use the first N samples")
    if not any(a.dest == "batch_size" for a in parser._actions):
        parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")


def _add_metric_arguments(parser: argparse.ArgumentParser) -> None:
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
    group.add_argument(
        "--separation-width", type=int, default=3, help="instance separation band width (default 3)"
    )


def _metric_kwargs(args: argparse.Namespace) -> dict:
    from pansynth.eval.evaluate import load_metric_networks

    kwargs = load_metric_networks(
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
    kwargs["separation_width"] = args.separation_width
    return kwargs


def _check_limit(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if getattr(args, "batch_size", 1) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def _dataset(args: argparse.Namespace, run_dir: Path | None = None):
    from pansynth.data import build_dataset
    from pansynth.eval.evaluate import eval_transform

    transform = eval_transform(args.dataset, run_dir, args.size)
    return build_dataset(args.dataset, args.root, split=args.split, transform=transform)


def _evaluate(args: argparse.Namespace) -> int:
    from pansynth.eval.evaluate import evaluate_checkpoint, evaluate_images, format_metrics, write_json_new

    _check_limit(args)
    if (args.checkpoint is None) == (args.images is None):
        raise ValueError(
            "give either --checkpoint RUN (synthesize the split) or --images DIR (already synthesized)"
        )
    source = args.checkpoint or args.images
    if not source.exists():
        raise FileNotFoundError(
            f"{'--checkpoint' if args.checkpoint else '--images'} {source} does not exist"
        )
    run_dir = args.checkpoint if args.checkpoint is not None and args.checkpoint.is_dir() else None
    dataset = _dataset(args, run_dir)
    kwargs = _metric_kwargs(args)
    if args.checkpoint is not None:
        out = args.out or (
            args.checkpoint / "eval" if args.checkpoint.is_dir() else args.checkpoint.parent / "eval"
        )
        result = evaluate_checkpoint(
            args.checkpoint,
            dataset,
            out,
            batch_size=args.batch_size,
            device=args.device,
            limit=args.limit,
            **kwargs,
        )
    else:
        out = args.out or args.images.with_name(args.images.name + "_eval")
        result = evaluate_images(
            dataset, args.images, batch_size=args.batch_size, device=args.device, limit=args.limit,
            grid_path=out / "grid.png", **kwargs,
        )  # fmt: skip
        result["images_dir"] = str(args.images)
        result["limit"] = args.limit
        write_json_new(out / "metrics.json", result)
    print(f"{args.dataset} {args.split}: {result['images']} images")
    print(format_metrics(result))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _fid_stats(args: argparse.Namespace) -> int:
    from pansynth.eval.fid import accumulate_features, dataset_image_batches, load_inception

    _check_limit(args)
    if args.out.suffix != ".npz":
        raise ValueError(f"--out {args.out} must be an .npz file")
    if args.out.exists():
        raise FileExistsError(f"--out {args.out} already exists; remove it or choose another name")
    from pansynth.eval.evaluate import resolve_device

    args.device = resolve_device(args.device)
    inception = load_inception(args.inception_weights).to(args.device)
    dataset = _dataset(args)
    stats = accumulate_features(
        dataset_image_batches(dataset, args.batch_size, args.device, args.limit), inception
    )
    stats.save(args.out)
    print(f"wrote {args.out}: mean/covariance of {stats.count} images of {args.dataset} {args.split}")
    return 0


def _analyze_upsampling(args: argparse.Namespace) -> int:
    from pansynth.eval.upsampling import dataset_upsampling_stats, format_table, write_analysis

    _check_limit(args)
    if args.levels < 1:
        raise ValueError(f"--levels must be >= 1, got {args.levels}")
    dataset = _dataset(args)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    sizes = set()

    def maps():
        for index in range(count):
            panoptic = dataset[index]["panoptic"]
            sizes.add(tuple(panoptic.shape))
            yield panoptic

    stats = dataset_upsampling_stats(maps(), args.levels)
    out = args.out or Path("analysis")
    for name in ("upsampling.json", "upsampling.png"):
        if (out / name).exists():
            raise FileExistsError(f"{out / name} already exists; choose another --out")
    size = next(iter(sizes)) if len(sizes) == 1 else None
    meta = {"dataset": args.dataset, "root": str(args.root), "split": args.split, "images": count,
            "levels": args.levels, "map_size": list(size) if size else None}  # fmt: skip
    paths = write_analysis(stats, out, meta)
    where = f"{size[0]}x{size[1]} maps" if size else "maps of several sizes"
    print(f"{args.dataset} {args.split}: {count} {where}, nearest-neighbour upsampling vs the panoptic map")
    print(format_table(stats, size))
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from pansynth.eval.ablation import format_table, run_ablation

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.train_segmenter < 0:
        raise ValueError(f"--train-segmenter must be >= 0 steps, got {args.train_segmenter}")
    if not args.root.is_dir():
        raise FileNotFoundError(f"--root {args.root} is not a directory")
    summary = run_ablation(
        args.config, args.root, args.budget, args.out, seeds=args.seed, overrides=args.overrides,
        split=args.split, batch_size=args.batch_size, device=args.device, limit=args.limit,
        metric_kwargs=_metric_kwargs(args), command=_command(),
        segmenter_steps=args.train_segmenter,
    )  # fmt: skip
    print(format_table(summary["variants"]))
    print(f"wrote {args.out / 'ablation.md'} and {args.out / 'ablation.json'}")
    return 0


def _command() -> str | None:
    """The command line of this process when it is ``pansynth ablate ...`` (None when called as a library)."""
    from pansynth.eval.ablation import command_line

    return command_line(sys.argv[1:]) if sys.argv[1:2] == ["ablate"] else None


def _report(args: argparse.Namespace) -> int:
    from pansynth.eval.report import write_run_report

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
