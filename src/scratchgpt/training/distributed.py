"""Training in several processes with ``torchrun``: the process group, and who does what.

``torchrun --nproc-per-node N`` starts N copies of the same command and tells each its
``RANK`` and ``WORLD_SIZE`` through the environment (on several machines, ``--nnodes`` and a
rendezvous endpoint that every machine reaches). Each process (rank) reads its own share of
every global batch. How they share the model is the *strategy*:

- ``ddp`` (DistributedDataParallel): each rank holds a full copy of the model and of the
  optimizer state; DDP averages the gradients across ranks during ``backward``. Only rank 0
  evaluates, samples and writes files.
- ``fsdp`` (fully sharded, :mod:`.sharding`): each rank holds 1/N of the weights, gradients
  and optimizer state. Every rank takes part in every forward pass, so all of them evaluate
  and sample together (rank 0 alone writes the records), and each writes its own piece of
  every checkpoint.

Either way N ranks with batch B step exactly like one process with batch N x B. The ranks
talk through a *backend*: NCCL between CUDA GPUs, Gloo between CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: its rank, the number of ranks, its device, and whether it
    joined a process group (a single process does for FSDP, which always shards)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    grouped: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_strategy(strategy: str, world_size: int) -> str:
    """``single``, ``ddp`` or ``fsdp``: ``auto`` is DDP under torchrun, one process otherwise;
    ``ddp`` in one process is one process (there is nothing to average)."""
    if strategy == "fsdp":
        return "fsdp"
    return "ddp" if world_size > 1 else "single"


def resolve_backend(backend: str, device_type: str) -> str:
    """The backend ``backend`` names, or for ``auto`` the one for ``device_type``; one that
    cannot run here is an error that says what to use instead."""
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and (device_type != "cuda" or not dist.is_nccl_available()):
        why = ("this PyTorch has no NCCL" if not dist.is_nccl_available()
               else f"the device is {device_type}")
        raise ValueError(f"backend nccl connects CUDA GPUs, and {why}: use --backend gloo "
                         "(or auto) to train on CPUs, or --device cuda on a machine with GPUs")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ValueError("backend gloo is not built into this PyTorch: use --backend nccl on "
                         "CUDA GPUs")
    return backend


def init_distributed(device_type: str, *, strategy: str = "auto",
                     backend: str = "auto") -> ProcessInfo:
    """Join the process group when launched by torchrun, or for FSDP in a single process (a
    group of one); otherwise a single process without one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    sharded = resolve_strategy(strategy, world_size) == "fsdp"
    if world_size == 1 and not sharded:
        return ProcessInfo()
    backend = resolve_backend(backend, device_type)
    if world_size == 1:
        info = ProcessInfo(grouped=True)
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        if not dist.is_initialized():  # a group of one needs no rendezvous: an in-memory store
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0,
                                    world_size=1)
        return info
    info = ProcessInfo(int(os.environ["RANK"]), world_size,
                       int(os.environ.get("LOCAL_RANK", 0)), grouped=True)
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return info


def sum_across_ranks(value: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """The sum of ``value`` over all ranks (itself in a single process)."""
    if not info.grouped:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def any_rank(flag: bool, info: ProcessInfo, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank: a decision every rank then takes together."""
    if not info.grouped:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def is_main_process() -> bool:
    """Whether this is the first process of a ``torchrun`` launch, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier(info: ProcessInfo) -> None:
    if info.grouped:
        dist.barrier()


def shutdown(info: ProcessInfo) -> None:
    if info.grouped and dist.is_initialized():
        dist.destroy_process_group()
