"""Logistic regression one-vs-rest (ch. 3): K binary cross-entropies and their closed-form gradient vs
logistic regression's and autograd, normalized sigmoids, a small batch overfitted, a quick fit on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from modules.logistic_ovr import LogisticOneVsRest, normalized_sigmoids, one_vs_rest_cross_entropy, one_vs_rest_gradient
from modules.logistic_regression import binary_cross_entropy, logistic_gradient, sigmoid
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import load
from pipeline.prepare import prepare

from conftest import fit_batch, quiet_trainer


def make_model(input_shape: tuple[int, ...], num_classes: int, l2: float = 0.0, optimizer: str = "adam",
               lr: float = 0.05) -> LogisticOneVsRest:
    return LogisticOneVsRest(
        data=DataSpec("multiclass", input_shape, num_classes),
        optimizer=OptimizerConfig(name=optimizer, lr=lr, weight_decay=0.0, momentum=0.0, nesterov=False),
        scheduler=SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0),
        l2=l2,
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "digits"
    prepare("digits", load(family_checks=False).data, out)
    return {split: tuple(torch.load(out / f"{split}.pt", weights_only=True).values()) for split in ("train", "test")}


def test_loss_is_the_sum_of_k_binary_cross_entropies_of_logistic_regression():
    torch.manual_seed(0)
    logits = torch.randn(40, 5, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (40,))
    per_class = sum(binary_cross_entropy(sigmoid(logits[:, k]), (y == k).double()) for k in range(5))
    torch.testing.assert_close(one_vs_rest_cross_entropy(logits, y), per_class)


def test_gradient_is_the_closed_form_and_each_row_is_one_logistic_regressions():
    """∇_W C = Xᵀ(σ(XWᵀ + b) − Y)/n against autograd, and row k against logistic_gradient on class k's column."""
    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (64,))
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

    grad_b, grad_w = torch.autograd.grad(one_vs_rest_cross_entropy(x @ w.T + b, y), (b, w))
    formula_b, formula_w = one_vs_rest_gradient(x, y, b.detach(), w.detach())
    torch.testing.assert_close(formula_b, grad_b)
    torch.testing.assert_close(formula_w, grad_w)
    for k in range(4):
        binary_b, binary_w = logistic_gradient(x, (y == k).double(), b[k].detach(), w[k].detach())
        torch.testing.assert_close(formula_b[k], binary_b)
        torch.testing.assert_close(formula_w[k], binary_w)


def test_normalized_sigmoids_sum_to_one_and_keep_the_order_even_where_every_sigmoid_underflows():
    torch.manual_seed(0)
    logits = torch.randn(50, 10, dtype=torch.float64) * 4
    p = normalized_sigmoids(logits)
    torch.testing.assert_close(p, torch.sigmoid(logits) / torch.sigmoid(logits).sum(dim=1, keepdim=True))
    torch.testing.assert_close(p.sum(dim=1), torch.ones(50, dtype=torch.float64))
    assert torch.equal(p.argmax(dim=1), logits.argmax(dim=1))

    far = torch.tensor([[-200.0, -210.0, -220.0]])  # σ = 0 in float32
    assert torch.sigmoid(far).sum() == 0
    assert torch.isfinite(normalized_sigmoids(far)).all()
    assert normalized_sigmoids(far).argmax().item() == 0


def test_training_step_is_the_summed_cross_entropy_plus_ridge_penalty():
    torch.manual_seed(0)
    model = make_model((6,), num_classes=3, l2=0.4)
    x = torch.randn(12, 6)
    y = torch.randint(0, 3, (12,))
    logits = x @ model.linear.weight.T + model.linear.bias
    targets = F.one_hot(y, 3).float()
    expected = -(targets * torch.log(torch.sigmoid(logits)) + (1 - targets) * torch.log(1 - torch.sigmoid(logits))).sum(dim=1).mean()
    expected = expected + 0.2 * (model.linear.weight**2).sum()
    torch.testing.assert_close(model.training_step((x, y), 0), expected)


def test_predict_is_the_normalized_sigmoids_of_the_k_logits_of_flattened_images():
    torch.manual_seed(0)
    model = make_model((1, 4, 4), num_classes=5)
    x = torch.randn(8, 1, 4, 4)
    probabilities = model.predict(x)
    assert probabilities.shape == (8, 5)
    torch.testing.assert_close(probabilities, normalized_sigmoids(model(x)))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(8))


def test_module_overfits_a_small_batch():
    torch.manual_seed(0)
    x = torch.randn(24, 40)
    y = torch.randint(0, 4, (24,))
    model = make_model((40,), num_classes=4)
    fit_batch(model, x, y, steps=200)
    with torch.no_grad():
        assert torch.equal(model.predict(x).argmax(dim=-1), y)
        assert model.loss(model(x), y).item() < 0.05


def test_quick_fit_on_digits_classifies_most_test_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits["train"], digits["test"]
    torch.manual_seed(0)
    model = make_model((1, 8, 8), num_classes=10, l2=1e-3, optimizer="lbfgs", lr=1.0)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=len(x_train))
    quiet_trainer(max_epochs=10, num_sanity_val_steps=0).fit(model, train_dataloaders=loader, val_dataloaders=loader)
    with torch.no_grad():
        accuracy = (model.predict(x_test).argmax(dim=1) == y_test).double().mean().item()
    assert accuracy > 0.93


def test_check_config_rejects_a_negative_penalty():
    with pytest.raises(ValueError, match=r"^l2:"):
        LogisticOneVsRest.check_config({"l2": -0.5})
