"""Least squares classification (ch. 3): one-hot squared error, its gradient and closed form vs numpy,
the simplex projection of the scores vs a bisection, L-BFGS vs the closed form, a quick fit on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from modules.least_squares_classifier import (
    LeastSquaresClassifier,
    one_hot_least_squares,
    one_hot_squared_error,
    one_hot_squared_error_gradient,
    simplex_projection,
)
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import load
from pipeline.prepare import prepare

from conftest import fit_batch, quiet_trainer

NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)


def make_model(input_shape: tuple[int, ...], num_classes: int, l2: float = 0.0, optimizer: str = "lbfgs",
               lr: float = 1.0) -> LeastSquaresClassifier:
    return LeastSquaresClassifier(
        data=DataSpec("multiclass", input_shape, num_classes),
        optimizer=OptimizerConfig(name=optimizer, lr=lr, weight_decay=0.0, momentum=0.0, nesterov=False),
        scheduler=NO_SCHEDULE,
        l2=l2,
    )


def class_data(n: int, p: int, num_classes: int, seed: int = 0):
    """Gaussian inputs labelled by the argmax of a random affine map plus noise: overlapping classes."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=generator)
    w = torch.randn(num_classes, p, generator=generator)
    y = (x @ w.T + torch.randn(n, num_classes, generator=generator)).argmax(dim=1)
    return x, y


def fit_full_batch(model, x, y, epochs: int):
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    quiet_trainer(max_epochs=epochs, num_sanity_val_steps=0).fit(model, train_dataloaders=loader, val_dataloaders=loader)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "digits"
    prepare("digits", load(family_checks=False).data, out)
    return {split: tuple(torch.load(out / f"{split}.pt", weights_only=True).values()) for split in ("train", "test")}


def test_one_hot_squared_error_is_the_sum_over_classes_of_each_columns_mse():
    torch.manual_seed(0)
    scores = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (30,))
    per_column = sum(F.mse_loss(scores[:, k], (y == k).double()) for k in range(4))
    torch.testing.assert_close(one_hot_squared_error(scores, y), per_column)


def test_one_hot_least_squares_matches_numpy_lstsq_on_the_one_hot_matrix():
    x, y = class_data(n=80, p=5, num_classes=3)
    b, w = one_hot_least_squares(x, y, 3)

    x_tilde = np.hstack([np.ones((80, 1)), x.double().numpy()])
    theta = np.linalg.lstsq(x_tilde, np.eye(3)[y.numpy()], rcond=None)[0]  # (p + 1, K)
    np.testing.assert_allclose(b.numpy(), theta[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(w.numpy(), theta[1:].T, rtol=1e-10, atol=1e-10)


def test_gradient_matches_autograd_and_vanishes_at_the_closed_form():
    torch.manual_seed(0)
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    grad_b, grad_w = torch.autograd.grad(one_hot_squared_error(x @ w.T + b, y), (b, w))
    formula_b, formula_w = one_hot_squared_error_gradient(x, y, b.detach(), w.detach())
    torch.testing.assert_close(formula_b, grad_b)
    torch.testing.assert_close(formula_w, grad_w)

    b_star, w_star = one_hot_least_squares(x, y, 3)
    at_optimum = one_hot_squared_error_gradient(x, y, b_star, w_star)
    assert max(g.abs().max().item() for g in at_optimum) < 1e-10


def test_fitted_scores_sum_to_one_for_every_input():
    """The K column fits add up to the fit of the all-ones column: b = 1, W = 0 (module docstring)."""
    x, y = class_data(n=60, p=4, num_classes=5)
    b, w = one_hot_least_squares(x, y, 5)
    unseen = torch.randn(20, 4, dtype=torch.float64) * 3
    torch.testing.assert_close((unseen @ w.T + b).sum(dim=1), torch.ones(20, dtype=torch.float64))


def bisection_projection(v: np.ndarray) -> np.ndarray:
    """max(v − τ, 0) with Σ = 1, τ by bisection: Σ max(v − τ, 0) decreases in τ from ≥ 1 at max v − 1 to 0 at max v."""
    low, high = v.max() - 1, v.max()
    for _ in range(200):
        tau = (low + high) / 2
        low, high = (tau, high) if np.maximum(v - tau, 0).sum() > 1 else (low, tau)
    return np.maximum(v - (low + high) / 2, 0)


def test_simplex_projection_matches_a_bisection_on_tau_and_is_the_nearest_probability_vector():
    torch.manual_seed(0)
    scores = torch.cat([torch.randn(50, 6, dtype=torch.float64) * 2, torch.full((1, 6), -3.0, dtype=torch.float64)])
    p = simplex_projection(scores)
    expected = np.stack([bisection_projection(v) for v in scores.numpy()])
    np.testing.assert_allclose(p.numpy(), expected, atol=1e-12)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(51, dtype=torch.float64))
    assert (p >= 0).all()

    others = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64)).sample((200,))  # (200, 6) on the simplex
    distance = ((p[:, None] - scores[:, None]) ** 2).sum(-1)  # (51, 1)
    assert (distance <= ((others[None] - scores[:, None]) ** 2).sum(-1) + 1e-12).all()


