"""BPE over a ranked merge list, the model of Hugging Face's ``tokenizer.json``.

GPT-2's BPE (:mod:`scratchgpt.tokenizers.bpe`) ranks *tokens*: the adjacent pair whose
concatenation is the earliest-learned token is merged first. Hugging Face's ``tokenizers`` ranks
*pairs*: ``merges[i] = (left, right)`` is merge number ``i``, and the pair with the lowest number
is merged first (leftmost on ties). The two agree when every token is made by exactly one merge,
as in GPT-2's files; they can differ for vocabularies converted from tiktoken (Llama 3, Qwen),
whose merge lists name several pairs for one token. This module follows Hugging Face exactly,
down to the order in which its priority queue takes merges, so that ids are equal.

It works on any alphabet: the symbols are the characters of a pre-token (byte-level files write
bytes as printable characters, SentencePiece-style files write a space as ``▁``). What the model
adds on top of merging:

* ``ignore_merges`` (Llama 3): a pre-token that is itself in the vocabulary is that one token;
* ``byte_fallback`` (Gemma, Llama 2): a character outside the vocabulary becomes the tokens
  ``<0xNN>`` of its UTF-8 bytes;
* otherwise such a character is the ``unk_token`` (runs of them one token with ``fuse_unk``),
  or, with no ``unk_token``, dropped, as Hugging Face does.

Speed. SentencePiece-style files (Gemma, Llama 2) have no pre-tokenizer that splits the text:
Hugging Face runs BPE over the whole text as one "word" of thousands of symbols. We cut such a
long piece where no merge can ever join the two sides (see :meth:`MergeListBPE.segments`), merge
each segment on its own and remember it: real text repeats its segments as it repeats its words.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

_CACHE_LIMIT = 200_000  # pre-tokens remembered before the cache starts afresh
_CACHED_LENGTH = 256  # longer pre-tokens (a whole SentencePiece text) are not cached


def byte_fallback_token(byte: int) -> str:
    """``10`` -> ``"<0x0A>"``, the vocabulary entry SentencePiece-style files use for a byte."""
    return f"<0x{byte:02X}>"


def merge_symbols(
    ids: list[int], merges: Mapping[tuple[int, int], tuple[int, int]], made: Sequence[int]
) -> list[int]:
    """Merge the symbols ``ids`` by ``merges`` ((left id, right id) -> (rank, merged id));
    ``made[rank]`` is the id that merge number ``rank`` makes.

    Hugging Face's algorithm: a min-heap of candidate merges ordered by (rank, position); a
    popped candidate is skipped when its left symbol was merged away, has no right neighbour
    any more, or no longer forms a pair that makes the same token. Each candidate is one int,
    ``rank * n + position`` (ints compare faster than tuples, and order the same way); the
    token it makes is ``made[rank]``.
    """
    n = len(ids)
    if n < 2:
        return ids
    symbols = list(ids)
    alive = [True] * n
    prev = list(range(-1, n - 1))
    nxt = [*range(1, n), -1]
    get = merges.get
    heap = [found[0] * n + pos for pos, pair in enumerate(zip(ids, ids[1:], strict=False))
            if (found := get(pair)) is not None]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        candidate = pop(heap)
        rank, pos = candidate // n, candidate % n
        right = nxt[pos]
        if not alive[pos] or right == -1:
            continue
        found = get((symbols[pos], symbols[right]))
        if found is None or found[1] != made[rank]:
            continue
        new = found[1]
        symbols[pos] = new
        alive[right] = False
        after = nxt[right]
        nxt[pos] = after
        if after != -1:
            prev[after] = pos
        before = prev[pos]
        if before != -1 and (found := get((symbols[before], new))) is not None:
            push(heap, found[0] * n + before)
        if after != -1 and (found := get((new, symbols[after]))) is not None:
            push(heap, found[0] * n + pos)
    return [s for s, keep in zip(symbols, alive, strict=True) if keep]


class MergeListBPE:
    """The BPE model of a ``tokenizer.json``: one pre-token (a string) -> token ids."""

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        unk_token: str | None = None,
        fuse_unk: bool = False,
        byte_fallback: bool = False,
        ignore_merges: bool = False,
    ) -> None:
        self.vocab = dict(vocab)
        self.merges: dict[tuple[int, int], tuple[int, int]] = {}
        self.made = [0] * len(merges)  # merge number -> the id it makes
        for rank, (left, right) in enumerate(merges):
            for part in (left, right, left + right):
                if part not in self.vocab:
                    raise ValueError(f"merge {rank} ({left!r} {right!r}): {part!r} is not in "
                                     "the vocabulary")
            pair = (self.vocab[left], self.vocab[right])
            self.made[rank] = self.vocab[left + right]
            self.merges[pair] = (rank, self.made[rank])  # a repeated pair: the last
        if unk_token is not None and unk_token not in self.vocab:
            raise ValueError(f"the unk_token {unk_token!r} is not in the vocabulary")
        self.unk_id = None if unk_token is None else self.vocab[unk_token]
        self.fuse_unk = fuse_unk
        self.ignore_merges = ignore_merges
        self.byte_ids: list[int] | None = None
        if byte_fallback:
            names = [byte_fallback_token(b) for b in range(256)]
            missing = [name for name in names if name not in self.vocab]
            if missing:
                raise ValueError(f"byte_fallback needs the 256 tokens <0x00> .. <0xFF>; "
                                 f"{missing[0]} (and {len(missing) - 1} more) is missing")
            self.byte_ids = [self.vocab[name] for name in names]
        self._chars = {token for token in self.vocab if len(token) == 1}
        # (last character of a merge's left part, first character of its right part)
        self._joinable = {(left[-1:], right[:1]) for left, right in merges}
        self._cache: dict[str, list[int]] = {}

    def tokenize(self, piece: str) -> list[int]:
        """The ids of one pre-token. A long one is merged segment by segment (see
        :meth:`segments`; not with ``ignore_merges``, which looks at the whole pre-token)."""
        ids = self._cache.get(piece)  # the common case, without a call
        if ids is not None:
            return ids
        if len(piece) <= _CACHED_LENGTH or self.ignore_merges:
            return self._remembered(piece)
        return [i for segment in self.segments(piece) for i in self._remembered(segment)]

    def segments(self, piece: str) -> list[str]:
        """``piece`` cut between every two characters ``a``, ``b`` that no merge can join.

        Such a cut needs ``a`` and ``b`` in the vocabulary and no merge whose left part ends
        with ``a`` and whose right part starts with ``b``. Why merging each segment on its own
        gives the same ids as merging the whole piece: a known character is its own symbol,
        spelled as itself, and a merge makes the token spelled by its two parts, so a symbol
        that ends at the cut is spelled ending with ``a``, one that starts there starting with
        ``b``; a merge across the cut would join two such symbols, and there is none. Each
        segment's candidates therefore neither make nor spoil another's, and the heap takes
        them in the same order (rank, then position). In SentencePiece-style vocabularies,
        whose tokens start a word with ``▁`` and do not run on into the next, most cuts fall
        before a ``▁``.
        """
        chars, joinable = self._chars, self._joinable
        cuts = [i for i, pair in enumerate(zip(piece, piece[1:], strict=False), 1)
                if pair not in joinable and pair[0] in chars and pair[1] in chars]
        bounds = zip([0, *cuts], [*cuts, len(piece)], strict=True)
        return [piece[start:end] for start, end in bounds]

    def _remembered(self, piece: str) -> list[int]:
        """The ids of ``piece``, remembered when it is short: real text repeats its words."""
        ids = self._cache.get(piece)
        if ids is None:
            ids = self._tokenize(piece)
            if len(piece) <= _CACHED_LENGTH:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[piece] = ids
        return ids

    def _tokenize(self, piece: str) -> list[int]:
        if not piece:
            return []
        if self.ignore_merges and piece in self.vocab:
            return [self.vocab[piece]]
        return merge_symbols(self._symbols(piece), self.merges, self.made)

    def _symbols(self, piece: str) -> list[int]:
        """One id per character; bytes or ``unk`` for characters outside the vocabulary."""
        vocab, ids = self.vocab, []
        try:
            return list(map(vocab.__getitem__, piece))  # the common case: every one is known
        except KeyError:
            pass
        unknown_run = False  # whether the last id is an unk that a next unknown would join
        for char in piece:
            found = vocab.get(char)
            if found is not None:
                ids.append(found)
                unknown_run = False
            elif self.byte_ids is not None:
                ids.extend(self.byte_ids[b] for b in char.encode("utf-8"))
                unknown_run = False
            elif self.unk_id is not None:
                if not (self.fuse_unk and unknown_run):
                    ids.append(self.unk_id)
                unknown_run = True
        return ids
