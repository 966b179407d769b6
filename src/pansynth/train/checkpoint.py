"""Atomic, rotated training checkpoints that load without unpickling arbitrary objects.

A checkpoint is one dict of tensors and plain containers (state dicts, ints, floats, strings,
the config as a nested dict, RNG states as tensors) written with :func:`torch.save` to
``checkpoints/step_XXXXXXXX.pt.tmp``, flushed and fsynced, then renamed with :func:`os.replace`
to ``step_XXXXXXXX.pt`` (and the directory fsynced). A process killed at any moment leaves
either the previous checkpoints untouched or the new one complete. Loading uses
``torch.load(weights_only=True)`` and walks back from the newest file to the first one that loads.
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    """``directory / "step_00001234.pt"``."""
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
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


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int, keep: int | None = None) -> Path:
    """Write ``state`` atomically as ``directory/step_XXXXXXXX.pt`` and keep only the newest ``keep``.

    Args:
        state: dict of tensors / state dicts / primitive containers (must load with ``weights_only=True``).
        directory: the run's ``checkpoints/`` folder (created when missing).
        step: generator step stored in the file name.
        keep: number of newest checkpoints kept; older ``step_*.pt`` files of this folder are removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(directory)
    if keep is not None and keep > 0:
        for _, old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{path} is not a pansynth training checkpoint (no 'step' entry)")
    return state


def load_latest_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu", quarantine: bool = False
) -> tuple[dict[str, Any], Path] | None:
    """Newest checkpoint of ``directory`` that loads, or ``None`` when there is none.

    A newest file that is truncated or corrupt (a save killed half-way by something other than
    this module, a full disk) is reported on stderr and the previous one is used. With
    ``quarantine`` the unreadable file is renamed ``*.pt.corrupt`` (kept, never deleted) so that
    checkpoint rotation of the resumed run does not count it as a newer checkpoint.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path, map_location), path
        except Exception as error:  # noqa: BLE001 - any unreadable file means "try the previous one"
            message = f"warning: checkpoint {path} is unreadable ({type(error).__name__}: {error})"
            if quarantine:
                corrupt = path.with_name(path.name + ".corrupt")
                os.replace(path, corrupt)
                message += f"; moved aside to {corrupt.name}"
            print(message + "; using the previous checkpoint", file=sys.stderr)
    return None


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete ``step_*.pt.tmp`` files left by a save that was killed before its rename."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for path in directory.glob("step_*.pt.tmp"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (and every CUDA device) as tensors and ints."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": int(py_version),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()),
                     state["python_gauss"]))
    np.random.set_state((
        "MT19937",
        state["numpy"].numpy().astype(np.uint32),
        state["numpy_pos"],
        state["numpy_has_gauss"],
        state["numpy_gauss"],
    ))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not supported on every platform (e.g. Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
