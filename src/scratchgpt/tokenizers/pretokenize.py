"""GPT-2's pre-tokenization: cut text into chunks before byte-pair encoding.

BPE never merges across a chunk boundary, so the split decides which tokens can exist: a word
keeps its leading space (``" world"``), letters, digits and punctuation never share a token, and
common English contractions (``'s``, ``'ll`` ...) are chunks of their own. The pattern below is
the one OpenAI published with GPT-2; ``\\p{L}`` and ``\\p{N}`` (any Unicode letter / number) need
the third-party ``regex`` module rather than the standard library's ``re``.
"""

from __future__ import annotations

import regex

GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
"""Contractions | letters | digits | other symbols, each with at most one leading space |
trailing whitespace | whitespace that precedes a word (all but its last space, which the word
takes) | any remaining whitespace."""


def pretokenize(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """The chunks of ``text`` in order; joining them gives ``text`` back.

    >>> pretokenize("Hello, world's 2 cats!")
    ['Hello', ',', ' world', "'s", ' 2', ' cats', '!']
    """
    return regex.findall(pattern, text)
