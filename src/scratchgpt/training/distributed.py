"""Training in several processes with ``torchrun`` and DistributedDataParallel.

``torchrun --nproc-per-node N`` starts N copies of the same command and tells each its
``RANK`` and ``WORLD_SIZE`` through the environment. Each process (rank) holds a full copy of
the model, reads its own share of every global batch, and DDP averages the gradients across
ranks during ``backward`` — so N ranks with batch B step exactly like one process with batch
N x B. Only rank 0 evaluates, samples and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: its rank, the number of ranks, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> ProcessInfo:
    """Join the process group when launched by torchrun; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessInfo()
    info = ProcessInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def mean_across_ranks(value: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """The average of ``value`` over all ranks (itself in a single process)."""
    if not info.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def is_main_process() -> bool:
    """Whether this is the first process of a ``torchrun`` launch, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier(info: ProcessInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: ProcessInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
