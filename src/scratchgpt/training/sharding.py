"""Fully sharded data parallelism: each of N processes keeps 1/N of the model (FSDP2).

Data parallelism with DDP (:mod:`.distributed`) copies everything to every process: the
weights, their gradients and AdamW's two moments, 16 bytes a parameter in fp32, so a 1B model
needs 16 GB on every GPU however many GPUs there are. FSDP cuts each of those tensors into N
pieces, one per process, and gathers a layer's whole weights only while that layer computes:

1. forward: before a block runs, its weights are all-gathered from every process; after it
   has run, each process drops all but its own piece again;
2. backward: the block's weights are gathered once more, its gradients computed, and then
   *reduce-scattered*: summed over the processes and cut, each process keeping (the mean of)
   the piece of the gradient that matches its piece of the weights;
3. the optimizer steps each process's pieces alone: AdamW is element-wise, so the pieces of
   the moments never need to meet.

The training state per process is about 1/N of DDP's, paid for in communication: a gather per
block in forward and in backward, where DDP has one all-reduce. The arithmetic is the same, so
N processes train as one process does with the same global batch.

PyTorch's ``fully_shard`` does all of it (we wrap, we don't reimplement): each transformer block
is its own unit (gathered and freed on its own), and the root holds what is left (embeddings,
final norm, output head). A sharded weight is a ``DTensor``: a tensor that knows it is one
piece of a whole, which ``clip_grad_norm_`` and the optimizers understand.
"""

from __future__ import annotations

import torch
from torch import nn

from scratchgpt.model.layers import TransformerBlock
from scratchgpt.training.config import TrainConfig


def check_shardable(config: TrainConfig, precision: str) -> None:
    """Refuse what does not shard: fp16's loss scaling (its overflow check would see one
    piece of the gradients) and Muon (it orthogonalises whole matrices, not pieces)."""
    if precision == "fp16":
        raise ValueError("--strategy fsdp trains in bf16 or fp32: fp16's gradient scaler would "
                         "check one piece of the gradients for overflow; use --precision bf16")
    if config.optimizer == "muon":
        raise ValueError("--optimizer muon orthogonalises whole weight matrices, and under "
                         "--strategy fsdp each process holds pieces: use adamw with fsdp")


def shard_model(model: nn.Module, *, device: torch.device, precision: str,
                cpu_offload: bool) -> nn.Module:
    """Shard ``model`` in place across the processes of the default group, onto ``device``:
    each :class:`TransformerBlock` a unit of its own, then the root. A unit still on the CPU
    moves to ``device`` as it is cut, so the whole model never has to fit there.
    ``precision`` ``bf16`` or ``fp16`` gathers the weights in that type for compute and
    reduces gradients in fp32 (the weights kept, and the optimizer's state, stay fp32);
    ``cpu_offload`` keeps each process's pieces and their optimizer state in CPU memory,
    moved to the GPU only to compute."""
    # imported here: FSDP brings DTensor, most of a second that an unsharded run need not wait
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    blocks = [module for module in model.modules() if isinstance(module, TransformerBlock)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no transformer blocks to shard")
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    # the processes, on our device (FSDP's own default would be CUDA wherever there is one)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    options = {"mesh": mesh,
               "mp_policy": MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)}
    if cpu_offload:  # pinned (page-locked) memory speeds the copies to a GPU; none on a CPU
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for block in blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)
    return model


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Whether the next backward reduce-scatters the gradients (FSDP's ``no_sync``): off for
    all but the last micro-batch of an accumulated step, whose backward reduces the sum."""
    model.set_requires_gradient_sync(sync)  # type: ignore[operator]
