"""Facts about a model shape without building its weights (the ``meta`` device)."""

from __future__ import annotations

from typing import Any

import torch

from scratchgpt.config import ModelConfig
from scratchgpt.model.gpt import GPTModel


def describe(config: ModelConfig) -> dict[str, Any]:
    """Parameter counts and sizes of a GPTModel of this shape, computed on the meta device."""
    with torch.device("meta"):
        model = GPTModel(config)
    params = model.num_parameters()
    return {
        "parameters": params,
        "parameters_untied": model.num_parameters(exclude_tied=False),
        "fp32_bytes": model.size_bytes(torch.float32),
        "bf16_bytes": model.size_bytes(torch.bfloat16),
        # Forward + backward cost about 6 FLOPs per parameter per token (Kaplan et al., 2020),
        # plus attention's 12 * layers * context * emb_dim.
        "train_flops_per_token": 6 * params
        + 12 * config.n_layers * config.context_length * config.emb_dim,
    }
