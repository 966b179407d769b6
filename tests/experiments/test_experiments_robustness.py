"""`pansynth robustness`: corrupted-map evaluations of several runs, pooled by label, table + JSON + chart."""

from __future__ import annotations

import json

import pytest
import torch

import pansynth.experiments.robustness as robustness
from pansynth.cli import main
from pansynth.data.corrupt import Corruption
from pansynth.models import Generator


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from pansynth.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "scenes", num=4, size=64, seed=2, val_fraction=0.5)


def _export(path, conv, seed):
    torch.manual_seed(seed)
    Generator(6, size=(64, 64), ngf=2, spade_hidden=8, conv=conv, upsample="nearest").save_pretrained(path)
    return path


def test_runs_are_pooled_by_label_and_evaluations_reused(scenes, tmp_path, monkeypatch):
    runs = [_export(tmp_path / "b", "standard", 0), _export(tmp_path / "p0", "panoptic", 1),
            _export(tmp_path / "p1", "panoptic", 2)]  # fmt: skip
    out = tmp_path / "robustness"
    calls = []
    evaluate = robustness.evaluate_generator
    monkeypatch.setattr(
        robustness, "evaluate_generator", lambda *a, **k: calls.append(k["corruptions"]) or evaluate(*a, **k)
    )
    kwargs = dict(corruptions=[Corruption("drop", 1.0)], labels=["baseline", "paper", "paper"], seeds=[0, 1])
    summary = robustness.run_robustness(runs, "folder", scenes, out, **kwargs)
    # clean once per run, drop once per run and seed
    assert len(calls) == 3 * (1 + 2)
    rows = {(r["corruption"], r["label"]): r for r in summary["rows"]}
    assert list(rows) == [("clean", "baseline"), ("clean", "paper"), ("drop:1", "baseline"), ("drop:1", "paper")]
    assert len(rows[("clean", "paper")]["per_seed"]["separation"]) == 2  # two runs
    assert len(rows[("drop:1", "paper")]["per_seed"]["separation"]) == 4  # two runs x two seeds
    # Every pooled value is the one its evaluation wrote.
    for evaluation in rows[("drop:1", "paper")]["evaluations"]:
        stored = json.loads((tmp_path / evaluation["dir"] / "metrics.json").read_text())
        assert stored["corruptions"] == ["drop:1"] and stored["corrupt_seed"] == evaluation["seed"]
        assert stored["metrics"]["separation"] == evaluation["separation"]
    # Dropping every instance changes what the generator draws.
    assert rows[("drop:1", "paper")]["mean"]["separation"] != rows[("clean", "paper")]["mean"]["separation"]
    table = (out / "robustness.md").read_text()
    assert "| drop:1 | paper | " in table and "| clean | baseline | " in table
    assert json.loads((out / "robustness.json").read_text())["rows"][0]["label"] == "baseline"
    assert (out / "robustness.png").stat().st_size > 0
    calls.clear()
    robustness.run_robustness(runs, "folder", scenes, out, **kwargs)
    assert calls == []  # same weights and set-up: every evaluation reused


def test_cli_errors(scenes, tmp_path, capsys):
    run = _export(tmp_path / "b", "standard", 0)
    base = [
        "robustness",
        "--runs",
        str(run),
        "--dataset",
        "folder",
        "--root",
        str(scenes),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*base, "--corrupt", "blur"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "unknown corruption 'blur'; choose NAME[:LEVEL] from ds[:4], edge[:2]" in error
    assert main([*base, "--labels", "a", "b"]) == 2
    assert "--labels gives 2 names for 1 runs" in capsys.readouterr().err
