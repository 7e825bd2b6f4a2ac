"""Softmax regression (ch. 3): softmax, categorical cross-entropy and its gradient vs torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.softmax_regression import SoftmaxRegression, categorical_cross_entropy, softmax, softmax_gradient
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch



def make_model(input_shape: tuple[int, ...], num_classes: int, l2: float = 0.0) -> SoftmaxRegression:
    return SoftmaxRegression(
        data=DataSpec("multiclass", input_shape, num_classes),
        optimizer=OptimizerConfig(name="adam", lr=0.05, weight_decay=0.0, momentum=0.0, nesterov=False),
        scheduler=SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0),
        l2=l2,
    )


def test_softmax_rows_sum_to_one_and_match_the_direct_formula_in_float64():
    torch.manual_seed(0)
    z = torch.randn(6, 5) * 4
    probabilities = softmax(z)
    torch.testing.assert_close(probabilities.sum(dim=-1), torch.ones(6))

    z64 = z.double().numpy()
    direct = np.exp(z64) / np.exp(z64).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(probabilities.numpy(), direct, rtol=1e-5, atol=1e-7)


def test_softmax_is_invariant_to_a_shift_of_each_row():
    torch.manual_seed(0)
    z = torch.randn(4, 7, dtype=torch.float64)
    shift = torch.randn(4, 1, dtype=torch.float64) * 100
    torch.testing.assert_close(softmax(z + shift), softmax(z))


def test_softmax_of_huge_logits_does_not_overflow():
    z = torch.tensor([[1000.0, 1000.0, 0.0]])
    torch.testing.assert_close(softmax(z), torch.tensor([[0.5, 0.5, 0.0]]))


def test_categorical_cross_entropy_matches_torch_cross_entropy_on_logits():
    torch.manual_seed(0)
    z = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (30,))
    torch.testing.assert_close(categorical_cross_entropy(softmax(z), y), F.cross_entropy(z, y))


def test_softmax_gradient_matches_autograd_of_the_cross_entropy():
    torch.manual_seed(0)
    x = torch.randn(50, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (50,))
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)

    loss = F.cross_entropy(x @ w.T + b, y)
    grad_b, grad_w = torch.autograd.grad(loss, (b, w))

    formula_b, formula_w = softmax_gradient(x, y, b.detach(), w.detach())
    torch.testing.assert_close(formula_b, grad_b)
    torch.testing.assert_close(formula_w, grad_w)


def test_module_returns_k_logits_for_flattened_images():
    model = make_model((1, 4, 4), num_classes=5)
    assert model(torch.zeros(3, 1, 4, 4)).shape == (3, 5)
    assert model.linear.in_features == 16


def test_training_step_is_cross_entropy_plus_ridge_penalty():
    torch.manual_seed(0)
    model = make_model((6,), num_classes=3, l2=0.4)
    x = torch.randn(12, 6)
    y = torch.randint(0, 3, (12,))
    logits = x @ model.linear.weight.T + model.linear.bias
    expected = categorical_cross_entropy(softmax(logits), y) + 0.2 * (model.linear.weight**2).sum()
    torch.testing.assert_close(model.training_step((x, y), 0), expected)


def test_module_overfits_a_small_batch():
    torch.manual_seed(0)
    x = torch.randn(24, 40)
    y = torch.randint(0, 4, (24,))
    model = make_model((40,), num_classes=4)
    fit_batch(model, x, y, steps=200)
    with torch.no_grad():
        assert torch.equal(model.predict(x).argmax(dim=-1), y)


def test_check_config_rejects_a_negative_penalty():
    with pytest.raises(ValueError, match=r"^l2:"):
        SoftmaxRegression.check_config({"l2": -0.5})
