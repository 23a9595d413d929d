"""Normalisation layers: GPT-2's LayerNorm and the RMSNorm of today's open models.

Every transformer block normalises each token vector before its sub-layers, which keeps the
activations in a stable range however deep the network is. GPT-2 centres and scales
(:class:`LayerNorm`); Llama, Qwen and Gemma only scale (:class:`RMSNorm`), which is cheaper
and trains as well. :func:`make_norm` builds the one a :class:`ModelConfig` names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), Llama's and Qwen's LayerNorm::

        out = scale * x / sqrt(mean(x**2) + eps)

    Relative to :class:`LayerNorm`: no mean is subtracted and there is no ``shift``. Rescaling
    alone is what stabilises training; centring costs a pass and adds nothing. The statistic is
    taken in float32 even for bf16 inputs (as ``transformers``' ``LlamaRMSNorm`` does), since
    a mean of squares in bf16 loses most of its digits.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        """``x / rms(x)`` in float32."""
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.normalised(x).to(x.dtype)


class RMSNormPlusOne(RMSNorm):
    """Gemma's RMSNorm: multiplies by ``1 + scale`` (``scale`` starts at 0), in float32::

        out = (x / sqrt(mean(x**2) + eps) * (1 + scale)).to(x.dtype)

    The same function as :class:`RMSNorm` with ``scale + 1``; stored this way, weight decay
    pulls the gain towards 1 rather than 0. The product is taken before rounding to the input
    dtype (``transformers``' ``Gemma3RMSNorm``), one rounding fewer than Llama's order.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps)
        nn.init.zeros_(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normalised(x) * (1.0 + self.scale.float())).to(x.dtype)


NORMS: dict[str, type[nn.Module]] = {
    "layernorm": LayerNorm,
    "rmsnorm": RMSNorm,
    "rmsnorm_plus_one": RMSNormPlusOne,
}


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """The norm ``kind`` (a ``ModelConfig.norm``) over vectors of size ``dim``."""
    return NORMS[kind](dim, eps)
