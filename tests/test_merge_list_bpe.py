"""The merge-ranked BPE cuts a long piece only where no merge can join the two sides."""

from __future__ import annotations

import random

from scratchgpt.tokenizers.merge_list_bpe import MergeListBPE, merge_symbols

# "e▁" runs on into the next word (as in a vocabulary trained over whole texts); the others
# start a word with "▁", as SentencePiece's do. "▁▁" joins two spaces.
MERGES = [("▁", "c"), ("a", "t"), ("▁c", "at"), ("t", "h"), ("th", "e"), ("e", "▁"),
          ("▁", "th"), ("▁th", "e"), ("▁", "▁"), ("e▁", "c"), ("h", "e")]


def _bpe() -> MergeListBPE:
    vocab = {char: i for i, char in enumerate("▁acehtx")}
    for left, right in MERGES:
        vocab.setdefault(left + right, len(vocab))
    return MergeListBPE(vocab, MERGES)


def test_cuts_only_where_no_merge_joins_the_sides() -> None:
    bpe = _bpe()
    assert bpe.segments("the▁cat▁▁the▁cat") == ["the▁cat", "▁▁the▁cat"]
    # not before a "▁" after "e" ("e▁" is a merge) or after "▁" ("▁▁"); anywhere else no merge
    # joins ("x" never merges); never next to a character outside the vocabulary ("é")
    assert bpe.segments("xat▁éat▁x") == ["x", "at", "▁éat", "▁", "x"]


def test_merging_segments_gives_the_whole_piece_s_ids() -> None:
    """A long piece (merged segment by segment, through the cache) against the same piece
    merged whole by Hugging Face's algorithm, on random strings of the alphabet."""
    bpe, rng = _bpe(), random.Random(0)
    for _ in range(200):
        text = "".join(rng.choices("▁▁▁acehtxé", k=rng.randint(300, 600)))
        whole = merge_symbols(bpe._symbols(text), bpe.merges, bpe.made)
        assert len(bpe.segments(text)) > 1
        assert bpe.tokenize(text) == whole
