"""Optimizers: AdamW (the default), Adam, SGD with momentum, and Muon.

Weight decay applies only to matrices (linear and embedding weights), never to biases or
LayerNorm parameters, as in GPT-2 and nanoGPT. Muon orthogonalises the update of 2-D hidden
weight matrices; embeddings, the output head and 1-D parameters stay with AdamW, so "muon"
means a pair of optimizers that step together.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from scratchgpt.training.config import OPTIMIZERS


class OptimizerSet:
    """Several optimizers that act as one: ``step``, ``zero_grad``, ``state_dict``."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> Iterator[dict[str, Any]]:
        for optimizer in self.optimizers:
            yield from optimizer.param_groups

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> list[dict[str, Any]]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError(
                f"checkpoint holds {len(states)} optimizer states, this run has "
                f"{len(self.optimizers)}: was it saved with another --optimizer?"
            )
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)


def _split_decay(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Parameters with weight decay (matrices) and without (vectors: biases, norms)."""
    decay, no_decay = [], []
    for param in model.parameters():  # shared (tied) parameters are yielded once
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return decay, no_decay


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    momentum: float = 0.9,
    fused: bool = False,
) -> OptimizerSet:
    """The optimizer called ``name`` over ``model``'s trainable parameters.

    ``fused``: Adam(W) updates every tensor in one kernel (CPU and CUDA) instead of a loop of
    small operations; same arithmetic, several times faster.
    """
    decay, no_decay = _split_decay(model)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "adamw":
        return OptimizerSet([torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)])
    if name == "adam":
        return OptimizerSet([torch.optim.Adam(decay + no_decay, lr=lr, betas=betas,
                                              fused=fused or None)])
    if name == "sgd":
        return OptimizerSet([torch.optim.SGD(groups, lr=lr, momentum=momentum)])
    if name == "muon":
        if not hasattr(torch.optim, "Muon"):
            raise ValueError(f"--optimizer muon needs PyTorch >= 2.9 (this is {torch.__version__})")
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        hidden = [p for p in decay if p.dim() == 2 and id(p) not in embeddings]
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in decay if id(p) not in hidden_ids]
        return OptimizerSet([
            torch.optim.Muon(
                hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw"
            ),
            torch.optim.AdamW(
                [{"params": rest, "weight_decay": weight_decay},
                 {"params": no_decay, "weight_decay": 0.0}],
                lr=lr, betas=betas, fused=fused or None,
            ),
        ])
    raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
