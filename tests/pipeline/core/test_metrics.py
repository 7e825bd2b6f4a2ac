"""Test metrics per task against scikit-learn and a hand-written calibration error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from pipeline.core import metrics  # the module, so pytest does not collect `metrics.test_metrics` as a test


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Σ_b (n_b / n) |mean(correct in b) − mean(confidence in b)| over equal-width bins [i/B, (i+1)/B)."""
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return error


def test_regression_metrics_match_scikit_learn():
    torch.manual_seed(0)
    target = torch.randn(200)
    prediction = target + 0.5 * torch.randn(200)
    values = metrics.test_metrics("regression", prediction, target, num_classes=0)
    t, p = target.numpy(), prediction.numpy()
    assert set(values) == {"test/mse", "test/mae", "test/r2"}
    assert values["test/mse"] == pytest.approx(sk.mean_squared_error(t, p), abs=2e-6)
    assert values["test/mae"] == pytest.approx(sk.mean_absolute_error(t, p), abs=2e-6)
    assert values["test/r2"] == pytest.approx(sk.r2_score(t, p), abs=2e-6)


def test_binary_metrics_match_scikit_learn():
    torch.manual_seed(0)
    target = torch.randint(0, 2, (300,)).float()
    prediction = (0.3 * target + 0.7 * torch.rand(300)).clamp(0, 1)  # informative but imperfect P(y=1)
    values = metrics.test_metrics("binary", prediction, target, num_classes=2)
    t, p = target.numpy().astype(int), prediction.numpy().astype(np.float64)
    labels = (p > 0.5).astype(int)
    assert set(values) == {"test/accuracy", "test/f1", "test/auroc", "test/ece"}
    assert values["test/accuracy"] == pytest.approx(sk.accuracy_score(t, labels), abs=2e-6)
    assert values["test/f1"] == pytest.approx(sk.f1_score(t, labels), abs=2e-6)
    assert values["test/auroc"] == pytest.approx(sk.roc_auc_score(t, p), abs=2e-6)
    assert values["test/ece"] == pytest.approx(expected_calibration_error(p, t.astype(np.float64)), abs=2e-6)


def test_multiclass_metrics_match_scikit_learn():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (400,))
    logits = torch.randn(400, 4) + 1.5 * torch.nn.functional.one_hot(target, 4)
    prediction = logits.softmax(dim=1)
    values = metrics.test_metrics("multiclass", prediction, target, num_classes=4)
    t, p = target.numpy(), prediction.numpy().astype(np.float64)
    labels = p.argmax(axis=1)
    assert set(values) == {"test/accuracy", "test/f1", "test/auroc", "test/ece"}
    assert values["test/accuracy"] == pytest.approx(sk.accuracy_score(t, labels), abs=2e-6)
    assert values["test/f1"] == pytest.approx(sk.f1_score(t, labels, average="macro"), abs=2e-6)
    assert values["test/auroc"] == pytest.approx(
        sk.roc_auc_score(t, p, multi_class="ovr", average="macro"), abs=2e-6
    )
    expected = expected_calibration_error(p.max(axis=1), (labels == t).astype(np.float64))
    assert values["test/ece"] == pytest.approx(expected, abs=2e-6)


def test_metric_values_are_rounded_floats():
    torch.manual_seed(0)
    values = metrics.test_metrics("regression", torch.randn(50), torch.randn(50), num_classes=0)
    assert all(type(v) is float and v == round(v, 6) for v in values.values())


def test_confusion_matrices_match_scikit_learn():
    torch.manual_seed(0)
    target = torch.randint(0, 2, (100,)).float()
    probability = torch.rand(100)
    labels = metrics.predicted_labels("binary", probability)
    assert torch.equal(labels, (probability > 0.5).long())
    np.testing.assert_array_equal(
        metrics.confusion_matrix("binary", probability, target, num_classes=2).numpy(),
        sk.confusion_matrix(target.numpy(), labels.numpy(), labels=[0, 1]),
    )

    target = torch.randint(0, 3, (100,))
    probabilities = torch.randn(100, 3).softmax(dim=1)
    labels = metrics.predicted_labels("multiclass", probabilities)
    assert torch.equal(labels, probabilities.argmax(dim=1))
    np.testing.assert_array_equal(
        metrics.confusion_matrix("multiclass", probabilities, target, num_classes=3).numpy(),
        sk.confusion_matrix(target.numpy(), labels.numpy(), labels=[0, 1, 2]),
    )


def test_sequence_metrics_match_a_computation_by_hand():
    """Token accuracy over every target token, exact match over whole samples, perplexity =
    exp(mean negative log-likelihood per token), computed in numpy."""
    torch.manual_seed(0)
    target = torch.randint(0, 5, (40, 6))
    scores = torch.randn(40, 6, 5)
    scores[:30] += 4 * torch.nn.functional.one_hot(target[:30], 5)  # most samples right, some wholly
    probabilities = scores.softmax(-1)
    values = metrics.test_metrics("sequence", probabilities, target, num_classes=5)
    p, t = probabilities.double().numpy(), target.numpy()
    right = p.argmax(-1) == t
    nll = -np.log(np.take_along_axis(p, t[..., None], axis=-1)).mean()
    assert set(values) == {"test/token_accuracy", "test/exact_match", "test/perplexity"}
    assert values["test/token_accuracy"] == pytest.approx(right.mean(), abs=2e-6)
    assert values["test/exact_match"] == pytest.approx(right.all(axis=1).mean(), abs=2e-6)
    assert 0 < right.all(axis=1).mean() < 1
    assert values["test/perplexity"] == pytest.approx(np.exp(nll), rel=1e-5)


def test_sequence_confusion_matrix_counts_every_target_token():
    target = torch.tensor([[0, 1, 2], [2, 2, 1]])
    probabilities = torch.nn.functional.one_hot(torch.tensor([[0, 2, 2], [2, 1, 1]]), 3).float()
    matrix = metrics.confusion_matrix("sequence", probabilities, target, 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]


def test_each_regression_metric_scales_with_the_target_by_the_power_its_table_gives():
    """Prediction and target both times s give the metric times s ** power: the factor that puts a curve
    drawn on the standardized target into the target's units (pipeline.html_report)."""
    torch.manual_seed(0)
    prediction, target, s = torch.randn(50), torch.randn(50), 3.0
    plain = metrics.test_metrics("regression", prediction, target, 0)
    scaled = metrics.test_metrics("regression", s * prediction, s * target, 0)
    assert {f"test/{name}" for name in metrics.TARGET_UNIT_POWER} == set(plain)
    for name, power in metrics.TARGET_UNIT_POWER.items():
        assert scaled[f"test/{name}"] == pytest.approx(plain[f"test/{name}"] * s**power, rel=1e-4, abs=1e-6)
