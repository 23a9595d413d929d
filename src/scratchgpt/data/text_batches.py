"""Tokenized texts in padded batches: the data of a text classifier (chapter 6 of the book).

Each text becomes its token ids, cut to at most ``max_length`` tokens: ``truncate="head"``
keeps the start of a long text (where an email's subject and greeting are), ``"tail"`` its
end. A batch is padded only to its own longest text, not to the context length, and carries
each text's real length, so the model reads the last *real* token of each text
(:class:`~scratchgpt.model.classifier.GPTClassifier`). An empty text is one end-of-text token:
it gets a prediction like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from scratchgpt.tokenizers import Tokenizer

Truncate = Literal["head", "tail"]


def encode_text(
    tokenizer: Tokenizer, text: str, max_length: int, truncate: Truncate = "head"
) -> list[int]:
    """The token ids of ``text`` (special-token spellings count as plain text), at most
    ``max_length`` of them."""
    ids = tokenizer.encode_ordinary(text) or [tokenizer.eot_id or 0]
    if len(ids) <= max_length:
        return ids
    return ids[:max_length] if truncate == "head" else ids[-max_length:]


class TokenizedTexts:
    """Texts and their class ids, for :class:`~scratchgpt.data.batches.ShuffledBatches`.

    ``batch(indices)`` gives ``(input_ids [B, T], lengths [B], labels [B])`` with ``T`` the
    longest text of the batch; padding is ``pad_id`` (the end-of-text token).
    """

    example_name = "text"
    remedy = "use more labelled texts or a smaller --batch-size"

    def __init__(
        self,
        texts: Sequence[str],
        label_ids: Sequence[int],
        tokenizer: Tokenizer,
        max_length: int,
        truncate: Truncate = "head",
    ) -> None:
        if len(texts) != len(label_ids):
            raise ValueError(f"{len(texts)} texts but {len(label_ids)} labels")
        self.ids = [encode_text(tokenizer, text, max_length, truncate) for text in texts]
        self.labels = torch.tensor(list(label_ids), dtype=torch.long)
        self.pad_id = tokenizer.eot_id or 0

    def __len__(self) -> int:
        return len(self.ids)

    def batch(
        self, indices: torch.Tensor | Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, lengths = pad_batch([self.ids[int(i)] for i in indices], self.pad_id)
        return inputs, lengths, self.labels[torch.as_tensor(indices, dtype=torch.long)]


def pad_batch(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` of token ids right-padded with ``pad_id`` to the longest, and their lengths."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    inputs = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for row, ids in enumerate(rows):
        inputs[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return inputs, lengths
