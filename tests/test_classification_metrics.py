"""Classification metrics checked against scikit-learn (a test oracle only); the confusion plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from scratchgpt.evaluation import (
    binary_roc_auc,
    class_prevalence,
    classification_metrics,
    metrics_at_prevalence,
    threshold_predictions,
    write_errors,
)
from scratchgpt.plots import plot_confusion

SPAM = ["ham", "spam"]
NEWS = ["world", "sports", "business", "sci/tech"]


def assert_matches_sklearn(result: dict, true, predicted, labels, sample_weight=None) -> None:
    """Accuracy, per-class and macro precision/recall/F1 of ``result`` equal scikit-learn's."""
    kwargs = {"labels": labels, "zero_division": 0, "sample_weight": sample_weight}
    assert result["accuracy"] == pytest.approx(
        accuracy_score(true, predicted, sample_weight=sample_weight)
    )
    per_class = precision_recall_fscore_support(true, predicted, **kwargs)
    macro = precision_recall_fscore_support(true, predicted, average="macro", **kwargs)
    for k, name in enumerate(["precision", "recall", "f1"]):
        assert list(result[name]) == [*labels, "macro"]
        ours = [result[name][label] for label in labels]
        assert ours == pytest.approx(per_class[k].tolist(), abs=1e-12), name
        assert result[name]["macro"] == pytest.approx(macro[k], abs=1e-12), name


def check_all(true, predicted, labels, probabilities=None, positive=None) -> dict:
    result = classification_metrics(true, predicted, labels, probabilities, positive)
    assert_matches_sklearn(result, true, predicted, labels)
    support = precision_recall_fscore_support(true, predicted, labels=labels, zero_division=0)[3]
    assert result["support"] == dict(zip(labels, support.tolist(), strict=True))
    assert result["confusion"] == {
        "labels": labels,
        "matrix": sk_confusion_matrix(true, predicted, labels=labels).tolist(),
    }
    assert result["count"] == len(true)
    assert json.loads(json.dumps(result)) == result  # plain JSON, as eval.json
    return result


def random_case(seed: int, labels: list[str], n: int):
    """Labels drawn with uneven shares, predictions right about 70% of the time, and
    probabilities on a coarse grid so that many scores tie."""
    rng = np.random.default_rng(seed)
    k = len(labels)
    true_ids = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k)))
    wrong = rng.random(n) < 0.3
    predicted_ids = np.where(wrong, rng.integers(0, k, size=n), true_ids)
    probabilities = rng.dirichlet(np.ones(k), size=n).round(1)
    probabilities[:, -1] = 1 - probabilities[:, :-1].sum(axis=1)
    true = [labels[i] for i in true_ids]
    predicted = [labels[i] for i in predicted_ids]
    return true, predicted, probabilities


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("labels", [SPAM, ["a", "b", "c"], NEWS])
def test_random_predictions_match_sklearn(seed: int, labels: list[str]) -> None:
    true, predicted, probabilities = random_case(seed, labels, n=50 + 37 * seed)
    result = check_all(true, predicted, labels, probabilities)
    if len(labels) == 2 and len(set(true)) == 2:
        expected = roc_auc_score([t == "spam" for t in true], probabilities[:, 1])
        assert result["roc_auc"] == pytest.approx(expected, abs=1e-12)
    else:
        assert result["roc_auc"] is None


@pytest.mark.parametrize(
    ("true", "predicted"),
    [
        (["ham", "spam", "ham", "spam"], ["ham", "ham", "ham", "ham"]),  # spam never predicted
        (["ham", "ham", "ham"], ["ham", "spam", "ham"]),  # spam absent from the truth
        (["ham", "spam", "spam", "ham"], ["ham", "spam", "spam", "ham"]),  # perfect
        (["ham", "spam", "spam", "ham"], ["spam", "ham", "ham", "spam"]),  # all wrong
        (["ham", "ham"], ["ham", "ham"]),  # spam neither in the truth nor predicted
    ],
    ids=["never-predicted", "absent-from-true", "perfect", "all-wrong", "one-class-only"],
)
def test_edge_cases_match_sklearn(true: list[str], predicted: list[str]) -> None:
    result = check_all(true, predicted, SPAM)
    if predicted == true:
        assert result["accuracy"] == result["f1"]["spam" if "spam" in true else "ham"] == 1.0
    if all(t != p for t, p in zip(true, predicted, strict=True)):
        assert result["accuracy"] == 0.0 and result["f1"]["macro"] == 0.0


def test_many_classes_with_one_never_predicted_and_one_never_true() -> None:
    true = ["world", "sports", "sports", "business", "world", "world"]
    predicted = ["world", "sports", "world", "world", "sci/tech", "world"]
    result = check_all(true, predicted, NEWS)
    assert result["support"]["sci/tech"] == 0 and result["precision"]["business"] == 0.0
    assert result["precision"]["world"] == pytest.approx(2 / 4)  # columns are predictions
    assert result["recall"]["world"] == pytest.approx(2 / 3)  # rows are the truth


