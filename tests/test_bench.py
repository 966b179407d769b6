"""The benchmark's command line: every group of rows it runs is listed, and each runs its rows."""

from __future__ import annotations

import pytest
import torch

from pansynth import bench


def test_help_and_usage_list_every_row_group(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert ",".join(bench.ROW_GROUPS) in text
    assert f"--rows {','.join(bench.ROW_GROUPS)}" in " ".join(bench.__doc__.split())
    assert set(bench.ROW_GROUPS) == {"conv", "upsample", "generator", "serve", "export"}


@pytest.mark.parametrize("group", bench.ROW_GROUPS)
def test_each_row_group_runs_its_own_rows_only(group, monkeypatch):
    # The measurements are replaced by markers: what is checked is which rows a group selects.
    def row(name):
        return bench.BenchRow(name, "", 1.0, 1.0)

    monkeypatch.setattr(bench, "bench_conv", lambda *args, **kwargs: [row("conv")])
    monkeypatch.setattr(bench, "bench_upsample", lambda *args, **kwargs: row("upsample"))
    monkeypatch.setattr(bench, "bench_generator", lambda *args, **kwargs: [row("generator")])
    monkeypatch.setattr(bench, "bench_style_step", lambda *args, **kwargs: row("generator"))
    monkeypatch.setattr(bench, "bench_export", lambda *args, **kwargs: row("export"))
    monkeypatch.setattr(bench, "bench_serve_synthesis", lambda *args, **kwargs: row("serve"))
    rows, _ = bench.run_benchmarks(torch.device("cpu"), quick=True, rows=(group,))
    assert rows and {r.name for r in rows} == {group}
    with pytest.raises(SystemExit):
        bench.main(["--rows", f"{group},nonsense"])


def test_the_painter_figure_is_one_and_the_same_in_the_readme_and_docs():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme, serve = (root / "README.md").read_text(), (root / "docs" / "serve.md").read_text()
    rows = re.findall(
        r"^\| serve: one stroke's synthesis [^|]*\|[^|]*\| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|", readme, re.M
    )
    assert len(rows) == 1, rows
    synthesis, request, ratio = rows[0]
    assert float(ratio) == pytest.approx(float(request) / float(synthesis), abs=0.006)
    speed = re.split(r"\n#+ ", serve[serve.index("## Speed") :])[0]  # up to the next heading of any level
    assert f"`synthesize` {synthesis} ms" in speed and f"whole request\n{request} ms ({ratio}x)" in speed
    # no other millisecond figure of the request than the one quoted
    assert re.findall(r"([\d.]+) ms", speed) == [synthesis, request, "70"]
