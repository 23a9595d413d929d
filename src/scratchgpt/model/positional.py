"""Three ways to tell a transformer where each token sits.

Attention by itself is blind to order: shuffle the tokens and every output is shuffled the
same way. Position information fixes that:

* :class:`LearnedPositionalEmbedding` (GPT-2): one trainable vector per position, added to
  the token embedding.
* :class:`SinusoidalPositionalEncoding` ("Attention Is All You Need"): fixed sines and
  cosines of geometrically spaced frequencies, added to the token embedding.
* :class:`RotaryEmbedding` (RoPE, Su et al. 2021): nothing is added; instead queries and keys
  are rotated by an angle proportional to their position, so a query-key dot product
  depends only on how far apart the two tokens are.

Every module takes an ``offset``: the position of the first token it is given. With a
KV cache the new tokens start at the cache length, not at 0. In a left-padded batch each row
has positions of its own (a row's padding does not count), so every module also accepts
``positions`` ``[B, T]``, one position id per token: a padded row then gets exactly the
positions its prompt alone would.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositionalEmbedding(nn.Module):
    """A trainable ``[context_length, emb_dim]`` table; row ``p`` is added at position ``p``."""

    def __init__(self, context_length: int, emb_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(context_length, emb_dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(
        self, seq_len: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Vectors for positions ``offset, ..., offset + seq_len - 1``: ``[seq_len, emb_dim]``;
        or, given ``positions`` ``[B, seq_len]``, each token's own: ``[B, seq_len, emb_dim]``."""
        if positions is not None:
            return self.weight[positions]
        return self.weight[offset : offset + seq_len]


