import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from pansynth.eval.report import write_run_report


def _png(path, color, size=(8, 8)):
    Image.fromarray(np.full((*size, 3), color, dtype=np.uint8)).save(path)
    return path


def _embedded_images(page):
    sources = re.findall(r"<img [^>]*src='([^']+)'", page)
    images = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:40]  # everything is embedded
        images.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    return images


def test_run_report_contains_metrics_curves_grid_and_chart(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "samples").mkdir()
    log = [{"step": s, "G_total": 5.0 / s, "D_total": 1.0 + s} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in log) + '\n{"step": 6, "G_to')
    metrics = {
        "metrics": {"mIoU": 61.2345, "separation_ratio": 0.8125},
        "skipped": {"FID": "no Inception weights"},
    }
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    _png(run / "eval" / "grid.png", (255, 0, 0))
    _png(run / "samples" / "step_00000005.png", (0, 255, 0))
    chart = _png(tmp_path / "upsampling.png", (0, 0, 255), size=(5, 9))
    (run / "report.html").write_text("old report")

    path = write_run_report(run, extra_images={"Figure 4 chart": chart})
    page = path.read_text()
    assert path == run / "report.html"
    assert (run / "report.html.bak").read_text() == "old report"  # the previous page is kept
    assert "61.23" in page and "0.8125" in page and "no Inception weights" in page
    assert "Figure 4 chart" in page and "5 logged steps" in page
    images = _embedded_images(page)
    assert len(images) == 4  # loss curves, grid, sample, chart
    sizes = [im.size for im in images]
    assert (9, 5) in sizes and (8, 8) in sizes
    assert images[0].size[0] > 300  # the loss curve figure
    assert not list(run.glob("*_losses.png"))  # the temporary curve file is gone


def test_report_without_evaluation_and_missing_run(tmp_path):
    run = tmp_path / "empty_run"
    run.mkdir()
    page = write_run_report(run, out_html=tmp_path / "r.html").read_text()
    assert "No metrics yet" in page and "No metrics.jsonl" in page
    with pytest.raises(FileNotFoundError, match="run directory"):
        write_run_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="chart"):
        write_run_report(run, out_html=tmp_path / "r2.html", extra_images={"chart": tmp_path / "missing.png"})
