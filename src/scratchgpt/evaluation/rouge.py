"""How close is a generated response to the reference one? ROUGE-L and exact match, from scratch.

An instruction-tuned model answers in free text, so "right or wrong" is too blunt. ROUGE-L
(Lin, 2004, "ROUGE: A Package for Automatic Evaluation of Summaries") compares the two texts
as sequences of words and asks for the *longest common subsequence* (LCS): the most words
that appear in both, in the same order, though not necessarily next to each other::

    reference:  the cat sat on the mat         LCS = "the cat on the mat", 5 words
    prediction: the cat lay on the mat

- precision = LCS / words in the prediction (how much of what was said is in the reference),
- recall = LCS / words in the reference (how much of the reference was said),
- F1 = their harmonic mean.

Word order matters (unlike a bag of words) but gaps do not (unlike n-grams). Words are
:func:`rouge_tokens`, exactly as Google's ``rouge-score`` package splits them by default, so
the numbers here equal that package's ``rougeL`` (``tests/test_rouge.py`` checks it).

:func:`exact_match` is the blunt measure beside it: is the response the reference, give or
take whitespace and case?
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class RougeScore:
    """Precision, recall and F1 of one prediction against one reference, each in [0, 1]."""

    precision: float
    recall: float
    f1: float


def rouge_tokens(text: str) -> list[str]:
    """The words ROUGE compares: ``text`` lowercased (``str.lower``), then every run of ASCII
    letters and digits is a word and everything else separates words. ``"Don't panic!"`` gives
    ``["don", "t", "panic"]``; ``"café"`` gives ``["caf"]``. No stemming: ``"cats"`` is not
    ``"cat"``. This is ``rouge-score``'s default tokenizer (``use_stemmer=False``)."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``, by dynamic programming.

    ``row[j]`` holds the LCS of the first ``i`` items of ``a`` and the first ``j`` of ``b``.
    Going from ``i - 1`` to ``i``: if ``a[i-1] == b[j-1]`` the pair extends the LCS of both
    prefixes shortened by one (``diagonal + 1``); otherwise drop the last item of one side or
    the other, whichever leaves more. One row at a time: O(len(a) * len(b)) time,
    O(len(b)) memory.
    """
    row = [0] * (len(b) + 1)
    for item in a:
        diagonal = 0  # the previous row's value at j - 1
        for j, other in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if item == other else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(reference: str, prediction: str) -> RougeScore:
    """ROUGE-L of ``prediction`` against ``reference`` (the order matters: precision divides
    by the prediction's words, recall by the reference's). All zero when either text has no
    words. Equals ``RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"]``, whose
    first argument is the target."""
    ref, pred = rouge_tokens(reference), rouge_tokens(prediction)
    if not ref or not pred:
        return RougeScore(0.0, 0.0, 0.0)
    common = lcs_length(ref, pred)
    precision, recall = common / len(pred), common / len(ref)
    f1 = 2 * precision * recall / (precision + recall) if common else 0.0
    return RougeScore(precision, recall, f1)


def exact_match(reference: str, prediction: str) -> bool:
    """Is ``prediction`` the ``reference``, ignoring case and whitespace layout?

    Both are normalised the same way: every run of whitespace (what ``str.split()`` splits on,
    newlines included) becomes one space, leading and trailing whitespace goes, and the text is
    lowercased (``str.lower``). Then they must be equal, character for character: punctuation
    and articles count (``"Paris."`` is not ``"Paris"``).

    Why ignore case: SQuAD's script lowercases, and lm-evaluation-harness's ``exact_match``,
    case-sensitive by default, is told ``ignore_case: true`` by its question-answering tasks
    (gsm8k, triviaqa, nq_open). SQuAD also drops punctuation and "a", "an", "the"; we keep
    them, as the harness does by default: a response that differs only in those is not an
    *exact* match, and ROUGE-L gives it its partial credit.
    """
    return _normalise(reference) == _normalise(prediction)


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def response_scores(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Mean ROUGE-L F1 and exact-match rate over ``(reference, prediction)`` pairs::

        {"rouge_l_f1": 0.41, "exact_match": 0.05, "count": 110}

    Raises ``ValueError`` when there are no pairs.
    """
    count, rouge_sum, matches = 0, 0.0, 0
    for reference, prediction in pairs:
        count += 1
        rouge_sum += rouge_l(reference, prediction).f1
        matches += exact_match(reference, prediction)
    if count == 0:
        raise ValueError("no (reference, prediction) pairs to score")
    return {"rouge_l_f1": rouge_sum / count, "exact_match": matches / count, "count": count}
