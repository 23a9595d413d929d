"""Facts about a model shape without building its weights (the ``meta`` device)."""

from __future__ import annotations

from typing import Any

import torch

from scratchgpt.config import ModelConfig
from scratchgpt.model.gpt import GPTModel


def describe(config: ModelConfig) -> dict[str, Any]:
    """Parameter counts and sizes of a GPTModel of this shape, computed on the meta device.

    ``parameters`` counts each weight once: with ``tie_weights`` the output layer reuses the
    token embedding's matrix, so its ``output_layer_parameters`` are not counted again.
    """
    with torch.device("meta"):
        model = GPTModel(config)
    return {
        "parameters": model.num_parameters(),
        "output_layer_parameters": model.out_head.weight.numel(),
        "tie_weights": config.tie_weights,
        "fp32_bytes": model.size_bytes(torch.float32),
        "bf16_bytes": model.size_bytes(torch.bfloat16),
        "train_flops_per_token": training_flops_per_token(model),
    }


def explain_parameters(facts: dict[str, Any]) -> list[str]:
    """Two lines on the parameter count of :func:`describe`'s ``facts``: what it includes,
    and what it would be with the output layer tied (or untied) the other way."""
    total, head = facts["parameters"], facts["output_layer_parameters"]
    if facts["tie_weights"]:
        return [f"parameters: {total:,} (the output layer shares the token embedding's weights)",
                f"without weight tying: {total + head:,} "
                f"(a separate {head:,}-parameter output layer)"]
    return [f"parameters: {total:,} (including a separate {head:,}-parameter output layer)",
            f"with weight tying: {total - head:,} "
            "(the output layer sharing the token embedding's weights)"]


def training_flops_per_token(model: GPTModel, seq_len: int | None = None) -> int:
    """FLOPs of one training step per token, the numerator of model FLOPs utilisation (MFU).

    A weight that multiplies costs 2 FLOPs per token forward and 4 backward: 6 per weight
    (Kaplan et al., 2020). Embedding tables are looked up, not multiplied, so a learned position
    table does not count, nor an untied token table; a tied one counts once, as the output
    layer. Attention adds ``12 * n_layers * seq_len * emb_dim``: query-key scores and the
    weighted sum of values, forward and backward (PaLM, appendix B). ``seq_len`` defaults to
    the context length.
    """
    config = model.config
    multiplying = model.num_parameters()
    if model.pos_emb is not None:
        multiplying -= sum(p.numel() for p in model.pos_emb.parameters())
    if not config.tie_weights:
        multiplying -= model.tok_emb.weight.numel()
    seq_len = seq_len or config.context_length
    return 6 * multiplying + 12 * config.n_layers * seq_len * config.emb_dim
