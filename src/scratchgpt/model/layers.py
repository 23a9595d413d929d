"""The pieces of a transformer block besides attention (chapter 4 of the book).

``LayerNorm`` (in :mod:`scratchgpt.model.norms`, beside RMSNorm) and ``GELU`` are written
out as formulas in their docstrings and computed with PyTorch's fused kernels (one pass over
memory instead of five); ``tests/test_model.py`` checks the kernels against the formulas.
:class:`GatedFeedForward` is the feed-forward of Llama, Qwen and Gemma; the block is GPT-2's
or, with four norms, Gemma's.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.config import ModelConfig
from scratchgpt.model.attention import MultiHeadAttention
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.linear import Linear
from scratchgpt.model.norms import LayerNorm, make_norm
from scratchgpt.model.positional import RotaryEmbedding

__all__ = ["GELU", "FeedForward", "GatedFeedForward", "LayerNorm", "ScaledEmbedding",
           "TransformerBlock"]


class GELU(nn.Module):
    """Gaussian error linear unit, in GPT-2's tanh approximation::

        GELU(x) = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))

    Like ReLU for large ``|x|``, but smooth, and slightly negative for small negative ``x``,
    so every input keeps a gradient.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Applied to every token on its own: expand to ``hidden_dim`` (GPT-2: ``4 * emb_dim``),
    GELU, project back."""

    def __init__(self, emb_dim: int, hidden_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * emb_dim
        self.fc = Linear(emb_dim, hidden_dim, bias=bias)  # GPT-2's mlp.c_fc
        self.act = GELU()
        self.out_proj = Linear(hidden_dim, emb_dim, bias=bias)  # GPT-2's mlp.c_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.act(self.fc(x)))


class GatedFeedForward(nn.Module):
    """A gated feed-forward (Shazeer 2020): SwiGLU in Llama and Qwen, GeGLU in Gemma::

        out = out_proj(act(gate(x)) * up(x))

    Relative to :class:`FeedForward`: two expansions instead of one, and one of them, passed
    through the activation (SiLU for ``"swiglu"``, tanh-GELU for ``"geglu"``), multiplies the
    other element by element, so each hidden unit learns when to let its value through. At
    equal parameters (``hidden_dim`` about ``8/3 * emb_dim`` rather than ``4 * emb_dim``) it
    reaches a lower loss. ``gate`` and ``up`` are one ``fc`` layer of twice the width, split
    in halves (``[gate; up]``): one matrix multiply, and the same layer names as GPT-2's.
    """

    def __init__(self, emb_dim: int, hidden_dim: int, kind: str = "swiglu",
                 bias: bool = False) -> None:
        super().__init__()
        if kind not in ("swiglu", "geglu"):
            raise ValueError(f"unknown gated feed-forward {kind!r}; choose swiglu or geglu")
        self.hidden_dim = hidden_dim
        self.fc = Linear(emb_dim, 2 * hidden_dim, bias=bias)  # [gate_proj; up_proj]
        self.act = nn.SiLU() if kind == "swiglu" else GELU()
        self.out_proj = Linear(hidden_dim, emb_dim, bias=bias)  # down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.out_proj(self.act(gate) * up)


class ScaledEmbedding(nn.Embedding):
    """A token embedding whose vectors are multiplied by ``sqrt(embedding_dim)`` (Gemma).

    Relative to GPT-2's plain lookup: Gemma shares the table with the output layer, where
    small vectors suit the logits, while the residual stream they enter is kept at unit
    scale by the norms; the factor reconciles the two. It is rounded to the weights' dtype
    first (``transformers``' ``Gemma3TextScaledWordEmbedding``: in bf16, sqrt(640) is 25.25).
    """

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor(self.embedding_dim**0.5, dtype=self.weight.dtype)
        return super().forward(idx) * scale


class TransformerBlock(nn.Module):
    """Attention (tokens exchange information), then a feed-forward net (each token thinks).

    Pre-norm, as in GPT-2: each sub-layer sees a normalised copy of its input and its output
    is *added* to the input. These shortcut connections give gradients a direct path
    through deep stacks. Dropout hits the sub-layer output before it is added.

    With ``config.norms_per_block = 4`` (Gemma) each sub-layer's output is normalised once
    more before it is added (``post_att_norm``, ``post_ff_norm``): what a layer writes into
    the residual stream has a bounded size, however large its weights grow.
    ``sliding_window`` makes this a local layer (see :class:`MultiHeadAttention`).
    """

    def __init__(self, config: ModelConfig, rope: RotaryEmbedding | None = None,
                 sliding_window: int | None = None) -> None:
        super().__init__()
        norm = partial(make_norm, config.norm, eps=config.layer_norm_eps)
        self.norm1 = norm(config.emb_dim)
        self.att = MultiHeadAttention(
            config.emb_dim,
            config.emb_dim,
            config.n_heads,
            dropout=config.drop_rate,
            qkv_bias=config.qkv_bias,
            rope=rope,
            num_kv_heads=config.kv_heads,
            head_dim=config.head_dim,
            out_bias=config.proj_bias,
            qk_norm=norm if config.qk_norm else None,
            sliding_window=sliding_window,
            scale=config.query_pre_attn_scalar ** -0.5 if config.query_pre_attn_scalar else None,
        )
        self.norm2 = norm(config.emb_dim)
        self.ff: FeedForward | GatedFeedForward
        if config.ffn == "gelu":
            self.ff = FeedForward(config.emb_dim, config.ffn_dim, bias=config.proj_bias)
        else:
            self.ff = GatedFeedForward(config.emb_dim, config.ffn_dim, config.ffn,
                                       bias=config.proj_bias)
        self.post_att_norm: nn.Module | None = None
        self.post_ff_norm: nn.Module | None = None
        if config.norms_per_block == 4:
            self.post_att_norm, self.post_ff_norm = norm(config.emb_dim), norm(config.emb_dim)
        self.drop_shortcut = nn.Dropout(config.drop_rate)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0
    ) -> torch.Tensor:
        if self.post_att_norm is None or self.post_ff_norm is None:
            x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache, layer_idx))
            x = x + self.drop_shortcut(self.ff(self.norm2(x)))
            return x
        x = x + self.drop_shortcut(self.post_att_norm(self.att(self.norm1(x), kv_cache, layer_idx)))
        x = x + self.drop_shortcut(self.post_ff_norm(self.ff(self.norm2(x))))
        return x
