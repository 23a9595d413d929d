"""Instruction records as batches of token ids and targets: the data of instruction tuning.

Each example is the tokens of its record's text in a prompt style, then the end-of-text token,
which teaches the model to stop after an answer. In the model's own chat template
(``--prompt-style template``) nothing is added: each answer ends as the template closes a turn
(``<|im_end|>``, ``<|eot_id|>``), and that is what teaches it. The text is encoded segment by
segment (:func:`~scratchgpt.data.prompt_format.encode_prompt`: a template's special tokens as
themselves), so the tokens before an answer are those of the prompt the model is later given.
The targets are the inputs shifted by one token, as in pretraining, with ``IGNORE_INDEX``
(-100, which ``cross_entropy`` skips) wherever the next token is not to be learned:

- the book's collate (chapter 7): a batch is padded to its longest example with end-of-text
  tokens; the first end-of-text of an example is a target, the padding after it is not (no
  trained position sees the padding, which comes after it, so a tokenizer without end-of-text
  pads with id 0);
- prompt masking: with ``mask_prompt``, an instruction's prompt is not learned either, only its
  response (the book trains on the whole text, an exercise of the chapter masks it); in a
  conversation, and in a chat template, only the assistant's answers are ever learned;
- safe truncation: an example longer than the context is cut from the left when every token
  of its final answer and its end-of-text stay targets (the token before the answer is kept
  too, to predict its first); otherwise it is left out, and counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from scratchgpt.data.chat_templates import ChatTemplateError
from scratchgpt.data.instructions import InstructionRecord, Record, record_fields, record_segments
from scratchgpt.data.prompt_format import PromptFormat, encode_prompt
from scratchgpt.data.prompt_styles import PromptStyle
from scratchgpt.tokenizers import Tokenizer

IGNORE_INDEX = -100  # the target that torch.nn.functional.cross_entropy leaves out of the loss


class InstructionExamples:
    """Tokenized instruction records, for :class:`~scratchgpt.data.batches.ShuffledBatches`.

    ``batch(indices)`` gives ``(inputs [B, T], targets [B, T])`` with ``T`` the longest example
    of the batch, at most ``context_length``. ``truncated`` counts the examples cut from the
    left to fit the context, ``dropped`` those left out because their final answer and
    end-of-text alone would not fit.
    """

    example_name = "example"
    remedy = "use more instruction records or a smaller --batch-size"

    def __init__(
        self,
        records: Sequence[Record],
        tokenizer: Tokenizer,
        style: PromptFormat,
        context_length: int,
        mask_prompt: bool = False,
    ) -> None:
        end = end_of_answer(tokenizer, style)
        if not records:
            raise ValueError("no instruction records to make examples of")
        self.pad_id = padding_id(tokenizer)
        self.ids: list[list[int]] = []
        self.trained: list[list[bool]] = []  # whether each token is learned (as a target)
        self.truncated = 0
        needs: list[int] = []  # the context each dropped example would need
        for index, record in enumerate(records):
            where = f"record {index} of {len(records)}"
            ids, trained, answer_start = tokenize_example(record, tokenizer, style, end,
                                                          mask_prompt, where)
            cut = left_cut(len(ids), answer_start, context_length)
            if cut is None:
                needs.append(len(ids) - answer_start)
                continue
            if cut:
                ids, trained = ids[cut:], trained[cut:]
                self.truncated += 1
            self.ids.append(ids)
            self.trained.append(trained)
        self.dropped = len(needs)
        if not self.ids:
            raise ValueError(
                f"all {len(records)} instruction examples are dropped: even with its prompt cut, "
                f"each one's final answer and end-of-text are more than the context of "
                f"{context_length} tokens can learn (the shortest needs a context of "
                f"{min(needs)}); use a model with a larger context length, or records "
                "with shorter answers"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [int(i) for i in indices]
        return collate([self.ids[i] for i in rows], [self.trained[i] for i in rows], self.pad_id)


def end_of_answer(tokenizer: Tokenizer, style: PromptFormat) -> list[int]:
    """What a training example adds after its answer: the end-of-text token in a prompt style
    (refused where the tokenizer has none), nothing in a chat template."""
    if not style.append_end_of_text:
        return []
    if tokenizer.eot_id is None:
        raise ValueError(
            "this tokenizer has no end-of-text token (<|endoftext|>): instruction tuning "
            "needs one to mark where an answer ends, so that generation knows when to stop; "
            "use GPT-2's tokenizer, or train one with <|endoftext|> among its special tokens "
            "(scratchgpt train-tokenizer does by default)"
        )
    return [tokenizer.eot_id]


def padding_id(tokenizer: Tokenizer) -> int:
    """What batches are padded with: end-of-text, or id 0 for a tokenizer without one (no
    trained position sees the padding)."""
    return tokenizer.eot_id if tokenizer.eot_id is not None else 0


def tokenize_example(record: Record, tokenizer: Tokenizer, style: PromptFormat, end: list[int],
                     mask_prompt: bool, where: str) -> tuple[list[int], list[bool], int]:
    """:func:`tokenize_record`, then ``end`` (learned); a chat template's error names the
    record (``where``: ``record 3 of 40``)."""
    try:
        ids, trained, answer_start = tokenize_record(record, tokenizer, style, mask_prompt)
    except ChatTemplateError as err:
        instruction = record_fields(record)["instruction"]
        raise ChatTemplateError(
            f"{where} (the one whose last instruction begins {instruction[:40]!r}): {err}"
        ) from None
    return [*ids, *end], [*trained, *[True] * len(end)], answer_start


def left_cut(length: int, answer_start: int, context_length: int) -> int | None:
    """How many tokens to cut from the left of an example of ``length`` tokens whose final
    answer starts at token ``answer_start`` so that it fits ``context_length`` (0 where it
    fits); None where that would cut the answer's first target (the token before the answer
    predicts it), so that the example must be left out."""
    cut = length - (context_length + 1)  # inputs and targets are the tokens shifted by one
    if cut <= 0:
        return 0
    return cut if cut < answer_start else None


def tokenize_record(
    record: Record, tokenizer: Tokenizer, style: PromptFormat, mask_prompt: bool
) -> tuple[list[int], list[bool], int]:
    """The token ids of the record's text in ``style``, whether each is learned, and where its
    final answer starts. Answers are learned; an instruction's prompt in a prompt style too,
    unless ``mask_prompt``; a conversation's other turns, and a chat template's, never."""
    ids: list[int] = []
    trained: list[bool] = []
    answer_start = 0
    prompt_learned = (isinstance(record, InstructionRecord) and isinstance(style, PromptStyle)
                      and not mask_prompt)
    for segment in record_segments(record, style):
        if segment.trained:
            answer_start = len(ids)
        learned = segment.trained or prompt_learned
        segment_ids = encode_prompt(style, tokenizer, segment.text)
        ids += segment_ids
        trained += [learned] * len(segment_ids)
    return ids, trained, answer_start


def collate(
    ids: Sequence[list[int]], trained: Sequence[list[bool]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The book's ``custom_collate_fn``: inputs are each example's tokens but the last, targets
    its tokens but the first, where a token not ``trained`` is ``IGNORE_INDEX``. Rows are
    padded to the longest, inputs with ``pad_id``, targets with ``IGNORE_INDEX``."""
    length = max(len(row) for row in ids) - 1
    inputs = torch.full((len(ids), length), pad_id, dtype=torch.long)
    targets = torch.full((len(ids), length), IGNORE_INDEX, dtype=torch.long)
    for row, (tokens, learned) in enumerate(zip(ids, trained, strict=True)):
        inputs[row, : len(tokens) - 1] = torch.tensor(tokens[:-1], dtype=torch.long)
        next_tokens = torch.tensor(tokens[1:], dtype=torch.long)
        targets[row, : len(tokens) - 1] = torch.where(
            torch.tensor(learned[1:], dtype=torch.bool), next_tokens, IGNORE_INDEX
        )
    return inputs, targets
