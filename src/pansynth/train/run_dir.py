"""The run directory: checked before anything is written, locked while a trainer uses it.

``pansynth train --out RUN`` either starts a run in a new or empty folder or resumes the run
that ``RUN/config.yaml`` describes. :meth:`RunDirectory.inspect` decides which without writing
anything, so that a refused command leaves the folder as it found it; the trainer then takes
:meth:`RunDirectory.lock` (an OS file lock held for the run's life: a second trainer on the
same folder is refused with the holder's PID and host; a lock left by a dead process is free
again, since the OS drops it with the process) and only then writes.

The layout of the folder is described in :mod:`pansynth.run_files`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pansynth.errors import UserError, yaml_error_line
from pansynth.files import atomic_write_text, remove_temporaries
from pansynth.models.generator import CONFIG_NAME, WEIGHTS_NAME
from pansynth.run_files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EXPORT_DIR,
    LOCK_FILE,
    METRICS_FILE,
    is_own_leftover,
    list_checkpoints,
)
from pansynth.train.config import (
    TrainConfig,
    config_differences,
    config_from_dict,
    dump_config,
    flatten,
)

try:  # POSIX file locks; on other systems the run directory is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunDirectory", "RunInUseError", "RunState"]


class RunInUseError(UserError):
    """Another process holds the run directory's lock."""


@dataclass
class RunState:
    """What :meth:`RunDirectory.inspect` found."""

    resume: bool  # RUN/config.yaml describes this run: resume it
    stored: dict[str, Any] | None = None  # the stored configuration (None for a new run)
    notes: list[str] = field(default_factory=list)  # warnings to print (e.g. a moved dataset)


def resolve_root(root: str | None) -> str | None:
    """``data.root`` as an absolute path (what the run records and compares)."""
    return None if root is None else str(Path(root).expanduser().resolve())


class RunDirectory:
    """One run directory (``--out``) and the files in it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock_handle = None

    # ------------------------------------------------------------------ paths
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    # ------------------------------------------------------------------ checks (read-only)
    def inspect(self, config: TrainConfig) -> RunState:
        """Decide between a new run and a resume, refusing what cannot be trained into; writes nothing.

        Raises:
            NotADirectoryError: ``--out`` is a file.
            ValueError: the folder holds other files and no run, or a run of another configuration
                (the message names the keys that differ), or an unreadable ``config.yaml``.
        """
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"--out {self.path} exists and is not a directory")
        if not self.config_file.is_file():
            # A trainer killed before its config.yaml was in place leaves only its lock and temporaries:
            # that folder is still empty for this purpose (they are cleared under the lock).
            if self.path.is_dir() and not all(is_own_leftover(p) for p in self.path.iterdir()):
                raise ValueError(
                    f"--out {self.path} is not empty and holds no {CONFIG_FILE} (not a pansynth run directory); "
                    "choose a new or empty directory"
                )
            return RunState(resume=False)
        try:
            # Through the config class: files of earlier versions get their aliases and new defaults.
            stored = config_from_dict(yaml.safe_load(self.config_file.read_text()) or {}, str(self.config_file))
        except (yaml.YAMLError, ValueError) as error:
            reason = yaml_error_line(error) if isinstance(error, yaml.YAMLError) else error
            raise ValueError(
                f"{self.config_file} is not a readable run configuration ({reason}); use a new --out"
            ) from None
        stored = stored.to_dict()
        new = config.to_dict()
        differences = config_differences(stored, new)
        if differences:
            a, b = flatten(stored), flatten(new)
            details = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differences[:8])
            raise ValueError(
                f"{self.path} holds a run with a different configuration ({details}); resume it with the "
                "same settings or train into a new --out directory"
            )
        notes = []
        old_root, new_root = stored["data"]["root"], resolve_root(config.data.root)
        if old_root is not None and new_root is not None and resolve_root(old_root) != new_root:
            if Path(old_root).exists():
                raise ValueError(
                    f"{self.path} was trained on data.root={old_root}, which still exists, but data.root={new_root} "
                    "was given: resume with the run's dataset, or, if the new folder is a copy of it, remove or "
                    "rename the old one first"
                )
            notes.append(f"warning: the dataset moved: {old_root} no longer exists; resuming with {new_root}")
        return RunState(resume=True, stored=stored, notes=notes)

    # ------------------------------------------------------------------ lock
    def lock(self) -> None:
        """Take the run's exclusive lock (non-blocking); write our PID and host into it.

        Raises:
            RunInUseError: another live process holds it (the message names its PID and host).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            return
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise RunInUseError(
                f"{self.path} is in use by another training process ({holder}); wait for it to finish or stop it "
                "(a run directory takes one trainer at a time)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock_handle = handle

    def unlock(self) -> None:
        """Release the lock (the OS also releases it when the process ends)."""
        if self._lock_handle is not None:
            handle, self._lock_handle = self._lock_handle, None
            try:
                handle.seek(0)
                handle.truncate()
            finally:
                handle.close()  # closing the file releases the flock

    # ------------------------------------------------------------------ writes (under the lock)
    def write_config(self, config: TrainConfig, state: RunState) -> None:
        """Record the configuration (with data.root resolved); on resume only when a harmless key changed."""
        values = config.to_dict()
        values["data"]["root"] = resolve_root(config.data.root)
        text = dump_config(values)
        if state.resume and self.config_file.is_file() and self.config_file.read_text() == text:
            return
        atomic_write_text(self.config_file, text)

    def clean_temporaries(self) -> list[Path]:
        """Remove what killed saves left behind (checkpoint and export temporaries)."""
        removed = remove_temporaries(self.checkpoints, "step_*.pt.tmp")
        removed += remove_temporaries(self.checkpoints, ".*.tmp")
        removed += remove_temporaries(self.export_dir, ".*.tmp")
        removed += remove_temporaries(self.path, ".*.tmp")
        return removed

    def export_step(self) -> int | None:
        """The training step of the exported generator, or None when the export is missing or partial."""
        config_path, weights_path = self.export_dir / CONFIG_NAME, self.export_dir / WEIGHTS_NAME
        if not (config_path.is_file() and weights_path.is_file()):
            return None
        try:
            step = json.loads(config_path.read_text()).get("_step")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None
        return step if isinstance(step, int) else None

    def newest_checkpoint_step(self) -> int | None:
        found = list_checkpoints(self.checkpoints)
        return found[-1][0] if found else None

    def truncate_metrics(self, step: int) -> None:
        """Drop the logged lines after ``step``: a resumed run logs those steps again."""
        if not self.metrics_file.is_file():
            return
        kept = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except (json.JSONDecodeError, AttributeError):
                continue
        atomic_write_text(self.metrics_file, "".join(line + "\n" for line in kept))

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def print_notes(state: RunState) -> None:
    for note in state.notes:
        print(note, file=sys.stderr, flush=True)
