"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2 and its successors.

Text is cut into chunks by a regex (:mod:`scratchgpt.tokenizers.pretokenize`), each chunk is
turned into UTF-8 bytes, and neighbouring pieces are merged again and again: at every step the
adjacent pair whose concatenation has the lowest *rank* is merged, until no adjacent pair forms a
known token. A token's rank is its id, so earlier-learned merges win. This is tiktoken's
formulation; it needs no separate merge list, only ``ranks: dict[bytes, int]``.

Because every single byte is a token, any string can be encoded; nothing is ever unknown.

Two encoders give identical ids: a pure-Python one with a per-chunk cache (real text repeats its
words, so most chunks are looked up, not merged), and, when the optional ``tiktoken`` package is
installed, tiktoken's Rust implementation built from the same ranks, pattern and special tokens.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from functools import cache
from itertools import chain, pairwise
from typing import Any

import regex

from scratchgpt.tokenizers.base import Tokenizer
from scratchgpt.tokenizers.pretokenize import GPT2_SPLIT_PATTERN

_NOT_A_TOKEN = float("inf")
_CACHE_LIMIT = 200_000  # chunks the pure-Python encoder remembers before it starts afresh


def byte_pair_merge(
    ranks: Mapping[bytes, int], piece: bytes, max_rank: float = _NOT_A_TOKEN
) -> list[bytes]:
    """Split ``piece`` into tokens by repeatedly merging the lowest-ranked adjacent pair.

    Ties (the same pair twice) go to the leftmost, as in tiktoken. Only merges ranked below
    ``max_rank`` are used: with ``max_rank=ranks[piece]`` the result is the two tokens the
    token ``piece`` was merged from.
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    get = ranks.get
    # pair_ranks[i] is the rank of parts[i] + parts[i + 1]
    pair_ranks = [get(a + b, _NOT_A_TOKEN) for a, b in pairwise(parts)]
    while pair_ranks:
        best = min(pair_ranks)
        if best >= max_rank:
            break
        i = pair_ranks.index(best)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = get(parts[i - 1] + parts[i], _NOT_A_TOKEN)
        if i < len(pair_ranks):
            pair_ranks[i] = get(parts[i] + parts[i + 1], _NOT_A_TOKEN)
    return parts


@cache
def _byte_to_printable() -> dict[int, str]:
    """GPT-2's ``bytes_to_unicode``: a printable character for each of the 256 byte values.

    Printable ASCII and Latin-1 bytes stand for themselves; the other 68 (control characters,
    space, ...) are shifted to U+0100 onwards, so a space is shown as ``Ġ`` and a newline as
    ``Ċ``. GPT-2's ``encoder.json``/``vocab.bpe`` and our saved files write tokens this way.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


@cache
def _printable_to_byte() -> dict[str, int]:
    return {c: b for b, c in _byte_to_printable().items()}


def token_to_printable(token: bytes) -> str:
    """``b" the"`` -> ``"Ġthe"`` (see :func:`_byte_to_printable`)."""
    table = _byte_to_printable()
    return "".join(table[b] for b in token)


def printable_to_token(text: str) -> bytes:
    """Inverse of :func:`token_to_printable`; ``ValueError`` for a character outside the map."""
    table = _printable_to_byte()
    try:
        return bytes(table[c] for c in text)
    except KeyError as exc:
        raise ValueError(
            f"{text!r} is not a byte-level token: character {exc.args[0]!r} is not one of the "
            "256 characters GPT-2 uses to write bytes"
        ) from None


