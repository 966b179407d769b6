"""Writing files so that nothing is half-written or lost: the one home of atomic writes.

Every file pansynth writes into a user's folder goes through :func:`atomic_write`: the content
is written to a temporary file in the same folder, flushed to disk, given the permissions a
plain ``open()`` would give (the user's umask), then renamed over the target in one step. A
process killed at any moment leaves either the old file or the new one, plus at most a hidden
``.NAME.*.tmp`` file that :func:`remove_temporaries` clears.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "keep_old",
    "remove_temporaries",
    "write_json_keeping_old",
    "write_text_keeping_old",
]


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary_path)`` and rename the result to ``path`` atomically.

    The temporary file lies beside ``path`` (``.NAME.XXXX.tmp``), so the rename never crosses
    file systems; it is fsynced before the rename and the folder after it. The file gets mode
    ``0o666 & ~umask`` like any file the user creates. On any error the temporary is removed
    and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def remove_temporaries(directory: str | os.PathLike, pattern: str = ".*.tmp") -> list[Path]:
    """Delete the temporary files that a killed :func:`atomic_write` (or a killed save) left in ``directory``."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for path in directory.glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def keep_old(path: str | os.PathLike) -> Path | None:
    """Rename an existing ``path`` to ``NAME.bak`` (``NAME.bak2``, ...) so that nothing is lost.

    Returns the backup's path, or None when ``path`` did not exist.
    """
    path = Path(path)
    if not path.exists():
        return None
    backup = path.with_name(path.name + ".bak")
    index = 1
    while backup.exists():
        index += 1
        backup = path.with_name(f"{path.name}.bak{index}")
    path.replace(backup)
    return backup


def write_text_keeping_old(path: str | os.PathLike, text: str) -> Path:
    """Write ``text``; a different existing file is first kept as ``NAME.bak`` (``.bak2`` ...), not lost."""
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    keep_old(path)
    return atomic_write_text(path, text)


def write_json_keeping_old(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON with :func:`write_text_keeping_old`."""
    return write_text_keeping_old(path, json.dumps(payload, indent=2) + "\n")


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (a no-op where folders cannot be fsynced)."""
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
