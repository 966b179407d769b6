"""One rule for turning a device name into a ``torch.device``, used by every command."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the first CUDA device when one is available, else the CPU.

    ``cpu``, ``cuda`` and ``cuda:N`` are taken as given; asking for CUDA without a GPU is an error
    (rather than a silent fall-back to a much slower run).

    Raises:
        ValueError: an unknown device name, or CUDA asked for where there is none.
    """
    if isinstance(name, torch.device):
        device = name
    else:
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but no CUDA GPU is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {str(device)!r}")
    return device
