"""Self-attention, built up one idea at a time (chapter 3 of "Build a Large Language Model
(From Scratch)"), ending with the fast multi-head attention the GPT model uses.

1. :class:`SimplifiedSelfAttention` - no weights: similarity of every pair of tokens.
2. :class:`SelfAttention` - trainable query, key and value projections, scaled scores.
3. :class:`CausalAttention` - a token may not look at later tokens; dropout on the weights.
4. :class:`MultiHeadAttentionWrapper` - several causal heads side by side.
5. :class:`MultiHeadAttention` - the same function, computed efficiently: one fused
   projection for all heads' queries, keys and values, PyTorch's fused
   ``scaled_dot_product_attention`` kernel, optional rotary positions and a KV cache. Its
   general case is grouped-query attention (fewer key/value heads than query heads), with
   the QK-norm and sliding window of today's open models.

Every ``forward`` accepts ``return_weights=True`` and then returns ``(output, weights)``
so the attention pattern can be plotted. Given the same weights, all five compute the same
thing (``tests/test_attention.py`` proves it). Inside a whole model, :func:`record_attention`
collects every layer's weights during an ordinary forward (``scratchgpt viz attention``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.linear import Linear
from scratchgpt.model.positional import RotaryEmbedding

AttentionOutput = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class SimplifiedSelfAttention(nn.Module):
    """Attention with no trainable weights.

    The score of query token ``i`` for token ``j`` is the dot product ``x_i . x_j``; a softmax
    over ``j`` turns the scores into weights summing to 1, and the output for token ``i`` is
    the weighted sum of all token vectors: ``softmax(X X^T) X``.
    """

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> AttentionOutput:
        scores = x @ x.transpose(-2, -1)  # [..., T, T]
        weights = torch.softmax(scores, dim=-1)
        context = weights @ x
        return (context, weights) if return_weights else context


class SelfAttention(nn.Module):
    """Scaled dot-product attention with trainable projections.

    Each token is projected three ways: a query (what it looks for), a key (what it offers)
    and a value (what it passes on). Scores ``Q K^T`` are divided by ``sqrt(d_out)`` so that
    their spread does not grow with the vector size, which would make the softmax peaky
    and its gradients vanish.
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> AttentionOutput:
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.transpose(-2, -1)
        weights = torch.softmax(scores / math.sqrt(keys.shape[-1]), dim=-1)
        context = weights @ values
        return (context, weights) if return_weights else context


class CausalAttention(nn.Module):
    """Self-attention that cannot see the future, as a language model must.

    Scores above the diagonal (token ``i`` looking at ``j > i``) are set to ``-inf`` before
    the softmax, so they get weight 0 and the remaining weights of each row still sum to 1.
    The mask is a buffer: it moves with the module between devices but is not trained.
    Dropout on the weights randomly silences some token pairs while training.
    """

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), 1)
        self.register_buffer("mask", mask, persistent=False)  # True = "in the future"

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> AttentionOutput:
        num_tokens = x.shape[-2]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.transpose(-2, -1)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = torch.softmax(scores / math.sqrt(keys.shape[-1]), dim=-1)
        weights = self.dropout(weights)
        context = weights @ values
        return (context, weights) if return_weights else context


