"""The pretraining task: predict the next token (cross-entropy over the vocabulary)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.data.batches import ShuffledBatches, evaluation_batches
from scratchgpt.data.windows import TokenWindows
from scratchgpt.generation import generate_text
from scratchgpt.model.device import compute_device
from scratchgpt.tokenizers.base import Tokenizer
from scratchgpt.training.trainer import Batch


def next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the model's logits against the targets (inputs shifted by one)."""
    inputs, targets = batch
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


class LanguageModelingTask:
    """Windows of a training and a validation token array; loss and perplexity on both.

    Evaluation uses ``eval_windows`` fixed windows (by default ``eval_batches`` batches);
    pass the global batch size times ``eval_batches`` so that the estimate is the same however
    the batch is split over processes and accumulation steps.
    """

    best_metric = "val_loss"
    higher_is_better = False
    progress_metrics: tuple[str, ...] = ()

    def __init__(
        self,
        train_tokens: np.ndarray,
        val_tokens: np.ndarray,
        *,
        context_length: int,
        batch_size: int,
        stride: int | None = None,
        eval_batches: int = 10,
        eval_windows: int | None = None,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        sample_prompt: str = "The",
        sample_tokens: int = 40,
        sample_temperature: float = 0.0,
        sample_top_k: int | None = None,
    ) -> None:
        self.train_windows = TokenWindows(train_tokens, context_length, stride)
        self.val_windows = TokenWindows(val_tokens, context_length, context_length)
        self.batch_size = batch_size
        self.seed = seed
        self.tokenizer = tokenizer
        self.sample_prompt = sample_prompt
        self.sample_tokens = sample_tokens
        self.sample_temperature = sample_temperature
        self.sample_top_k = sample_top_k
        eval_windows = eval_windows or eval_batches * batch_size
        self.eval_sets = {
            "train": evaluation_batches(self.train_windows, eval_windows, batch_size),
            "val": evaluation_batches(self.val_windows, eval_windows, batch_size),
        }

    def train_stream(self, rank: int, world_size: int) -> ShuffledBatches:
        return ShuffledBatches(self.train_windows, self.batch_size, seed=self.seed, rank=rank,
                             world_size=world_size)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return next_token_loss(model, batch)

    def loss_terms(self, batch: Batch) -> int:
        return batch[1].numel()  # every position predicts a token

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = compute_device(model)
        metrics = {}
        for split, windows in (("train", self.train_windows), ("val", self.val_windows)):
            total, count = 0.0, 0
            for idx in self.eval_sets[split]:
                batch = tuple(t.to(device) for t in windows.batch(idx))
                total += float(next_token_loss(model, batch)) * len(idx)
                count += len(idx)
            loss = total / count
            metrics[f"{split}_loss"] = loss
            metrics[f"{split}_perplexity"] = math.exp(min(loss, 50.0))
        return metrics

    def sample(self, model: nn.Module) -> str | None:
        """A continuation of the sample prompt. Sampled with the task's seed, from a generator
        of its own: the same text for the same weights, and the training RNG is untouched
        (a resumed run stays bit-identical)."""
        if self.tokenizer is None or self.sample_tokens == 0:
            return None
        pieces = generate_text(model, self.tokenizer, self.sample_prompt,
                               max_new_tokens=self.sample_tokens,
                               temperature=self.sample_temperature, top_k=self.sample_top_k,
                               seed=self.seed)
        return self.sample_prompt + "".join(pieces)