def sinusoidal_table(context_length: int, emb_dim: int) -> torch.Tensor:
    """``PE[p, 2i] = sin(p / 10000^(2i/d))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``."""
    position = torch.arange(context_length, dtype=torch.float64)[:, None]
    inv_freq = 10000.0 ** (-torch.arange(0, emb_dim, 2, dtype=torch.float64) / emb_dim)
    table = torch.zeros(context_length, emb_dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: emb_dim // 2])  # odd emb_dim: one fewer
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """The fixed encoding of Vaswani et al.: no parameters, nothing to learn or save.

    The table is a non-persistent buffer: it moves with ``.to(device)`` but is left out of
    the state dict, since it is recomputed from the config.
    """

    def __init__(self, context_length: int, emb_dim: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(context_length, emb_dim), persistent=False)

    def forward(
        self, seq_len: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encodings of positions ``offset, ..., offset + seq_len - 1``: ``[seq_len, emb_dim]``;
        or, given ``positions`` ``[B, seq_len]``, each token's own: ``[B, seq_len, emb_dim]``."""
        if positions is not None:
            return self.table[positions]
        return self.table[offset : offset + seq_len]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension: a 90-degree turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def llama3_scaled_frequencies(
    inv_freq: torch.Tensor,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_context_length: int,
) -> torch.Tensor:
    """Llama 3's stretch of rotary frequencies for a longer context than it was trained on.

    Pairs that turn fast (wavelength shorter than ``original_context_length /
    high_freq_factor``) carry local order and are kept; pairs that turn slowly (wavelength
    longer than ``original_context_length / low_freq_factor``) are slowed by ``factor``, so
    positions far beyond the training length still map onto angles seen in training; in
    between, the two are blended smoothly.
    """
    wavelength = 2 * math.pi / inv_freq
    smooth = (original_context_length / wavelength - low_freq_factor) / (
        high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > original_context_length / low_freq_factor,
                         inv_freq / factor, blended)
    return torch.where(wavelength < original_context_length / high_freq_factor, inv_freq, scaled)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, applied to queries and keys inside attention.

    Feature ``i`` of the first half of a head is paired with feature ``i`` of the second half
    (the GPT-NeoX / Llama layout), and each pair is rotated by the angle
    ``position * base^(-2i/head_dim)``. Rotating ``q`` at position ``m`` and ``k`` at
    position ``n`` turns their dot product into a function of ``m - n`` alone.

    The cos/sin tables grow on demand: they cover the positions asked for so far (rounded up
    to a power of two, at most ``context_length`` unless more are asked for), not the whole
    context, which for Llama 3.2's 131,072 positions would be 64 MB a short prompt never
    reads. They are non-persistent buffers (they move with ``.to(device)`` and stay out of
    the state dict), rebuilt on the input's device when the module was built on the ``meta``
    device.

    ``base`` (theta) sets the slowest turn: Llama 3 uses 500,000 and Qwen3 1,000,000 rather
    than 10,000, so the slowest pairs tell apart positions across a long context. ``scaling``
    stretches a trained context further: ``"linear"`` divides every frequency by ``factor``;
    ``"llama3"`` only the slow ones (:func:`llama3_scaled_frequencies`).
    """

    def __init__(
        self,
        head_dim: int,
        context_length: int,
        base: float = 10000.0,
        scaling: str = "none",
        factor: float = 1.0,
        low_freq_factor: float = 1.0,
        high_freq_factor: float = 4.0,
        original_context_length: int = 8192,
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head size, got {head_dim}")
        # Angles in float64 (float32 loses digits at large positions), tables in float32.
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim
        inv_freq = base ** -exponents  # on the CPU even when the model is built on meta
        if scaling == "linear":
            inv_freq = inv_freq / factor
        elif scaling == "llama3":
            inv_freq = llama3_scaled_frequencies(
                inv_freq, factor, low_freq_factor, high_freq_factor, original_context_length)
        elif scaling != "none":
            raise ValueError(f"unknown rotary scaling {scaling!r}; choose none, linear, llama3")
        self.inv_freq = inv_freq  # float64 on the CPU: a plain attribute, not a buffer
        self.context_length = context_length
        self.register_buffer("cos", torch.empty(0, head_dim), persistent=False)
        self.register_buffer("sin", torch.empty(0, head_dim), persistent=False)

    def _ensure_positions(self, num_positions: int, device: torch.device) -> None:
        """Grow the tables, if needed, to cover positions ``0 .. num_positions - 1`` on
        ``device``: angles in float64 on the CPU (float32 loses digits at large positions),
        then stored in the tables' dtype (float32 unless the model was cast). Tables made
        under ``torch.inference_mode`` (a sample generated mid-training) are made again for
        a forward pass autograd records: it cannot save inference tensors for backward."""
        stale = self.cos.is_inference() and not torch.is_inference_mode_enabled()
        if self.cos.shape[0] >= num_positions and self.cos.device == device and not stale:
            return
        doubled = 1 << max(num_positions - 1, 1).bit_length()  # the next power of two
        length = max(self.cos.shape[0], num_positions, min(doubled, self.context_length))
        angles = torch.outer(torch.arange(length, dtype=torch.float64), self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)  # [length, head_dim]
        dtype = self.cos.dtype
        self.cos = angles.cos().to(device=device, dtype=dtype)
        self.sin = angles.sin().to(device=device, dtype=dtype)

    def tables(
        self, num_positions: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos and sin of positions ``0 .. num_positions - 1``: two
        ``[num_positions, head_dim]`` tensors on ``device``."""
        self._ensure_positions(num_positions, torch.device(device))
        return self.cos[:num_positions], self.sin[:num_positions]

    def forward(
        self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rotate ``x`` (``[..., seq_len, head_dim]``) whose first row sits at ``offset``;
        or, for ``x`` ``[B, heads, seq_len, head_dim]``, each token by its own position in
        ``positions`` ``[B, seq_len]`` (the same for every head; no position exceeds
        ``offset + seq_len - 1``, since padding is not counted)."""
        seq_len = x.shape[-2]
        self._ensure_positions(offset + seq_len, x.device)
        if positions is not None:
            cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        else:
            cos, sin = self.cos[offset : offset + seq_len], self.sin[offset : offset + seq_len]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # bf16 under autocast
        return x * cos + rotate_half(x) * sin
