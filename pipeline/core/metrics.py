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
    MulticlassExactMatch,
)
from torchmetrics.text import Perplexity


# The regression metrics, each with the power of the target's scale it carries. Prepare standardizes a
# regression target (divides it by target_std), and validation metrics are computed on that: times
# target_std ** power they are in the target's own units, as the test metrics are.
REGRESSION = {"mse": (MeanSquaredError, 2), "mae": (MeanAbsoluteError, 1), "r2": (R2Score, 0)}
TARGET_UNIT_POWER = {name: power for name, (_, power) in REGRESSION.items()}


def _regression(num_classes: int) -> MetricCollection:
    return MetricCollection({name: metric() for name, (metric, _) in REGRESSION.items()})


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


def _sequence(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """prediction (n, L, K): each target position's class probabilities given the true target before it
    (teacher forcing); target (n, L).

    exact_match counts the samples whose every target token is the most probable one given the true
    tokens before it. That is the same as greedy decoding reproducing the target exactly: if every
    argmax given the true prefix is right, greedy decoding's prefix is always the true prefix, and
    conversely (tests/modules/test_transformer_decoder.py checks it against generation).
    perplexity = exp(mean negative log-likelihood per target token)."""
    return {
        "token_accuracy": Accuracy(task="multiclass", num_classes=num_classes)(prediction.flatten(0, 1), target.flatten()),
        "exact_match": MulticlassExactMatch(num_classes=num_classes)(prediction.transpose(1, 2), target),
        "perplexity": Perplexity()(prediction.clamp_min(1e-12).log(), target),
    }


def exact_match_per_length(prediction: torch.Tensor, target: torch.Tensor, source: torch.Tensor, pad_token: int) -> dict[str, float]:
    """exact_match_<n> for each source length n (the count of a source's tokens before its padding):
    the share of those samples whose every target token, the padding that ends the output included, is
    the most probable one given the true tokens before it. prediction (N, L, K), target (N, L), source (N, S)."""
    lengths = (source != pad_token).sum(dim=1)
    right = (prediction.argmax(dim=-1) == target).all(dim=1)
    return {f"test/exact_match_{n}": round(float(right[lengths == n].float().mean()), 6) for n in lengths.unique().tolist()}


def mirrored_attention(weights: torch.Tensor, source: torch.Tensor, pad_token: int) -> float:
    """The share of attention rows, over every target position i < n of every sample (n its source
    length), whose largest weight is on the mirrored source position n - 1 - i. weights (N, L, S), source (N, S)."""
    lengths = (source != pad_token).sum(dim=1, keepdim=True)  # (N, 1)
    rows = torch.arange(weights.shape[1])[None, :]  # (1, L)
    counted = rows < lengths  # (N, L)
    mirrored = weights.argmax(dim=-1) == lengths - 1 - rows
    return round(float(mirrored[counted].float().mean()), 6)


TEST_METRICS = {"regression": _regression, "binary": _binary, "multiclass": _multiclass}


def test_metrics(
    task: str, prediction: torch.Tensor, target: torch.Tensor, num_classes: int, noise_variance: float | None = None
) -> dict[str, float]:
    """prediction: values (n,), P(y=1) (n,) or probabilities (n, K) or (n, L, K); target (n,) or (n, L).
    Keys `test/<name>`. With the noise variance σ² of a synthetic series (the least mean squared error
    any forecaster can reach), regression adds mse_over_noise = mse / σ²."""
    if task == "sequence":
        values = _sequence(prediction, target.long(), num_classes)
    else:
        collection = TEST_METRICS[task](num_classes)
        values = collection(prediction, target.long() if task != "regression" else target)
        if noise_variance is not None:
            values["mse_over_noise"] = values["mse"] / noise_variance
    return {f"test/{name}": round(float(value), 6) for name, value in sorted(values.items())}


def confusion_matrix(task: str, prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts, rows = true class, columns = predicted class."""
    if task == "binary":
        return BinaryConfusionMatrix()(prediction, target.long())
    if task == "sequence":  # over every target token
        prediction, target = prediction.flatten(0, 1), target.flatten()
    return MulticlassConfusionMatrix(num_classes=num_classes)(prediction, target)


def predicted_labels(task: str, prediction: torch.Tensor) -> torch.Tensor:
    return (prediction > 0.5).long() if task == "binary" else prediction.argmax(dim=-1)
