"""Evaluation: how good a fine-tuned model is, in the numbers a practitioner reads."""

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
