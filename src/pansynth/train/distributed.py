"""Run the same training command under plain ``python`` and under ``torchrun``.

Under ``torchrun --nproc_per_node=G [--nnodes ...] -m pansynth train ...`` the environment holds
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` then
starts the process group (NCCL on CUDA, gloo on CPU) and pins each process to its local GPU.
Without those variables everything degrades to a single process: rank 0 of 1.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pansynth.devices import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # this module started the process group (and ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_INFO = DistInfo()


def init(device: str = "auto") -> DistInfo:
    """Start the process group when launched by torchrun; return this process's :class:`DistInfo`."""
    global _INFO
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if world_size > 1:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                    "use --nproc_per_node <= the number of GPUs"
                )
            torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", torch.cuda.current_device())
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if backend == "nccl":
            dist.init_process_group(backend=backend, device_id=resolved)
        else:
            dist.init_process_group(backend=backend)
        initialized_here = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    _INFO = DistInfo(rank, world_size, local_rank, resolved, initialized_here)
    return _INFO


def info() -> DistInfo:
    return _INFO


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """End the process group if :func:`init` started it."""
    global _INFO
    if _INFO.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
    _INFO = DistInfo()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int | None = None) -> int:
    """Per-rank seed, so that ranks draw different augmentations."""
    return seed + 1000003 * (get_rank() if rank is None else rank)


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ranks (returned unchanged in a single process)."""
    if dist.is_initialized() and get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= get_world_size()
    return values


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not (dist.is_initialized() and get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (a collective: every rank must call it)."""
    if not (dist.is_initialized() and get_world_size() > 1):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_INFO.device if _INFO.device.type == "cuda" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if not (dist.is_initialized() and get_world_size() > 1):
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def wrap_ddp(
    module: nn.Module, dist_info: DistInfo, sync_batchnorm: bool = False, find_unused_parameters: bool = False
) -> nn.Module:
    """Wrap ``module`` in DistributedDataParallel when running distributed.

    With ``sync_batchnorm`` on CUDA the BatchNorm layers become :class:`nn.SyncBatchNorm` first
    (statistics over all GPUs, as in the paper); on CPU and in a single process they stay plain.
    """
    if not dist_info.distributed:
        return module
    if sync_batchnorm and dist_info.device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device_ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