class BPETokenizer(Tokenizer):
    """Byte-level BPE over ``ranks`` (token bytes -> id), plus special tokens.

    ``ranks`` must give the ids ``0 .. len(ranks) - 1`` and contain all 256 single bytes.
    ``use_tiktoken=None`` encodes with tiktoken when it is installed and ``pattern`` is GPT-2's
    (the case the tests prove identical; tiktoken's regex engine may read other patterns
    differently), ``False`` always in pure Python, ``True`` insists on tiktoken. The attribute
    can be changed after construction.
    """

    kind = "bpe"

    def __init__(
        self,
        ranks: Mapping[bytes, int],
        special_tokens: Mapping[str, int] | None = None,
        *,
        pattern: str = GPT2_SPLIT_PATTERN,
        use_tiktoken: bool | None = None,
    ) -> None:
        super().__init__(dict(special_tokens or {}))
        self.ranks: dict[bytes, int] = dict(ranks)
        self.pattern = pattern
        self._tokens = _tokens_by_id(self.ranks)
        missing = [b for b in range(256) if bytes([b]) not in self.ranks]
        if missing:
            raise ValueError(
                f"ranks lack {len(missing)} single-byte tokens (first: {bytes(missing[:1])!r}); "
                "byte-level BPE needs all 256 so that any text can be encoded"
            )
        clashes = {s: i for s, i in self.special_tokens.items() if 0 <= i < len(self._tokens)}
        if clashes:
            raise ValueError(f"special tokens {clashes} reuse ids of ordinary tokens")
        self._decoder: dict[int, bytes] = dict(enumerate(self._tokens))
        self._decoder.update((i, s.encode("utf-8")) for s, i in self.special_tokens.items())
        self._split = regex.compile(pattern)
        self._cache = _ChunkCache(self.ranks)
        self._tiktoken_encoding: Any = None
        if use_tiktoken is None:
            use_tiktoken = pattern == GPT2_SPLIT_PATTERN and _tiktoken_installed()
        elif use_tiktoken and not _tiktoken_installed():
            raise ImportError("use_tiktoken=True needs the tiktoken package: pip install tiktoken")
        self.use_tiktoken = use_tiktoken

    @property
    def vocab_size(self) -> int:
        return max([len(self._tokens) - 1, *self.special_tokens.values()]) + 1

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (UTF-8 spelling for a special token)."""
        return self.decode_bytes([token_id])

    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merge list in rank order: token ``256 + i`` is ``b"".join(merges()[i])``.

        Recovered from the ranks by encoding each token with only the merges ranked below it;
        a ``ValueError`` says which token cannot be built from two earlier ones.
        """
        pairs = []
        for rank in range(256, len(self._tokens)):
            token = self._tokens[rank]
            parts = byte_pair_merge(self.ranks, token, max_rank=rank)
            if len(parts) != 2:
                raise ValueError(
                    f"token {rank} ({token!r}) is not the merge of two lower-ranked tokens, "
                    "so these ranks cannot be written as a merge list"
                )
            pairs.append((parts[0], parts[1]))
        return pairs

    # -- encoding ----------------------------------------------------------------------
    def encode_ordinary(self, text: str) -> list[int]:
        if self.use_tiktoken:
            return self._tiktoken().encode_ordinary(text)
        try:
            return self._encode_pure(text)
        except UnicodeEncodeError:
            # Lone surrogates are not valid Unicode; replace them with U+FFFD as tiktoken does.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_pure(text)

    def _encode_pure(self, text: str) -> list[int]:
        chunks = self._split.findall(text)
        return list(chain.from_iterable(map(self._cache.__getitem__, chunks)))

    def _tiktoken(self) -> Any:
        """tiktoken's encoder for exactly these ranks, pattern and special tokens (built once)."""
        if self._tiktoken_encoding is None:
            import tiktoken

            self._tiktoken_encoding = tiktoken.Encoding(
                name=f"scratchgpt-bpe-{id(self):x}",
                pat_str=self.pattern,
                mergeable_ranks=self.ranks,
                special_tokens=self.special_tokens,
            )
        return self._tiktoken_encoding

    # -- decoding ----------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        decoder = self._decoder
        try:
            return b"".join([decoder[i] for i in ids])
        except KeyError as exc:
            raise ValueError(
                f"token id {exc.args[0]!r} is not in this tokenizer's vocabulary "
                f"(ids 0..{self.vocab_size - 1})"
            ) from None

    # -- saving ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "tokens": [token_to_printable(t) for t in self._tokens],
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        ranks = {}
        for i, text in enumerate(data["tokens"]):
            try:
                ranks[printable_to_token(text)] = i
            except ValueError as exc:
                raise ValueError(f"field 'tokens', entry {i}: {exc}") from None
        return cls(ranks, data["special_tokens"], pattern=data["pattern"])


class _ChunkCache(dict[str, list[int]]):
    """Chunk -> token ids. A chunk seen for the first time is byte-pair merged and remembered."""

    def __init__(self, ranks: dict[bytes, int]) -> None:
        super().__init__()
        self.ranks = ranks

    def __missing__(self, chunk: str) -> list[int]:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        piece = chunk.encode("utf-8")
        whole = self.ranks.get(piece)  # a chunk that is itself a token is taken whole, as tiktoken
        if whole is not None:  # does (merging could, in rare cases, end elsewhere)
            ids = [whole]
        else:
            ids = [self.ranks[part] for part in byte_pair_merge(self.ranks, piece)]
        self[chunk] = ids
        return ids


def _tokens_by_id(ranks: Mapping[bytes, int]) -> list[bytes]:
    """The tokens listed by id; ``ValueError`` unless the ids are exactly 0..len(ranks)-1."""
    tokens: list[bytes | None] = [None] * len(ranks)
    for token, rank in ranks.items():
        if not 0 <= rank < len(ranks) or tokens[rank] is not None:
            raise ValueError(
                f"ranks must number the {len(ranks)} tokens 0..{len(ranks) - 1} with no gaps or "
                f"repeats; token {token!r} has rank {rank}"
            )
        tokens[rank] = token
    return tokens  # type: ignore[return-value]  # every slot is filled: len(ranks) distinct ranks


def _tiktoken_installed() -> bool:
    return importlib.util.find_spec("tiktoken") is not None
