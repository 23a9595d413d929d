"""Instruction batches: the book's collate, prompt masking, only the answers of a conversation
learned, and truncation that keeps the answer and its end-of-text or drops the example."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratchgpt.data.batches import ShuffledBatches
from scratchgpt.data.instruction_batches import IGNORE_INDEX, InstructionExamples, collate
from scratchgpt.data.instructions import (
    Conversation,
    InstructionRecord,
    Record,
    load_instructions,
    record_segments,
)
from scratchgpt.data.prompt_styles import PROMPT_STYLES, PromptStyle, get_prompt_style
from scratchgpt.tokenizers import ENDOFTEXT, CharTokenizer, load_gpt2_tokenizer

ALPACA = get_prompt_style("alpaca")
CHAT = Conversation(
    (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    )
)
RECORDS: list[Record] = [
    InstructionRecord("Add.", "2, 3", "5 apples"),
    InstructionRecord("Name a prime.", "", "7"),
    CHAT,
]


def char_tokenizer(records: list[Record] = RECORDS) -> CharTokenizer:
    """A character tokenizer that can spell every record in every style."""
    texts = [
        s.text
        for r in records
        for style in PROMPT_STYLES.values()
        for s in record_segments(r, style)
    ]
    return CharTokenizer.from_texts(texts, special_tokens=[ENDOFTEXT])


def learned(tokenizer: CharTokenizer, targets: torch.Tensor) -> str:
    """The text of the targets that count in the loss."""
    return tokenizer.decode(targets[targets != IGNORE_INDEX].tolist())


def full_text(record: Record, style: PromptStyle) -> str:
    return "".join(s.text for s in record_segments(record, style))


def test_the_books_collate_pads_to_the_longest_and_ignores_all_but_the_first_end_of_text() -> None:
    eot = 50256
    ids = [[0, 1, 2, 3, 4, eot], [5, 6, eot], [7, 8, 9, eot]]
    inputs, targets = collate(ids, [[True] * len(row) for row in ids], pad_id=eot)
    assert inputs.tolist() == [
        [0, 1, 2, 3, 4],
        [5, 6, 50256, 50256, 50256],
        [7, 8, 9, 50256, 50256],
    ]
    assert targets.tolist() == [
        [1, 2, 3, 4, 50256],
        [6, 50256, -100, -100, -100],
        [8, 9, 50256, -100, -100],
    ]
    inputs, targets = collate(ids[1:], [[True, False, True], [True, True, False, True]], eot)
    assert targets.tolist() == [[-100, 50256, -100], [8, -100, 50256]]


def test_the_whole_text_is_learned_by_default_padded_to_the_longest_of_the_batch() -> None:
    tokenizer = char_tokenizer()
    data = InstructionExamples(RECORDS[:2], tokenizer, ALPACA, context_length=1024)
    inputs, targets = data.batch([0, 1])
    texts = [full_text(r, ALPACA) for r in RECORDS[:2]]
    assert inputs.shape == (2, max(len(t) for t in texts))  # one token per character, plus eot
    first, second = (tokenizer.encode_ordinary(t) + [tokenizer.eot_id] for t in texts)
    assert inputs[0].tolist() == first[:-1] and targets[0].tolist() == first[1:]
    short = len(second) - 1
    assert inputs[1].tolist() == second[:-1] + [tokenizer.eot_id] * (inputs.shape[1] - short)
    assert targets[1].tolist() == second[1:] + [IGNORE_INDEX] * (inputs.shape[1] - short)
    assert learned(tokenizer, targets[1]) == texts[1][1:] + ENDOFTEXT
    assert (data.truncated, data.dropped) == (0, 0)


@pytest.mark.parametrize("name", sorted(PROMPT_STYLES))
def test_a_masked_prompt_leaves_only_the_response_and_end_of_text(name: str) -> None:
    style, tokenizer = PROMPT_STYLES[name], char_tokenizer()
    data = InstructionExamples(RECORDS[:2], tokenizer, style, 1024, mask_prompt=True)
    inputs, targets = data.batch(torch.tensor([0, 1]))
    for row, record in enumerate(RECORDS[:2]):
        prompt = style.instruction_prompt(record.instruction, record.input)
        assert (targets[row, : len(prompt) - 1] == IGNORE_INDEX).all()
        assert learned(tokenizer, targets[row]) == record.output + style.end_of_turn + ENDOFTEXT


@pytest.mark.parametrize("mask_prompt", [False, True])
@pytest.mark.parametrize("name", sorted(PROMPT_STYLES))
def test_a_conversation_learns_only_the_assistants_turns(name: str, mask_prompt: bool) -> None:
    style, tokenizer = PROMPT_STYLES[name], char_tokenizer()
    data = InstructionExamples([CHAT], tokenizer, style, 1024, mask_prompt=mask_prompt)
    _, targets = data.batch([0])
    eot = style.end_of_turn
    assert learned(tokenizer, targets[0]) == f"4{eot}6{eot}{ENDOFTEXT}"


def test_a_long_prompt_is_cut_from_the_left_keeping_the_response_and_end_of_text() -> None:
    record = InstructionRecord("Repeat: " + "la " * 40, "", "Done.")
    tokenizer = char_tokenizer([record])
    text = full_text(record, ALPACA)
    data = InstructionExamples([record], tokenizer, ALPACA, context_length=50, mask_prompt=True)
    assert (len(data), data.truncated, data.dropped) == (1, 1, 0)
    inputs, targets = data.batch([0])
    assert inputs.shape == (1, 50)
    assert tokenizer.decode(inputs[0].tolist()) == text[-50:]
    assert learned(tokenizer, targets[0]) == "Done." + ENDOFTEXT


def test_an_answer_longer_than_the_context_drops_the_example() -> None:
    long = InstructionRecord("Count.", "", "one two three four five six seven eight " * 6)
    tokenizer = char_tokenizer([long, *RECORDS])
    data = InstructionExamples([long, *RECORDS[:2]], tokenizer, ALPACA, context_length=200)
    assert (len(data), data.dropped, data.truncated) == (2, 1, 0)  # the others are < 170 tokens
    with pytest.raises(ValueError, match="all 1 instruction examples are dropped.*context of 200 "):
        InstructionExamples([long], tokenizer, ALPACA, context_length=200)
    needed = len(long.output) + 1  # the answer and end-of-text, all of them targets
    with pytest.raises(ValueError, match=f"needs a context of {needed}.*larger context length"):
        InstructionExamples([long], tokenizer, ALPACA, context_length=needed - 1)
    kept = InstructionExamples([long], tokenizer, ALPACA, context_length=needed, mask_prompt=True)
    assert learned(tokenizer, kept.batch([0])[1][0]) == long.output + ENDOFTEXT


def test_a_tokenizer_without_end_of_text_is_refused() -> None:
    tokenizer = CharTokenizer.from_texts([full_text(r, ALPACA) for r in RECORDS])
    with pytest.raises(ValueError, match="no end-of-text token.*mark where an answer ends"):
        InstructionExamples(RECORDS, tokenizer, ALPACA, 1024)


def test_shuffled_batches_serve_instruction_examples() -> None:
    data = InstructionExamples(RECORDS, char_tokenizer(), ALPACA, 1024)
    inputs, targets = next(ShuffledBatches(data, batch_size=2, seed=0))
    assert inputs.shape == targets.shape and inputs.shape[0] == 2
    with pytest.raises(ValueError, match="only 3 training examples.*more instruction records"):
        ShuffledBatches(data, batch_size=4)


def test_the_books_data_tokenizes_as_the_book_does(shared_assets: Path) -> None:
    """The book tokenizes ``format_input(entry) + "\\n\\n### Response:\\n" + output`` in one
    piece and appends 50256; tokenizing the prompt and the output apart gives the same ids."""
    tokenizer = load_gpt2_tokenizer(shared_assets / "gpt2-tokenizer")
    records = load_instructions(shared_assets / "instructions" / "instruction-data.json")[:100]
    data = InstructionExamples(records, tokenizer, ALPACA, context_length=1024)
    for index, record in enumerate(records):
        book = tokenizer.encode_ordinary(full_text(record, ALPACA)) + [50256]
        assert data.ids[index] == book
    masked = InstructionExamples(records, tokenizer, ALPACA, 1024, mask_prompt=True)
    _, targets = masked.batch(range(8))
    for row, record in enumerate(records[:8]):
        assert learned(tokenizer, targets[row]) == record.output + ENDOFTEXT
