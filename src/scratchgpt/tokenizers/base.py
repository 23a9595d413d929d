"""The one interface every tokenizer shares.

A tokenizer maps text to a list of integer ids and back. Special tokens (such as
``<|endoftext|>``) are whole strings with ids of their own; ordinary text that happens to
spell one is refused unless the caller allows it, exactly as tiktoken does, so that user
input can never smuggle a control token into a model's context.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

import regex

ENDOFTEXT = "<|endoftext|>"
UNKNOWN = "<|unk|>"

AllowedSpecial = Collection[str] | Literal["all"]


class SpecialTokenError(ValueError):
    """Raised when ordinary text spells a special token that was not allowed: which one, and
    the character where it starts in ``source`` (the text, or a file it came from)."""

    def __init__(self, token: str, position: int, source: str = "text") -> None:
        super().__init__(
            f"{source} contains the special token {token!r} at character {position}; pass "
            f"allowed_special={{{token!r}}} (CLI: --allow-special) to encode it as a special "
            "token, or remove it from the text"
        )
        self.token, self.position = token, position


class Tokenizer(ABC):
    """Base class: ``encode``, ``decode``, ``vocab_size``, special tokens, ``save``/``load``.

    Subclasses implement :meth:`encode_ordinary` (text with no special tokens),
    :meth:`decode_bytes` and :meth:`to_dict`/:meth:`from_dict`. Special-token handling
    is shared and lives here.
    """

    kind: str  # the "type" field written by save()

    def __init__(self, special_tokens: dict[str, int] | None = None) -> None:
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self._special_pattern = (
            regex.compile("|".join(regex.escape(s) for s in sorted(self.special_tokens, key=len,
                                                                    reverse=True)))
            if self.special_tokens
            else None
        )

    # -- what subclasses provide -------------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (ids run from 0 to vocab_size - 1)."""

    @abstractmethod
    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating any special-token spelling as plain text."""

    @abstractmethod
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The UTF-8 bytes the ids stand for (may end inside a multi-byte character)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the tokenizer, JSON-serialisable."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        """Inverse of :meth:`to_dict`."""

    # -- shared behaviour ---------------------------------------------------------------
    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>``, the document separator, if this tokenizer has one."""
        return self.special_tokens.get(ENDOFTEXT)

    @property
    def bos_id(self) -> int | None:
        """Id of the token put before every text (Llama 3's ``<|begin_of_text|>``), if any."""
        return None

    def post_process(self, ids: list[int]) -> list[int]:
        """``ids`` of one whole text as the model expects them: what Hugging Face's
        ``add_special_tokens=True`` adds (a BOS first, for the families that have one). Ours
        and GPT-2's add nothing."""
        return list(ids)

    def encode(self, text: str, allowed_special: AllowedSpecial = frozenset()) -> list[int]:
        """Encode ``text``. Special tokens in it are an error unless named in ``allowed_special``
        (or ``allowed_special="all"``), in which case they become their single ids."""
        if self._special_pattern is None:
            return self.encode_ordinary(text)
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        ids: list[int] = []
        start = 0
        for match in self._special_pattern.finditer(text):
            token = match.group()
            if token not in allowed:
                raise SpecialTokenError(token, match.start())
            ids.extend(self.encode_ordinary(text[start : match.start()]))
            ids.append(self.special_tokens[token])
            start = match.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; an incomplete UTF-8 sequence becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as one JSON file (see ``docs/formats.md``)."""
        data = {"type": self.kind, **self.to_dict()}
        Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by :meth:`save` (any tokenizer kind when called on the base)."""
        from scratchgpt.tokenizers.registry import load_saved_tokenizer

        tokenizer = load_saved_tokenizer(Path(path))
        if not isinstance(tokenizer, cls):
            raise TypeError(f"{path} holds a {type(tokenizer).__name__}, not a {cls.__name__}")
        return tokenizer
