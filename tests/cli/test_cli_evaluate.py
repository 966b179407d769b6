import json

import numpy as np
import pytest
from PIL import Image

from pansynth.cli import main
from pansynth.eval import upsampling_stats


def _folder_dataset(root, maps):
    root.mkdir(parents=True)
    classes = [{"name": "sky", "isthing": False}, {"name": "car", "isthing": True}]
    (root / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": None}))
    for kind in ("images", "semantic", "panoptic"):
        (root / "val" / kind).mkdir(parents=True)
    for index, panoptic in enumerate(maps):
        name = f"s{index}"
        semantic = (panoptic > 0).astype(np.uint8)
        Image.fromarray(np.zeros((*panoptic.shape, 3), np.uint8)).save(root / "val" / "images" / f"{name}.png")
        Image.fromarray(semantic).save(root / "val" / "semantic" / f"{name}.png")
        Image.fromarray(panoptic.astype(np.uint16)).save(root / "val" / "panoptic" / f"{name}.png")


def test_analyze_upsampling_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    maps = [np.kron(rng.integers(0, 5, (4, 4)), np.ones((5, 5), np.int64))[:16, :16] for _ in range(3)]
    _folder_dataset(tmp_path / "data", maps)
    out = tmp_path / "analysis"
    argv = ["analyze", "upsampling", "--dataset", "folder", "--root", str(tmp_path / "data"), "--levels", "3",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2x2 -> 4x4" in printed and "8x8 -> 16x16" in printed
    stored = json.loads((out / "upsampling.json").read_text())
    assert stored["images"] == 3 and stored["map_size"] == [16, 16]
    per_map = [upsampling_stats(m, 3) for m in maps]
    for step, row in enumerate(stored["steps"]):
        # maps of one size: the pooled fraction is the mean of the per-map fractions
        assert row["misaligned"] == pytest.approx(np.mean([p[step]["misaligned"] for p in per_map]))
        assert row["holes"] == pytest.approx(np.mean([p[step]["holes"] for p in per_map]))
    assert (out / "upsampling.png").stat().st_size > 0
    assert main(argv) == 2  # never overwrites an earlier analysis
    assert "already exists" in capsys.readouterr().err


def test_fid_stats_and_report_errors(tmp_path, capsys):
    _folder_dataset(tmp_path / "data", [np.zeros((8, 8), np.int64)])
    argv = [
        "fid-stats",
        "--dataset",
        "folder",
        "--root",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "s.npz"),
    ]
    assert main(argv) == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "no_run")]) == 2
    assert "run directory" in capsys.readouterr().err


def test_report_command(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps({"metrics": {"FID": 42.5}, "skipped": {}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "G_total": 3.0}) + "\n")
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "42.5" in page and "1 logged step" in page
    assert page.count("data:image/png;base64,") == 1  # the loss curves
    assert "report.html" in capsys.readouterr().out
