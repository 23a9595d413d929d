"""A character-level tokenizer: one id per distinct character, as in nanoGPT's Shakespeare demo.

The vocabulary is the sorted set of characters of a training text, optionally followed by special
tokens. It is tiny and never loses information, but sequences are long (one id per character).

A character outside the vocabulary is an error, not a silent ``<|unk|>``: a character model
is usually trained on exactly the text it will see, so a new character means the wrong text or
a vocabulary built from too little. The error names the character and its position.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from scratchgpt.tokenizers.base import Tokenizer


class UnknownCharacterError(ValueError):
    """Raised when text holds a character the vocabulary lacks."""


class CharTokenizer(Tokenizer):
    """Ids ``0..len(chars)-1`` for the characters of ``chars``, then ``special_tokens``.

    Build one from text with :meth:`from_texts`.
    """

    kind = "char"

    def __init__(self, chars: str, special_tokens: Sequence[str] = ()) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("chars has repeats; each character needs exactly one id")
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens has repeats: {list(special_tokens)}")
        super().__init__({s: len(chars) + i for i, s in enumerate(special_tokens)})
        self.chars = chars
        self._char_to_id = {c: i for i, c in enumerate(chars)}
        self._id_to_text = [*chars, *special_tokens]

    @classmethod
    def from_texts(
        cls, texts: str | Iterable[str], special_tokens: Sequence[str] = ()
    ) -> CharTokenizer:
        """Vocabulary of every character in ``texts`` (one string or many), sorted by code
        point, plus ``special_tokens`` (e.g. ``["<|endoftext|>"]``) with the last ids."""
        chars: set[str] = set()
        for text in [texts] if isinstance(texts, str) else texts:
            chars.update(text)
        if not chars:
            raise ValueError("no characters to build a vocabulary from: the texts are empty")
        return cls("".join(sorted(chars)), special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_text)

    def encode_ordinary(self, text: str) -> list[int]:
        """One id per character. Raises :class:`UnknownCharacterError` for a character outside
        the vocabulary (its position counts from the start of ``text``, or, when called through
        :meth:`encode`, from the end of the previous special token)."""
        table = self._char_to_id
        try:
            return [table[c] for c in text]
        except KeyError as exc:
            char = exc.args[0]
            raise UnknownCharacterError(
                f"character {char!r} (U+{ord(char):04X}) at position {text.index(char)} is not "
                f"in this tokenizer's vocabulary of {len(self.chars)} characters; build the "
                "vocabulary from text that contains it"
            ) from None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        table = self._id_to_text
        pieces = []
        for i in ids:
            if not 0 <= i < len(table):
                raise ValueError(
                    f"token id {i!r} is not in this tokenizer's vocabulary "
                    f"(ids 0..{self.vocab_size - 1})"
                )
            pieces.append(table[i])
        return "".join(pieces).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return {"chars": self.chars, "special_tokens": self._id_to_text[len(self.chars):]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["chars"], data["special_tokens"])
