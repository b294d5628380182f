"""Metric collections under the names every method logs (see docs/architecture.md)."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

METRIC_NAMES = ("acc", "precision", "recall", "f1")


def classification_metrics(num_classes: int) -> MetricCollection:
    """acc, precision, recall and f1 of predicted classes: binary (class 1 positive) for two
    classes, macro averages for more. Updated with ``(predicted class, label)``."""
    if num_classes == 2:
        return MetricCollection(
            {
                "acc": BinaryAccuracy(),
                "precision": BinaryPrecision(),
                "recall": BinaryRecall(),
                "f1": BinaryF1Score(),
            }
        )
    kwargs = {"num_classes": num_classes, "average": "macro"}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "precision": MulticlassPrecision(**kwargs),
            "recall": MulticlassRecall(**kwargs),
            "f1": MulticlassF1Score(**kwargs),
        }
    )