def test_roc_auc_is_the_mann_whitney_statistic_with_ties_counted_half() -> None:
    is_positive = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.4, 0.1])
    # pairs (positive, negative) by hand: 0.4 beats 0.1, ties 0.4 twice; 0.8 beats all three;
    # 0.1 ties 0.1 and loses to 0.4 twice -> (1 + 0.5 + 0.5) + 3 + 0.5 = 5.5 of 9
    assert binary_roc_auc(is_positive, scores) == pytest.approx(5.5 / 9)
    assert binary_roc_auc(is_positive, scores) == pytest.approx(roc_auc_score(is_positive, scores))
    assert binary_roc_auc(is_positive, np.full(6, 0.3)) == 0.5  # all tied: no better than chance
    assert binary_roc_auc(is_positive, is_positive.astype(float)) == 1.0
    assert binary_roc_auc(is_positive, 1.0 - is_positive) == 0.0
    assert binary_roc_auc(np.ones(3, dtype=bool), np.arange(3.0)) is None  # no negatives


def test_roc_auc_of_a_chosen_positive_class() -> None:
    true, predicted, probabilities = random_case(3, SPAM, n=80)
    result = classification_metrics(true, predicted, SPAM, probabilities, positive="ham")
    expected = roc_auc_score([t == "ham" for t in true], probabilities[:, 0])
    assert result["roc_auc"] == pytest.approx(expected, abs=1e-12)
    default = classification_metrics(true, predicted, SPAM, probabilities)["roc_auc"]
    assert default == pytest.approx(roc_auc_score([t == "spam" for t in true], probabilities[:, 1]))


