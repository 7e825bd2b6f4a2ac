"""Test metrics per task, all from torchmetrics; names shared across families (`test/accuracy`)."""

from __future__ import annotations

import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    BinaryCalibrationError,
    BinaryConfusionMatrix,
    F1Score,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)


def _regression(num_classes: int) -> MetricCollection:
    return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})


def _binary(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "accuracy": Accuracy(task="binary"),
            "f1": F1Score(task="binary"),
            "auroc": AUROC(task="binary"),
            "ece": BinaryCalibrationError(n_bins=15, norm="l1"),
        }
    )


def _multiclass(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "accuracy": Accuracy(task="multiclass", num_classes=num_classes),
            "f1": F1Score(task="multiclass", num_classes=num_classes, average="macro"),
            "auroc": AUROC(task="multiclass", num_classes=num_classes, average="macro"),
            "ece": MulticlassCalibrationError(num_classes=num_classes, n_bins=15, norm="l1"),
        }
    )


TEST_METRICS = {"regression": _regression, "binary": _binary, "multiclass": _multiclass}


def test_metrics(task: str, prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """prediction: values (n,), P(y=1) (n,) or probabilities (n, K); target (n,). Keys `test/<name>`."""
    collection = TEST_METRICS[task](num_classes)
    values = collection(prediction, target.long() if task != "regression" else target)
    return {f"test/{name}": round(float(value), 6) for name, value in sorted(values.items())}


def confusion_matrix(task: str, prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts, rows = true class, columns = predicted class."""
    if task == "binary":
        return BinaryConfusionMatrix()(prediction, target.long())
    return MulticlassConfusionMatrix(num_classes=num_classes)(prediction, target)


def predicted_labels(task: str, prediction: torch.Tensor) -> torch.Tensor:
    return (prediction > 0.5).long() if task == "binary" else prediction.argmax(dim=-1)
