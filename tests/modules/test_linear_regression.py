"""Linear regression (ch. 2): closed form vs numpy, gradient vs autograd, L-BFGS vs closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from modules.linear_regression import (
    LinearRegression,
    check_l2,
    design_matrix,
    least_squares,
    ridge_penalty,
    squared_error_gradient,
)
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import quiet_trainer

NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)



def linear_data(n: int, p: int, noise: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=generator)
    w = torch.randn(p, generator=generator)
    y = 0.7 + x @ w + noise * torch.randn(n, generator=generator)
    return x, y, w


def make_model(p: int, l2: float = 0.0, optimizer: str = "lbfgs", lr: float = 1.0) -> LinearRegression:
    return LinearRegression(
        data=DataSpec("regression", (p,), 0),
        optimizer=OptimizerConfig(name=optimizer, lr=lr, weight_decay=0.0, momentum=0.0, nesterov=False),
        scheduler=NO_SCHEDULE,
        l2=l2,
    )


def test_design_matrix_prepends_a_column_of_ones():
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(design_matrix(x), torch.tensor([[1.0, 0, 1], [1, 2, 3], [1, 4, 5]]))


def test_least_squares_matches_numpy_lstsq_and_the_normal_equations():
    x, y, _ = linear_data(n=60, p=4, noise=0.5)
    b, w = least_squares(x, y)

    x_tilde = np.hstack([np.ones((60, 1)), x.double().numpy()])
    theta_lstsq = np.linalg.lstsq(x_tilde, y.double().numpy(), rcond=None)[0]
    theta_normal = np.linalg.solve(x_tilde.T @ x_tilde, x_tilde.T @ y.double().numpy())

    theta = np.concatenate([[b.item()], w.numpy()])
    np.testing.assert_allclose(theta, theta_lstsq, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(theta, theta_normal, rtol=1e-8, atol=1e-8)


def test_least_squares_recovers_the_parameters_of_noiseless_data():
    x, y, w_true = linear_data(n=30, p=3, noise=0.0)
    b, w = least_squares(x, y)
    assert b.item() == pytest.approx(0.7, abs=1e-5)
    torch.testing.assert_close(w, w_true.double(), atol=1e-5, rtol=0)


def test_squared_error_gradient_matches_autograd_of_the_mse():
    torch.manual_seed(0)
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randn(40, dtype=torch.float64)
    b = torch.randn((), dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)

    mse = torch.nn.functional.mse_loss(b + x @ w, y)
    grad_b, grad_w = torch.autograd.grad(mse, (b, w))

    formula_b, formula_w = squared_error_gradient(x, y, b.detach(), w.detach())
    torch.testing.assert_close(formula_b, grad_b)
    torch.testing.assert_close(formula_w, grad_w)


def test_squared_error_gradient_vanishes_at_the_least_squares_solution():
    x, y, _ = linear_data(n=50, p=3, noise=1.0)
    b, w = least_squares(x, y)
    grad_b, grad_w = squared_error_gradient(x.double(), y.double(), b, w)
    assert abs(grad_b.item()) < 1e-10
    assert grad_w.abs().max().item() < 1e-10


def test_ridge_penalty_is_half_lambda_times_the_squared_norm():
    torch.manual_seed(0)
    w = torch.randn(3, 7)
    expected = 0.3 / 2 * np.sum(w.numpy().astype(np.float64) ** 2)
    assert ridge_penalty(w, 0.3).item() == pytest.approx(expected, rel=1e-6)
    assert ridge_penalty(w, 0.0).item() == 0.0


def test_module_penalty_covers_the_weights_not_the_intercept():
    torch.manual_seed(0)
    model = make_model(p=4, l2=0.5)
    with torch.no_grad():
        model.linear.bias.fill_(100.0)
    expected = 0.25 * (model.linear.weight**2).sum()
    torch.testing.assert_close(model.penalty(), expected)
    assert make_model(p=4, l2=0.0).penalty() == 0.0


def test_training_step_is_mse_plus_ridge_penalty():
    torch.manual_seed(0)
    model = make_model(p=3, l2=0.2)
    x, y, _ = linear_data(n=16, p=3, noise=0.1)
    loss = model.training_step((x, y), 0)
    scores = model.linear.bias + x @ model.linear.weight.squeeze(0)  # (n,)
    expected = ((scores - y) ** 2).mean() + 0.1 * (model.linear.weight**2).sum()
    torch.testing.assert_close(loss, expected)


def test_forward_flattens_the_input_to_one_score():
    model = LinearRegression(
        data=DataSpec("regression", (2, 3), 0),
        optimizer=OptimizerConfig(name="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, nesterov=False),
        scheduler=NO_SCHEDULE,
        l2=0.0,
    )
    assert model(torch.zeros(5, 2, 3)).shape == (5, 1)


def test_check_l2_rejects_a_negative_penalty():
    check_l2({"l2": 0.0})
    with pytest.raises(ValueError, match=r"^l2: must be zero or positive, got -0.1"):
        check_l2({"l2": -0.1})


def test_lbfgs_training_through_lightning_reaches_the_closed_form_mse():
    torch.manual_seed(0)
    x, y, _ = linear_data(n=200, p=5, noise=0.3)
    b, w = least_squares(x, y)
    closed_form_mse = ((b + x.double() @ w - y.double()) ** 2).mean().item()

    model = make_model(p=5, optimizer="lbfgs", lr=1.0)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    trainer = quiet_trainer(max_epochs=5)
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)

    with torch.no_grad():
        trained_mse = ((model(x).squeeze(1) - y) ** 2).mean().item()
    assert closed_form_mse * (1 - 1e-5) <= trained_mse <= 1.01 * closed_form_mse
    assert trainer.callback_metrics["val/mse"].item() == pytest.approx(trained_mse, rel=1e-4)
