"""KV cache: remember every layer's keys and values so that generation never recomputes them.

Without a cache, producing token ``t`` runs the model over all ``t`` tokens again. The keys
and values of the earlier tokens do not change (attention is causal), so we store them
once and feed the model only the new token: it computes one query, one key and one value
per layer and attends over the stored keys and values.

The buffers are allocated once, at full size ``[batch, heads, max_len, head_dim]`` per layer,
and filled in place: no concatenation, no reallocation while generating.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer key/value buffers plus ``length``, the number of positions already stored.

    Protocol: during one forward pass every layer calls :meth:`update` with the keys and
    values of the new tokens (written at positions ``length ...``); when all layers are done
    the model calls :meth:`advance`. ``length`` is therefore also the position of the first
    new token. Use ``GPTModel.new_kv_cache`` to build one of the right shape.
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

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys``/``values`` (``[B, H, T_new, head_dim]``) of ``layer`` after the cached
        positions; return all of that layer's keys and values so far, ``[B, H, length+T_new, hd]``.
        """
        num_new = keys.shape[2]
        if self.length + num_new > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.length} cached + {num_new} new positions exceed "
                f"max_len={self.max_len}; reset() it or build a larger one"
            )
        # narrow(dim, start, length) is the view [:, :, start:start+length], made cheaply.
        self.keys[layer].narrow(2, self.length, num_new).copy_(keys)
        self.values[layer].narrow(2, self.length, num_new).copy_(values)
        end = self.length + num_new
        return self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end)

    def advance(self, n_new: int) -> None:
        """Count ``n_new`` freshly written positions as cached (called once per forward)."""
        self.length += n_new

    def reset(self) -> None:
        """Forget everything; the buffers are kept and overwritten."""
        self.length = 0
