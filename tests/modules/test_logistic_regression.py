"""Logistic regression (ch. 3): sigmoid, cross-entropy and its closed-form gradient vs torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.logistic_regression import LogisticRegression, binary_cross_entropy, logistic_gradient, sigmoid
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch



def make_model(p: int, l2: float = 0.0) -> LogisticRegression:
    return LogisticRegression(
        data=DataSpec("binary", (p,), 2),
        optimizer=OptimizerConfig(name="adam", lr=0.1, weight_decay=0.0, momentum=0.0, nesterov=False),
        scheduler=SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0),
        l2=l2,
    )


def test_sigmoid_matches_torch_sigmoid():
    z = torch.linspace(-30, 30, 601, dtype=torch.float64)
    torch.testing.assert_close(sigmoid(z), torch.sigmoid(z))


def test_sigmoid_is_symmetric_about_zero():
    z = torch.linspace(-8, 8, 33, dtype=torch.float64)
    torch.testing.assert_close(sigmoid(-z), 1 - sigmoid(z))
    assert sigmoid(torch.zeros(1)).item() == 0.5


def test_binary_cross_entropy_matches_torch():
    torch.manual_seed(0)
    y_hat = torch.rand(50, dtype=torch.float64) * 0.98 + 0.01
    y = torch.randint(0, 2, (50,)).double()
    torch.testing.assert_close(binary_cross_entropy(y_hat, y), F.binary_cross_entropy(y_hat, y))


def test_binary_cross_entropy_of_sigmoid_equals_the_logit_form_used_in_training():
    torch.manual_seed(0)
    z = torch.randn(50, dtype=torch.float64) * 3
    y = torch.randint(0, 2, (50,)).double()
    torch.testing.assert_close(binary_cross_entropy(sigmoid(z), y), F.binary_cross_entropy_with_logits(z, y))


def test_logistic_gradient_matches_autograd_of_the_cross_entropy():
    """∇_w C = Xᵀ(σ(Xw + b) − y)/n and ∂C/∂b = mean(σ(Xw + b) − y), checked against autograd."""
    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (64,)).double()
    b = torch.randn((), dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)

    loss = F.binary_cross_entropy(torch.sigmoid(x @ w + b), y)
    grad_b, grad_w = torch.autograd.grad(loss, (b, w))

    formula_b, formula_w = logistic_gradient(x, y, b.detach(), w.detach())
    torch.testing.assert_close(formula_b, grad_b)
    torch.testing.assert_close(formula_w, grad_w)


def test_training_step_is_cross_entropy_on_logits_plus_ridge_penalty():
    torch.manual_seed(0)
    model = make_model(p=4, l2=0.3)
    x = torch.randn(20, 4)
    y = torch.randint(0, 2, (20,)).float()
    logits = x @ model.linear.weight.squeeze(0) + model.linear.bias  # (n,)
    expected = binary_cross_entropy(torch.sigmoid(logits), y) + 0.15 * (model.linear.weight**2).sum()
    torch.testing.assert_close(model.training_step((x, y), 0), expected)


def test_predict_returns_the_probability_of_class_one():
    torch.manual_seed(0)
    model = make_model(p=3)
    x = torch.randn(8, 3)
    torch.testing.assert_close(model.predict(x), torch.sigmoid(model(x).squeeze(1)))


def test_module_overfits_a_small_separable_batch():
    """With more features than samples any labelling is linearly separable."""
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    y = torch.randint(0, 2, (16,)).float()
    model = make_model(p=32)
    fit_batch(model, x, y, steps=200)
    with torch.no_grad():
        assert torch.equal((model.predict(x) > 0.5).float(), y)
        assert model.loss(model(x), y).item() < 0.05


def test_check_config_rejects_a_negative_penalty():
    with pytest.raises(ValueError, match=r"^l2:"):
        LogisticRegression.check_config({"l2": -1.0})
