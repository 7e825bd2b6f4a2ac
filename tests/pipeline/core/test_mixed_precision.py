"""16-mixed with manual optimization (Lightning #19695, #18267): a family that steps its optimizers
itself must still go through manual_backward and the LightningOptimizer, or the GradScaler neither
scales its loss, nor unscales its gradients, nor skips a step whose gradients are not finite. Checked
on the CPU with Lightning's own MixedPrecision plugin and PyTorch's CPU GradScaler, for every family of
params.yaml that declares MANUAL_OPTIMIZATION."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import MixedPrecision

from pipeline import data, datamodules
from pipeline.params import family_class, load
from pipeline.prepare import prepare

from conftest import quiet_trainer

CONFIG = load()
# One experiment per family that steps its optimizers itself: its last in params.yaml (for Q-learning
# the cliff, whose -1 a step moves the table from the first steps on).
MANUAL = {e.family: e for e in CONFIG.experiments.values() if family_class(e.family).MANUAL_OPTIMIZATION}

INITIAL_SCALE = 2.0**10


class PoisonFirstBackward(Callback):
    """Makes every gradient of the fit's first backward pass infinite, and keeps the weights it reached
    before that step and before the next backward pass, and the scaler's scale then."""

    def __init__(self):
        self.passes = 0
        self.before = self.after = None
        self.scale_after = None

    def on_after_backward(self, trainer, module) -> None:
        self.passes += 1
        if self.passes == 1:
            self.before = {n: p.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
            for parameter in module.parameters():
                if parameter.grad is not None:
                    parameter.grad.fill_(math.inf)
        elif self.passes == 2:
            self.after = {n: module.get_parameter(n).detach().clone() for n in self.before}
            self.scale_after = trainer.precision_plugin.scaler.get_scale()


def test_every_manual_family_of_params_is_covered():
    assert {"gan", "q_learning"} <= set(MANUAL)


@pytest.mark.parametrize("family", sorted(MANUAL))
def test_a_step_with_non_finite_gradients_is_skipped_and_the_scale_backs_off(family, tmp_path, monkeypatch):
    experiment = MANUAL[family]
    monkeypatch.setattr(data, "PREPARED", tmp_path)
    prepare(experiment.dataset, CONFIG.data, tmp_path / experiment.dataset)
    cls = family_class(family)
    torch.manual_seed(0)
    model = cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                scheduler=experiment.scheduler, **cls.small_config(experiment.model))
    poison = PoisonFirstBackward()
    scaler = torch.amp.GradScaler("cpu", init_scale=INITIAL_SCALE)
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1, use_distributed_sampler=False,
                            plugins=[MixedPrecision("16-mixed", "cpu", scaler)], callbacks=[poison])
    trainer.fit(model, datamodule=datamodules.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed))

    assert poison.passes > 2  # steps after the poisoned one
    for name, weights in poison.before.items():  # the poisoned step was skipped ...
        assert torch.equal(weights, poison.after[name]), name
    assert poison.scale_after == INITIAL_SCALE * scaler.get_backoff_factor()  # ... and the scale backed off
    trained = {n: p.detach() for n, p in model.named_parameters() if n in poison.before}
    assert any(not torch.equal(poison.before[n], trained[n]) for n in trained)  # the later steps were taken
    assert all(torch.isfinite(p).all() for p in trained.values())
