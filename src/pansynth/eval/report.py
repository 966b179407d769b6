"""Self-contained HTML report of a run: metric table, loss curves, sample grids, Figure 4 chart.

Every image is embedded as a base64 PNG, so the page can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from pansynth.files import atomic_write_text, keep_old
from pansynth.run_files import CONFIG_FILE, METRICS_FILE, SAMPLES_DIR
from pansynth.viz import pyplot, save_figure

__all__ = [
    "embed_image",
    "html_page",
    "loss_section",
    "plot_losses",
    "read_metrics_log",
    "write_page",
    "write_run_report",
]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_metrics_log(path: str | Path) -> list[dict]:
    """Read ``metrics.jsonl`` (one JSON object per line); unreadable lines are skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interrupted run
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


# logged quantities that are not losses (learning rates ``lr*`` are left out too)
_NOT_LOSSES = ("step", "epoch", "images_per_s", "seconds", "time")


def plot_losses(records: list[dict], path: str | Path) -> Path | None:
    """Loss curves (one panel per quantity) from ``metrics.jsonl`` records into a PNG."""
    keys = sorted(
        {
            k
            for r in records
            for k, v in r.items()
            if k not in _NOT_LOSSES and not k.startswith("lr") and isinstance(v, (int, float))
        }
    )
    if not keys:
        return None
    plt = pyplot()
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), dpi=100, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        steps, values = zip(*points)
        ax.plot(steps, values, lw=1, marker="o" if len(steps) <= 20 else None, ms=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    return save_figure(fig, path)


def embed_image(path_or_bytes: str | Path | bytes, min_width: int = 480) -> str:
    """``<img>`` attributes ``src='data:...' width='...'`` for an image file or PNG bytes.

    Small images (e.g. 64-pixel samples) are shown enlarged by an integer factor (up to 4, to
    about ``min_width`` pixels), pixelated.
    """
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else Path(path_or_bytes)
    with Image.open(source) as image:
        width = image.size[0]
        if isinstance(path_or_bytes, bytes) and image.format == "PNG":
            data = path_or_bytes
        else:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            data = buffer.getvalue()
    scale = max(1, min(4, min_width // max(width, 1)))
    return f"src='data:image/png;base64,{base64.b64encode(data).decode('ascii')}' width='{width * scale}'"


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "n/a"
    return html.escape(str(value))


def _metrics_table(metrics: Mapping) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, Mapping) or (isinstance(value, list) and len(value) > 8):
            continue
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{_format_value(value)}</td></tr>")
    return "<table class='metrics'>" + "".join(rows) + "</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table.metrics { border-collapse: collapse; } table.metrics th, table.metrics td {
  border: 1px solid #ccc; padding: 4px 10px; text-align: left; font-variant-numeric: tabular-nums; }
table.metrics th { background: #f4f4f4; font-weight: 600; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
figure { margin: 0.6em 0; } figcaption { font-size: 0.85em; color: #555; }
.note { color: #777; font-size: 0.9em; }
"""


def _find_first(run_dir: Path, candidates: list[str]) -> Path | None:
    for candidate in candidates:
        path = run_dir / candidate
        if path.is_file():
            return path
    return None


def write_run_report(
    run_dir: str | Path,
    out_html: str | Path | None = None,
    metrics: dict | None = None,
    samples_dir: str | Path | None = None,
    extra_images: dict[str, str | Path] | None = None,
) -> Path:
    """Write a self-contained HTML report of a run directory.

    Args:
        run_dir: run directory (``metrics.jsonl``, ``samples/``, ``eval/metrics.json``,
            ``eval/grid.png`` and ``analysis/upsampling.png`` are used when present).
        out_html: output file (default ``run_dir/report.html``); an existing file is kept as
            ``report.html.bak`` rather than lost.
        metrics: metric values to show; default ``run_dir/eval/metrics.json`` when present.
        samples_dir: folder of sample images (default ``run_dir/samples``); the latest few are shown.
        extra_images: ``{caption: path}`` of further images (e.g. the Figure 4 chart).

    Returns:
        The path of the HTML file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} not found")
    out_html = Path(out_html) if out_html is not None else run_dir / "report.html"
    sections: list[str] = [f"<h1>pansynth run report: {html.escape(run_dir.resolve().name)}</h1>"]

    if metrics is None:
        metrics_path = _find_first(run_dir, ["eval/metrics.json", "metrics.json"])
        if metrics_path is not None:
            metrics = json.loads(metrics_path.read_text())
    sections.append("<h2>Metrics</h2>")
    if metrics:
        shown = metrics.get("metrics", metrics) if isinstance(metrics.get("metrics"), Mapping) else metrics
        sections.append(_metrics_table(shown))
        skipped = metrics.get("skipped")
        if isinstance(skipped, Mapping) and skipped:
            items = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in skipped.items())
            sections.append(f"<p class='note'>Not computed:</p><ul class='note'>{items}</ul>")
    else:
        sections.append("<p class='note'>No metrics yet: run <code>pansynth evaluate</code>.</p>")

    sections.append("<h2>Training losses</h2>")
    sections.append(loss_section(run_dir))

    grid = _find_first(run_dir, ["eval/grid.png"])
    sections.append("<h2>Panoptic map | generated | real</h2>")
    if grid is not None:
        sections.append(f"<figure><img alt='evaluation grid' {embed_image(grid)}></figure>")
    else:
        sections.append("<p class='note'>No evaluation grid (written by <code>pansynth evaluate</code>).</p>")

    samples_dir = Path(samples_dir) if samples_dir is not None else run_dir / SAMPLES_DIR
    if samples_dir.is_dir():
        images = sorted(
            (p for p in samples_dir.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES),
            key=lambda p: (p.stat().st_mtime, p.name),
        )[-4:]
        if images:
            sections.append("<h2>Training samples (latest)</h2>")
            for image in images:
                caption = html.escape(str(image.relative_to(samples_dir)))
                figure_html = f"<img alt='{caption}' {embed_image(image)}><figcaption>{caption}</figcaption>"
                sections.append(f"<figure>{figure_html}</figure>")

    extra = dict(extra_images or {})
    chart = _find_first(run_dir, ["analysis/upsampling.png", "upsampling.png", "eval/upsampling.png"])
    if chart is not None and chart not in [Path(p) for p in extra.values()]:
        extra.setdefault("Figure 4: nearest-neighbour upsampling misalignment and holes", chart)
    for caption, path in extra.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"report image {path} ({caption}) not found")
        sections.append(f"<h2>{html.escape(caption)}</h2>")
        sections.append(f"<figure><img alt='{html.escape(caption)}' {embed_image(path)}></figure>")

    config_path = run_dir / CONFIG_FILE
    if config_path.is_file():
        sections.append("<h2>Configuration</h2><pre>" + html.escape(config_path.read_text()) + "</pre>")

    return write_page(out_html, "pansynth report", sections)


def loss_section(run_dir: Path) -> str:
    """HTML of the loss curves of a run (``metrics.jsonl``), embedded as a PNG."""
    log_path = run_dir / METRICS_FILE
    records = read_metrics_log(log_path) if log_path.is_file() else []
    if not records:
        return f"<p class='note'>No {METRICS_FILE} in the run directory.</p>"
    buffer = io.BytesIO()
    figure = plot_losses(records, buffer)
    if figure is None:
        return "<p class='note'>No losses were logged.</p>"
    return (
        f"<figure><img alt='loss curves' {embed_image(buffer.getvalue())}><figcaption>{len(records)} logged steps "
        f"(last step {records[-1]['step']})</figcaption></figure>"
    )


def html_page(title: str, sections: Sequence[str]) -> str:
    """A self-contained HTML page of the given sections (the report's style)."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>"
    )


def write_page(path: Path, title: str, sections: Sequence[str]) -> Path:
    """Write :func:`html_page` to ``path``; an existing different file is kept as ``NAME.bak``."""
    page = html_page(title, sections)
    if path.is_file() and path.read_text(encoding="utf-8") != page:
        keep_old(path)
    return atomic_write_text(path, page)
