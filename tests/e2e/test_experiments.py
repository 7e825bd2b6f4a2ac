"""Every experiment of the real params.yaml, at its configured size, trains a few batches through
Lightning in-process; so does every example (disabled experiment) whose dataset ships with the project. The end-to-end pipelines run a covering subset (conftest.E2E_EXPERIMENTS) at toy
size; this catches an experiment whose own settings break at run time."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pipeline import data, datamodules
from pipeline.params import family_class, load
from pipeline.prepare import prepare

from conftest import quiet_trainer

CONFIG = load()
RUNNABLE = {**CONFIG.experiments, **{name: example for name, example in CONFIG.examples.items()
                                      if not data.DATASETS[example.dataset].download}}


class CountBatches(Callback):
    """The training batches a fit ran, through Lightning's public batch hook."""

    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches += 1


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    for dataset in sorted({experiment.dataset for experiment in RUNNABLE.values()}):  # environments: meta.json
        prepare(dataset, CONFIG.data, root / dataset)
    return root


@pytest.mark.parametrize("name", list(RUNNABLE))
def test_every_experiment_trains_a_few_batches_as_configured(name, prepared, monkeypatch):
    monkeypatch.setattr(data, "PREPARED", prepared)
    experiment = RUNNABLE[name]
    torch.manual_seed(experiment.seed)
    model = family_class(experiment.family)(
        data=data.DATASETS[experiment.dataset].spec,
        optimizer=experiment.optimizer,
        scheduler=experiment.scheduler,
        **experiment.model,
    )
    t = experiment.trainer
    trained = CountBatches()
    trainer = quiet_trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=1, precision=t.precision,
        gradient_clip_val=t.gradient_clip_val or None, accumulate_grad_batches=t.accumulate_grad_batches,
        use_distributed_sampler=False, callbacks=[trained],
    )
    datamodule = datamodules.make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed)
    trainer.fit(model, datamodule=datamodule)
    metrics = trainer.callback_metrics
    if data.DATASETS[experiment.dataset].is_environment:  # rollouts: as many batches as the limit allows
        batches = 3
    else:  # a graph dataset: one full batch an epoch
        batches = min(3, len(datamodule.train_dataloader()))
    assert trained.batches == 2 * batches
    if model.automatic_optimization:
        assert trainer.global_step == 2 * batches // t.accumulate_grad_batches
    # the metrics early stopping may monitor: val/loss, and val/<primary metric> for supervised families;
    # val/mean_return for reinforcement learning
    monitors = model.monitors(data.DATASETS[experiment.dataset].spec)
    assert set(monitors) <= set(metrics)
    assert all(math.isfinite(float(metrics[key])) for key in ("train/loss", *monitors))
