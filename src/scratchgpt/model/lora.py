"""Low-rank adaptation, LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language
Models"; appendix E of the book).

Fine-tuning changes a weight matrix ``W`` by some ``dW``. LoRA bets that ``dW`` has low rank
and learns it as a product of two thin matrices, leaving ``W`` frozen::

    y = x W^T + b  +  (alpha / rank) * dropout(x) @ A @ B        A: [in, rank], B: [rank, out]

For GPT-2 small at rank 8 that is under 1% of the weights to train (and to store). ``B``
starts at zero, so training starts from exactly the pretrained model. After training,
``W + (alpha / rank) * (A @ B)^T`` is one ordinary matrix again (:func:`merge_lora`), and the
merged model runs as fast as the original.

Which layers: the *targets* are a block's projections, named as the published models name
their layers (and as peft's ``target_modules`` picks them): ``q``, ``k``, ``v``, ``o``,
``gate``, ``up``, ``down`` for Llama, Qwen and Gemma (``q_proj`` ... ``down_proj``); GPT-2
publishes its queries, keys and values as one layer, ``c_attn``, so its targets are ``qkv``,
``o``, ``up`` (``c_fc``) and ``down``. Our model stacks q, k and v in one ``att.qkv`` layer (and
gate and up in one ``ff.fc``) for speed; an adapter on ``q`` alone is an adapter on the rows of
``att.qkv`` that compute the queries (:class:`LoRALinear`'s ``parts``), which is exactly what
peft's adapter on ``q_proj`` adds.

This module knows only :class:`TransformerBlock` s, not what the model is for: the classifier
(Stage 3a) and instruction tuning (Stage 3b) use it alike.

Naming: a wrapped layer keeps its place in the module tree, so ``blocks.0.att.qkv.weight``
becomes ``blocks.0.att.qkv.base.weight`` (and ``.base.bias``) beside the adapters
``blocks.0.att.qkv.A`` and ``blocks.0.att.qkv.B`` (one adapter on the whole layer), or
``blocks.0.att.qkv.A.q``, ``blocks.0.att.qkv.B.q``, ... (one per part).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from scratchgpt.model.layers import GatedFeedForward, TransformerBlock

#: Every name a LoRA target can have (a model has some of them: see :func:`block_targets`).
LORA_TARGETS: tuple[str, ...] = ("q", "k", "v", "qkv", "o", "gate", "up", "down")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update ``(alpha / rank) * A @ B``.

    ``A`` starts Kaiming-uniform (as in the book), ``B`` at zero: the layer first computes
    exactly what ``base`` does. Dropout acts on the adapters' input only.

    ``parts`` (name -> rows of the output) puts one adapter on each of those rows instead of
    one on the whole layer: for our ``att.qkv``, ``{"q": slice(0, 512), "v": ...}`` adapts the
    queries and the values as two separate layers would be adapted. ``A`` and ``B`` are then
    dictionaries of matrices, one per part; rows no part names are left as they are.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0,
                 parts: Mapping[str, slice] | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.parts = None if parts is None else dict(  # in the order of their rows
            sorted(parts.items(), key=lambda part: part[1].indices(base.out_features)[0]))
        if self.parts is None:
            self.A, self.B = self._adapter(base.out_features)
        else:
            adapters = {name: self._adapter(len(range(base.out_features)[rows]))
                        for name, rows in self.parts.items()}
            self.A = nn.ParameterDict({name: a for name, (a, _) in adapters.items()})
            self.B = nn.ParameterDict({name: b for name, (_, b) in adapters.items()})
        self.dropout = nn.Dropout(dropout)
        self.adapters_on = True  # False: the layer is ``base`` alone (see adapters_off)

    def _adapter(self, out_features: int) -> tuple[nn.Parameter, nn.Parameter]:
        like = {"device": self.base.weight.device, "dtype": self.base.weight.dtype}
        A = nn.Parameter(torch.empty(self.base.in_features, self.rank, **like))
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        return A, nn.Parameter(torch.zeros(self.rank, out_features, **like))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.adapters_on:
            return out
        x = self.dropout(x)
        if self.parts is None:
            return out + self.scaling * (x @ self.A @ self.B)
        # One product with every part's A side by side, then each part's B on its own
        # columns of it; the updates (zeros between parts) are laid out as the output's rows.
        low = x @ torch.cat([self.A[name] for name in self.parts], dim=1)
        pieces, end = [], 0
        for i, (name, rows) in enumerate(self.parts.items()):
            start, stop, _ = rows.indices(out.shape[-1])
            if start > end:
                pieces.append(low.new_zeros(*low.shape[:-1], start - end))
            pieces.append(low[..., i * self.rank:(i + 1) * self.rank] @ self.B[name])
            end = stop
        if end < out.shape[-1]:
            pieces.append(low.new_zeros(*low.shape[:-1], out.shape[-1] - end))
        return out + self.scaling * torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """``base`` with the update folded into its weight (in place); it stays frozen."""
        weight = self.base.weight  # nn.Linear stores W as [out, in]
        if self.parts is None:
            weight += self.scaling * (self.A @ self.B).T
        else:
            for name, rows in self.parts.items():
                weight[rows] += self.scaling * (self.A[name] @ self.B[name]).T
        return self.base

    def extra_repr(self) -> str:
        parts = f", parts={','.join(self.parts)}" if self.parts is not None else ""
        return f"rank={self.rank}, alpha={self.alpha}{parts}"


def block_targets(block: TransformerBlock) -> dict[str, tuple[str, slice]]:
    """The LoRA targets ``block`` has: each one's layer (its path in the block) and the rows
    of that layer's output it is. ``q``, ``k``, ``v`` and ``qkv`` are all offered; a gated
    feed-forward has ``gate`` and ``up`` (halves of ``ff.fc``), GPT-2's has ``up`` only."""
    q, kv = block.att.q_width, block.att.kv_width
    whole = slice(None)
    targets = {"q": ("att.qkv", slice(0, q)), "k": ("att.qkv", slice(q, q + kv)),
               "v": ("att.qkv", slice(q + kv, q + 2 * kv)), "qkv": ("att.qkv", whole),
               "o": ("att.out_proj", whole)}
    if isinstance(block.ff, GatedFeedForward):
        hidden = block.ff.hidden_dim
        targets |= {"gate": ("ff.fc", slice(0, hidden)), "up": ("ff.fc", slice(hidden, None))}
    else:
        targets["up"] = ("ff.fc", whole)
    return targets | {"down": ("ff.out_proj", whole)}