def test_simplex_projection_keeps_probability_vectors_and_the_argmax():
    probabilities = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(simplex_projection(probabilities), probabilities)
    torch.manual_seed(0)
    scores = torch.randn(200, 10)
    assert torch.equal(simplex_projection(scores).argmax(dim=1), scores.argmax(dim=1))


def test_training_step_is_the_one_hot_squared_error_plus_ridge_penalty():
    torch.manual_seed(0)
    model = make_model((6,), num_classes=3, l2=0.4)
    x, y = class_data(n=12, p=6, num_classes=3)
    scores = x @ model.linear.weight.T + model.linear.bias
    expected = ((scores - F.one_hot(y, 3)) ** 2).sum(dim=1).mean() + 0.2 * (model.linear.weight**2).sum()
    torch.testing.assert_close(model.training_step((x, y), 0), expected)


def test_predict_is_the_projection_of_the_k_scores_of_flattened_images():
    torch.manual_seed(0)
    model = make_model((1, 4, 4), num_classes=5)
    x = torch.randn(8, 1, 4, 4)
    probabilities = model.predict(x)
    assert probabilities.shape == (8, 5)
    torch.testing.assert_close(probabilities, simplex_projection(model(x)))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(8))


def test_lbfgs_training_through_lightning_reaches_the_closed_form():
    x, y = class_data(n=300, p=8, num_classes=4)
    b, w = one_hot_least_squares(x, y, 4)
    closed_form = one_hot_squared_error(x.double() @ w.T + b, y).item()

    torch.manual_seed(0)
    model = make_model((8,), num_classes=4)
    fit_full_batch(model, x, y, epochs=5)
    with torch.no_grad():
        trained = one_hot_squared_error(model(x), y).item()
        torch.testing.assert_close(model.linear.weight.double(), w, atol=1e-3, rtol=0)
        torch.testing.assert_close(model.linear.bias.double(), b, atol=1e-3, rtol=0)
    assert closed_form * (1 - 1e-5) <= trained <= 1.001 * closed_form


def test_module_overfits_a_small_batch():
    """More features than samples: the one-hot targets are fitted exactly, so every argmax is right."""
    torch.manual_seed(0)
    x = torch.randn(24, 40)
    y = torch.randint(0, 4, (24,))
    model = make_model((40,), num_classes=4, optimizer="adam", lr=0.05)
    fit_batch(model, x, y, steps=300)
    with torch.no_grad():
        assert torch.equal(model.predict(x).argmax(dim=-1), y)
        assert model.loss(model(x), y).item() < 1e-3


def test_quick_fit_on_digits_matches_the_closed_form_and_classifies_most_test_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits["train"], digits["test"]
    b, w = one_hot_least_squares(x_train.flatten(1), y_train, 10)  # constant pixels: rank deficient, the minimum-norm fit
    closed_form_accuracy = ((x_test.flatten(1).double() @ w.T + b).argmax(dim=1) == y_test).double().mean().item()

    torch.manual_seed(0)
    model = make_model((1, 8, 8), num_classes=10)
    fit_full_batch(model, x_train, y_train, epochs=10)
    with torch.no_grad():
        accuracy = (model.predict(x_test).argmax(dim=1) == y_test).double().mean().item()
    assert accuracy > 0.9
    assert accuracy == pytest.approx(closed_form_accuracy, abs=0.01)


def test_check_config_rejects_a_negative_penalty():
    with pytest.raises(ValueError, match=r"^l2:"):
        LeastSquaresClassifier.check_config({"l2": -0.5})
