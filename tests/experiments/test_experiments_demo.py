"""The demo pipeline: scenes, training, synthesis of the held-out scenes, the page."""

from __future__ import annotations

from pansynth.cli import main


def test_demo_command_end_to_end(tmp_path, monkeypatch, capsys):
    from pansynth.experiments import demo

    monkeypatch.setattr(demo, "DEMO_NUM_SCENES", 8)
    monkeypatch.setattr(demo, "DEMO_VAL_FRACTION", 0.25)
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out), "--steps", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "index.html" in printed and str(out.resolve() / "synthesized") in printed
    html = (out / "index.html").read_text()
    assert "panoptic map | generated | real" in html and "data:image/png;base64" in html
    # The page leads with what the demo made: the held-out grid and its instance separation, then the losses;
    # no placeholder for a metric the demo cannot compute.
    assert html.index("Instance separation") < html.index("Held-out scenes") < html.index("Training losses")
    assert "pansynth evaluate" not in html and "n/a" not in html
    assert "pansynth serve --checkpoint" in printed
    assert sorted(p.name for p in (out / "synthesized").glob("*.png")) == sorted(
        p.name for p in (out / "data" / "val" / "images").glob("*.png")
    )
    assert (out / "run" / "export" / "model.safetensors").is_file()
    # Running it again keeps the data and the run: it resumes, with more steps when asked.
    assert main(["demo", "--out", str(out), "--steps", "3", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "already in" in printed and "resuming from step 2" in printed
