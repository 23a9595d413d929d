"""Checkpoints of a sharded (FSDP) run: each process writes its own pieces, and any number of
processes reads them back.

Under FSDP no process holds a whole weight, so none can write ``model.safetensors`` alone.
PyTorch's distributed checkpoint (``torch.distributed.checkpoint``, "DCP") has every process
write its pieces at once, here in the safetensors format with each piece's place in the whole
(:class:`~torch.distributed.checkpoint.HuggingFaceStorageWriter`): no pickle, as for every
other checkpoint. Reading plans which bytes each process needs for *its* pieces, whatever
sharding wrote them, so a run saved by two processes resumes on one, or on four.

The layout (beside the unsharded one, :mod:`.checkpoints`)::

    step-00000200/
        model/shard-0000R-model-00001-of-00001.safetensors      process R's pieces of the weights
        optimizer/shard-0000R-model-00001-of-00001.safetensors  ... of AdamW's moments
        state.pt    step, data position, RNG, the optimizer's settings (torch.load weights_only)
        meta.json   step, validation loss, the number of processes, the sha256 of every file

Atomic as the rest: every process writes into a hidden temporary directory; once all have,
rank 0 writes ``state.pt`` and ``meta.json`` and renames the directory into place. A crash or
a kill at any moment leaves the last good checkpoint whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from torch import nn

from scratchgpt.training.checkpoints import (
    BEST,
    MODEL_SHARDS,
    OPTIMIZER_SHARDS,
    STATE,
    no_space_left,
    prune,
    read_shards,
    seal,
    swap_into_place,
    unique_weights,
    verify_checkpoint,
    write_error,
)
from scratchgpt.training.errors import CheckpointError

if TYPE_CHECKING:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

# torch.distributed.checkpoint takes most of a second to import (it brings DTensor's
# operators), so it is imported where a sharded run saves or loads, not by every run.

Optimizers = list[torch.optim.Optimizer]


def _flat() -> StateDictOptions:
    """Options that name optimizer state by parameter: ``state.<param>.exp_avg``, ..."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


def _optimizer_parts(model: nn.Module, optimizers: Optimizers) -> tuple[dict[str, Any],
                                                                        dict[str, Any]]:
    """The optimizer state by parameter name, split: the tensors (the moments: sharded like
    their weights) and the rest (step counts as numbers, learning rates, betas)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    flat = get_optimizer_state_dict(model, optimizers, options=_flat())
    tensors = {key: value for key, value in flat.items() if isinstance(value, torch.Tensor)}
    return tensors, {key: value for key, value in flat.items() if key not in tensors}


def _agree(ok: bool) -> bool:
    """Whether every process is ``ok``: one process's failure stops them all."""
    flag = torch.tensor(float(ok))
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def save_sharded(checkpoint_dir: Path, *, step: int, model: nn.Module,
                 optimizers: Optimizers, state: dict[str, Any],
                 val_loss: float | None, keep_last: int, is_best: bool,
                 layout: dict[str, int]) -> Path:
    """Save ``step`` from every process (each must call it); keep the newest ``keep_last``
    step checkpoints and the best one. ``state``: what rank 0 keeps in ``state.pt``;
    ``layout``: the run's ``world_size`` and ``global_batch``, for ``meta.json``."""
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    rank = dist.get_rank()
    target = checkpoint_dir / f"step-{step:08d}"
    tmp = target.with_name(f".{target.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    moments, settings = _optimizer_parts(model, optimizers)
    writing = tmp / MODEL_SHARDS
    try:
        for part, tensors in ((MODEL_SHARDS, unique_weights(model, get_model_state_dict(model))),
                              (OPTIMIZER_SHARDS, moments)):
            writing = target / part
            dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(
                str(tmp / part), save_distributed=True))
        error = None
        if rank == 0:
            writing = target / STATE
            torch.save({**state, "optimizer": settings}, tmp / STATE)
            seal(tmp, target, {"step": step, "val_loss": val_loss, **layout})
    except (OSError, RuntimeError, SafetensorError, dcp.CheckpointException) as err:
        error = err
    if not _agree(error is None):
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        needed = sum(t.to_local().nbytes if hasattr(t, "to_local") else t.nbytes
                     for t in moments.values())
        full = error is not None and no_space_left(error, checkpoint_dir, needed)
        raise write_error(checkpoint_dir, writing, full,
                          error or RuntimeError("another process failed")) from error
    if rank == 0:
        if is_best:
            best_tmp = checkpoint_dir / f".{BEST}.tmp"
            shutil.rmtree(best_tmp, ignore_errors=True)
            shutil.copytree(target, best_tmp)
            swap_into_place(best_tmp, checkpoint_dir / BEST)
        prune(checkpoint_dir, keep_last)
    dist.barrier()
    return target


def is_sharded(path: Path) -> bool:
    """Whether the checkpoint directory ``path`` was written by a sharded run."""
    return (path / MODEL_SHARDS).is_dir()


def load_sharded(path: Path, model: nn.Module,
                 optimizers: Optimizers) -> dict[str, Any]:
    """Load a sharded checkpoint into the sharded ``model`` and its ``optimizers`` (on every
    process, each reading the bytes of its own pieces) and return the rest of its state."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    if not is_sharded(path):
        raise CheckpointError(f"{path} was saved by an unsharded run (one process or DDP): "
                              "resume it with the strategy it was trained with")
    verify_checkpoint(path)
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    weights = read_shards(path / MODEL_SHARDS, unique_weights(model, get_model_state_dict(model)))
    set_model_state_dict(model, weights, options=StateDictOptions(strict=False))
    moments, _ = _optimizer_parts(model, optimizers)
    moments = read_shards(path / OPTIMIZER_SHARDS, moments)
    set_optimizer_state_dict(model, optimizers, {**state.pop("optimizer"), **moments},
                             options=_flat())
    return state
