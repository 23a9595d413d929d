"""Evaluation: how good a fine-tuned model is, in the numbers a practitioner reads.

The names below are imported on first use (PEP 562), not with the package: the metrics bring
in numpy, and ``scratchgpt.evaluation.judge`` (whose settings ``--help`` shows) does not need
it. ``from scratchgpt.evaluation import confusion_matrix`` works as ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scratchgpt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from scratchgpt.evaluation.classification import (
        binary_roc_auc,
        class_prevalence,
        classification_metrics,
        confusion_matrix,
        metrics_at_prevalence,
        threshold_predictions,
        write_errors,
    )

__all__ = [
    "binary_roc_auc",
    "class_prevalence",
    "classification_metrics",
    "confusion_matrix",
    "metrics_at_prevalence",
    "threshold_predictions",
    "write_errors",
]

_WHERE = dict.fromkeys(__all__, "classification")

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
