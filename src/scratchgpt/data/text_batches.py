"""Tokenized texts in padded batches: the data of a text classifier (chapter 6 of the book).

Each text becomes its token ids, cut to at most ``max_length`` tokens: ``truncate="head"``
keeps the start of a long text (where an email's subject and greeting are), ``"tail"`` its
end. A batch is padded only to its own longest text, not to the context length, and carries
each text's real length, so the model reads the last *real* token of each text
(:class:`~scratchgpt.model.classifier.GPTClassifier`). An empty text is its BOS alone, or one
end-of-text token for a tokenizer without a BOS: it gets a prediction like any other.

A text is framed as the model saw text in pretraining, as transformers' tokenizer frames it
(``add_special_tokens=True``): Llama 3's ``<|begin_of_text|>`` and Gemma's ``<bos>`` first
(:meth:`~scratchgpt.tokenizers.base.Tokenizer.post_process`; GPT-2 and Qwen add nothing).
``max_length`` counts the frame: a long text is cut, never its BOS. Which id pads a batch does
not matter to the model (it reads a text's last real token by its length), so it is simply the
end-of-text token, or id 0 for a tokenizer with none (Llama 3), even where that id also occurs
inside texts.
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
    """The token ids of ``text`` (special-token spellings count as plain text) framed by the
    tokenizer's BOS where it has one, at most ``max_length`` of them in all."""
    ids = tokenizer.encode_ordinary(text)
    room = max(max_length - len(tokenizer.post_process([])), 0)  # what the text may fill
    if len(ids) > room:
        ids = ids[:room] if truncate == "head" else ids[len(ids) - room :]
    return tokenizer.post_process(ids) or [tokenizer.eot_id or 0]


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
