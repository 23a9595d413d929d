"""Shuffled batches of any dataset: the stream the Trainer draws its training batches from.

A dataset here is anything with ``len`` and ``batch(indices)`` returning a tuple of tensors:
sliding windows of tokens for pretraining, labelled texts padded to their longest for
classification. Each dataset writes only its own collation; shuffling, epochs, sharding over
processes and resuming are done once, here.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


class BatchDataset(Protocol):
    """What :class:`ShuffledBatches` needs of a dataset."""

    example_name: str  # what one example is called in messages: "window", "text"
    remedy: str  # what to do when there are too few examples for one batch

    def __len__(self) -> int: ...
    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


class ShuffledBatches:
    """An endless, resumable, shardable stream of shuffled batches of a dataset's examples.

    Epoch ``e`` visits the examples in the order ``randperm(seed + e)``, cut into global
    batches of ``batch_size * world_size`` examples (an incomplete last one is dropped). Rank
    ``r`` takes the ``r``-th slice of each global batch, so N ranks with batch B see exactly
    the examples of one process with batch N x B. The position (epoch, batch) is the whole
    state: saving it in a checkpoint resumes the stream exactly.
    """

    def __init__(
        self,
        dataset: BatchDataset,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        global_batch = batch_size * world_size
        self.batches_per_epoch = len(dataset) // global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"only {len(dataset)} training {dataset.example_name}s, fewer than one batch of "
                f"{global_batch} ({batch_size} per process x {world_size} processes); "
                f"{dataset.remedy}"
            )
        self.epoch = 0
        self.position = 0
        self._order: tuple[int, torch.Tensor] | None = None

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None or self._order[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            self._order = (self.epoch, torch.randperm(len(self.dataset), generator=generator))
        return self._order[1]

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = (self.position * self.world_size + self.rank) * self.batch_size
        indices = self._epoch_order()[start : start + self.batch_size]
        self.position += 1
        return self.dataset.batch(indices)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def evaluation_batches(dataset: BatchDataset, count: int, batch_size: int) -> list[torch.Tensor]:
    """``count`` example indices spread evenly over ``dataset``, in batches: the same ones at
    every evaluation, so that the numbers of two evaluations compare."""
    total = min(len(dataset), count)
    indices = np.linspace(0, len(dataset) - 1, total).round().astype(np.int64)
    return list(torch.from_numpy(indices).split(batch_size))
