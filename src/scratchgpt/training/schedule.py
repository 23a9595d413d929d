"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

Warmup keeps the first updates small while AdamW's moment estimates are still noise; the
cosine then lowers the rate smoothly so the model settles into a minimum. The schedule is a
pure function of the step, so resuming a run needs no scheduler state beyond the step.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
