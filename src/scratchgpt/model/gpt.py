"""GPTModel: token ids in, next-token logits out (chapter 4 of the book, nanoGPT's model.py).

    idx [B, T] -> token embedding (+ positional encoding) -> dropout
               -> n_layers x TransformerBlock -> final LayerNorm -> out_head -> logits [B, T, V]

The same class runs Llama 3, Qwen3 and Gemma 3: their differences are switches of
:class:`ModelConfig` (RMSNorm, gated feed-forward, grouped-query attention, rotary base and
scaling, QK-norm, sliding-window layers, scaled embeddings, four norms per block), each off by
default, and ``scratchgpt.hub.families`` sets them from a Hugging Face config.json.

``logits[b, t]`` scores every vocabulary entry as the token that follows ``idx[b, :t+1]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from scratchgpt.config import ModelConfig
from scratchgpt.model.device import compute_device
from scratchgpt.model.kv_cache import KVCache
from scratchgpt.model.layers import ScaledEmbedding, TransformerBlock
from scratchgpt.model.linear import Linear
from scratchgpt.model.norms import make_norm
from scratchgpt.model.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)


class GPTModel(nn.Module):
    """A GPT-2-style decoder-only transformer shaped by a :class:`ModelConfig`.

    ``config.pos_encoding`` picks the position information: ``"learned"`` (GPT-2; the
    ``pos_emb`` table), ``"sinusoidal"`` (a fixed table, no parameters) or ``"rope"``
    (rotary, applied to queries and keys in every attention layer; ``pos_emb`` is None).
    With ``config.tie_weights`` the output layer reuses the token embedding matrix, as GPT-2
    does, which saves ``vocab_size * emb_dim`` parameters.

    With ``config.sliding_window``, local layers (:meth:`ModelConfig.is_local_layer`) attend
    through the window and rotate by their own base (``rope_local_base``); the global ones by
    ``rope_base``, scaled. ``config.scale_embeddings`` (Gemma) makes ``tok_emb`` a
    :class:`ScaledEmbedding`.

    ``activation_checkpointing`` (off; :func:`set_activation_checkpointing` switches it) trades
    compute for memory in training. Backward needs what each layer computed in the forward
    pass (normalised inputs, attention outputs, feed-forward activations, ...), so normally
    dozens of tensors per block wait in memory until backward reaches that block.
    Checkpointed, a block keeps only its input and runs its forward again in backward to
    rebuild the rest: one tensor per block is kept (plus one block's worth while it is being
    recomputed), for about a third more compute (backward costs about two forwards, and one
    more forward is added). The loss and the gradients stay the same, dropout included: the
    recompute replays the random state the first forward used. It acts only in training with
    gradients on and without a KV cache: generation and evaluation run as always.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        embedding = ScaledEmbedding if config.scale_embeddings else nn.Embedding
        self.tok_emb = embedding(config.vocab_size, config.emb_dim)
        self.pos_emb: LearnedPositionalEmbedding | SinusoidalPositionalEncoding | None = None
        rope = None
        if config.pos_encoding == "learned":
            self.pos_emb = LearnedPositionalEmbedding(config.context_length, config.emb_dim)
        elif config.pos_encoding == "sinusoidal":
            self.pos_emb = SinusoidalPositionalEncoding(config.context_length, config.emb_dim)
        else:  # one rotary module, shared by all layers (its tables are buffers, not weights)
            rope = RotaryEmbedding(
                config.head_dim, config.context_length, config.rope_base, config.rope_scaling,
                config.rope_factor, config.rope_low_freq_factor, config.rope_high_freq_factor,
                config.rope_original_context_length)
        local_rope = rope
        if rope is not None and config.sliding_window is not None:
            local_base = config.rope_local_base or config.rope_base
            local_rope = RotaryEmbedding(config.head_dim, config.context_length, local_base)
        self.drop_emb = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(
            TransformerBlock(config, local_rope, config.sliding_window)
            if config.is_local_layer(layer_idx) else TransformerBlock(config, rope)
            for layer_idx in range(config.n_layers)
        )
        self.final_norm = make_norm(config.norm, config.emb_dim, config.layer_norm_eps)
        self.out_head = Linear(config.emb_dim, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        self.activation_checkpointing = False  # not a weight: no state-dict key, not saved

    def _init_weights(self) -> None:
        """Starting weights, by ``config.init``.

        ``"gpt2"``: GPT-2's initialisation. Weights ~ N(0, 0.02), biases 0, and the
        projections that write into the residual stream (``out_proj``) scaled by
        ``1/sqrt(2 * n_layers)``: each block adds two such outputs, so the residual's variance
        stays put with depth. Deep models train stably from here.

        ``"pytorch"``: each layer's own default, which is what the book's chapters use:
        embeddings ~ N(0, 1), linear weights uniform in ``±1/sqrt(fan_in)``. Token vectors 50
        times larger than GPT-2's are told apart at once, so a small text is learned by heart
        quickly: chapter 5's overfitting run needs them.
        """
        if self.config.init == "pytorch":
            if isinstance(self.pos_emb, LearnedPositionalEmbedding):
                nn.init.normal_(self.pos_emb.weight)  # as an nn.Embedding would start
            return
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith("out_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final-normalised token vectors ``[B, T, emb_dim]``, just before ``out_head``.

        Useful on its own: a classifier replaces ``out_head``, embeddings pool these.
        ``kv_cache`` and ``attention_mask`` are as in :meth:`forward`.
        """
        batch, num_tokens = idx.shape
        if attention_mask is not None:
            if attention_mask.shape != idx.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                                 f"expected that of idx, {tuple(idx.shape)}")
            if kv_cache is None:  # padding state lives in a cache: a throwaway one here
                kv_cache = self.new_kv_cache(batch, max_len=num_tokens, device=idx.device)
        offset = 0
        if kv_cache is not None:
            offset = kv_cache.length
            if kv_cache.batch_size != batch:
                raise ValueError(
                    f"KV cache was built for batch size {kv_cache.batch_size}, got {batch}"
                )
        if offset + num_tokens > self.config.context_length:
            raise ValueError(
                f"sequence of {offset + num_tokens} tokens ({offset} cached + {num_tokens} new) "
                f"exceeds the model's context_length {self.config.context_length}; "
                "crop the input to the last context_length tokens"
            )
        positions = None  # per-row positions [B, T] when some row is padded, else None
        if kv_cache is not None:
            positions = kv_cache.add_tokens(num_tokens, attention_mask)
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(num_tokens, offset, positions)
        x = self.drop_emb(x)
        recompute = (self.activation_checkpointing and self.training and kv_cache is None
                     and torch.is_grad_enabled())
        for layer_idx, block in enumerate(self.blocks):
            if recompute:  # keep x alone; backward runs block(x) again for the rest
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, kv_cache, layer_idx)
        if kv_cache is not None:
            kv_cache.advance(num_tokens)
        return self.final_norm(x)

    def forward(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T, vocab_size]`` for token ids ``idx`` ``[B, T]``.

        With ``kv_cache``, ``idx`` holds only the tokens after the cached ones: their
        positions continue from ``kv_cache.length`` and the cache is extended in place.

        ``attention_mask`` ``[B, T]`` (bool or 0/1; 1 = real token, 0 = padding) batches
        sequences of different lengths, *left*-padded so that they all end in the last
        column. Each row's positions count only its real tokens and no token attends to
        padding, so a padded row computes what it would alone (the logits at pads are
        meaningless). With a cache, the padding is remembered: later steps pass only the
        new tokens (mask None = all real). Without a mask and without cached padding, the
        plain causal path runs and no mask is built: training is unchanged.
        """
        return self.out_head(self.hidden_states(idx, kv_cache, attention_mask))

    def new_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty :class:`KVCache` for this model (``max_len`` defaults to context_length).

        ``device`` defaults to the model's; ``dtype`` to the autocast dtype when autocast is
        on for that device (keys and values are then computed in it), else the model's.
        """
        weight = self.tok_emb.weight
        device = torch.device(device) if device is not None else compute_device(self)
        if dtype is None:
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else weight.dtype
        config = self.config
        return KVCache(
            config.n_layers,
            batch_size,
            config.kv_heads,  # grouped-query attention caches only the key/value heads
            max_len if max_len is not None else config.context_length,
            config.head_dim,
            device=device,
            dtype=dtype,
        )

    def num_parameters(self, exclude_tied: bool = True) -> int:
        """Number of weights. A tied output matrix is counted once unless ``exclude_tied`` is
        False (124,439,808 vs 163,037,184 for gpt2-small)."""
        total = sum(p.numel() for p in self.parameters())  # a shared tensor is yielded once
        if not exclude_tied and self.config.tie_weights:
            total += self.out_head.weight.numel()
        return total

    def size_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Memory the (unique) weights take in ``dtype``: 4 bytes each in float32."""
        return self.num_parameters() * dtype.itemsize


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> None:
    """Switch :attr:`GPTModel.activation_checkpointing` on (or off) in every GPTModel in
    ``model`` (itself, or e.g. a classifier's backbone), in place.

    Only an attribute changes: no module is wrapped, so the state-dict keys, checkpoints and
    weight loading stay as they are. Raises ValueError when ``enabled`` and ``model`` holds no
    GPTModel (nothing would be recomputed).
    """
    models = [module for module in model.modules() if isinstance(module, GPTModel)]
    if enabled and not models:
        raise ValueError(f"activation checkpointing needs a GPTModel, and this "
                         f"{type(model).__name__} has none; train without "
                         "--activation-checkpointing")
    for gpt in models:
        gpt.activation_checkpointing = enabled
