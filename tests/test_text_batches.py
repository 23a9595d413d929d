"""Tokenized texts for a classifier: truncated at the head or tail, padded to the batch's
longest, never to the context length."""

from __future__ import annotations

import torch

from scratchgpt.data.batches import ShuffledBatches
from scratchgpt.data.text_batches import TokenizedTexts, encode_text
from scratchgpt.tokenizers import CharTokenizer

TEXTS = ["abcdefghij", "abc", "", "hello world"]


def tokenizer() -> CharTokenizer:
    return CharTokenizer.from_texts(TEXTS, special_tokens=["<|endoftext|>"])


def test_long_texts_keep_their_head_or_their_tail() -> None:
    tok = tokenizer()
    ids = tok.encode("abcdefghij")
    assert encode_text(tok, "abcdefghij", 4, "head") == ids[:4]
    assert encode_text(tok, "abcdefghij", 4, "tail") == ids[-4:]
    assert encode_text(tok, "abc", 4, "tail") == tok.encode("abc")


def test_an_empty_text_is_one_end_of_text_token() -> None:
    tok = tokenizer()
    assert encode_text(tok, "", 8) == [tok.eot_id]


def test_special_token_spellings_are_plain_text() -> None:
    tok = CharTokenizer.from_texts(["<|endoftext|> hi"], special_tokens=["<|endoftext|>"])
    assert tok.eot_id not in encode_text(tok, "<|endoftext|> hi", 64)


def test_a_batch_is_padded_to_its_longest_text_and_carries_the_lengths() -> None:
    tok = tokenizer()
    data = TokenizedTexts(TEXTS, [0, 1, 0, 1], tok, max_length=100)
    inputs, lengths, labels = data.batch([1, 2])
    assert inputs.shape == (2, 3)  # "abc" is the longest of these two, not the context
    assert lengths.tolist() == [3, 1]
    assert labels.tolist() == [1, 0]
    assert inputs[1].tolist() == [tok.eot_id] * 3  # the empty text, then padding
    inputs, lengths, _ = data.batch(torch.tensor([0, 3]))
    assert inputs.shape == (2, 11) and lengths.tolist() == [10, 11]
    assert inputs[0, 10].item() == data.pad_id


def test_shuffled_batches_serve_texts_too() -> None:
    data = TokenizedTexts(TEXTS, [0, 1, 0, 1], tokenizer(), max_length=100)
    stream = ShuffledBatches(data, batch_size=2, seed=0)
    seen = [tuple(next(stream)[2].tolist()) for _ in range(2)]
    assert sorted(sum(seen, ())) == [0, 0, 1, 1]  # one epoch visits every text once
