"""TrainConfig: the knobs of the training loop, shared by pretraining and fine-tuning.

Settings only, without PyTorch, so that ``scratchgpt pretrain --help`` can list them at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scratchgpt.settings import (
    DECAY,
    NON_NEGATIVE,
    POSITIVE,
    Matches,
    OneOf,
    SettingError,
    check_settings,
    knob,
)

OPTIMIZERS = ("adamw", "adam", "sgd", "muon")  # built by scratchgpt.training.optimizers
STRATEGIES = ("auto", "ddp", "fsdp")  # scratchgpt.training.distributed, .sharding
DEFAULT_MIN_LR = 1e-4
DEVICES = Matches(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps")


@dataclass
class TrainConfig:
    """How to train. Every field is also a ``scratchgpt pretrain`` flag (``--lr``, ...)."""

    max_steps: int = knob(1000, "optimizer steps to train for", POSITIVE)
    batch_size: int = knob(16, "sequences per step and process", POSITIVE)
    grad_accum_steps: int = knob(1, "micro-batches per step (a bigger batch, same memory)",
                                 POSITIVE)
    optimizer: str = knob("adamw", f"one of {', '.join(OPTIMIZERS)}", OneOf(tuple(OPTIMIZERS)))
    lr: float = knob(1e-3, "peak learning rate", POSITIVE)
    min_lr: float | None = knob(None, "floor the cosine decays to, at most --lr (default: "
                                      f"{DEFAULT_MIN_LR:g}, or --lr if that is lower)",
                                NON_NEGATIVE)
    warmup_steps: int = knob(50, "steps of linear warmup", NON_NEGATIVE)
    schedule: str = knob("cosine", "after warmup, cosine: decay to --min-lr; constant: hold --lr",
                         OneOf(("cosine", "constant")))
    weight_decay: float = knob(0.1, "decoupled weight decay (matrices)", NON_NEGATIVE)
    beta1: float = knob(0.9, "Adam(W) first-moment decay", DECAY)
    beta2: float = knob(0.95, "Adam(W) second-moment decay", DECAY)
    momentum: float = knob(0.9, "SGD momentum", DECAY)
    grad_clip: float = knob(1.0, "max gradient norm (0 = no clipping)", NON_NEGATIVE)
    eval_every: int = knob(100, "evaluate, sample and checkpoint every N steps", POSITIVE)
    eval_batches: int = knob(10, "batches per loss estimate", POSITIVE)
    keep_last: int = knob(2, "step checkpoints to keep (plus the best)", POSITIVE)
    seed: int = knob(1234, "seed for initialisation, data order, dropout", NON_NEGATIVE)
    device: str = knob("auto", "auto, cpu, cuda, cuda:N or mps", DEVICES)
    precision: str = knob("auto", "auto (CPU: fp32; CUDA: bf16, else fp16), fp32, bf16, fp16",
                          OneOf(("auto", "fp32", "bf16", "fp16")))
    compile: bool = knob(False, "torch.compile the model")
    activation_checkpointing: bool = knob(
        False, "keep only each transformer block's input and recompute the block's forward in "
               "backward: far less activation memory (a longer context or a bigger batch "
               "fits), about a third more compute; the same loss and gradients")
    strategy: str = knob("auto", "how processes share the work under torchrun: ddp (each holds "
                         "the whole model, gradients averaged), fsdp (each holds 1/N of the "
                         "weights, gradients and optimizer state); auto: ddp under torchrun, "
                         "one process otherwise", OneOf(STRATEGIES))
    cpu_offload: bool = knob(False, "fsdp: keep each process's share of the weights and the "
                                    "optimizer state in CPU memory, on the GPU only to compute")
    backend: str = knob("auto", "how processes talk: nccl (CUDA GPUs), gloo (CPUs); auto: nccl "
                        "on CUDA, else gloo", OneOf(("auto", "nccl", "gloo")))
    threads: int | None = knob(None, "CPU threads PyTorch computes with (default: PyTorch's "
                                     "own, one per core); 1 on a busy machine, where more "
                                     "threads wait on each other: 2 threads trained 40 "
                                     "steps/min where 1 trained 213", POSITIVE)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.min_lr is None:
            self.min_lr = min(DEFAULT_MIN_LR, self.lr)
        if self.min_lr > self.lr:
            raise SettingError("min_lr", f"must not exceed lr ({self.lr:g}), got {self.min_lr:g}")
        if self.cpu_offload and self.strategy != "fsdp":
            raise SettingError("cpu_offload", "offloads FSDP's shards: use it with --strategy fsdp")

    def global_batch(self, world_size: int) -> int:
        """Sequences per optimizer step over all processes: batch x accumulation x processes."""
        return self.batch_size * self.grad_accum_steps * world_size

    def steps_for_epochs(self, epochs: float, examples: int, world_size: int) -> int:
        """Optimizer steps for ``epochs`` passes over ``examples`` (at least one)."""
        return max(1, math.ceil(epochs * examples / self.global_batch(world_size)))
