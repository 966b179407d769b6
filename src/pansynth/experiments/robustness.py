"""Robustness to imperfect maps: trained runs evaluated on corrupted maps (``pansynth robustness``).

For every run and every corruption of :mod:`pansynth.data.corrupt` (plus the clean maps), the
held-out split is synthesized from the corrupted maps and evaluated against the clean ones, once
per corruption seed (the clean maps once per run: they draw nothing). Runs given the same label
are pooled, so that runs trained with several seeds give mean ± sample standard deviation over
(runs × corruption seeds). Results go to ``OUT/robustness.md`` (a table), ``OUT/robustness.json``
(every value) and ``OUT/robustness.png`` (one panel per metric); evaluations to
``OUT/<label>-<k>/<corruption>-seed<S>``, reused when the weights and the set-up are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pansynth.data import build_dataset
from pansynth.data.corrupt import CORRUPTIONS, Corruption
from pansynth.devices import resolve_device
from pansynth.eval.evaluate import MetricNetworks, eval_transform, weights_fingerprint
from pansynth.experiments.ablation import COLUMNS, mean_std, proxy_segmenter
from pansynth.experiments.evaluation import evaluate_generator, stored_evaluation
from pansynth.files import keep_old, write_json_keeping_old, write_text_keeping_old
from pansynth.inference import load_generator
from pansynth.run_files import CONFIG_FILE
from pansynth.train import load_config
from pansynth.viz import pyplot, save_figure

__all__ = ["CLEAN", "default_corruptions", "format_table", "run_robustness"]

# The row of the uncorrupted maps.
CLEAN = "clean"


def default_corruptions() -> list[Corruption]:
    """Every corruption at its default level."""
    return [Corruption(name, kind.default) for name, kind in CORRUPTIONS.items()]


def _slug(corruption: Corruption | None) -> str:
    return CLEAN if corruption is None else f"{corruption.name}{corruption.level:g}"


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean, std = mean_std(values)
    digits = 3 if abs(mean) < 10 else 2  # separation figures are fractions, the rest percentages
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _columns(rows: list[dict]) -> list[tuple[str, str, bool]]:
    return [c for c in COLUMNS if any(r["per_seed"].get(c[0]) for r in rows)]


def format_table(rows: list[dict]) -> str:
    """Markdown table: one line per (corruption, model), mean (± sample std when repeated)."""
    columns = _columns(rows)
    header = "| Corruption | Model | " + " | ".join(h + (" ↑" if up else " ↓") for _, h, up in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for row in rows:
        cells = [_cell(row["per_seed"].get(key) or []) for key, _, _ in columns]
        lines.append(f"| {row['corruption']} | {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """Grouped bars (one group per corruption, one bar per model, ± std) for every metric present."""
    columns = _columns(rows)
    plt = pyplot()
    corruptions = list(dict.fromkeys(r["corruption"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = plt.subplots(
        len(columns), 1, figsize=(max(6, 0.9 * len(corruptions) * len(labels)), 2.6 * len(columns))
    )
    axes = [axes] if len(columns) == 1 else list(axes)
    width = 0.8 / max(1, len(labels))
    for axis, (key, header, up) in zip(axes, columns):
        for index, label in enumerate(labels):
            means, stds = [], []
            for corruption in corruptions:
                row = next(r for r in rows if r["corruption"] == corruption and r["label"] == label)
                values = row["per_seed"].get(key) or []
                mean, std = mean_std(values) if values else (float("nan"), 0.0)
                means.append(mean)
                stds.append(std)
            positions = [c + (index - (len(labels) - 1) / 2) * width for c in range(len(corruptions))]
            axis.bar(positions, means, width, yerr=stds, capsize=2, label=label)
        axis.set_xticks(range(len(corruptions)), corruptions, rotation=30, ha="right")
        axis.set_ylabel(header + (" ↑" if up else " ↓"))
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    save_figure(fig, path)
    return path


def run_robustness(
    runs: Sequence[str | Path],
    dataset: str,
    root: str | Path,
    out_dir: str | Path,
    corruptions: Sequence[Corruption] | None = None,
    labels: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    split: str | None = "val",
    unknown_classes: Sequence[int] = (),
    batch_size: int = 8,
    device: str = "auto",
    limit: int | None = None,
    networks: MetricNetworks | None = None,
    separation_width: int = 3,
    segmenter_steps: int = 0,
    command: str | None = None,
) -> dict:
    """Evaluate ``runs`` on the clean and corrupted maps of ``split``; write the table, JSON and chart.

    Args:
        runs: run directories (or exported generators); the evaluation size is the run's training size.
        dataset, root, split: the held-out data (as for ``pansynth evaluate``).
        corruptions: the corruptions, one row each after the clean row (default: all at their defaults).
        labels: one per run (default: the run folder names); runs of one label are pooled.
        seeds: corruption seeds (each corrupted row is evaluated once per seed).
        segmenter_steps: when > 0 and no segmentation network is given, train the proxy segmenter
            of ``pansynth ablate`` (on the first run's training data and size) for mIoU / accuracy.

    Returns:
        The content of ``robustness.json``.
    """
    runs = [Path(run) for run in runs]
    if not runs:
        raise ValueError("give at least one run (--runs RUN ...)")
    labels = list(labels) if labels else [run.name for run in runs]
    if len(labels) != len(runs):
        raise ValueError(f"--labels gives {len(labels)} names for {len(runs)} runs: give one per run")
    if not seeds:
        raise ValueError("give at least one corruption seed")
    corruptions = default_corruptions() if corruptions is None else list(corruptions)
    out_dir = Path(out_dir)
    generators = [load_generator(run, device=resolve_device(device)) for run in runs]  # fail before evaluating
    build_dataset(dataset, root, split=split, unknown_classes=unknown_classes)  # the split exists
    out_dir.mkdir(parents=True, exist_ok=True)
    networks = networks or MetricNetworks()
    segmenter_real = None
    if segmenter_steps > 0 and networks.seg_model is None:
        if not (runs[0] / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{runs[0] / CONFIG_FILE} not found: --train-segmenter needs a run directory")
        config = load_config(runs[0] / CONFIG_FILE, [f"data.root={root}"])
        model, segmenter_real = proxy_segmenter(
            config, root, split, out_dir / "segmenter.pt", segmenter_steps, device, limit
        )
        num_classes = segmenter_real.pop("num_classes")
        networks = replace(
            networks, seg_model=model, seg_num_classes=num_classes, seg_label_map={i: i for i in range(num_classes)}
        )
    rows = {(_slug(c), label): {"corruption": _slug(c) if c is None else str(c), "label": label, "per_seed": {},
                                "evaluations": []}
            for c in [None, *corruptions] for label in dict.fromkeys(labels)}  # fmt: skip
    skipped: dict[str, str] = {}
    counts: dict[str, int] = {}
    for run, label, generator in zip(runs, labels, generators):
        counts[label] = counts.get(label, 0) + 1
        run_out = out_dir / f"{label}-{counts[label]}"
        data = build_dataset(
            dataset, root, split=split, transform=eval_transform(dataset, run), unknown_classes=unknown_classes
        )
        for corruption in [None, *corruptions]:
            for seed in seeds if corruption is not None else seeds[:1]:
                eval_dir = run_out / f"{_slug(corruption)}-seed{seed}"
                print(f"[robustness] {label} ({run}): {_slug(corruption)}, seed {seed} -> {eval_dir}", flush=True)
                setup = {**networks.setup(), "separation_width": separation_width, "limit": limit, "split": split,
                         "corruption": None if corruption is None else str(corruption), "seed": seed}  # fmt: skip
                result = _evaluate(generator, data, eval_dir, networks, setup, corruption, seed,
                                   batch_size=batch_size, device=device, limit=limit,
                                   separation_width=separation_width)  # fmt: skip
                row = rows[(_slug(corruption), label)]
                row["evaluations"].append({"run": str(run), "seed": seed, "dir": str(eval_dir), **result["metrics"]})
                skipped.update(result.get("skipped", {}))
                for metric, value in result["metrics"].items():
                    if value is not None:
                        row["per_seed"].setdefault(metric, []).append(float(value))
    table_rows = list(rows.values())
    for row in table_rows:
        row["mean"] = {k: mean_std(v)[0] for k, v in row["per_seed"].items()}
        row["std"] = {k: mean_std(v)[1] for k, v in row["per_seed"].items()}
    summary = {
        "dataset": dataset,
        "root": str(root),
        "split": split,
        "runs": [{"run": str(run), "label": label} for run, label in zip(runs, labels)],
        "corruptions": [str(c) for c in corruptions],
        "seeds": list(seeds),
        "limit": limit,
        "rows": table_rows,
        "skipped": {k: v for k, v in skipped.items() if not any(r["per_seed"].get(k) for r in table_rows)},
        "segmenter_real_images": segmenter_real,
        "command": command,
    }
    write_json_keeping_old(out_dir / "robustness.json", summary)
    write_text_keeping_old(out_dir / "robustness.md", _markdown(summary))
    chart = out_dir / "robustness.png"
    keep_old(chart)
    plot(table_rows, chart)
    return summary


def _evaluate(generator, data, eval_dir: Path, networks, setup, corruption, seed, **common) -> dict:
    """One evaluation into ``eval_dir``, reusing an earlier one of the same weights and set-up."""
    stored = stored_evaluation(eval_dir, weights_fingerprint(generator), setup)
    if stored is not None:
        return stored
    keep_old(eval_dir)  # an evaluation of other weights is kept aside, never overwritten
    return evaluate_generator(
        generator, data, eval_dir, networks, extra={"setup": setup},
        corruptions=[] if corruption is None else [corruption], corrupt_seed=seed, **common,
    )  # fmt: skip


def _markdown(summary: dict) -> str:
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [
        f"# Robustness to imperfect maps ({summary['dataset']} `{summary['split']}`, corruption seeds {seeds})",
        "",
        format_table(summary["rows"]),
        "",
        "Each corrupted row gives the generator the corrupted maps and compares its images with the clean "
        "maps and photos (docs/eval.md lists the corruptions). Runs of one model label and corruption seeds "
        "are pooled: mean ± sample standard deviation. mIoU, accuracy in %; separation is the mean boundary "
        "contrast between touching same-class instances (ratio: generated / real).",
    ]
    real = summary["segmenter_real_images"]
    if real is not None:
        lines += ["", f"Proxy segmenter on the real images: mIoU {real['mIoU']:.2f}, accuracy {real['accuracy']:.2f}."]
    if summary["skipped"]:
        lines += ["", "Not computed: " + "; ".join(f"{k} ({v})" for k, v in summary["skipped"].items()) + "."]
    if summary["command"]:
        lines += ["", "Command:", "", "```", summary["command"], "```"]
    return "\n".join(lines) + "\n"
