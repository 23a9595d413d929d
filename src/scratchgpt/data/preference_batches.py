"""Preference pairs as batches of token ids and targets: the data of a DPO step.

DPO compares how likely the model finds the chosen answer and the rejected one, each given the
same prompt (:mod:`scratchgpt.data.preferences`). Each side of a pair is tokenized exactly as
instruction tuning tokenizes the record with that answer
(:func:`~scratchgpt.data.instruction_batches.tokenize_record`: the prompt style's text then
end-of-text, or the chat template's, segment by segment), and its targets are those of the
final answer and what ends it alone, ``IGNORE_INDEX`` elsewhere: the log-probability DPO
scores is the answer's, given the prompt (a conversation's earlier answers are prompt here).

- Fitting the context: a pair longer than the context loses tokens from its prompt's left, as
  many on both sides, so that both answers read the same prompt; a pair whose longer answer
  (and its end) does not fit even so is left out, and counted.
- Batches: B pairs make one tensor of 2B rows, the B chosen then the B rejected, padded to the
  longest as the book's collate pads, so that one forward pass gives the log-probabilities of
  both (TRL's "concatenated forward"): rows ``[:B]`` are the chosen, ``[B:]`` the rejected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from scratchgpt.data.instruction_batches import (
    collate,
    end_of_answer,
    left_cut,
    padding_id,
    tokenize_example,
)
from scratchgpt.data.instructions import Record
from scratchgpt.data.preferences import PreferenceRecord
from scratchgpt.data.prompt_format import PromptFormat
from scratchgpt.tokenizers import Tokenizer


class PreferenceExamples:
    """Tokenized preference pairs, for :class:`~scratchgpt.data.batches.ShuffledBatches`.

    ``chosen_ids[i]`` and ``rejected_ids[i]`` are the tokens of pair ``i`` answered each way,
    ``chosen_trained[i]`` and ``rejected_trained[i]`` whether each token is a target: those of
    the final answer and its end only. ``batch(indices)`` gives ``(inputs [2B, T], targets
    [2B, T])``: the B chosen rows, then the B rejected ones. ``truncated`` counts the pairs cut
    from the prompt's left to fit the context, ``dropped`` those left out because their longer
    answer and its end alone would not fit.
    """

    example_name = "preference pair"
    remedy = "use more preference records or a smaller --batch-size"

    def __init__(self, pairs: Sequence[PreferenceRecord], tokenizer: Tokenizer,
                 style: PromptFormat, context_length: int) -> None:
        end = end_of_answer(tokenizer, style)
        if not pairs:
            raise ValueError("no preference records to make examples of")
        self.pad_id = padding_id(tokenizer)
        self.context_length = context_length
        self.chosen_ids: list[list[int]] = []
        self.chosen_trained: list[list[bool]] = []
        self.rejected_ids: list[list[int]] = []
        self.rejected_trained: list[list[bool]] = []
        self.truncated = 0
        needs: list[int] = []  # the context each dropped pair would need
        for index, pair in enumerate(pairs):
            where = f"preference record {index} of {len(pairs)}"
            chosen, chosen_trained, chosen_start = tokenize_answer(
                pair.chosen, tokenizer, style, end, where)
            rejected, rejected_trained, rejected_start = tokenize_answer(
                pair.rejected, tokenizer, style, end, where)
            longest, prompt = max(len(chosen), len(rejected)), min(chosen_start, rejected_start)
            cut = left_cut(longest, prompt, context_length)  # as many on both sides
            if cut is None:
                needs.append(longest - prompt)
                continue
            if cut:
                self.truncated += 1
            self.chosen_ids.append(chosen[cut:])
            self.chosen_trained.append(chosen_trained[cut:])
            self.rejected_ids.append(rejected[cut:])
            self.rejected_trained.append(rejected_trained[cut:])
        self.dropped = len(needs)
        if not self.chosen_ids:
            raise ValueError(
                f"all {len(pairs)} preference pairs are dropped: even with its prompt cut, each "
                f"pair's longer answer and its end are more than the context of "
                f"{context_length} tokens can learn (the shortest needs a context of "
                f"{min(needs)}); use a model with a larger context length, or records with "
                "shorter answers"
            )

    def __len__(self) -> int:
        return len(self.chosen_ids)

    def batch(self, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [int(i) for i in indices]
        return collate_pairs([self.chosen_ids[i] for i in rows],
                             [self.chosen_trained[i] for i in rows],
                             [self.rejected_ids[i] for i in rows],
                             [self.rejected_trained[i] for i in rows], self.pad_id)

    def fitting_report(self) -> str:
        """What became of the pairs longer than the context ("" when every pair fit whole)."""
        clauses = []
        if self.truncated:
            clauses.append(f"{_pairs(self.truncated)} longer than the context of "
                           f"{self.context_length} tokens cut from the prompt's left to fit")
        if self.dropped:
            clauses.append(f"{_pairs(self.dropped)} left out: even with the prompt cut, the "
                           f"longer answer and its end need more than {self.context_length} "
                           "tokens")
        return "; ".join(clauses)


def _pairs(count: int) -> str:
    return f"{count:,} pair" + ("" if count == 1 else "s")


def tokenize_answer(record: Record, tokenizer: Tokenizer, style: PromptFormat, end: list[int],
                    where: str) -> tuple[list[int], list[bool], int]:
    """The ids of the record's text in ``style`` then ``end``, whether each is learned, and
    where its final answer starts: only that answer and ``end`` are learned (the prompt, and a
    conversation's earlier answers, are what the answer is conditioned on)."""
    ids, trained, answer_start = tokenize_example(record, tokenizer, style, end,
                                                  mask_prompt=True, where=where)
    return ids, [False] * answer_start + trained[answer_start:], answer_start


def collate_pairs(
    chosen_ids: Sequence[list[int]], chosen_trained: Sequence[list[bool]],
    rejected_ids: Sequence[list[int]], rejected_trained: Sequence[list[bool]], pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of B pairs: :func:`~scratchgpt.data.instruction_batches.collate` of the B
    chosen examples then the B rejected ones, all padded to the longest of the 2B. Rows
    ``[:B]`` are the chosen, ``[B:]`` the rejected, pair ``i`` in rows ``i`` and ``B + i``."""
    return collate([*chosen_ids, *rejected_ids], [*chosen_trained, *rejected_trained], pad_id)
