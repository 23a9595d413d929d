"""How good is a classifier? Metrics computed from scratch with numpy.

Everything starts from the confusion matrix ``C``: ``C[i, j]`` counts texts whose true label is
``labels[i]`` and whose predicted label is ``labels[j]``. For one class:

- precision = right among those *predicted* as the class (its column),
- recall = right among those that *are* the class (its row),
- F1 = the harmonic mean of the two, high only when both are.

"macro" averages a metric over the classes with equal weight, so a rare class counts as much
as a common one. ROC-AUC (two classes) asks how well the probabilities *rank*: the chance that
a random positive text scores above a random negative one.

A test split balanced 50/50 is not what a spam filter meets (about 13% spam). Recall is a
property of each true class alone, so it survives a change of mix; precision does not:
:func:`metrics_at_prevalence` reads a confusion matrix at another class mix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MACRO = "macro"


def confusion_matrix(
    true: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Counts ``[len(labels), len(labels)]``: rows are the true label, columns the predicted."""
    _check_labels(labels)
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for name, values in (("true", true), ("predicted", predicted)):
        unknown = sorted(set(values) - set(index))
        if unknown:
            raise ValueError(f"{name} label(s) {unknown} not among the labels {list(labels)}")
    for t, p in zip(true, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    return matrix


def classification_metrics(
    true: Sequence[str],
    predicted: Sequence[str],
    labels: Sequence[str],
    probabilities: np.ndarray | None = None,
    positive: str | None = None,
) -> dict[str, Any]:
    """Accuracy; precision, recall, F1 per class and macro; support; the confusion matrix; and
    ROC-AUC of the ``positive`` class (default: the second label) when there are two classes
    and ``probabilities`` ``[N, 2]`` (columns in the order of ``labels``) are given.

    The result is plain JSON (the shape of ``RUN/eval.json``)::

        {"accuracy": 0.97, "count": 1115,
         "precision": {"ham": 0.98, "spam": 0.95, "macro": 0.965}, "recall": {...}, "f1": {...},
         "support": {"ham": 966, "spam": 149},
         "confusion": {"labels": ["ham", "spam"], "matrix": [[960, 6], [9, 140]]},
         "roc_auc": 0.99}   # None for more than two classes, no probabilities, or one class

    A ratio whose denominator is zero (a class never predicted, or absent) is 0.0.
    """
    if len(true) == 0:
        raise ValueError("no examples to evaluate")
    matrix = confusion_matrix(true, predicted, labels)
    scores = _scores_from_confusion(matrix.astype(np.float64), labels)
    roc_auc = None
    if probabilities is not None:
        probabilities = _check_probabilities(probabilities, len(true), labels)
        if len(labels) == 2:
            positive = _positive_label(labels, positive)
            is_positive = np.array([t == positive for t in true])
            roc_auc = binary_roc_auc(is_positive, probabilities[:, labels.index(positive)])
    return {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        **scores,
        "support": {label: int(n) for label, n in zip(labels, matrix.sum(axis=1), strict=True)},
        "confusion": {"labels": list(labels), "matrix": matrix.tolist()},
        "roc_auc": roc_auc,
        "count": int(matrix.sum()),
    }


def binary_roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve, as the Mann-Whitney statistic: rank all scores together (tied
    scores share their average rank); the positives' rank sum, less the smallest it could be,
    counts the (positive, negative) pairs ranked the right way, a tie counting one half.
    None when either class is missing (no pairs to rank)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_positive = int(is_positive.sum())
    n_negative = len(is_positive) - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    pairs_won = ranks[is_positive].sum() - n_positive * (n_positive + 1) / 2
    return float(pairs_won / (n_positive * n_negative))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; equal values all get the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    in_order = values[order]
    starts = np.flatnonzero(np.r_[True, in_order[1:] != in_order[:-1]])  # first of each tie run
    ends = np.r_[starts[1:], len(values)]  # one past its last
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)  # mean of starts+1..ends
    return ranks


