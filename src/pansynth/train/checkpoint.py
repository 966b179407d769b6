"""Atomic, rotated training checkpoints that load without unpickling arbitrary objects.

A checkpoint is one dict of tensors and plain containers (state dicts, ints, floats, strings,
the config as a nested dict, RNG states as tensors) written with :func:`torch.save` through
:func:`pansynth.files.atomic_write` (a temporary file beside it, fsynced, renamed to
``step_XXXXXXXX.pt``). A process killed at any moment leaves either the previous checkpoints
untouched or the new one complete. Loading uses
``torch.load(weights_only=True)`` and walks back from the newest file to the first one that loads.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pansynth.files import atomic_write
from pansynth.models import Generator
from pansynth.run_files import checkpoint_path, list_checkpoints
from pansynth.weights import WeightsError, first_error_line, read_torch_file

__all__ = [
    "CheckpointError",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "load_generator_from_checkpoint",
    "load_latest_checkpoint",
    "rng_state",
    "rotate_checkpoints",
    "save_checkpoint",
    "set_rng_state",
]


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
    final = atomic_write(checkpoint_path(directory, step), lambda temporary: torch.save(state, temporary))
    rotate_checkpoints(directory, keep)
    return final


def rotate_checkpoints(directory: str | Path, keep: int | None) -> list[Path]:
    """Remove all but the newest ``keep`` finished checkpoints of ``directory`` (None or 0: keep all)."""
    removed = []
    if keep is not None and keep > 0:
        for _, old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
            removed.append(old)
    return removed


class CheckpointError(WeightsError):
    """A checkpoint file that cannot be used; ``str()`` is one line naming the file and the reason."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint with ``weights_only=True``: tensors and plain containers only, never code.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): one line naming the file and what is wrong with it (truncated
            or corrupt data, or objects that a checkpoint never holds, which are refused, not loaded).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        state = read_torch_file(path, "pansynth checkpoint", map_location)
    except WeightsError as error:
        raise CheckpointError(path, error.reason) from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(path, "is not a pansynth training checkpoint (no 'step' entry)")
    return state


def load_generator_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The inference generator (the EMA one when the run kept it) of a training checkpoint, in eval mode."""
    state = load_checkpoint(path)
    try:
        generator = Generator(**state["generator_config"])
        generator.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            Path(path), f"does not hold a generator this version can rebuild ({first_error_line(error)})"
        ) from None
    generator.metadata = {"step": int(state["step"])}
    for key in ("class_names", "thing_classes"):
        if state.get(key) is not None:
            generator.metadata[key] = list(state[key])
    return generator.to(device).eval()


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
        except CheckpointError as error:  # an unreadable file means "try the previous one"
            message = f"warning: checkpoint {path} is unreadable ({error.reason})"
            if quarantine:
                corrupt = path.with_name(path.name + ".corrupt")
                os.replace(path, corrupt)
                message += f"; moved aside to {corrupt.name}"
            print(message + "; using the previous checkpoint", file=sys.stderr)
    return None


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
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
