"""Reading weight files without running code: the one home of ``torch.load`` and its errors.

Every weights file pansynth reads (training checkpoints, the VGG19 of the perceptual loss, the
Inception-v3 of FID, segmentation and detection networks) goes through :func:`read_torch_file`
or :func:`read_state_dict`. Files are read with ``torch.load(weights_only=True)`` or as
safetensors, so a pickle is never executed; every failure is a :class:`WeightsError`, one line
that names the file and says which of these it is:

- corrupt or truncated (random bytes, a half-copied file);
- a plain Python pickle, not a file written by ``torch.save`` (refused: unpickling runs code);
- a ``torch.save`` file that holds Python objects besides tensors and plain containers (refused,
  naming the first such object);
- a readable file of the wrong content (not a mapping of names to tensors).

Torch's own advice to load with ``weights_only=False`` is never passed on.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["WeightsError", "first_error_line", "read_state_dict", "read_torch_file"]

# The start of a legacy (pre-zip) torch.save file: a pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# How torch's safe unpickler names an object it refused.
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


class WeightsError(ValueError):
    """A weights file that cannot be used; ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path, self.reason = Path(path), reason


def read_torch_file(path: str | os.PathLike, kind: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, failing with one line.

    Args:
        path: the file.
        kind: what the file should be, for the message (``"checkpoint"``, ``"VGG19 weights file"``).

    Raises:
        FileNotFoundError: no such file.
        WeightsError (a ValueError): unreadable, a plain pickle, or holding objects that are not weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {kind} not found")
    try:
        with warnings.catch_warnings():
            # Torch warns about the pickle protocol of plain pickles before refusing them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(path, _unpickling_reason(path, kind, str(error))) from None
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, EOFError, zipfile errors...
        reason = f"is not a readable {kind} (truncated or corrupt file: {first_error_line(error)})"
        raise WeightsError(path, reason) from None


def read_state_dict(path: str | os.PathLike, kind: str, unwrap: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """A state dict (names -> tensors) from a ``.safetensors`` file or a ``torch.save`` file.

    Args:
        path: the file.
        kind: what it should hold, for the message (``"VGG19 weights file"``).
        unwrap: keys of a training checkpoint under which the state dict may sit (``("model",)``).

    Raises:
        FileNotFoundError: no such file.
        WeightsError (a ValueError): see :func:`read_torch_file`, or not a mapping of names to tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {kind} not found")
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightsError(path, f"is not a readable safetensors {kind} ({first_error_line(error)})") from None
    state = read_torch_file(path, kind)
    for key in unwrap:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise WeightsError(path, f"holds a {type(state).__name__}, not a {kind} (a state dict of named tensors)")
    not_tensor = next((key for key, value in state.items() if not isinstance(value, Tensor)), None)
    if not_tensor is not None:
        raise WeightsError(
            path,
            f"is not a {kind}: entry {str(not_tensor)!r} is a {type(state[not_tensor]).__name__}, "
            "expected a state dict of named tensors",
        )
    return dict(state)


def _unpickling_reason(path: Path, kind: str, message: str) -> str:
    refused = _REFUSED_GLOBAL.search(message)
    if refused:
        return (
            f"is not a {kind}: it holds Python objects ({refused.group(1)}) besides tensors and plain containers, "
            "and such files are refused because loading them could run code"
        )
    if _is_plain_pickle(path):
        return (
            f"is a plain Python pickle, not a {kind} written by torch.save or safetensors; pickles are refused "
            "because loading them could run code"
        )
    return f"is not a readable {kind} (corrupt data)"


def _is_plain_pickle(path: Path) -> bool:
    """A pickle (protocol 2 or newer) that is neither a zip-format nor a legacy ``torch.save`` file."""
    if zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_TORCH_MAGIC))
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and not head.startswith(_LEGACY_TORCH_MAGIC)


def first_error_line(error: BaseException) -> str:
    """The first line of an error's text, never torch's advice to load with ``weights_only=False``."""
    lines = str(error).strip().splitlines()
    line = lines[0].strip() if lines else ""
    if not line:
        return "unexpected end of file" if isinstance(error, EOFError) else type(error).__name__
    return "refused by the safe loader" if "weights_only" in line or "weights only" in line.lower() else line
