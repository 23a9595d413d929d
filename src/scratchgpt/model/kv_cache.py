"""KV cache: remember every layer's keys and values so that generation never recomputes them.

Without a cache, producing token ``t`` runs the model over all ``t`` tokens again. The keys
and values of the earlier tokens do not change (attention is causal), so we store them
once and feed the model only the new token: it computes one query, one key and one value
per layer and attends over the stored keys and values.

The buffers are allocated once, at full size ``[batch, heads, max_len, head_dim]`` per layer,
and filled in place: no concatenation, no reallocation while generating. ``heads`` are the
key/value heads: under grouped-query attention (``n_kv_heads``) fewer than the query heads,
which is the memory GQA saves.

Batches of prompts of different lengths are *left*-padded, so that every row's last token
sits in the same slot and one new token per row can be appended to all rows at once. The
cache then also keeps per-row state: which slots hold real tokens (padding is never attended
to) and the position each row's next token takes (a row's positions count only its real
tokens, so it computes what its prompt alone would). That per-row state, together with
:meth:`KVCache.keep_rows` to drop finished rows, :meth:`KVCache.append_rows` to join new ones
and :meth:`KVCache.trim` to drop slots no row uses any more, is what a server's continuous
batching builds on (``scratchgpt.serving.engine``): rows come and go while the others keep
their cached keys.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer key/value buffers plus ``length``, the number of slots already stored.

    Protocol: at the start of a forward pass the model calls :meth:`add_tokens` (which says
    which of the new tokens are padding), then every layer calls :meth:`update` with the keys
    and values of the new tokens (written at slots ``length ...``), and when all layers are
    done the model calls :meth:`advance`. Without padding, ``length`` is also the position
    of the first new token. Use ``GPTModel.new_kv_cache`` to build one of the right shape.

    Padding state, made only once padding first appears (before that, all slots are real and
    a token's position is its slot, and nothing per-row is computed):

    * ``real`` ``[B, max_len]`` bool: True where the slot holds a real token.
    * ``next_position`` ``[B]``: the position of each row's next real token.

    For the forward in progress :meth:`add_tokens` also sets ``positions`` ``[B, T_new]``
    (the new tokens' positions) and ``attn_mask`` ``[B, 1, T_new, length + T_new]`` (True
    where a new token may attend); both are None when no row is padded.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, n_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0
        self.real: torch.Tensor | None = None
        self.next_position: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.attn_mask: torch.Tensor | None = None

    def add_tokens(
        self, num_new: int, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Record which of the next ``num_new`` tokens are real (``attention_mask``
        ``[B, num_new]``, 1 = real, 0 = padding; None = all real) and return their positions
        ``[B, num_new]``, or None when no row has padding (positions are then the slots).

        A real token's position is the number of real tokens before it in its row; a pad
        gets the position of the row's next real token (any valid position would do, since
        nothing attends to it). The attention mask lets a new token see the real tokens up
        to its own slot, and always itself: a pad query has no real key to its left, and a
        softmax over no key at all would be NaN.
        """
        if attention_mask is None and self.real is None:
            self.positions = self.attn_mask = None
            return None
        self._check_room(num_new)
        device = self.keys[0].device
        self.real, self.next_position = self._padding_state()
        if attention_mask is None:
            new_real = torch.ones(self.batch_size, num_new, dtype=torch.bool, device=device)
        else:
            new_real = attention_mask.to(device=device, dtype=torch.bool)
        end = self.length + num_new
        self.real[:, self.length : end] = new_real
        real_so_far = new_real.long().cumsum(dim=1)  # real tokens up to and including each
        self.positions = self.next_position[:, None] + real_so_far - new_real.long()
        self.next_position = self.next_position + real_so_far[:, -1]
        query_slot = torch.arange(self.length, end, device=device)[:, None]
        key_slot = torch.arange(end, device=device)[None, :]
        visible = (key_slot <= query_slot) & self.real[:, None, :end]  # [B, T_new, end]
        self.attn_mask = (visible | (key_slot == query_slot))[:, None]  # one mask for all heads
        return self.positions

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys``/``values`` (``[B, H, T_new, head_dim]``) of ``layer`` after the cached
        positions; return all of that layer's keys and values so far, ``[B, H, length+T_new, hd]``.
        """
        num_new = keys.shape[2]
        self._check_room(num_new)
        # narrow(dim, start, length) is the view [:, :, start:start+length], made cheaply.
        self.keys[layer].narrow(2, self.length, num_new).copy_(keys)
        self.values[layer].narrow(2, self.length, num_new).copy_(values)
        end = self.length + num_new
        return self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end)

    def advance(self, n_new: int) -> None:
        """Count ``n_new`` freshly written positions as cached (called once per forward)."""
        self.length += n_new
        self.positions = self.attn_mask = None

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only the batch rows ``rows`` (in that order), dropping the others' keys, values
        and padding state: a finished sequence leaves the batch and stops costing compute."""
        index = torch.tensor(rows, device=self.keys[0].device)
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        if self.real is not None and self.next_position is not None:
            self.real = self.real.index_select(0, index)
            self.next_position = self.next_position.index_select(0, index)
        self.batch_size = len(rows)

    def append_rows(self, other: KVCache) -> None:
        """Add the rows of ``other`` (a cache of the same layers, heads and head size) after
        this cache's rows.

        Both are aligned on the right, as left padding aligns prompts: the one with fewer
        slots is shifted right and its first slots become padding. Every row keeps its keys,
        values and positions, so it goes on computing what it would alone. This is how a
        server joins newly prefilled requests to a batch that is already decoding. The joined
        cache has the larger ``max_len`` of the two (:meth:`reserve` grows it).
        """
        if (other.keys[0].shape[1] != self.keys[0].shape[1] or len(other.keys) != len(self.keys)
                or other.keys[0].shape[3] != self.keys[0].shape[3]):
            raise ValueError("append_rows needs a cache of the same layers, heads and head_dim")
        length, max_len = max(self.length, other.length), max(self.max_len, other.max_len)
        parts = [(self, *self._padding_state()), (other, *other._padding_state())]
        batch = self.batch_size + other.batch_size
        real = torch.zeros(batch, max_len, dtype=torch.bool, device=self.keys[0].device)
        for layer in range(len(self.keys)):
            self.keys[layer] = self._right_aligned(
                [(c.keys[layer], c.length) for c, _, _ in parts], length, max_len)
            self.values[layer] = self._right_aligned(
                [(c.values[layer], c.length) for c, _, _ in parts], length, max_len)
        start = 0
        for cache, cache_real, _ in parts:  # the shifted-in slots on the left are padding
            shift = length - cache.length
            real[start : start + cache.batch_size, shift:length] = cache_real[:, : cache.length]
            start += cache.batch_size
        self.real = real
        self.next_position = torch.cat([next_position for _, _, next_position in parts])
        self.batch_size, self.length, self.max_len = batch, length, max_len
        self.positions = self.attn_mask = None

    @staticmethod
    def _right_aligned(buffers: list[tuple[torch.Tensor, int]], length: int,
                       max_len: int) -> torch.Tensor:
        """The ``(buffer, used slots)`` pairs stacked on the batch axis in one buffer of
        ``max_len`` slots, each one's used slots moved to end at ``length``. Padding slots are
        zeros: attention gives them weight 0, and 0 times a finite value is 0 (times
        uninitialised memory it could be NaN)."""
        first = buffers[0][0]
        batch = sum(buffer.shape[0] for buffer, _ in buffers)
        joined = first.new_zeros(batch, first.shape[1], max_len, first.shape[3])
        start = 0
        for buffer, used in buffers:
            rows = slice(start, start + buffer.shape[0])
            joined[rows, :, length - used : length] = buffer[:, :, :used]
            start += buffer.shape[0]
        return joined

    def reserve(self, max_len: int) -> None:
        """Make room for ``max_len`` slots, keeping what is stored (a no-op when there is room
        already). A server sizes each cache to what its rows still need, rather than every
        row to the whole context: for GPT-2 small, 1,024 slots are 75 MB a row."""
        if max_len <= self.max_len:
            return
        for buffers in (self.keys, self.values):
            for layer, buffer in enumerate(buffers):
                grown = buffer.new_zeros(*buffer.shape[:2], max_len, buffer.shape[3])
                grown[:, :, : self.length] = buffer[:, :, : self.length]
                buffers[layer] = grown
        if self.real is not None:
            real = self.real.new_zeros(self.batch_size, max_len)
            real[:, : self.length] = self.real[:, : self.length]
            self.real = real
        self.max_len = max_len

    def trim(self) -> None:
        """Drop the first slots while they are padding in every row (after the longest rows
        left the batch, say), shifting the rest left. Positions count only real tokens, so
        nothing changes for any row, but attention reads fewer slots and a long-lived batch
        keeps room for new tokens."""
        if self.real is None:  # no padding: every slot is real
            return
        used = self.real[:, : self.length].any(dim=0)
        unused = int(used.long().argmax()) if bool(used.any()) else self.length
        if unused == 0:
            return
        kept = self.length - unused
        for buffer in (*self.keys, *self.values):
            buffer[:, :, :kept] = buffer[:, :, unused : self.length].clone()
        self.real[:, :kept] = self.real[:, unused : self.length].clone()
        self.real[:, kept:] = False
        self.length = kept

    def _padding_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``real`` and ``next_position``, made if no padding was seen yet (all slots real)."""
        if self.real is not None and self.next_position is not None:
            return self.real, self.next_position
        device = self.keys[0].device
        real = torch.zeros(self.batch_size, self.max_len, dtype=torch.bool, device=device)
        real[:, : self.length] = True
        return real, torch.full((self.batch_size,), self.length, device=device)

    def _check_room(self, num_new: int) -> None:
        if self.length + num_new > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.length} cached + {num_new} new positions exceed "
                f"max_len={self.max_len}; reset() it or build a larger one"
            )

    def reset(self) -> None:
        """Forget everything; the buffers are kept and overwritten."""
        self.length = 0
        self.real = self.next_position = self.positions = self.attn_mask = None
