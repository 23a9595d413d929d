"""A word-level tokenizer, as in chapter 2 of "Build a Large Language Model (From Scratch)".

Text is split on whitespace and punctuation; every distinct word or punctuation mark in the
training text gets an id (in sorted order), and two special tokens come last: ``<|endoftext|>``
to separate documents and ``<|unk|>`` for any word the vocabulary lacks. Whitespace is thrown
away, so decoding joins tokens with single spaces and then removes the space before punctuation:
``decode(encode(text))`` gives back the words, not the exact spacing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from scratchgpt.tokenizers.base import ENDOFTEXT, UNKNOWN, Tokenizer

_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
_SPECIALS = re.compile(f"{re.escape(ENDOFTEXT)}|{re.escape(UNKNOWN)}")
_SPACE_BEFORE_PUNCTUATION = re.compile(r'\s+([,.?!"()\'])')  # the book's list


def split_words(text: str) -> list[str]:
    """Words and punctuation marks of ``text``, whitespace dropped.

    >>> split_words("Hello, world. Is this-- a test?")
    ['Hello', ',', 'world', '.', 'Is', 'this', '--', 'a', 'test', '?']
    """
    return [piece for piece in (p.strip() for p in _SPLIT.split(text)) if piece]


class WordTokenizer(Tokenizer):
    """Ids ``0..len(words)-1`` for ``words``, then ``<|endoftext|>`` and ``<|unk|>``.

    Build one from text with :meth:`from_texts`. Unknown words encode to ``<|unk|>``.
    """

    kind = "word"

    def __init__(self, words: Sequence[str]) -> None:
        if len(set(words)) != len(words):
            raise ValueError("words has repeats; each word needs exactly one id")
        specials = [w for w in words if w in (ENDOFTEXT, UNKNOWN)]
        if specials:
            raise ValueError(f"words must not contain the special tokens {specials}")
        super().__init__({ENDOFTEXT: len(words), UNKNOWN: len(words) + 1})
        self.words = list(words)
        self._word_to_id = {w: i for i, w in enumerate(self.words)}
        self._id_to_word = [*self.words, ENDOFTEXT, UNKNOWN]

    @classmethod
    def from_texts(cls, texts: str | Iterable[str]) -> WordTokenizer:
        """Vocabulary of every word in ``texts`` (one string or many documents), sorted."""
        vocabulary: set[str] = set()
        for text in [texts] if isinstance(texts, str) else texts:
            for piece in _SPECIALS.split(text):  # special tokens are not words
                vocabulary.update(split_words(piece))
        if not vocabulary:
            raise ValueError("no words to build a vocabulary from: the texts are empty")
        return cls(sorted(vocabulary))

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_word)

    def encode_ordinary(self, text: str) -> list[int]:
        unk = self.special_tokens[UNKNOWN]
        return [self._word_to_id.get(word, unk) for word in split_words(text)]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        words = []
        for i in ids:
            if not 0 <= i < len(self._id_to_word):
                raise ValueError(
                    f"token id {i!r} is not in this tokenizer's vocabulary "
                    f"(ids 0..{self.vocab_size - 1})"
                )
            words.append(self._id_to_word[i])
        return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(words)).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return {"words": self.words}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        return cls(data["words"])