class MultiHeadAttentionWrapper(nn.Module):
    """Several causal attention heads run side by side, outputs concatenated.

    Each head has its own projections of size ``d_out // num_heads`` and can learn a
    different kind of relation between tokens. Unlike the book's wrapper (which
    concatenates ``num_heads`` outputs of size ``d_out`` each and stops there), heads here
    split ``d_out`` and an output projection mixes them, exactly as in
    :class:`MultiHeadAttention`, so the two compute the same function and can share weights.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out // num_heads, context_length, dropout, qkv_bias)
            for _ in range(num_heads)
        )
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor, return_weights: bool = False) -> AttentionOutput:
        outputs = [head(x, return_weights=True) for head in self.heads]
        context = self.out_proj(torch.cat([out for out, _ in outputs], dim=-1))
        if return_weights:
            return context, torch.stack([w for _, w in outputs], dim=-3)  # [B, H, T, T]
        return context


def causal_mask(
    num_queries: int, num_keys: int, offset: int, device: torch.device
) -> torch.Tensor:
    """Boolean ``[num_queries, num_keys]`` mask, True where attending is allowed: query ``i``
    sits at position ``offset + i`` and may see keys ``0 .. offset + i``."""
    query_pos = torch.arange(num_queries, device=device)[:, None] + offset
    return torch.arange(num_keys, device=device)[None, :] <= query_pos


def window_mask(
    num_queries: int, num_keys: int, offset: int, window: int, device: torch.device
) -> torch.Tensor:
    """Boolean ``[num_queries, num_keys]`` mask, True where key slot ``j`` lies less than
    ``window`` slots before query slot ``offset + i`` (a sliding window counts itself)."""
    query_pos = torch.arange(num_queries, device=device)[:, None] + offset
    return torch.arange(num_keys, device=device)[None, :] > query_pos - window


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention, the efficient way (what :class:`GPTModel` uses).

    * One ``qkv`` linear layer (GPT-2's ``c_attn``) computes queries, keys and values of all
      heads in a single matrix multiply; the result is split and reshaped to
      ``[batch, heads, tokens, head_dim]``.
    * ``F.scaled_dot_product_attention`` does mask, scale, softmax, dropout and the weighted
      sum in one fused kernel (FlashAttention on CUDA) without materialising the
      ``T x T`` weights. With ``return_weights=True`` the weights are computed explicitly.
    * ``rope``, if given, rotates queries and keys by their positions.
    * With a :class:`KVCache`, ``x`` holds only the new tokens: their keys and values are
      appended to the cache and the queries attend over everything cached so far.
    * When the cache holds padding (a left-padded batch), it also supplies each token's
      position (for ``rope``) and a ``[B, 1, T, T_keys]`` mask that hides padding keys as well
      as the future; without padding no mask is built and the causal fast paths run.
    * ``out_proj`` (GPT-2's ``c_proj``) mixes the heads' outputs.
    * ``recorder``: None, except inside :func:`record_attention`, which sets it to a list;
      each forward then takes the explicit path and appends its weights to that list.

    What today's open models change, each off by default (GPT-2's attention):

    * ``num_kv_heads`` < ``num_heads``: grouped-query attention (Ainslie et al. 2023). Each
      key/value head serves ``num_heads / num_kv_heads`` query heads, so the KV cache, the
      memory a long generation is bound by, shrinks by that ratio. Multi-head attention
      (``num_kv_heads = num_heads``) and multi-query (1) are its two ends.
    * ``head_dim``: any head size, not only ``d_out / num_heads`` (Qwen3, Gemma 3); the heads
      are ``num_heads * head_dim`` wide together and ``out_proj`` maps that back to ``d_out``.
    * ``qk_norm``: a norm constructor (given ``head_dim``); each head's queries and keys are
      normalised before rotary positions (Qwen3, Gemma 3), which keeps the scores from
      growing and the softmax from saturating.
    * ``sliding_window``: a query sees only the latest ``sliding_window`` slots, itself
      included (Gemma 3's local layers): the cost of attention stops growing with the context.
    * ``scale``: scores are multiplied by it rather than ``1 / sqrt(head_dim)`` (Gemma).
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        rope: RotaryEmbedding | None = None,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        out_bias: bool = True,
        qk_norm: Callable[[int], nn.Module] | None = None,
        sliding_window: int | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None and d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of "
                             f"num_kv_heads ({num_kv_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim or d_out // num_heads
        self.dropout = dropout
        self.q_width, self.kv_width = num_heads * self.head_dim, num_kv_heads * self.head_dim
        self.qkv = Linear(d_in, self.q_width + 2 * self.kv_width, bias=qkv_bias)
        self.out_proj = Linear(self.q_width, d_out, bias=out_bias)
        self.rope = rope
        self.q_norm = qk_norm(self.head_dim) if qk_norm is not None else None
        self.k_norm = qk_norm(self.head_dim) if qk_norm is not None else None
        self.sliding_window = sliding_window
        self.scale = scale
        # Only what differs from GPT-2 is passed to SDPA: GPT-2's call stays as it was. SDPA
        # repeats each key/value head for its query heads itself (no copy on CUDA).
        self.sdpa_options: dict[str, bool | float] = {}
        if num_kv_heads < num_heads:
            self.sdpa_options["enable_gqa"] = True
        if scale is not None:
            self.sdpa_options["scale"] = scale
        self.recorder: list[torch.Tensor] | None = None  # see record_attention()

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        return_weights: bool = False,
    ) -> AttentionOutput:
        """``x``: ``[B, T, d_in]`` -> ``[B, T, d_out]`` (and ``[B, H, T, T_keys]`` weights)."""
        batch, num_tokens, _ = x.shape
        qkv = self.qkv(x)
        if self.num_kv_heads == self.num_heads:  # as many of each: one view splits them
            qkv = qkv.view(batch, num_tokens, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, T, head_dim]
        else:  # grouped-query: fewer key/value heads than query heads
            q, k, v = qkv.split([self.q_width, self.kv_width, self.kv_width], dim=-1)
            q = q.view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
            k = k.view(batch, num_tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(batch, num_tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        offset = kv_cache.length if kv_cache is not None else 0
        # Set by the model (KVCache.add_tokens) when some row is padded; None otherwise.
        mask = kv_cache.attn_mask if kv_cache is not None else None
        if self.rope is not None:
            positions = kv_cache.positions if kv_cache is not None else None
            q, k = self.rope(q, offset, positions), self.rope(k, offset, positions)
        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)
        num_keys = k.shape[2]
        if self.sliding_window is not None and num_keys > self.sliding_window:
            if mask is None:
                mask = causal_mask(num_tokens, num_keys, offset, x.device)
            mask = mask & window_mask(num_tokens, num_keys, offset, self.sliding_window, x.device)
        dropout_p = self.dropout if self.training else 0.0

        weights = None
        if return_weights or self.recorder is not None:  # spelled out, as in CausalAttention
            if mask is None:
                mask = causal_mask(num_tokens, num_keys, offset, x.device)
            groups = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            scale = self.scale if self.scale is not None else 1 / math.sqrt(self.head_dim)
            scores = (q @ k.transpose(-2, -1)) * scale
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(torch.softmax(scores, dim=-1), dropout_p)
            context = weights @ v
            if self.recorder is not None:
                self.recorder.append(weights.detach())
        elif mask is not None:  # a padded batch or a sliding window: the mask says it all
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, **self.sdpa_options
            )
        elif offset == 0 or num_tokens == 1:
            # No cache yet: plain causal attention. One new token: it may see every key.
            context = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p, is_causal=offset == 0, **self.sdpa_options
            )
        else:  # several new tokens after a cached prefix: the mask is offset
            mask = causal_mask(num_tokens, num_keys, offset, x.device)
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, **self.sdpa_options
            )

        context = context.transpose(1, 2).reshape(batch, num_tokens, self.q_width)
        context = self.out_proj(context)
        return (context, weights) if return_weights else context


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the attention weights ``model`` computes while the ``with`` block runs.

    ``with record_attention(model) as weights: model(idx)`` leaves in ``weights`` one
    ``[B, H, T, T]`` tensor per layer, in layer order, ``H`` the number of *query* heads (with
    grouped-query attention several share one key/value head): ``weights[i][b, h, q, k]`` is
    how much query token ``q`` of layer ``i``'s head ``h`` draws from key token ``k``. Every
    row sums to 1 and is 0 above the diagonal, where the keys lie in the future, and, in a
    sliding-window layer, beyond the window. Each further forward
    (a generation step with a KV cache, say) appends one more tensor per layer.

    Each :class:`MultiHeadAttention` in ``model`` gets the list as its ``recorder``, which
    makes it compute the weights explicitly (the same function as the fused kernel, which
    never materialises them) and keep a detached copy; on exit, even after an error, each is
    put back as it was and the fast path runs again. In training mode the recorded weights are
    those after dropout, as the model used them.
    """
    layers = [module for module in model.modules() if isinstance(module, MultiHeadAttention)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no MultiHeadAttention layer to record")
    weights: list[torch.Tensor] = []
    previous = [layer.recorder for layer in layers]
    try:
        for layer in layers:
            layer.recorder = weights
        yield weights
    finally:
        for layer, recorder in zip(layers, previous, strict=True):
            layer.recorder = recorder
