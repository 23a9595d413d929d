"""Sliding windows for next-token prediction (chapter 2 of the book).

A window of ``context_length + 1`` tokens gives one training example: the first
``context_length`` tokens are the input, the last ``context_length`` the targets, so target
``t`` is the token that follows input ``t``. Windows start every ``stride`` tokens; a stride
equal to the context length uses each token once per epoch without overlap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class TokenWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(input, target)`` pairs cut from a 1-D token array (a memory map works)."""

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


class WindowBatches:
    """An endless, resumable, shardable stream of shuffled batches of windows.

    Epoch ``e`` visits the windows in the order ``randperm(seed + e)``, cut into global
    batches of ``batch_size * world_size`` windows (an incomplete last one is dropped). Rank
    ``r`` takes the ``r``-th slice of each global batch, so N ranks with batch B see exactly
    the windows of one process with batch N x B. The position (epoch, batch) is the whole
    state: saving it in a checkpoint resumes the stream exactly.
    """

    def __init__(
        self,
        windows: TokenWindows,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.windows = windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        global_batch = batch_size * world_size
        self.batches_per_epoch = len(windows) // global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"only {len(windows)} training windows, fewer than one batch of {global_batch} "
                f"({batch_size} per process x {world_size} processes); use more text, a smaller "
                "--batch-size, or a shorter --context-length"
            )
        self.epoch = 0
        self.position = 0
        self._order: tuple[int, torch.Tensor] | None = None

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None or self._order[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            self._order = (self.epoch, torch.randperm(len(self.windows), generator=generator))
        return self._order[1]

    def __iter__(self) -> WindowBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = (self.position * self.world_size + self.rank) * self.batch_size
        indices = self._epoch_order()[start : start + self.batch_size]
        self.position += 1
        return self.windows.batch(indices)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