def default_targets(block: TransformerBlock) -> tuple[str, ...]:
    """Every projection of ``block``, as its published model names its layers: GPT-2's
    ``qkv, o, up, down`` (peft's ``c_attn, c_proj, c_fc``), the gated families'
    ``q, k, v, o, gate, up, down``."""
    if isinstance(block.ff, GatedFeedForward):
        return ("q", "k", "v", "o", "gate", "up", "down")
    return ("qkv", "o", "up", "down")


def parse_targets(targets: str | Sequence[str]) -> tuple[str, ...] | None:
    """``"all"`` (None: the model's :func:`default_targets`) or a comma-separated list."""
    if isinstance(targets, str):
        if targets.strip() == "all":
            return None
        targets = targets.split(",")
    return tuple(name.strip() for name in targets if name.strip())


def _layers_to_wrap(block: TransformerBlock, targets: tuple[str, ...] | None
                    ) -> dict[str, dict[str, slice] | None]:
    """Each layer of ``block`` that gets adapters, with its parts (None: the whole layer)."""
    offered = block_targets(block)
    chosen = default_targets(block) if targets is None else targets
    missing = [name for name in chosen if name not in offered]
    if missing or not chosen:
        unknown = [name for name in missing if name not in LORA_TARGETS]
        what = (f"unknown LoRA targets {unknown}" if unknown else
                f"this model has no {', '.join(missing)} layer" if missing else "no LoRA targets")
        raise ValueError(f"{what}; this model's targets: {', '.join(offered)} (or all)")
    if "qkv" in chosen and {"q", "k", "v"} & set(chosen):
        raise ValueError("LoRA target qkv already holds q, k and v: name either qkv or some "
                         "of q, k, v")
    layers: dict[str, dict[str, slice] | None] = {}
    for name in dict.fromkeys(chosen):
        path, rows = offered[name]
        if rows == slice(None):
            layers[path] = None
        else:
            parts = layers.setdefault(path, {})
            assert parts is not None  # a layer is whole or in parts, never both
            parts[name] = rows
    return layers


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    targets: str | Sequence[str] = "all",
) -> list[str]:
    """Wrap the ``targets`` projections of every TransformerBlock in ``model`` with
    :class:`LoRALinear` and freeze everything else in ``model``: afterwards only the adapters
    train. ``targets``: ``"all"`` (the model's :func:`default_targets`), or names from
    :func:`block_targets` (a list, or one comma-separated string).

    Layers outside the blocks (embeddings, output or classification heads) are never wrapped;
    a caller that wants one of them trained sets its ``requires_grad`` afterwards. Returns the
    wrapped layers' names, in module order.
    """
    chosen = parse_targets(targets)
    if any(isinstance(module, LoRALinear) for module in model.modules()):
        raise ValueError("model already has LoRA adapters")
    blocks = [(name, module) for name, module in model.named_modules()
              if isinstance(module, TransformerBlock)]
    if not blocks:
        raise ValueError("model has no TransformerBlock to put LoRA adapters in")
    model.requires_grad_(False)
    wrapped = []
    for block_name, block in blocks:
        for path, parts in _layers_to_wrap(block, chosen).items():
            parent_path, _, attr = path.rpartition(".")
            parent = block.get_submodule(parent_path)
            setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha, dropout, parts))
            wrapped.append(f"{block_name}.{path}" if block_name else path)
    return wrapped


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """Within the ``with`` block, ``model`` computes what it did before its adapters: each
    :class:`LoRALinear` returns ``base(x)`` alone. DPO's reference, the frozen starting model,
    is then the very model being trained, with no second copy of its weights in memory."""
    layers = [module for module in model.modules() if isinstance(module, LoRALinear)]
    if not layers:
        raise ValueError("model has no LoRA adapters to switch off")
    for layer in layers:
        layer.adapters_on = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.adapters_on = True


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain linear layer back in its
    place: ``model`` then has exactly its original structure and state-dict keys."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_path, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_path), attr, module.merged())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters alone (``NAME.A``, ``NAME.B``, or ``NAME.A.PART``, ``NAME.B.PART``, for
    every wrapped layer, in module order): a small file that, with the base model, rebuilds
    the fine-tuned one."""
    return {
        f"{name}.{key}": tensor.detach()
        for name, module in model.named_modules()
        if isinstance(module, LoRALinear)
        for key, tensor in module.named_parameters()
        if not key.startswith("base.")
    }
