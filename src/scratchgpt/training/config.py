"""TrainConfig: the knobs of the training loop, shared by pretraining and fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scratchgpt.training.optimizers import OPTIMIZERS


def knob(default: Any, help: str) -> Any:
    """A config field with its ``--help`` text (the CLI turns each field into a flag)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """How to train. Every field is also a ``scratchgpt pretrain`` flag (``--lr``, ...)."""

    max_steps: int = knob(1000, "optimizer steps to train for")
    batch_size: int = knob(16, "sequences per step and process")
    grad_accum_steps: int = knob(1, "micro-batches per step (a bigger batch, same memory)")
    optimizer: str = knob("adamw", f"one of {', '.join(OPTIMIZERS)}")
    lr: float = knob(1e-3, "peak learning rate")
    min_lr: float = knob(1e-4, "floor the cosine decays to")
    warmup_steps: int = knob(50, "steps of linear warmup")
    weight_decay: float = knob(0.1, "decoupled weight decay (matrices)")
    beta1: float = knob(0.9, "Adam(W) first-moment decay")
    beta2: float = knob(0.95, "Adam(W) second-moment decay")
    momentum: float = knob(0.9, "SGD momentum")
    grad_clip: float = knob(1.0, "max gradient norm (0 = no clipping)")
    eval_every: int = knob(100, "evaluate, sample and checkpoint every N steps")
    eval_batches: int = knob(10, "batches per loss estimate")
    keep_last: int = knob(2, "step checkpoints to keep (plus the best)")
    seed: int = knob(1234, "seed for initialisation, data order, dropout")
    device: str = knob("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = knob("auto", "auto (CPU: fp32; CUDA: bf16, else fp16), fp32, bf16, fp16")
    compile: bool = knob(False, "torch.compile the model")

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum_steps", "eval_every", "eval_batches",
                    "keep_last")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
