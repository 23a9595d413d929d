"""ROUGE-L checked against Google's rouge-score package (a test oracle only); exact match and
the averaged response scores."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from rouge_score.tokenize import tokenize as oracle_tokenize

from scratchgpt.evaluation.rouge import (
    RougeScore,
    exact_match,
    lcs_length,
    response_scores,
    rouge_l,
    rouge_tokens,
)

SCORER = rouge_scorer.RougeScorer(["rougeL"])  # default tokenizer, no stemming

# Few words, so that random texts share many; cased, accented and glued-on variants of them.
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "42", "x1",
         "The", "CAT", "Mat", "café", "naïve", "don't", "e-mail", "ß", "İt", "日本"]
SEPARATORS = [" ", "  ", "\n", "\t", ", ", ". ", "!", "-", "'", "/", " — ", "\u00a0", ""]


def assert_matches_oracle(reference: str, prediction: str) -> None:
    expected = SCORER.score(reference, prediction)["rougeL"]  # score(target, prediction)
    got = rouge_l(reference, prediction)
    assert got.precision == pytest.approx(expected.precision, abs=1e-12, rel=0)
    assert got.recall == pytest.approx(expected.recall, abs=1e-12, rel=0)
    assert got.f1 == pytest.approx(expected.fmeasure, abs=1e-12, rel=0)


def random_text(rng: random.Random, max_words: int = 12) -> str:
    parts = []
    for _ in range(rng.randint(0, max_words)):
        parts += [rng.choice(WORDS), rng.choice(SEPARATORS)]
    return "".join(parts)


# -- tokens ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", []),
        ("   \n\t ", []),
        ("The cat sat.", ["the", "cat", "sat"]),
        ("Don't panic!", ["don", "t", "panic"]),
        ("e-mail x1 42", ["e", "mail", "x1", "42"]),
        ("café naïve", ["caf", "na", "ve"]),  # only ASCII letters and digits make words
        ("日本 ß !!!", []),
        ("cats", ["cats"]),  # no stemming
    ],
)
def test_rouge_tokens(text: str, tokens: list[str]) -> None:
    assert rouge_tokens(text) == tokens
    assert oracle_tokenize(text, None) == tokens


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_rouge_tokens_split_any_text_as_rouge_score_does(text: str) -> None:
    assert rouge_tokens(text) == oracle_tokenize(text, None)


# -- ROUGE-L -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "length"),
    [([], [], 0), (["a"], [], 0), (list("abcbdab"), list("bdcaba"), 4),
     (list("abc"), list("abc"), 3), (list("abc"), list("cba"), 1)],
)
def test_lcs_length(a: list[str], b: list[str], length: int) -> None:
    assert lcs_length(a, b) == lcs_length(b, a) == length


def test_rouge_l_by_hand() -> None:
    # LCS "the cat on the mat": 5 of the reference's 6 words and of the prediction's 6.
    score = rouge_l("the cat sat on the mat", "the cat lay on the mat")
    assert score == RougeScore(5 / 6, 5 / 6, pytest.approx(5 / 6))
    # The order of the arguments: precision is over the prediction, recall the reference.
    score = rouge_l("the cat sat", "the cat sat on the mat")
    assert (score.precision, score.recall) == (0.5, 1.0)
    assert score.f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("reference", "prediction"),
    [
        ("", ""),
        ("", "something"),
        ("something", ""),
        ("!!! ...", "the cat"),  # a reference without words
        ("the cat sat on the mat", "a dog ran"),  # no overlap
        ("the cat sat on the mat", "the cat sat on the mat"),
        ("The Cat SAT.", "the cat sat"),  # case and punctuation do not count
        ("the cat sat on the mat", "mat the on sat cat the"),  # order does
        ("the the the", "the"),
        ("Don't stop", "don t stop!"),
        ("café au lait", "caf au lait"),  # unicode letters split words
        ("naïve résumé", "na ve r sum"),
        ("日本語のテキスト", "日本語"),  # no ASCII words at all
        ("İstanbul is big", "istanbul is big"),  # "İ".lower() is "i" plus a combining dot
        ("line one\nline two", "line two\tline one"),
    ],
)
def test_rouge_l_matches_rouge_score(reference: str, prediction: str) -> None:
    assert_matches_oracle(reference, prediction)


def test_rouge_l_matches_rouge_score_on_random_texts() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        assert_matches_oracle(random_text(rng), random_text(rng))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=15),
    st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=15),
)
def test_rouge_l_matches_rouge_score_hypothesis(
    reference: list[tuple[str, str]], prediction: list[tuple[str, str]]
) -> None:
    assert_matches_oracle("".join(map("".join, reference)), "".join(map("".join, prediction)))


# -- exact match -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reference", "prediction", "equal"),
    [
        ("Paris", "Paris", True),
        ("Paris", "  Paris\n", True),  # stripped
        ("New  York\tCity", "New York City", True),  # whitespace runs collapse
        ("Paris", "paris", True),  # case ignored
        ("Paris", "Paris.", False),  # punctuation counts
        ("New York", "NewYork", False),  # whitespace between words counts
        ("the answer", "answer", False),  # articles count
        ("", "   ", True),
        ("", "x", False),
    ],
)
def test_exact_match(reference: str, prediction: str, equal: bool) -> None:
    assert exact_match(reference, prediction) is equal
    assert exact_match(prediction, reference) is equal


# -- over a set of responses -------------------------------------------------------------
def test_response_scores_averages_over_the_pairs() -> None:
    pairs = [("the cat sat", "the cat sat"), ("the cat sat", "the cat"), ("a", "b")]
    scores = response_scores(iter(pairs))  # any iterable, read once
    assert scores["count"] == 3
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["rouge_l_f1"] == pytest.approx((1 + 0.8 + 0) / 3)


def test_response_scores_needs_pairs() -> None:
    with pytest.raises(ValueError, match="no"):
        response_scores([])
