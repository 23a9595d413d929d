"""An n-gram language model over token ids, with interpolated Kneser-Ney smoothing: the
baseline a transformer's perplexity should beat.

An n-gram model predicts a token from the ``n - 1`` tokens before it (its *history*) by
counting, in the training text, what followed that history. Counts alone give probability 0 to
anything never seen after it, and one such token makes a text's perplexity infinite, so the
counts are *smoothed*. Interpolated Kneser-Ney (Chen & Goodman, 1998) is the classic recipe:

1. **Absolute discounting.** Take ``D`` (0.75) off every seen count and give the freed mass to
   a lower-order model (the history shortened by its first token)::

       P(w | h) = max(c(h w) - D, 0) / c(h)  +  D * N1+(h .) / c(h) * P_lower(w | h[1:])

   where ``c(h) = sum_w c(h w)`` and ``N1+(h .)`` is the number of *distinct* tokens seen after
   ``h`` (each lost ``D``). A history never seen falls back to ``P_lower`` entirely.
2. **Continuation counts.** The lower orders count not how often a k-gram occurs but after how
   many distinct tokens it occurs, ``N1+(. g)``. A token frequent only inside one phrase
   ("Francisco" after "San") is then unlikely in a new context, which is what a lower order is
   consulted for.
3. **A uniform floor.** The unigram level interpolates, the same way, with ``1 / vocab_size``,
   so a token absent from training still gets a probability above 0.

Every level is a distribution over the vocabulary (the discounted counts and the freed mass add
up to ``c(h)``), so the whole is one. The first tokens of a text have a shorter history and are
predicted by the level that fits it. As with the transformers' perplexity, the text's first
token is not scored: perplexity is over ``ids[1:]``.

The counts are numpy arrays: an n-gram of token ids is one integer (``((a * V) + b) * V + c``
for a trigram, ``V`` the vocabulary size), the table of counts is the sorted unique such
integers (``np.unique``) and looking one up is a binary search (``np.searchsorted``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DISCOUNT = 0.75
INT64_MAX = np.iinfo(np.int64).max


class _Table:
    """Counts of the k-grams of one level, and per history (the k-gram less its last token)
    their sum and how many distinct k-grams it begins."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int) -> None:
        self.keys, self.counts = keys, counts  # sorted unique k-gram codes, their counts
        histories = keys // vocab_size  # sorted too: keys are
        self.histories, first, self.types = np.unique(histories, return_index=True,
                                                      return_counts=True)
        self.totals = np.add.reduceat(counts, first) if len(counts) else counts

    @staticmethod
    def lookup(table: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """``values[i]`` where ``table[i] == key``, 0 where the key is absent."""
        if len(table) == 0:
            return np.zeros(len(keys), dtype=np.float64)
        at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return np.where(table[at] == keys, values[at], 0).astype(np.float64)

    def count(self, grams: np.ndarray) -> np.ndarray:
        return self.lookup(self.keys, self.counts, grams)

    def history(self, histories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``c(h)`` and ``N1+(h .)`` for each history code."""
        return (self.lookup(self.histories, self.totals, histories),
                self.lookup(self.histories, self.types, histories))


class KneserNeyLM:
    """An interpolated Kneser-Ney n-gram model (``order`` 2: bigram, 3: trigram) over token
    ids ``0 .. vocab_size - 1``.

    >>> lm = KneserNeyLM(vocab_size=3, order=2).fit([0, 1, 2] * 10)
    >>> round(float(lm.next_token_probs([0]).sum()), 6)
    1.0
    """

    def __init__(self, vocab_size: int, order: int = 3, discount: float = DISCOUNT) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1 (1: unigram, 2: bigram, 3: trigram), "
                             f"got {order}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
        if vocab_size**order > INT64_MAX:
            raise ValueError(f"a vocabulary of {vocab_size} is too large for order {order}: "
                             "an n-gram's code would not fit in 64 bits")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.vocab_size, self.order, self.discount = vocab_size, order, discount
        self.tables: list[_Table] = []  # tables[k - 1]: the k-grams
        self.train_tokens = 0

    # -- training -------------------------------------------------------------------------------
    def fit(self, train_ids: Sequence[int] | np.ndarray) -> KneserNeyLM:
        """Count the n-grams of the token ids ``train_ids`` (one sequence); returns self."""
        ids = self._check_ids(train_ids, "training ids")
        if len(ids) < self.order + 1:
            raise ValueError(f"training ids: {len(ids)} tokens are too few for an order-"
                             f"{self.order} model; need at least {self.order + 1}")
        V = self.vocab_size
        self.tables = []
        for k in range(1, self.order + 1):
            if k == self.order:  # the top level: how often each n-gram occurs
                keys, counts = np.unique(self._codes(ids, k), return_counts=True)
            else:  # lower levels: after how many distinct tokens each k-gram occurs
                longer = np.unique(self._codes(ids, k + 1))  # distinct (k+1)-grams
                keys, counts = np.unique(longer % V**k, return_counts=True)  # drop the first
            self.tables.append(_Table(keys, counts.astype(np.int64), V))
        self.train_tokens = len(ids)
        return self

    @staticmethod
    def _codes_of(windows: np.ndarray, vocab_size: int) -> np.ndarray:
        """One int64 per row of token ids: the row read as a number in base ``vocab_size``."""
        codes = np.zeros(len(windows), dtype=np.int64)
        for column in range(windows.shape[1]):
            codes = codes * vocab_size + windows[:, column]
        return codes

    def _codes(self, ids: np.ndarray, k: int) -> np.ndarray:
        """The code of every k-gram of ``ids``, in order."""
        windows = np.lib.stride_tricks.sliding_window_view(ids, k)
        return self._codes_of(windows, self.vocab_size)

    # -- probabilities --------------------------------------------------------------------------
    def _probs(self, histories: np.ndarray, lengths: np.ndarray,
               tokens: np.ndarray) -> np.ndarray:
        """``P(tokens[i] | histories[i, -lengths[i]:])`` for each i. ``histories`` holds the
        ``order - 1`` tokens before each token, right-aligned (columns left of its length are
        ignored)."""
        self._check_fitted()
        V, D = self.vocab_size, self.discount
        p = np.full(len(tokens), 1.0 / V)  # level 0: uniform
        for k, table in enumerate(self.tables, start=1):
            # the k-gram: the last k - 1 tokens of the history, then the token
            context = histories[:, histories.shape[1] - (k - 1):] if k > 1 else histories[:, :0]
            h = self._codes_of(context, V)
            grams = h * V + tokens
            count = table.count(grams)
            total, types = table.history(h)
            seen = total > 0
            level = np.where(seen, (np.maximum(count - D, 0.0) + D * types * p)
                             / np.where(seen, total, 1.0), p)
            p = np.where(lengths >= k - 1, level, p)  # too short a history: keep the lower
        return p

    def next_token_probs(self, history: Sequence[int]) -> np.ndarray:
        """The distribution of the token after ``history`` (its last ``order - 1`` tokens
        count), over the whole vocabulary: ``vocab_size`` probabilities that sum to 1."""
        V, width = self.vocab_size, self.order - 1
        history = self._check_ids(history, "history")
        history = history[len(history) - min(len(history), width):]  # the last `width` tokens
        padded = np.zeros(width, dtype=np.int64)
        padded[width - len(history):] = history
        tokens = np.arange(V, dtype=np.int64)
        return self._probs(np.tile(padded, (V, 1)), np.full(V, len(history)), tokens)

    def log_probs(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Natural log of ``P(ids[i] | ids[:i])`` for i = 1 .. len(ids) - 1."""
        ids = self._check_ids(ids, "ids")
        if len(ids) < 2:
            raise ValueError(f"ids: {len(ids)} token(s); at least 2 are needed (the first is "
                             "only context)")
        width = self.order - 1
        padded = np.concatenate([np.zeros(width, dtype=np.int64), ids])
        # row i: the width tokens before ids[i] (zeros, ignored, before the text's start)
        histories = np.lib.stride_tricks.sliding_window_view(padded, width)[1:len(ids)] \
            if width else np.zeros((len(ids) - 1, 0), dtype=np.int64)
        lengths = np.minimum(np.arange(1, len(ids)), width)
        return np.log(self._probs(histories, lengths, ids[1:]))

    def perplexity(self, ids: Sequence[int] | np.ndarray) -> float:
        """``exp`` of the mean negative log-probability of ``ids[1:]``."""
        return math.exp(-float(self.log_probs(ids).mean()))

    # -- checks ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.tables:
            raise ValueError("the model has not been fitted: call fit(train_ids) first")

    def _check_ids(self, ids: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
        array = np.asarray(ids, dtype=np.int64)
        if array.ndim != 1:
            raise ValueError(f"{what}: expected a 1-D sequence of token ids, got shape "
                             f"{array.shape}")
        if len(array) and (array.min() < 0 or array.max() >= self.vocab_size):
            bad = int(array.min() if array.min() < 0 else array.max())
            raise ValueError(f"{what}: token id {bad} is outside the vocabulary "
                             f"0..{self.vocab_size - 1}")
        return array
