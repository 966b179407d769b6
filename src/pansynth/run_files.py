"""The names of the files in a run directory, shared by training, inference and reports.

A run directory (``pansynth train --out RUN``) holds::

    config.yaml        the resolved training configuration (compared on resume)
    .lock              held by the training process while it runs (see pansynth.train.run_dir)
    checkpoints/       step_XXXXXXXX.pt: G, D, EMA G, optimizers, schedulers, scaler, RNG, step
    export/            config.json + model.safetensors of the inference generator, with its step
    metrics.jsonl      one JSON object per logged step
    samples/           step_XXXXXXXX.png grids: panoptic map | generated | real
    tb/                TensorBoard event files
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_PATTERN",
    "CONFIG_FILE",
    "EXPORT_DIR",
    "LOCK_FILE",
    "METRICS_FILE",
    "SAMPLES_DIR",
    "TENSORBOARD_DIR",
    "checkpoint_path",
    "is_own_leftover",
    "list_checkpoints",
]

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"
METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tb"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8,})\.pt$")
# What a killed trainer can leave at the top of a run directory before config.yaml exists: the
# lock and the temporaries of pansynth's own atomic writes (".config.yaml.XXXX.tmp").
_LEFTOVER_PATTERN = re.compile(rf"^\.({re.escape(CONFIG_FILE)}|{re.escape(METRICS_FILE)})\..+\.tmp$")


def is_own_leftover(path: Path) -> bool:
    """True for the lock file and the temporaries of pansynth's own writes at the top of a run directory."""
    return path.name == LOCK_FILE or (bool(_LEFTOVER_PATTERN.match(path.name)) and path.is_file())


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """``directory / "step_00001234.pt"``."""
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the finished checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)
