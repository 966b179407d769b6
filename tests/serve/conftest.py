"""Fixtures of the serve tests (helpers in serve_testing.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_testing import CLASS_NAMES, THING_CLASSES, write_export

from pansynth.models import Generator


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_export(tmp_path_factory.mktemp("export"), CLASS_NAMES, THING_CLASSES)


@pytest.fixture(scope="session")
def generator(export_dir: Path) -> Generator:
    return Generator.from_pretrained(export_dir)
