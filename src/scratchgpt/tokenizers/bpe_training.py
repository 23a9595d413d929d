"""Learning a byte-level BPE vocabulary from text.

Start with the 256 single bytes as tokens. Repeatedly find the most frequent adjacent pair of
tokens in the corpus, make their concatenation a new token, and replace the pair everywhere, until
the vocabulary has the size asked for. The order of the merges is the ranks that
:class:`~scratchgpt.tokenizers.bpe.BPETokenizer` encodes with.

Doing this naively rescans the corpus for every merge. Three observations make it fast:

1. Merges never cross a pre-token chunk, and real text repeats its chunks, so we work on the
   *unique* chunks, each weighted by how often it occurs.
2. Merging ``(a, b)`` only changes the chunks that contain ``(a, b)``. We keep the count of every
   pair and an index ``pair -> chunks containing it``, and update both from those chunks only.
3. The most frequent pair comes from a max-heap. Entries are not updated when a count drops;
   a popped entry whose count is out of date is pushed back with the current count ("lazy
   invalidation"). A pair's count can only grow in the merge that creates it, and only then is
   it pushed.

Ties go to the pair whose bytes sort first, so training is deterministic.
"""

from __future__ import annotations

import heapq
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise

import regex

from scratchgpt.progress import progress_bar
from scratchgpt.tokenizers.base import ENDOFTEXT
from scratchgpt.tokenizers.bpe import BPETokenizer
from scratchgpt.tokenizers.pretokenize import GPT2_SPLIT_PATTERN

Pair = tuple[int, int]


def train_bpe(
    texts: str | Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    *,
    pattern: str = GPT2_SPLIT_PATTERN,
    progress: bool = True,
) -> BPETokenizer:
    """Learn a BPE tokenizer with ``vocab_size`` ids from ``texts`` (one string or many).

    Ids 0..255 are the bytes, then the learned merges, then ``special_tokens`` (last ids).
    Special-token spellings inside ``texts`` act as separators and are never merged into
    ordinary tokens. If the texts run out of pairs to merge first, the vocabulary is smaller
    and a warning says so. ``progress`` shows a progress bar over the merges on stderr.
    """
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens has repeats: {list(special_tokens)}")
    minimum = 256 + len(special_tokens)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs the 256 byte tokens plus "
            f"{len(special_tokens)} special token(s), so vocab_size must be at least {minimum}"
        )
    chunk_counts = _count_chunks([texts] if isinstance(texts, str) else texts, pattern,
                                 special_tokens)
    if not chunk_counts:
        raise ValueError("no text to train on: the texts are empty (or only special tokens)")

    tokens = _learn_merges(chunk_counts, vocab_size - len(special_tokens), progress)
    if len(tokens) + len(special_tokens) < vocab_size:
        warnings.warn(
            f"the texts only support {len(tokens) - 256} merges: the vocabulary has "
            f"{len(tokens) + len(special_tokens)} ids, not vocab_size={vocab_size}; "
            "train on more text for a bigger vocabulary",
            stacklevel=2,
        )
    ranks = {token: rank for rank, token in enumerate(tokens)}
    specials = {s: len(tokens) + i for i, s in enumerate(special_tokens)}
    return BPETokenizer(ranks, specials, pattern=pattern)


def _count_chunks(texts: Iterable[str], pattern: str, special_tokens: Sequence[str]) -> Counter:
    """How often each pre-token chunk occurs, with special-token spellings cut out."""
    split = regex.compile(pattern)
    specials = (
        regex.compile("|".join(regex.escape(s) for s in special_tokens))
        if special_tokens else None
    )
    counts: Counter[str] = Counter()
    for text in texts:
        for part in specials.split(text) if specials else [text]:
            counts.update(split.findall(part))
    return counts


def _learn_merges(chunk_counts: Counter, n_tokens: int, progress: bool) -> list[bytes]:
    """Tokens in rank order: the 256 bytes, then merges until there are ``n_tokens``."""
    tokens = [bytes([b]) for b in range(256)]
    ids = {token: i for i, token in enumerate(tokens)}

    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # chunks as token ids
    freqs = list(chunk_counts.values())
    pair_counts: defaultdict[Pair, int] = defaultdict(int)
    where: defaultdict[Pair, set[int]] = defaultdict(set)  # pair -> words that (may) hold it
    for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] += freq
            where[pair].add(w)

    # Max-heap by count, then smallest bytes: entries (-count, bytes_a, bytes_b, pair).
    heap = [(-n, tokens[a], tokens[b], (a, b)) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)

    bar = progress_bar(total=n_tokens - 256, desc="BPE merges", unit="merge", file=sys.stderr,
                       disable=not progress)
    while len(tokens) < n_tokens and heap:
        neg_count, bytes_a, bytes_b, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:  # stale entry
            if 0 < count < -neg_count:
                heapq.heappush(heap, (-count, bytes_a, bytes_b, pair))
            continue

        merged = bytes_a + bytes_b
        new_id = ids.get(merged)  # the same bytes can be reached from two different pairs
        if new_id is None:
            new_id = ids[merged] = len(tokens)
            tokens.append(merged)
            bar.update()
        grown = _merge_pair(pair, new_id, words, freqs, pair_counts, where)
        for p in grown:
            heapq.heappush(heap, (-pair_counts[p], tokens[p[0]], tokens[p[1]], p))
    bar.close()
    return tokens


def _merge_pair(
    pair: Pair,
    new_id: int,
    words: list[list[int]],
    freqs: list[int],
    pair_counts: defaultdict[Pair, int],
    where: defaultdict[Pair, set[int]],
) -> set[Pair]:
    """Replace ``pair`` by ``new_id`` in every word holding it, updating the pair counts and
    index. Returns the pairs whose counts grew (those containing ``new_id``)."""
    a, b = pair
    grown: set[Pair] = set()
    for w in where.pop(pair):
        word = words[w]
        merged: list[int] = []
        i, n = 0, len(word)
        while i < n:
            if word[i] == a and i + 1 < n and word[i + 1] == b:
                merged.append(new_id)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        if len(merged) == n:  # the index was stale: an earlier merge removed the pair here
            continue
        freq = freqs[w]
        for old in pairwise(word):
            pair_counts[old] -= freq
        for new in pairwise(merged):
            pair_counts[new] += freq
            if new_id in new:  # pairs without new_id were in the word before, and indexed
                where[new].add(w)
                grown.add(new)
        words[w] = merged
    del pair_counts[pair]
    return grown
