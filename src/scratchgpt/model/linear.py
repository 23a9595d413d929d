"""``Linear``: PyTorch's ``nn.Linear``, with a faster CPU kernel for the few rows of decoding.

A decoding step multiplies one row per sequence (a handful of rows) by every weight matrix
of the model: the step's whole cost is reading the weights. On the CPU PyTorch hands that
product to MKL, whose kernels for so few rows read the weights well below the memory's speed
(most of all on AMD processors); oneDNN's inner product, the kernel ``torch.compile`` emits for
a linear layer on the CPU, reads the same ``[out, in]`` weights, in place, 1.5-3x faster
(``bench/bench_load.py``). For many rows (training, a long prompt) MKL is as fast or faster,
and each oneDNN call costs some 25 us to set up, more than a small layer's whole product, so
the switch is made only where it pays and where it cannot change what is learned:

* autograd off (``torch.no_grad`` / ``torch.inference_mode``: generation, evaluation);
* float32 tensors on the CPU, autocast off, with oneDNN built into PyTorch;
* at most :data:`FEW_ROWS` rows, through at least :data:`MANY_WEIGHTS` weights.

Both kernels compute the same sums of products; they differ only in float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

FEW_ROWS = 64  # up to here oneDNN wins on every big layer measured; beyond, MKL is as fast
MANY_WEIGHTS = 1_000_000  # from here (4 MB) oneDNN wins even on one row (768 x 768 loses)

_ONEDNN = torch.backends.mkldnn.is_available()


class Linear(nn.Linear):
    """``y = x @ W.T + b``, as ``nn.Linear`` (same parameters, same state dict), computed by
    oneDNN for inference on few rows of a big layer on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            _ONEDNN
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and x.numel() <= FEW_ROWS * self.in_features
            and self.weight.numel() >= MANY_WEIGHTS
        ):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return super().forward(x)
