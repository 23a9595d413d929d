"""Sliding windows for next-token prediction (chapter 2 of the book).

A window of ``context_length + 1`` tokens gives one training example: the first
``context_length`` tokens are the input, the last ``context_length`` the targets, so target
``t`` is the token that follows input ``t``. Windows start every ``stride`` tokens; a stride
equal to the context length uses each token once per epoch without overlap.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class TokenWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(input, target)`` pairs cut from a 1-D token array (a memory map works)."""

    example_name = "window"
    remedy = "use more text, a smaller --batch-size, or a shorter --context-length"

    def __init__(self, tokens: np.ndarray, context_length: int, stride: int | None = None) -> None:
        self.tokens = tokens
        self.context_length = context_length
        self.stride = context_length if stride is None else stride  # stride=0 is an error
        if context_length <= 0 or self.stride <= 0:
            raise ValueError("context_length and stride must be positive")
        if len(tokens) < context_length + 1:
            raise ValueError(
                f"{len(tokens)} tokens are too few for one window: a context of "
                f"{context_length} needs {context_length + 1} (inputs plus the next token); "
                "use more text or a shorter context"
            )

    def __len__(self) -> int:
        return (len(self.tokens) - self.context_length - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range (0..{len(self) - 1})")
        start = index * self.stride
        chunk = torch.from_numpy(
            np.asarray(self.tokens[start : start + self.context_length + 1], dtype=np.int64)
        )
        return chunk[:-1], chunk[1:]

    def batch(self, indices: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack the windows at ``indices`` into ``[len(indices), context_length]`` tensors."""
        pairs = [self[int(i)] for i in indices]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def create_dataloader(
    tokens: np.ndarray,
    batch_size: int,
    context_length: int,
    stride: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """The book's ``create_dataloader_v1`` over token ids; the same seed gives the same order."""
    return DataLoader(
        TokenWindows(tokens, context_length, stride),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
