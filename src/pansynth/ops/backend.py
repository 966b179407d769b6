"""Which engine runs a panoptic op: the PyTorch engine or the Triton kernels.

``backend="torch"`` is the PyTorch engine (:mod:`pansynth.ops._torch_engine`): every device and
dtype, exact in float64, the CPU path. ``backend="triton"`` is the fused Triton kernels
(:mod:`pansynth.ops._triton`): CUDA tensors in float32 (TF32 where torch allows it),
bfloat16 and float16; CPU tensors only under ``TRITON_INTERPRET=1`` (the Triton interpreter,
how the kernels are tested without a GPU). ``backend="auto"`` picks the Triton kernels for
CUDA tensors when they are available and proven on CUDA (:data:`TRITON_VERIFIED_ON_CUDA`), the
PyTorch engine otherwise (CPU, float64, other devices).

The environment variable ``PANSYNTH_BACKEND`` sets what ``auto`` means: ``torch`` always takes
the PyTorch engine; ``triton`` takes the Triton kernels wherever they can run the tensors
(CUDA, or CPU under ``TRITON_INTERPRET=1``; not float64), whether or not they were verified.

``backend="graph"`` is the graph engine (:mod:`pansynth.ops._graph_engine`): plain tensor operations
whose shapes follow from the input shapes only, for ``torch.export`` and ONNX (see
:mod:`pansynth.export`); every device and dtype, slower than the others. ``auto`` never picks it.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Backend", "BACKEND_ENV", "TRITON_VERIFIED_ON_CUDA", "compute_dtype", "select_backend", "triton_available"]

Backend = Literal["auto", "triton", "torch", "graph"]
BACKENDS = ("auto", "triton", "torch", "graph")
BACKEND_ENV = "PANSYNTH_BACKEND"

# Whether ``backend="auto"`` may pick the Triton kernels for CUDA tensors. It stays False until
# the kernels have passed the CUDA tests on a real GPU (``pytest tests/ops`` on a CUDA machine,
# tests/ops/test_ops_triton.py included, not skipped); then set it to True, together with the
# GPU benchmark table in the README. Until then ``auto`` runs the PyTorch engine on CUDA too,
# and ``backend="triton"`` (or PANSYNTH_BACKEND=triton) opts in explicitly.
TRITON_VERIFIED_ON_CUDA = False

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _constant_while_compiling(fn):
    """``torch.compiler.assume_constant_result(fn)``: torch.compile calls ``fn`` once while it traces
    (an import is not traceable) and keeps its answer as a constant. Written as the attribute that
    decorator sets, because importing torch._dynamo imports triton, and triton must be imported
    only after TRITON_INTERPRET is set (the tests set it once pansynth is imported)."""
    fn._dynamo_marked_constant = True
    return fn


@_constant_while_compiling
def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernels can run tensors on ``device`` (importable, and a CUDA device or
    a CPU under ``TRITON_INTERPRET=1``)."""
    if device.type not in ("cuda", "cpu") or (device.type == "cpu" and not _interpreting()):
        return False
    try:
        from pansynth.ops import _triton as kernels  # imports triton: only when the engine is asked about
    except ImportError:  # triton is not installed, or the kernels are not part of this build
        return False
    return bool(kernels.is_available(device))


def _env_backend() -> str:
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    if value not in ("", *BACKENDS):
        raise ValueError(f"{BACKEND_ENV} must be 'auto', 'triton' or 'torch', got {value!r}")
    return value or "auto"


def select_backend(backend: str, tensor: Tensor) -> Literal["triton", "torch", "graph"]:
    """The engine that runs an op on ``tensor`` (the features) for the ``backend`` argument.

    Raises a ValueError when ``backend="triton"`` cannot run these tensors (float64, a CPU
    tensor outside the interpreter, Triton missing), naming what to do instead.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto', 'triton', 'torch' or 'graph', got {backend!r}")
    if backend in ("torch", "graph"):
        return backend
    device, dtype = tensor.device, tensor.dtype
    if backend == "auto":
        meaning = _env_backend()
        if meaning == "torch":
            return "torch"
        if meaning == "auto" and not (TRITON_VERIFIED_ON_CUDA and device.type == "cuda"):
            return "torch"
        # Triton where it can run these tensors, the PyTorch engine elsewhere.
        if dtype not in _TRITON_DTYPES or not triton_available(device):
            return "torch"
        return "triton"
    if dtype not in _TRITON_DTYPES:
        raise ValueError(
            f"backend='triton' runs float32, bfloat16 and float16 inputs, got {str(dtype).replace('torch.', '')}: "
            "use backend='torch' (or 'auto') for it"
        )
    if device.type == "cpu" and not _interpreting():
        raise ValueError(
            "backend='triton' runs CPU tensors only in the Triton interpreter (set TRITON_INTERPRET=1 before "
            "importing pansynth); use backend='torch' (or 'auto') on CPU"
        )
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"backend='triton' runs CUDA tensors, got a tensor on {device}: use backend='torch'")
    if not triton_available(device):
        raise ValueError(
            f"backend='triton' needs the Triton kernels, which are not available on {device} "
            "(is the triton package installed?): use backend='torch' (or 'auto')"
        )
    return "triton"


def compute_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype an op computes in: autocast's dtype for float32/float16/bfloat16 tensors inside an
    autocast region of their device type (as ``conv2d`` does), else the tensor's own."""
    if tensor.dtype not in _TRITON_DTYPES:
        return tensor.dtype
    device_type = tensor.device.type
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        return tensor.dtype
    return torch.get_autocast_dtype(device_type) if enabled else tensor.dtype
