"""The shared supervised plumbing: task losses, predictions, chapter 4's optimizers and schedules."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.family import build_optimizer, build_scheduler
from pipeline.core.supervised import SupervisedModule, task_loss, task_prediction

from conftest import quiet_trainer



def optimizer_config(name: str, lr: float = 0.1, weight_decay: float = 0.0, momentum: float = 0.0, nesterov: bool = False):
    return OptimizerConfig(name=name, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov)


def scheduler_config(name: str, step_size: int = 1, gamma: float = 1.0, warmup_epochs: int = 0):
    return SchedulerConfig(name=name, step_size=step_size, gamma=gamma, warmup_epochs=warmup_epochs)


# ---------------------------------------------------------------------------------------------
# Losses and predictions


def test_regression_loss_is_the_mean_squared_error():
    torch.manual_seed(0)
    scores, y = torch.randn(9, 1), torch.randn(9)
    expected = np.mean((scores.numpy()[:, 0].astype(np.float64) - y.numpy()) ** 2)
    assert task_loss("regression", scores, y).item() == pytest.approx(expected, rel=1e-5)


def test_binary_loss_is_the_cross_entropy_of_the_sigmoid():
    torch.manual_seed(0)
    scores, y = torch.randn(9, 1) * 3, torch.randint(0, 2, (9,)).float()
    z, t = scores.numpy()[:, 0].astype(np.float64), y.numpy()
    p = 1 / (1 + np.exp(-z))
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert task_loss("binary", scores, y).item() == pytest.approx(expected, rel=1e-5)


def test_multiclass_loss_is_the_mean_negative_log_softmax_of_the_true_class():
    torch.manual_seed(0)
    scores, y = torch.randn(9, 4) * 3, torch.randint(0, 4, (9,))
    z = scores.numpy().astype(np.float64)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = -np.mean(log_p[np.arange(9), y.numpy()])
    assert task_loss("multiclass", scores, y).item() == pytest.approx(expected, rel=1e-5)


def test_predictions_have_the_shape_and_range_metrics_expect():
    torch.manual_seed(0)
    values = task_prediction("regression", torch.randn(6, 1) * 10)
    assert values.shape == (6,)

    scores = torch.randn(6, 1) * 10
    probability = task_prediction("binary", scores)
    assert probability.shape == (6,) and ((probability > 0) & (probability < 1)).all()
    torch.testing.assert_close(probability, 1 / (1 + torch.exp(-scores[:, 0])))

    probabilities = task_prediction("multiclass", torch.randn(6, 5) * 10)
    assert probabilities.shape == (6, 5) and (probabilities >= 0).all()
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(6))


# ---------------------------------------------------------------------------------------------
# Optimizers


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
        ("adagrad", torch.optim.Adagrad),
        ("lbfgs", torch.optim.LBFGS),
    ],
)
def test_build_optimizer_returns_the_named_class_with_its_learning_rate(name, cls):
    optimizer = build_optimizer(nn.Linear(3, 2).parameters(), optimizer_config(name, lr=0.123))
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == 0.123


def test_sgd_gets_momentum_nesterov_and_weight_decay():
    config = optimizer_config("sgd", momentum=0.9, nesterov=True, weight_decay=0.01)
    group = build_optimizer(nn.Linear(3, 2).parameters(), config).param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 0.01)


def test_rmsprop_gets_momentum_and_weight_decay():
    group = build_optimizer(nn.Linear(3, 2).parameters(), optimizer_config("rmsprop", momentum=0.5, weight_decay=0.02))
    assert (group.param_groups[0]["momentum"], group.param_groups[0]["weight_decay"]) == (0.5, 0.02)


@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad"])
def test_adaptive_optimizers_get_weight_decay(name):
    optimizer = build_optimizer(nn.Linear(3, 2).parameters(), optimizer_config(name, weight_decay=0.03))
    assert optimizer.param_groups[0]["weight_decay"] == 0.03


def test_lbfgs_uses_a_strong_wolfe_line_search():
    optimizer = build_optimizer(nn.Linear(3, 2).parameters(), optimizer_config("lbfgs", lr=1.0))
    assert optimizer.param_groups[0]["line_search_fn"] == "strong_wolfe"


def test_sgd_momentum_step_matches_the_heavy_ball_update():
    """v ← μv + g, θ ← θ − ηv (PyTorch's form), two steps on C(θ) = ½‖θ‖², g = θ."""
    theta = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = build_optimizer([theta], optimizer_config("sgd", lr=0.1, momentum=0.9))
    expected, velocity = theta.detach().clone(), torch.zeros(2)
    for _ in range(2):
        optimizer.zero_grad()
        (0.5 * (theta**2).sum()).backward()
        optimizer.step()
        velocity = 0.9 * velocity + expected
        expected = expected - 0.1 * velocity
    torch.testing.assert_close(theta.detach(), expected)


# ---------------------------------------------------------------------------------------------
# Schedules


def epoch_learning_rates(config: SchedulerConfig, epochs: int, max_epochs: int = 10) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler(optimizer, config, max_epochs=max_epochs, total_steps=100)
    assert schedule["interval"] == "epoch"
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    return rates


def test_no_schedule_and_no_warmup_builds_no_scheduler():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_scheduler(optimizer, scheduler_config("none"), max_epochs=10, total_steps=100) is None


def test_step_schedule_decays_by_gamma_every_step_size_epochs():
    rates = epoch_learning_rates(scheduler_config("step", step_size=3, gamma=0.5), epochs=10)
    assert rates == pytest.approx([0.5 ** (epoch // 3) for epoch in range(10)])


def test_warmup_ramps_linearly_to_the_base_rate():
    rates = epoch_learning_rates(scheduler_config("none", warmup_epochs=3), epochs=7)
    assert rates == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])


def test_step_schedule_starts_decaying_after_the_warmup():
    rates = epoch_learning_rates(scheduler_config("step", step_size=2, gamma=0.1, warmup_epochs=2), epochs=8)
    assert rates == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("warmup", [0, 2])
def test_cosine_schedule_anneals_to_zero_over_the_epochs_after_warmup(warmup):
    rates = epoch_learning_rates(scheduler_config("cosine", warmup_epochs=warmup), epochs=10, max_epochs=10)
    span = 10 - warmup
    expected = [(e + 1) / (warmup + 1) for e in range(warmup)]
    expected += [0.5 * (1 + math.cos(math.pi * e / span)) for e in range(span)]
    assert rates == pytest.approx(expected)


def test_onecycle_is_stepped_per_batch_and_peaks_at_the_base_rate():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    schedule = build_scheduler(optimizer, scheduler_config("onecycle"), max_epochs=5, total_steps=40)
    assert schedule["interval"] == "step"
    assert isinstance(schedule["scheduler"], torch.optim.lr_scheduler.OneCycleLR)
    assert schedule["scheduler"].total_steps == 40
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    assert max(rates) == pytest.approx(0.4)
    assert rates[0] < 0.4 / 10 and rates[-1] < rates[0]


# ---------------------------------------------------------------------------------------------
# The LightningModule through a real Trainer


class Affine(SupervisedModule):
    TASKS = ("regression", "binary", "multiclass")

    def __init__(self, *, data: DataSpec, optimizer: OptimizerConfig, scheduler: SchedulerConfig):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.linear = nn.Linear(int(np.prod(data.input_shape)), data.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def toy_task(task: str, n: int, generator: torch.Generator):
    x = torch.randn(n, 4, generator=generator)
    if task == "regression":
        return x, x.sum(dim=1) + 0.1 * torch.randn(n, generator=generator)
    if task == "binary":
        return x, (x[:, 0] > 0).float()
    return x, x[:, :3].argmax(dim=1)


@pytest.mark.parametrize(("task", "num_classes"), [("regression", 0), ("binary", 2), ("multiclass", 3)])
def test_trainer_fit_logs_validation_metrics_of_the_whole_split_and_applies_the_schedule(task, num_classes):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x_train, y_train = toy_task(task, 64, generator)
    x_val, y_val = toy_task(task, 30, generator)
    spec = DataSpec(task, (4,), num_classes)
    model = Affine(
        data=spec, optimizer=optimizer_config("adam", lr=0.05), scheduler=scheduler_config("step", gamma=0.5)
    )
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(
        model,
        train_dataloaders=DataLoader(TensorDataset(x_train, y_train), batch_size=16, shuffle=True),
        val_dataloaders=DataLoader(TensorDataset(x_val, y_val), batch_size=20),  # batches of 20 and 10
    )

    metrics = trainer.callback_metrics
    assert set(metrics) == {"train/loss", "train/lr", "val/loss", f"val/{spec.primary_metric}"}
    assert metrics["train/lr"].item() == pytest.approx(0.05 * 0.5)  # the rate the last epoch trained at
    with torch.no_grad():
        scores = model(x_val)
    assert metrics["val/loss"].item() == pytest.approx(task_loss(task, scores, y_val).item(), rel=1e-5)
    if task == "regression":
        expected = ((scores[:, 0] - y_val) ** 2).mean().item()
        assert metrics["val/mse"].item() == pytest.approx(expected, rel=1e-5)
    else:
        labels = (scores[:, 0] > 0).float() if task == "binary" else scores.argmax(dim=1)
        assert metrics["val/accuracy"].item() == pytest.approx((labels == y_val).float().mean().item())
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**2)


class LossAfterStep(L.Callback):
    """Records the loss of each training batch at the weights its L-BFGS step ended on."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        with torch.no_grad():
            self.losses.append(module.loss(module(batch[0]), batch[1]).item())


def test_train_loss_is_one_value_per_batch_even_when_lbfgs_evaluates_many_times():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    x, y = toy_task("regression", 48, generator)
    model = Affine(data=DataSpec("regression", (4,), 0), optimizer=optimizer_config("lbfgs", lr=1.0),
                   scheduler=scheduler_config("none"))
    calls = []
    original = model.training_step
    model.training_step = lambda *args: calls.append(1) or original(*args)
    recorder = LossAfterStep()
    trainer = quiet_trainer(max_epochs=1, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=16),
                val_dataloaders=DataLoader(TensorDataset(x, y), batch_size=48))
    assert len(calls) > 3 * len(recorder.losses)  # L-BFGS evaluated the loss many times per batch
    expected = sum(recorder.losses) / len(recorder.losses)  # one value per batch, not per evaluation
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(expected, rel=1e-3)
