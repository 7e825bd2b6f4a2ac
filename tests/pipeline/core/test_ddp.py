"""What the processes of a DDP training must agree on, checked in one process: DDP averages the gradients
of every backward pass, and a process that makes a backward pass the others do not make waits for
them for ever (tests/e2e/test_distributed.py trains on two processes)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pipeline import data
from pipeline.params import family_class, load


def test_lbfgs_under_ddp_sees_the_loss_averaged_over_the_processes():
    experiment = load().experiments["linear_diabetes"]
    assert experiment.optimizer.name == "lbfgs"
    cls = family_class(experiment.family)
    model = cls(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                scheduler=experiment.scheduler, **experiment.model)
    seen = []

    class Optimizer:  # what LightningModule.optimizer_step calls: step(closure=...)
        def step(self, closure):
            seen.append(closure())

    model.trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce=lambda t, reduce_op: t * 10 if reduce_op == "mean" else t))
    model.optimizer_step(0, 0, Optimizer(), lambda: torch.tensor(1.5, requires_grad=True))
    model.trainer = SimpleNamespace(world_size=1)
    model.optimizer_step(0, 0, Optimizer(), lambda: torch.tensor(1.5))
    assert [float(loss) for loss in seen] == [15.0, 1.5]
