"""The measured tables of the README and docs match the result files committed under docs/results/.

Each table cell is recomputed here from the per-seed values of the JSON file the command wrote
(mean and sample standard deviation, written out), and every other decimal figure of the text
around the table must be one of the file's values."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "docs" / "results" / "ablation.json"
# (file, heading of the section that quotes the ablation's result)
QUOTES = [(ROOT / "README.md", "### Ablation (paper Table 4)"), (ROOT / "docs" / "eval.md", "## Ablation (Table 4)")]
HEADERS = {
    "mIoU": "mIoU ↑",
    "accuracy": "accuracy ↑",
    "detAP": "detAP ↑",
    "FID": "FID ↓",
    "separation": "separation ↑",
    "separation_ratio": "separation / real ↑",
}


def _section(path: Path, heading: str) -> str:
    """From the heading line that starts with ``heading`` to the next heading of its level or above."""
    text = path.read_text()
    start = re.search("^" + re.escape(heading) + ".*$", text, re.M)
    assert start, f"{path.name}: no section {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    end = re.compile(r"^#{1," + str(level) + r"} ", re.M).search(text, start.end())
    return text[start.start() : end.start() if end else None]


def _digits(value: float) -> int:
    return 3 if abs(value) < 10 else 2  # fractions (separation) to 3 places, percentages to 2


def _cell(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{_digits(mean)}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{_digits(mean)}f} ± {std:.{_digits(mean)}f}"


@pytest.mark.parametrize("path,heading", QUOTES, ids=[p.name for p, _ in QUOTES])
def test_ablation_table_and_figures_match_the_committed_result(path, heading):
    result = json.loads(ABLATION.read_text())
    section = _section(path, heading)
    # The command that wrote the file is the one shown.
    assert result["command"] in section, result["command"]
    lines = section.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("| Method |")), None)
    assert first is not None, f"{path.name}: no results table in {heading!r}"
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        if "---" not in line:
            table.append([cell.strip() for cell in line.strip("|").split("|")])
    header, *rows = table
    keys = [next(k for k, h in HEADERS.items() if h == column) for column in header[1:]]
    result_rows = [row for row in rows if row[0] in {v["label"] for v in result["variants"]}]
    assert [row[0] for row in result_rows] == [v["label"] for v in result["variants"]]
    allowed = set()
    for row, variant in zip(result_rows, result["variants"]):
        assert len(variant["per_seed"][keys[0]]) == len(result["seeds"])
        for key, cell in zip(keys, row[1:]):
            values = variant["per_seed"][key]
            assert cell == _cell(values), (variant["variant"], key)
            allowed.update(cell.split(" ± "))
            allowed.update(f"{v:.{_digits(v)}f}" for v in values)
    real = result.get("segmenter_real_images") or {}
    allowed.update(f"{real[k]:.2f}" for k in ("mIoU", "accuracy") if k in real)
    # Every other decimal figure of the section (outside code blocks and tables) is one of the file's.
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith("|"))
    figures = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose)
    assert figures and not [f for f in figures if f not in allowed], [f for f in figures if f not in allowed]
