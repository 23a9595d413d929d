"""A classifier's test report, as a practitioner reads it, and as files a person can open.

:func:`evaluate_labelled` runs a :class:`~scratchgpt.classify.Classifier` over labelled texts
and computes every metric of :mod:`.classification`. A balanced test (the book undersamples
ham to the number of spam) flatters precision: a spam filter meets about 13% spam, so the
report also gives the metrics at the corpus's natural class mix, on the test split as it was
before balancing. :func:`write_report` leaves three files:

* ``eval.json``: accuracy; precision, recall, F1 per class and ``macro``; ``roc_auc`` (two
  classes); ``confusion`` (``labels``, ``matrix``: rows true, columns predicted); ``support``;
  ``count``; and ``natural_mix`` (the same metrics on the natural-mix test) where it differs,
* ``confusion.png``: the confusion matrix, drawn,
* ``errors.jsonl``: every misclassified text with its label, prediction and probabilities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scratchgpt.classify import Classifier
from scratchgpt.data.labelled import LabelledTexts
from scratchgpt.data.splits import load_splits
from scratchgpt.evaluation.classification import classification_metrics, write_errors
from scratchgpt.plots import plot_confusion
from scratchgpt.run_dir import SPLIT_DIR

EVAL_FILE = "eval.json"
CONFUSION_PLOT = "confusion.png"
ERRORS_FILE = "errors.jsonl"


@dataclass
class Evaluation:
    """The metrics of one evaluation, and the predictions behind them."""

    metrics: dict[str, Any]
    data: LabelledTexts
    predicted: list[str]
    probabilities: np.ndarray  # [texts, classes]

    def summary(self) -> str:
        """A few lines for a person."""
        m = self.metrics
        lines = [f"{m['count']:,} texts of {self.data.source}: accuracy {m['accuracy']:.4f}, "
                 f"macro F1 {m['f1']['macro']:.4f}"
                 + (f", ROC-AUC {m['roc_auc']:.4f}" if m.get("roc_auc") is not None else "")]
        lines += [f"  {label}: precision {m['precision'][label]:.4f}, recall "
                  f"{m['recall'][label]:.4f}, F1 {m['f1'][label]:.4f} ({m['support'][label]:,})"
                  for label in m["confusion"]["labels"]]
        natural = m.get("natural_mix")
        if natural:
            lines.append(f"  at the natural class mix ({natural['count']:,} texts): accuracy "
                         f"{natural['accuracy']:.4f}, macro F1 {natural['f1']['macro']:.4f}")
        return "\n".join(lines)


def evaluate_labelled(classifier: Classifier, data: LabelledTexts,
                      natural: LabelledTexts | None = None,
                      threshold: float | None = None) -> Evaluation:
    """Classify ``data`` and compute its metrics; ``natural``, the same test at the natural
    class mix, adds ``natural_mix``. Labels the classifier does not know are an error."""
    unknown = sorted(set(data.labels) - set(classifier.labels))
    if unknown:
        raise ValueError(f"{data.source}: label(s) {', '.join(map(repr, unknown))} are not "
                         f"among the classifier's ({', '.join(classifier.labels)})")
    probabilities = classifier.probabilities(data.texts)
    predicted = classifier.decide(probabilities, threshold)
    metrics = classification_metrics(data.labels, predicted, classifier.labels, probabilities)
    if natural is not None:
        metrics["natural_mix"] = evaluate_labelled(classifier, natural, None, threshold).metrics
    return Evaluation(metrics, data, predicted, probabilities)


def write_report(evaluation: Evaluation, directory: Path) -> None:
    """``eval.json``, ``confusion.png`` and ``errors.jsonl`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / EVAL_FILE).write_text(json.dumps(evaluation.metrics, indent=2) + "\n",
                                       encoding="utf-8")
    confusion = evaluation.metrics["confusion"]
    plot_confusion(confusion["matrix"], confusion["labels"], directory / CONFUSION_PLOT,
                   title=f"{Path(evaluation.data.source).name}: "
                         f"{evaluation.metrics['count']:,} texts")
    write_errors(directory / ERRORS_FILE, evaluation.data.texts, evaluation.data.labels,
                 evaluation.predicted, evaluation.probabilities, confusion["labels"])


def evaluate_run(run_dir: Path) -> Evaluation:
    """Evaluate a fine-tuning run's best checkpoint on its test split (and, if the split was
    balanced, its natural-mix test) and write the report into the run directory."""
    splits = load_splits(run_dir / SPLIT_DIR)
    evaluation = evaluate_labelled(Classifier.from_run(run_dir), splits.test,
                                   splits.test_natural if splits.balanced else None)
    write_report(evaluation, run_dir)
    return evaluation
