"""The paper's ablation (Table 4), one change per row.

Each variant is trained with the same configuration, step budget and seed(s) (a re-run resumes
the runs and trains only what is missing), then evaluated on a held-out split with the metrics
whose networks were given (instance separation always). The rows differ from the row above in
exactly one switch, so that each step of the table can be attributed to it:

====================================  ============  ==============  ==============
row                                   model.conv    model.boundary  model.upsample
====================================  ============  ==============  ==============
Baseline (SPADE)                      standard      true            nearest
+Panoptic-aware partial conv          panoptic      true            nearest
+Panoptic conv, no boundary map       panoptic      false           nearest
+Panoptic-aware upsampling            panoptic      false           panoptic
====================================  ============  ==============  ==============

With several seeds the table shows mean ± sample standard deviation and ``ablation.json``
keeps every seed's values. Results go to ``OUT/ablation.md`` and ``OUT/ablation.json``; runs to
``OUT/<variant>-seed<S>`` and their evaluations to ``OUT/<variant>-seed<S>/eval``.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from pansynth.data import build_dataset
from pansynth.devices import resolve_device
from pansynth.eval.evaluate import MetricNetworks, eval_transform, weights_fingerprint
from pansynth.eval.segmentation import (
    ConfusionMatrix,
    load_segmentation_model,
    save_torchscript,
    train_proxy_segmenter,
)
from pansynth.experiments.evaluation import evaluate_generator, stored_evaluation
from pansynth.files import keep_old, write_json_keeping_old, write_text_keeping_old
from pansynth.inference import load_generator
from pansynth.train import load_config
from pansynth.train import train as train_run

__all__ = ["COLUMNS", "VARIANTS", "format_table", "mean_std", "proxy_segmenter", "run_ablation"]

# (key, table label, config overrides): each row changes one switch of the row above.
VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("baseline", "Baseline (SPADE)", ("model.conv=standard", "model.boundary=true", "model.upsample=nearest")),
    (
        "panoptic_conv",
        "+Panoptic-aware partial conv [conv=panoptic]",
        ("model.conv=panoptic", "model.boundary=true", "model.upsample=nearest"),
    ),
    (
        "panoptic_conv_no_boundary",
        "+Panoptic conv, no boundary map [boundary=false]",
        ("model.conv=panoptic", "model.boundary=false", "model.upsample=nearest"),
    ),
    (
        "panoptic_upsampling",
        "+Panoptic-aware upsampling [upsample=panoptic]",
        ("model.conv=panoptic", "model.boundary=false", "model.upsample=panoptic"),
    ),
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


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def format_table(rows: list[dict]) -> str:
    """Markdown table of the variants (mean, and ± sample std over seeds when there are several)."""
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
            mean, std = mean_std(values)
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
    split: str | None = "val",
    batch_size: int = 8,
    device: str = "auto",
    limit: int | None = None,
    networks: MetricNetworks | None = None,
    separation_width: int = 3,
    command: str | None = None,
    train_fn: Callable | None = None,
    segmenter_steps: int = 0,
) -> dict:
    """Train and evaluate the variants of :data:`VARIANTS`; write ``ablation.md`` and ``ablation.json``.

    Args:
        config: training preset name or YAML file (as for ``pansynth train``).
        root: dataset root (``data.root``).
        budget: generator steps per run (``max_steps``).
        seeds: one run per seed and variant; the table shows the mean (± std for several seeds).
        overrides: further ``key=value`` config overrides applied to every variant.
        split: evaluation split.
        device: ``auto``, ``cpu`` or ``cuda`` for training and evaluation.
        limit: evaluate only the first ``limit`` samples of the split.
        networks: the metric networks (see :func:`pansynth.eval.evaluate.load_metric_networks`).
        command: the command line, recorded in ``ablation.md``.
        train_fn: training function (default :func:`pansynth.train.train`).
        segmenter_steps: when > 0 and no segmentation network is given, train a small proxy
            segmenter for this many steps on the real training images (saved once as
            ``OUT/segmenter.pt`` and reused) for mIoU / accuracy.

    Returns:
        The content of ``ablation.json``.
    """
    if budget < 1:
        raise ValueError(f"--budget must be a positive number of steps, got {budget}")
    if not seeds:
        raise ValueError("give at least one seed")
    train_fn = train_fn or train_run
    out_dir = Path(out_dir)
    # Every configuration is built (and so checked) before anything is trained.
    configs = {
        (key, seed): load_config(
            config,
            [f"data.root={root}", f"max_steps={budget}", f"seed={seed}", f"device={device}", *overrides, *switches],
        )
        for key, _, switches in VARIANTS
        for seed in seeds
    }
    first = configs[(VARIANTS[0][0], seeds[0])]
    build_dataset(first.data.dataset, root, split=split)  # the evaluation split exists: fail before training
    out_dir.mkdir(parents=True, exist_ok=True)
    networks = networks or MetricNetworks()
    segmenter_real = None
    if segmenter_steps > 0 and networks.seg_model is None:
        base = configs[(VARIANTS[0][0], seeds[0])]
        model, segmenter_real = proxy_segmenter(
            base, root, split, out_dir / "segmenter.pt", segmenter_steps, device, limit
        )
        num_classes = segmenter_real.pop("num_classes")
        # The proxy predicts the dataset's own classes: compare class for class.
        networks = replace(
            networks,
            seg_model=model,
            seg_num_classes=num_classes,
            seg_label_map={index: index for index in range(num_classes)},
        )
    rows = []
    skipped: dict[str, str] = {}
    for key, label, switches in VARIANTS:
        per_seed: dict[str, list[float]] = {}
        runs = []
        for seed in seeds:
            run_config = configs[(key, seed)]
            run_dir = out_dir / f"{key}-seed{seed}"
            print(f"[ablate] {label.strip()} (seed {seed}): training {budget} steps into {run_dir}", flush=True)
            train_fn(run_config, run_dir)
            result = _evaluate_run(
                run_config, run_dir, root, split, batch_size, device, limit, networks, separation_width
            )
            runs.append({"seed": seed, "run_dir": str(run_dir), "metrics": result["metrics"]})
            skipped.update(result.get("skipped", {}))
            for metric, value in result["metrics"].items():
                if value is not None:
                    per_seed.setdefault(metric, []).append(float(value))
        means = {metric: mean_std(values)[0] for metric, values in per_seed.items()}
        stds = {metric: mean_std(values)[1] for metric, values in per_seed.items()}
        rows.append({"variant": key, "label": label, "switches": list(switches), "metrics": means, "std": stds,
                     "per_seed": per_seed, "runs": runs})  # fmt: skip
    summary = {
        "config": str(config),
        "root": str(root),
        "budget": budget,
        "seeds": list(seeds),
        "split": split,
        "overrides": list(overrides),
        "variants": rows,
        "skipped": {k: v for k, v in skipped.items() if not any(r["metrics"].get(k) is not None for r in rows)},
        "command": command,
        "segmenter": "proxy segmenter trained on the real training images (OUT/segmenter.pt)"
        if segmenter_real is not None
        else None,
        "segmenter_real_images": segmenter_real,
    }
    write_json_keeping_old(out_dir / "ablation.json", summary)
    write_text_keeping_old(out_dir / "ablation.md", _markdown(summary, segmenter_steps))
    return summary


def _markdown(summary: dict, segmenter_steps: int) -> str:
    seeds = summary["seeds"]
    lines = [
        f"# Ablation ({summary['config']}, {summary['budget']} steps, seeds {', '.join(map(str, seeds))})",
        "",
        format_table(summary["variants"]),
        "",
        "Each row changes the switch in brackets from the row above (all other settings equal). "
        f"Evaluated on the `{summary['split']}` split of `{summary['root']}`"
        + (f"; mean ± sample standard deviation over {len(seeds)} seeds" if len(seeds) > 1 else "")
        + ". mIoU, accuracy and detAP in %; separation is the mean boundary contrast between touching "
        "same-class instances (ratio: generated / real).",
    ]
    real = summary["segmenter_real_images"]
    if real is not None:
        lines += [
            "",
            f"mIoU / accuracy from a small proxy segmenter trained for {segmenter_steps} steps on the real "
            f"training images (not the paper's DRN / DeepLabV2); on the real `{summary['split']}` images it "
            f"scores mIoU {real['mIoU']:.2f}, accuracy {real['accuracy']:.2f}.",
        ]
    if summary["skipped"]:
        lines += ["", "Not computed: " + "; ".join(f"{k} ({v})" for k, v in summary["skipped"].items()) + "."]
    if summary["command"]:
        lines += ["", "Command:", "", "```", summary["command"], "```"]
    return "\n".join(lines) + "\n"


def _evaluate_run(
    config, run_dir: Path, root, split, batch_size, device, limit, networks: MetricNetworks, separation_width: int
) -> dict:
    """Evaluate one run into ``run_dir/eval``, reusing an evaluation of the same weights and set-up."""
    eval_dir = run_dir / "eval"
    generator = load_generator(run_dir, device=resolve_device(device))
    setup = {**networks.setup(), "separation_width": separation_width, "limit": limit, "split": split}
    stored = stored_evaluation(eval_dir, weights_fingerprint(generator), setup)
    if stored is not None:
        print(f"[ablate] reusing the evaluation in {eval_dir}", flush=True)
        return stored
    keep_old(eval_dir)  # an evaluation of older weights is kept as eval.bak
    dataset = build_dataset(
        config.data.dataset, root, split=split, transform=eval_transform(config.data.dataset, run_dir)
    )
    return evaluate_generator(
        generator, dataset, eval_dir, networks, separation_width=separation_width, batch_size=batch_size,
        device=device, limit=limit, extra={"setup": setup},
    )  # fmt: skip


def proxy_segmenter(config, root, split, path: Path, steps: int, device: str, limit: int | None):
    """Train (or reload) the proxy segmenter and score it on the real images of ``split``."""
    dataset_name = config.data.dataset
    size = config.data.crop_size or config.data.load_size
    if path.is_file():
        print(f"[ablate] reusing the proxy segmenter {path}", flush=True)
    else:
        train_set = build_dataset(
            dataset_name, root, split=config.data.split, transform=eval_transform(dataset_name, None, size)
        )
        print(f"[ablate] training a proxy segmenter for {steps} steps on {len(train_set)} real images", flush=True)
        model = train_proxy_segmenter(train_set, steps=steps, seed=config.seed, device=resolve_device(device))
        save_torchscript(model, path)
    model = load_segmentation_model(seg_model=path)
    val_set = build_dataset(dataset_name, root, split=split, transform=eval_transform(dataset_name, None, size))
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


def command_line(argv: Sequence[str]) -> str:
    """The command as a copyable shell line."""
    return "pansynth " + " ".join(shlex.quote(a) for a in argv)
