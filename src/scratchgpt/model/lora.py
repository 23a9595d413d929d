"""Low-rank adaptation, LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language
Models"; appendix E of the book).

Fine-tuning changes a weight matrix ``W`` by some ``dW``. LoRA bets that ``dW`` has low rank
and learns it as a product of two thin matrices, leaving ``W`` frozen::

    y = x W^T + b  +  (alpha / rank) * dropout(x) @ A @ B        A: [in, rank], B: [rank, out]

For GPT-2 small at rank 8 that is under 1% of the weights to train (and to store). ``B``
starts at zero, so training starts from exactly the pretrained model. After training,
``W + (alpha / rank) * (A @ B)^T`` is one ordinary matrix again (:func:`merge_lora`), and the
merged model runs as fast as the original.

This module knows only :class:`TransformerBlock` s, not what the model is for: the classifier
(Stage 3a) and instruction tuning (Stage 3b) use it alike.

Naming: a wrapped layer keeps its place in the module tree, so ``blocks.0.att.qkv.weight``
becomes ``blocks.0.att.qkv.base.weight`` (and ``.base.bias``) beside the adapters
``blocks.0.att.qkv.A`` and ``blocks.0.att.qkv.B``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scratchgpt.model.layers import TransformerBlock

#: The linear layers of a transformer block, by their path inside the block.
LORA_TARGETS: tuple[str, ...] = ("att.qkv", "att.out_proj", "ff.fc", "ff.out_proj")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / rank) * A @ B``.

    ``A`` starts Kaiming-uniform (as in the book), ``B`` at zero: the layer first computes
    exactly what ``base`` does. Dropout acts on the adapter's input only.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.empty(base.in_features, rank, **like))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, base.out_features, **like))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * (self.dropout(x) @ self.A @ self.B)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """``base`` with the update folded into its weight (in place); it stays frozen."""
        self.base.weight += self.scaling * (self.A @ self.B).T  # nn.Linear stores W as [out, in]
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    targets: tuple[str, ...] = LORA_TARGETS,
) -> list[str]:
    """Wrap the ``targets`` layers of every TransformerBlock in ``model`` with :class:`LoRALinear`
    and freeze everything else in ``model``: afterwards only the adapters train.

    Layers outside the blocks (embeddings, output or classification heads) are never wrapped;
    a caller that wants one of them trained sets its ``requires_grad`` afterwards. Returns the
    wrapped layers' names, in module order.
    """
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown or not targets:
        raise ValueError(f"unknown LoRA targets {unknown}; choose from: {', '.join(LORA_TARGETS)}")
    if any(isinstance(module, LoRALinear) for module in model.modules()):
        raise ValueError("model already has LoRA adapters")
    model.requires_grad_(False)
    wrapped = []
    for block_name, block in model.named_modules():
        if not isinstance(block, TransformerBlock):
            continue
        for target in targets:
            parent_path, _, attr = target.rpartition(".")
            parent = block.get_submodule(parent_path)
            setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha, dropout))
            wrapped.append(f"{block_name}.{target}" if block_name else target)
    if not wrapped:
        raise ValueError("model has no TransformerBlock to put LoRA adapters in")
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain ``nn.Linear`` back in its
    place: ``model`` then has exactly its original structure and state-dict keys."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_path, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_path), attr, module.merged())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters alone (``NAME.A``, ``NAME.B`` for every wrapped layer, in module order):
    a small file that, with the base model, rebuilds the fine-tuned one."""
    return {
        f"{name}.{adapter}": getattr(module, adapter).detach()
        for name, module in model.named_modules()
        if isinstance(module, LoRALinear)
        for adapter in ("A", "B")
    }
