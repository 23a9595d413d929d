"""The pieces of a transformer block besides attention (chapter 4 of the book).

``LayerNorm`` and ``GELU`` are written out as formulas in their docstrings and computed with
PyTorch's fused kernels (one pass over memory instead of five); ``tests/test_model.py``
checks the kernels against the written-out formulas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.config import ModelConfig
from scratchgpt.model.attention import MultiHeadAttention
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.positional import RotaryEmbedding


class LayerNorm(nn.Module):
    """Normalise each token vector to mean 0 and variance 1, then rescale::

        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        out = scale * (x - mean) / sqrt(var + eps) + shift

    ``scale`` and ``shift`` are trainable, so the model can undo the normalisation where that
    helps. It keeps activations in a stable range however deep the network is.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """Gaussian error linear unit, in GPT-2's tanh approximation::

        GELU(x) = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))

    Like ReLU for large ``|x|``, but smooth, and slightly negative for small negative ``x``,
    so every input keeps a gradient.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Applied to every token on its own: expand to ``4 * emb_dim``, GELU, project back."""

    def __init__(self, emb_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(emb_dim, 4 * emb_dim)  # GPT-2's mlp.c_fc
        self.act = GELU()
        self.out_proj = nn.Linear(4 * emb_dim, emb_dim)  # GPT-2's mlp.c_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.act(self.fc(x)))


class TransformerBlock(nn.Module):
    """Attention (tokens exchange information), then a feed-forward net (each token thinks).

    Pre-norm, as in GPT-2: each sub-layer sees a normalised copy of its input and its output
    is *added* to the input. These shortcut connections give gradients a direct path
    through deep stacks. Dropout hits the sub-layer output before it is added.
    """

    def __init__(self, config: ModelConfig, rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.norm1 = LayerNorm(config.emb_dim, config.layer_norm_eps)
        self.att = MultiHeadAttention(
            config.emb_dim,
            config.emb_dim,
            config.n_heads,
            dropout=config.drop_rate,
            qkv_bias=config.qkv_bias,
            rope=rope,
        )
        self.norm2 = LayerNorm(config.emb_dim, config.layer_norm_eps)
        self.ff = FeedForward(config.emb_dim)
        self.drop_shortcut = nn.Dropout(config.drop_rate)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0
    ) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache, layer_idx))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x
