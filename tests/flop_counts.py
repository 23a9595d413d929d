"""The FLOPs of a model's matrix products, as PyTorch counts them: the oracle that the
formulas of ``scratchgpt.model.summary`` (``training_flops_per_token``) are checked against."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from scratchgpt.model import GPTModel


def matrix_product_flops(model: GPTModel) -> int:
    """FLOPs of every matrix product (``mm``, ``addmm``) of one forward and backward pass over
    two random sequences of the model's whole context."""
    config = model.config
    idx = torch.randint(0, config.vocab_size, (2, config.context_length))
    with FlopCounterMode(display=False) as counter:
        model(idx).sum().backward()
    return sum(n for op, n in counter.get_flop_counts()["Global"].items()
               if str(op) in ("aten.mm", "aten.addmm"))
