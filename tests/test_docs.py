"""Every Python snippet of the README and of docs/ runs as written.

The snippets of one page run in order, in one namespace, in a fresh working directory (so a
snippet may use what an earlier one of the same page made). Examples that need the user's own
data or weights are written as shell commands, not Python snippets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _snippets(page: Path) -> list[str]:
    return SNIPPET.findall(page.read_text(encoding="utf-8"))


def test_the_pages_have_python_snippets():
    assert _snippets(ROOT / "README.md"), "the README shows the Python API"
    assert sum(len(_snippets(page)) for page in PAGES) >= 5


@pytest.mark.parametrize("page", [p for p in PAGES if _snippets(p)], ids=lambda p: p.name)
def test_snippets_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    for index, code in enumerate(_snippets(page)):
        try:
            exec(compile(code, f"{page.name} snippet {index + 1}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - report which snippet failed
            raise AssertionError(f"{page.name}, snippet {index + 1} fails:\n{code}") from error
