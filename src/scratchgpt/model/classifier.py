"""GPTClassifier: a GPT whose language-model head is swapped for a class head (chapter 6).

    input_ids [B, T], lengths [B] -> backbone.hidden_states -> [B, T, emb_dim]
                                  -> pool one vector per text -> head -> logits [B, num_classes]

Texts of a batch are right-padded to the longest; ``lengths`` are their real lengths.
Pooling ``"last"`` reads the hidden state of each text's last *real* token (position
``lengths - 1``): in a causal model it has attended to the whole text and to nothing after it,
so it does not depend on the padding at all. The book's code reads position ``-1``, which is a
padding token for every text shorter than the batch's longest (reported by its readers:
LLMs-from-scratch issues #566 and #990). transformers' ``*ForSequenceClassification`` finds
the position as the last token that is not ``pad_token_id``: that needs a padding token (Llama
3 has none) and misreads a text that ends in the padding id. Reading by length needs neither,
so any id may pad (tests/test_open_model_finetune.py checks that the logits agree).
Pooling ``"mean"`` averages the real tokens' states.

The backbone's ``out_head`` is kept (so a language model's weights load by their usual names)
but never run: that saves the ``vocab_size``-wide matrix multiply.

State-dict keys: ``backbone.*`` (exactly a :class:`GPTModel`'s keys under ``backbone.``, e.g.
``backbone.tok_emb.weight``, ``backbone.blocks.0.att.qkv.weight``, ``backbone.out_head.weight``)
and ``head.weight`` ``[num_classes, emb_dim]``, ``head.bias`` ``[num_classes]``. LoRA adapters
(:mod:`scratchgpt.model.lora`) rename a wrapped ``...qkv.weight`` to ``...qkv.base.weight`` and
add ``...qkv.A``, ``...qkv.B``; :func:`~scratchgpt.model.lora.merge_lora` restores these keys.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from scratchgpt.config import ModelConfig
from scratchgpt.model.gpt import GPTModel

Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


class GPTClassifier(nn.Module):
    """A :class:`GPTModel` backbone and a ``num_classes``-way linear head on one pooled vector.

    ``backbone`` defaults to a fresh ``GPTModel(config)``; pass a (pretrained) one to use it as
    is, or call :meth:`from_language_model`.
    """

    def __init__(
        self,
        config: ModelConfig,
        num_classes: int,
        pooling: Pooling = "last",
        *,
        backbone: GPTModel | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if backbone is not None and backbone.config != config:
            raise ValueError("backbone.config differs from config")
        self.config = config
        self.num_classes = num_classes
        self.pooling = pooling
        self.backbone = backbone if backbone is not None else GPTModel(config)
        weight = self.backbone.tok_emb.weight  # the head lives where the backbone does
        self.head = nn.Linear(config.emb_dim, num_classes, device=weight.device, dtype=weight.dtype)

    @classmethod
    def from_language_model(
        cls, gpt: GPTModel, num_classes: int, pooling: Pooling = "last"
    ) -> GPTClassifier:
        """A classifier on ``gpt`` itself (not a copy): the book's "replace the output layer"."""
        return cls(gpt.config, num_classes, pooling, backbone=gpt)

    def pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One vector ``[B, emb_dim]`` per text from ``hidden`` ``[B, T, emb_dim]``."""
        if self.pooling == "last":
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            return hidden[rows, lengths - 1]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        real = (positions[None, :] < lengths[:, None]).unsqueeze(-1)  # [B, T, 1]
        total = hidden.masked_fill(~real, 0.0).sum(dim=1)
        return total / lengths[:, None].to(hidden.dtype)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for right-padded ``input_ids`` ``[B, T]`` whose texts
        are ``lengths`` ``[B]`` tokens long (each in ``1..T``)."""
        check_lengths(input_ids, lengths)
        hidden = self.backbone.hidden_states(input_ids)
        return self.head(self.pool(hidden, lengths.to(input_ids.device)))


def check_lengths(input_ids: torch.Tensor, lengths: torch.Tensor) -> None:
    """Raise ValueError unless ``lengths`` holds one integer in ``1..T`` per row of
    ``input_ids`` ``[B, T]``."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
    batch, num_tokens = input_ids.shape
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) for {batch} texts, "
                         f"got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    if batch and (lengths.min() < 1 or lengths.max() > num_tokens):
        raise ValueError(f"every length must be in 1..{num_tokens} (the padded batch's width), "
                         f"got {lengths.tolist()}")