def metrics_at_prevalence(
    confusion: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[str],
    prevalence: Mapping[str, float],
) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 expected if the classes came in the mix ``prevalence``
    (label -> share, summing to 1) instead of the mix of the evaluated set.

    Each row of the confusion matrix, divided by its total, is how the classifier treats that
    true class: row ``i`` says "a text of class i is predicted j this often". Those rows do not
    depend on how many texts of each class there were. Weight them by the new shares and the
    columns, hence precision, change; recall (the diagonal of the rows) does not.
    Use it to read an evaluation on a balanced test split at the natural mix (13% spam)."""
    matrix = np.asarray(confusion, dtype=np.float64)
    _check_labels(labels)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {len(labels)} labels")
    if set(prevalence) != set(labels):
        raise ValueError(f"prevalence has labels {sorted(prevalence)}, expected {sorted(labels)}")
    shares = np.array([prevalence[label] for label in labels], dtype=np.float64)
    if (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"prevalence must be non-negative shares summing to 1, got {prevalence}")
    totals = matrix.sum(axis=1)
    unseen = [label for label, n, s in zip(labels, totals, shares, strict=True) if n == 0 and s > 0]
    if unseen:
        raise ValueError(f"no evaluated examples of {unseen}: their treatment is unknown")
    rows = np.divide(matrix, totals[:, None], out=np.zeros_like(matrix), where=totals[:, None] > 0)
    expected = shares[:, None] * rows  # the confusion matrix, as shares of all texts
    return {
        "accuracy": float(np.trace(expected)),
        **_scores_from_confusion(expected, labels),
        "prevalence": {label: float(s) for label, s in zip(labels, shares, strict=True)},
    }


def class_prevalence(true: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """The share of each label in ``true``: the natural mix, counted before any balancing."""
    counts = confusion_matrix(true, true, labels).sum(axis=1)  # checks the labels, too
    return {label: float(n / counts.sum()) for label, n in zip(labels, counts, strict=True)}


def _scores_from_confusion(matrix: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Precision, recall and F1 per class and macro, from a confusion matrix of counts (or of
    shares: only ratios are taken)."""
    right = np.diag(matrix)
    precision = _ratio(right, matrix.sum(axis=0))  # columns: what was predicted as the class
    recall = _ratio(right, matrix.sum(axis=1))  # rows: what truly is the class
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {
        name: {
            **{label: float(v) for label, v in zip(labels, values, strict=True)},
            MACRO: float(values.mean()),
        }
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1))
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0.0 where the denominator is 0."""
    zeros = np.zeros_like(numerator, dtype=np.float64)
    return np.divide(numerator, denominator, out=zeros, where=denominator > 0)


def threshold_predictions(
    probabilities: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    positive: str | None = None,
) -> list[str]:
    """Two classes: predict ``positive`` (default: the second label) when its probability is at
    least ``threshold``, else the other label. Raising the threshold flags fewer texts: spam
    precision rises and spam recall falls (fewer good messages lost, more spam let through)."""
    if len(labels) != 2:
        raise ValueError(f"a threshold needs two classes, got {len(labels)}: {list(labels)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    probabilities = _check_probabilities(probabilities, len(probabilities), labels)
    positive = _positive_label(labels, positive)
    negative = labels[1 - labels.index(positive)]
    flagged = probabilities[:, labels.index(positive)] >= threshold
    return [positive if f else negative for f in flagged]


def write_errors(
    path: str | Path,
    texts: Sequence[str],
    true: Sequence[str],
    predicted: Sequence[str],
    probabilities: np.ndarray | None,
    labels: Sequence[str],
) -> int:
    """Write the misclassified texts, in their order, as JSON lines for a person to read:
    ``{"index": i, "text": ..., "label": true, "predicted": ..., "probabilities": {label: p}}``
    (``probabilities`` only when given). Returns how many were written."""
    if not len(texts) == len(true) == len(predicted):
        raise ValueError(f"{len(texts)} texts, {len(true)} labels, {len(predicted)} predictions")
    if probabilities is not None:
        probabilities = _check_probabilities(probabilities, len(texts), labels)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        for i, (text, t, p) in enumerate(zip(texts, true, predicted, strict=True)):
            if t == p:
                continue
            record: dict[str, Any] = {"index": i, "text": text, "label": t, "predicted": p}
            if probabilities is not None:
                record["probabilities"] = dict(zip(labels, probabilities[i].tolist(), strict=True))
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
    return written


def _check_labels(labels: Sequence[str]) -> None:
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"need two or more distinct labels, got {list(labels)}")
    if MACRO in labels:
        raise ValueError(f"{MACRO!r} cannot be a label: it names the average over labels")


def _check_probabilities(
    probabilities: np.ndarray, count: int, labels: Sequence[str]
) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (count, len(labels)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape}, expected {(count, len(labels))} "
            f"(one row per text, one column per label of {list(labels)})"
        )
    return probabilities


def _positive_label(labels: Sequence[str], positive: str | None) -> str:
    if positive is None:
        return labels[1]
    if positive not in labels:
        raise ValueError(f"positive label {positive!r} is not among the labels {list(labels)}")
    return positive
