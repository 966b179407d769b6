"""The paper's ablation (Table 4): baseline SPADE, + panoptic-aware conv, + panoptic-aware upsampling.

Each variant is trained with the same configuration, step budget and seed(s) through
``pansynth.train.trainer.train`` (which resumes an existing run directory), then evaluated on
the validation split with the metrics whose networks were given (instance separation always).
Results go to ``OUT/ablation.md`` (a markdown table like Table 4) and ``OUT/ablation.json``.

Run directories: ``OUT/<variant>-seed<S>``; evaluations: ``OUT/<variant>-seed<S>/eval``. A
re-run trains only what is missing (a larger budget continues the runs) and re-evaluates a
run only when its exported weights changed.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from pansynth.eval.evaluate import (
    _weights_fingerprint,
    eval_transform,
    evaluate_checkpoint,
    keep_old,
    resolve_device,
    write_json_new,
    write_text_keeping_old,
)

# (key, table label, config overrides)
VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "baseline",
        "Baseline (SPADE)",
        ("model.conv=standard", "model.upsample=nearest", "model.boundary=true"),
    ),
    ("panoptic_conv", "+Panoptic-aware partial conv", ("model.conv=panoptic", "model.upsample=nearest")),
    ("panoptic_upsampling", "+Panoptic-aware upsampling", ("model.conv=panoptic", "model.upsample=panoptic")),
)

# table columns: (metric key, header, higher is better)
COLUMNS = (
    ("mIoU", "mIoU", True),
    ("accuracy", "accuracy", True),
    ("detAP", "detAP", True),
    ("FID", "FID", False),
    ("separation", "separation", True),
    ("separation_ratio", "separation / real", True),
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def format_table(rows: list[dict]) -> str:
    """Markdown table of the variants (mean, and ± std over seeds when there are several)."""
    present = [c for c in COLUMNS if any(r["per_seed"].get(c[0]) for r in rows)]
    header = "| Method | " + " | ".join(h + (" ↑" if up else " ↓") for _, h, up in present) + " |"
    lines = [header, "|" + "---|" * (len(present) + 1)]
    for row in rows:
        cells = []
        for key, _, _ in present:
            values = row["per_seed"].get(key) or []
            if not values:
                cells.append("n/a")
                continue
            mean, std = _mean_std(values)
            digits = 3 if abs(mean) < 10 else 2  # separation figures are fractions, the rest percentages
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_ablation(
    config: str,
    root: str | Path,
    budget: int,
    out_dir: str | Path,
    seeds: Sequence[int] = (0,),
    overrides: Sequence[str] = (),
    split: str = "val",
    batch_size: int = 8,
    device: str = "cpu",
    limit: int | None = None,
    metric_kwargs: dict | None = None,
    command: str | None = None,
    train_fn: Callable | None = None,
    segmenter_steps: int = 0,
) -> dict:
    """Train and evaluate the three variants; write ``ablation.md`` and ``ablation.json`` into ``out_dir``.

    Args:
        config: training preset name or YAML file (as for ``pansynth train``).
        root: dataset root (``data.root``).
        budget: generator steps per run (``max_steps``).
        seeds: one run per seed and variant; the table shows the mean (± std for several seeds).
        overrides: further ``key=value`` config overrides applied to every variant.
        split: evaluation split.
        device: ``cpu``, ``cuda`` or ``auto`` for training and evaluation.
        limit: evaluate only the first ``limit`` samples of the split.
        metric_kwargs: networks for :func:`pansynth.eval.evaluate.evaluate_images`
            (see :func:`pansynth.eval.evaluate.load_metric_networks`).
        command: the command line, recorded in ``ablation.md``.
        train_fn: training function (default ``pansynth.train.trainer.train``).
        segmenter_steps: when > 0 and no segmentation network is given, train a
            :class:`~pansynth.eval.segmentation.ProxySegmenter` for this many steps on the real
            training images (saved once as ``OUT/segmenter.pt`` and reused) for mIoU / accuracy.

    Returns:
        The content of ``ablation.json``.
    """
    from pansynth.train.config import load_config

    if budget < 1:
        raise ValueError(f"--budget must be a positive number of steps, got {budget}")
    if not seeds:
        raise ValueError("give at least one seed")
    if train_fn is None:
        from pansynth.train.trainer import train as train_fn
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric_kwargs = dict(metric_kwargs or {})
    segmenter_real = None
    if segmenter_steps > 0 and metric_kwargs.get("seg_model") is None:
        base = load_config(config, [f"data.root={root}", f"seed={seeds[0]}", *overrides])
        metric_kwargs["seg_model"], segmenter_real = _proxy_segmenter(
            base, root, split, out_dir / "segmenter.pt", segmenter_steps, device, limit
        )
        # the proxy predicts the dataset's own classes: compare class for class
        num_classes = segmenter_real.pop("num_classes")
        metric_kwargs["seg_label_map"] = {index: index for index in range(num_classes)}
        metric_kwargs["seg_num_classes"] = num_classes
    rows = []
    skipped: dict[str, str] = {}
    for key, label, variant_overrides in VARIANTS:
        per_seed: dict[str, list[float]] = {}
        runs = []
        for seed in seeds:
            settings = [f"data.root={root}", f"max_steps={budget}", f"seed={seed}", f"device={device}"]
            run_config = load_config(config, [*settings, *variant_overrides, *overrides])
            run_dir = out_dir / f"{key}-seed{seed}"
            print(f"[ablate] {label} (seed {seed}): training {budget} steps into {run_dir}", flush=True)
            train_fn(run_config, run_dir)
            result = _evaluate_run(run_config, run_dir, root, split, batch_size, device, limit, metric_kwargs)
            runs.append({"seed": seed, "run_dir": str(run_dir), "metrics": result["metrics"]})
            skipped.update(result.get("skipped", {}))
            for metric, value in result["metrics"].items():
                if value is not None:
                    per_seed.setdefault(metric, []).append(float(value))
        means = {metric: _mean_std(values)[0] for metric, values in per_seed.items()}
        rows.append({"variant": key, "label": label, "overrides": list(variant_overrides), "metrics": means,
                     "per_seed": per_seed, "runs": runs})  # fmt: skip
    summary = {
        "config": str(config),
        "root": str(root),
        "budget": budget,
        "seeds": list(seeds),
        "split": split,
        "overrides": list(overrides),
        "variants": rows,
        "skipped": {
            k: v for k, v in skipped.items() if not any(r["metrics"].get(k) is not None for r in rows)
        },
        "command": command,
        "segmenter": "proxy segmenter trained on the real training images (OUT/segmenter.pt)"
        if segmenter_real is not None
        else None,
        "segmenter_real_images": segmenter_real,
    }
    write_json_new(out_dir / "ablation.json", summary)
    markdown = [
        f"# Ablation ({config}, {budget} steps, seeds {', '.join(map(str, seeds))})",
        "",
        format_table(rows),
        "",
        f"Evaluated on the `{split}` split of `{root}`. mIoU, accuracy and detAP in %; separation is "
        "the mean boundary contrast between touching same-class instances (ratio: generated / real).",
    ]
    if segmenter_real is not None:
        markdown += [
            "",
            f"mIoU / accuracy from a small proxy segmenter trained for {segmenter_steps} steps on the real "
            f"training images (not the paper's DRN / DeepLabV2); on the real `{split}` images it scores "
            f"mIoU {segmenter_real['mIoU']:.2f}, accuracy {segmenter_real['accuracy']:.2f}.",
        ]
    if summary["skipped"]:
        markdown += [
            "",
            "Not computed: " + "; ".join(f"{k} ({v})" for k, v in summary["skipped"].items()) + ".",
        ]
    if command:
        markdown += ["", "Command:", "", "```", command, "```"]
    write_text_keeping_old(out_dir / "ablation.md", "\n".join(markdown) + "\n")
    return summary


def _evaluate_run(config, run_dir: Path, root, split, batch_size, device, limit, metric_kwargs) -> dict:
    """Evaluate one run into ``run_dir/eval``, reusing an evaluation of the same weights."""
    from pansynth.data import build_dataset

    eval_dir = run_dir / "eval"
    fingerprint = _weights_fingerprint(run_dir)
    setup = {
        "FID": metric_kwargs.get("inception") is not None,
        "fid_stats": metric_kwargs.get("fid_stats") is not None,
        "segmentation": metric_kwargs.get("seg_model") is not None,
        "detection": metric_kwargs.get("detector") is not None,
        "separation_width": metric_kwargs.get("separation_width", 3),
        "limit": limit,
        "split": split,
    }
    previous = eval_dir / "metrics.json"
    if previous.is_file() and fingerprint is not None:
        try:
            stored = json.loads(previous.read_text())
        except json.JSONDecodeError:
            stored = {}
        if stored.get("weights_sha256") == fingerprint and stored.get("setup") == setup:
            print(f"[ablate] reusing the evaluation in {eval_dir}", flush=True)
            return stored
    if eval_dir.exists():
        keep_old(eval_dir)  # an evaluation of older weights is kept as eval.bak
    dataset = build_dataset(
        config.data.dataset, root, split=split, transform=eval_transform(config.data.dataset, run_dir)
    )
    result = evaluate_checkpoint(
        run_dir, dataset, eval_dir, batch_size=batch_size, device=device, limit=limit,
        extra={"setup": setup}, **metric_kwargs,
    )  # fmt: skip
    return result


def _proxy_segmenter(config, root, split, path: Path, steps: int, device: str, limit: int | None):
    """Train (or reload) the proxy segmenter and score it on the real images of ``split``."""
    from pansynth.data import build_dataset
    from pansynth.eval.segmentation import (
        ConfusionMatrix,
        load_segmentation_model,
        save_torchscript,
        train_proxy_segmenter,
    )

    dataset_name = config.data.dataset
    if path.is_file():
        print(f"[ablate] reusing the proxy segmenter {path}", flush=True)
        model = load_segmentation_model(seg_model=path)
    else:
        train_set = build_dataset(
            dataset_name,
            root,
            split=config.data.split,
            transform=eval_transform(dataset_name, None, _size(config)),
        )
        print(
            f"[ablate] training a proxy segmenter for {steps} steps on {len(train_set)} real images",
            flush=True,
        )
        model = train_proxy_segmenter(train_set, steps=steps, seed=config.seed, device=resolve_device(device))
        save_torchscript(model, path)
        model = load_segmentation_model(seg_model=path)
    val_set = build_dataset(
        dataset_name, root, split=split, transform=eval_transform(dataset_name, None, _size(config))
    )
    confusion = ConfusionMatrix(val_set.num_classes)
    count = len(val_set) if limit is None else min(limit, len(val_set))
    for index in range(count):
        sample = val_set[index]
        target = sample["semantic"].clone()
        if val_set.ignore_index is not None:
            target[target == val_set.ignore_index] = -1
        confusion.update(model(sample["image"][None]), target[None])
    scores = confusion.compute()
    return model, {
        "mIoU": 100 * scores["miou"],
        "accuracy": 100 * scores["accuracy"],
        "num_classes": val_set.num_classes,
    }


def _size(config) -> list[int] | None:
    return config.data.crop_size or config.data.load_size


def command_line(argv: Sequence[str]) -> str:
    """The command as a copyable shell line."""
    return "pansynth " + " ".join(shlex.quote(a) for a in argv)