def test_roc_auc_is_none_without_probabilities_or_without_both_classes() -> None:
    assert classification_metrics(["ham", "spam"], ["ham", "ham"], SPAM)["roc_auc"] is None
    one_class = classification_metrics(["ham"] * 3, ["ham"] * 3, SPAM, np.full((3, 2), 0.5))
    assert one_class["roc_auc"] is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: classification_metrics(["ham", "eggs"], ["ham", "ham"], SPAM), "eggs"),
        (lambda: classification_metrics(["ham"], ["ham", "spam"], SPAM), "1 true labels"),
        (lambda: classification_metrics([], [], SPAM), "no examples"),
        (lambda: classification_metrics(["ham"], ["ham"], ["ham"]), "two or more"),
        (lambda: classification_metrics(["a"], ["a"], ["a", "macro"]), "'macro' cannot"),
        (lambda: classification_metrics(["ham"], ["ham"], SPAM, np.ones((1, 3))), "shape"),
        (lambda: classification_metrics(["ham"], ["ham"], SPAM, np.ones((1, 2)), "x"), "'x'"),
    ],
)
def test_bad_input_is_refused_with_a_reason(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("labels", [SPAM, NEWS])
def test_metrics_at_prevalence_match_sklearn_with_sample_weights(labels: list[str]) -> None:
    """A balanced set, reweighted so each class carries its share of the natural mix: each of
    the n_c texts of class c weighs share_c / n_c, as if the set were resampled to that mix."""
    rng = np.random.default_rng(7)
    true = [label for label in labels for _ in range(40)]
    predicted = [label if rng.random() < 0.8 else str(rng.choice(labels)) for label in true]
    balanced = classification_metrics(true, predicted, labels)
    shares = rng.dirichlet(np.ones(len(labels)))
    prevalence = dict(zip(labels, shares.tolist(), strict=True))
    result = metrics_at_prevalence(balanced["confusion"]["matrix"], labels, prevalence)
    counts = balanced["support"]
    weights = np.array([prevalence[t] / counts[t] for t in true])
    assert_matches_sklearn(result, true, predicted, labels, sample_weight=weights)
    assert result["recall"] == pytest.approx(balanced["recall"])  # recall ignores the mix
    assert result["prevalence"] == pytest.approx(prevalence)


def test_spam_precision_falls_at_the_natural_mix() -> None:
    # Balanced: 98 of 100 ham kept, 95 of 100 spam caught; 2 ham flagged of 97 flagged.
    confusion = [[98, 2], [5, 95]]
    natural = metrics_at_prevalence(confusion, SPAM, {"ham": 0.87, "spam": 0.13})
    # At 13% spam: flagged spam 0.13 * 0.95, flagged ham 0.87 * 0.02.
    assert natural["precision"]["spam"] == pytest.approx(0.1235 / (0.1235 + 0.0174))
    assert natural["precision"]["spam"] < 95 / 97
    assert natural["recall"]["spam"] == pytest.approx(0.95)
    assert natural["accuracy"] == pytest.approx(0.87 * 0.98 + 0.13 * 0.95)


def test_metrics_at_the_sets_own_mix_are_the_plain_metrics() -> None:
    true, predicted, _ = random_case(5, NEWS, n=200)
    plain = classification_metrics(true, predicted, NEWS)
    own = metrics_at_prevalence(plain["confusion"]["matrix"], NEWS, class_prevalence(true, NEWS))
    for name in ["accuracy", "precision", "recall", "f1"]:
        assert own[name] == pytest.approx(plain[name])


@pytest.mark.parametrize(
    ("prevalence", "message"),
    [
        ({"ham": 0.9}, "expected"),
        ({"ham": 0.9, "spam": 0.2}, "summing to 1"),
        ({"ham": 1.5, "spam": -0.5}, "non-negative"),
        ({"ham": 0.5, "spam": 0.5}, "no evaluated examples of \\['spam'\\]"),
    ],
)
def test_metrics_at_prevalence_refuses_what_it_cannot_know(prevalence, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics_at_prevalence([[10, 0], [0, 0]], SPAM, prevalence)


def test_class_prevalence_counts_shares() -> None:
    assert class_prevalence(["ham", "spam", "ham", "ham"], SPAM) == {"ham": 0.75, "spam": 0.25}


def test_threshold_flags_the_positive_class_at_or_above_it() -> None:
    spam = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
    probabilities = np.stack([1 - spam, spam], axis=1)
    assert threshold_predictions(probabilities, SPAM, 0.5) == ["ham", "ham", "spam", "spam", "spam"]
    assert threshold_predictions(probabilities, SPAM, 0.0) == ["spam"] * 5
    assert threshold_predictions(probabilities, SPAM, 1.0) == ["ham"] * 4 + ["spam"]
    as_ham = threshold_predictions(probabilities, SPAM, 0.6, positive="ham")  # ham p >= 0.6
    assert as_ham == ["ham", "ham", "spam", "spam", "spam"]


def test_a_higher_threshold_trades_spam_recall_for_precision() -> None:
    true, _, probabilities = random_case(11, SPAM, n=400)
    spam = np.array([t == "spam" for t in true])
    probabilities[:, 1] = np.clip(probabilities[:, 1] + 0.3 * spam - 0.15, 0, 1)  # informative
    probabilities[:, 0] = 1 - probabilities[:, 1]
    results = [
        classification_metrics(true, threshold_predictions(probabilities, SPAM, t), SPAM)
        for t in (0.2, 0.5, 0.8)
    ]
    recalls = [r["recall"]["spam"] for r in results]
    precisions = [r["precision"]["spam"] for r in results]
    assert recalls == sorted(recalls, reverse=True) and recalls[0] > recalls[-1]
    assert precisions == sorted(precisions) and precisions[0] < precisions[-1]


@pytest.mark.parametrize(
    ("labels", "threshold", "message"),
    [(NEWS, 0.5, "two classes"), (SPAM, 1.5, "between 0 and 1"), (SPAM, -0.1, "between 0 and 1")],
)
def test_threshold_bad_input(labels: list[str], threshold: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        threshold_predictions(np.full((2, len(labels)), 0.5), labels, threshold)


def test_write_errors_round_trip(tmp_path: Path) -> None:
    texts = ["Win a prize now!", "see you at 6", "Ça va? 👋\nsecond line", "FREE entry"]
    true = ["spam", "ham", "ham", "spam"]
    predicted = ["spam", "spam", "spam", "ham"]
    probabilities = np.array([[0.1, 0.9], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    path = tmp_path / "errors.jsonl"
    assert write_errors(path, texts, true, predicted, probabilities, SPAM) == 3
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"index": i, "text": texts[i], "label": true[i], "predicted": predicted[i],
         "probabilities": {"ham": probabilities[i, 0], "spam": probabilities[i, 1]}}
        for i in (1, 2, 3)
    ]
    assert "Ça va? 👋" in lines[1]  # readable as written, not escaped
    assert write_errors(path, texts[:1], true[:1], predicted[:1], None, SPAM) == 0
    assert path.read_text(encoding="utf-8") == ""
    write_errors(path, texts, true, predicted, None, SPAM)
    assert "probabilities" not in json.loads(path.read_text(encoding="utf-8").splitlines()[0])


@pytest.mark.parametrize(
    ("matrix", "labels"),
    [
        ([[960, 6], [9, 140]], SPAM),
        ([[5, 1, 0, 0], [2, 7, 1, 0], [0, 0, 0, 0], [1, 0, 0, 3]], NEWS),  # a class never seen
    ],
)
def test_plot_confusion_writes_a_png(tmp_path: Path, matrix, labels: list[str]) -> None:
    path = tmp_path / "confusion.png"
    plot_confusion(matrix, labels, path, title="test split")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image.shape[2] in (3, 4) and image.std() > 0  # drawn, not blank
