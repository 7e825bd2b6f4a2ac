"""trainer.ema_decay: the weights a training keeps are the exponential moving average of its iterates,
e_1 = w_1, e_k = d·e_{k-1} + (1 − d)·w_k after each optimizer step, computed here by hand from the
iterates a callback records. Checked through the train stage's Trainer (build_trainer: the model left
after the fit and both checkpoints) and through a graph experiment's re-fit (KeepBest, the best epoch's
average)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pipeline import data
from pipeline.config import ConfigError
from pipeline.core.trainer import LearningCurve, build_trainer
from pipeline.params import family_class, load
from pipeline.prepare import prepare

CONFIG = load(family_checks=False)
DECAY = 0.8


class Iterates(Callback):
    """The weights after each optimizer step, and at each validation (after the callbacks before it ran)."""

    def __init__(self):
        self.steps, self.validated = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    def on_validation_epoch_start(self, trainer, module):
        self.validated.append({k: v.detach().clone() for k, v in module.state_dict().items()})


def moving_average(states: list[dict], decay: float) -> dict:
    average = dict(states[0])
    for state in states[1:]:
        average = {k: decay * average[k] + (1 - decay) * state[k] for k in average}
    return average


def averaged(name: str, epochs: int, checkpoint: str = "last"):
    experiment = CONFIG.experiments[name]
    return dataclasses.replace(experiment, max_epochs=epochs, checkpoint=checkpoint,
                               trainer=dataclasses.replace(experiment.trainer, ema_decay=DECAY))


def assert_same(state: dict, expected: dict) -> None:
    assert state.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(state[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_train_stages_trainer_keeps_the_moving_average_in_the_model_and_its_checkpoints(tmp_path, monkeypatch):
    from pipeline.datamodules import make_datamodule

    experiment = averaged("softmax_digits", epochs=2)
    prepare(experiment.dataset, CONFIG.data, tmp_path / "prepared" / experiment.dataset)
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    torch.manual_seed(experiment.seed)
    model = family_class(experiment.family)(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                                            scheduler=experiment.scheduler, **experiment.model)
    iterates = Iterates()
    trainer = build_trainer(experiment, tmp_path / "checkpoints", f"sqlite:///{tmp_path / 'mlflow.db'}", None,
                            LearningCurve(), extra_callbacks=[iterates])
    trainer.fit(model, datamodule=make_datamodule(experiment.dataset, experiment.batch_size, experiment.seed))
    assert len(iterates.steps) > 2
    expected = moving_average(iterates.steps, DECAY)
    assert not torch.allclose(expected["linear.weight"], iterates.steps[-1]["linear.weight"])  # the test can tell them apart
    assert_same(model.state_dict(), expected)
    assert_same(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"], expected)


def test_a_graph_refit_keeps_the_best_epochs_moving_average(tmp_path, monkeypatch):
    from pipeline.core.evaluation import graph

    experiment = averaged("gcn_karate", epochs=6, checkpoint="best")
    prepare(experiment.dataset, CONFIG.data, tmp_path / "prepared" / experiment.dataset)
    monkeypatch.setattr(data, "PREPARED", tmp_path / "prepared")
    monitor = experiment.early_stopping.monitor
    seen: list[tuple[float, dict]] = []

    class Record(graph.KeepBest):  # the weights validation saw (every epoch-start hook has run by its first batch)
        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 0:
                self.state_seen = {k: v.detach().clone() for k, v in module.state_dict().items()}

        def on_validation_end(self, trainer, module):
            seen.append((float(trainer.callback_metrics[monitor]), self.state_seen))
            super().on_validation_end(trainer, module)

    monkeypatch.setattr(graph, "KeepBest", Record)
    model = graph.refit(experiment, seed=0)
    values = [value for value, _ in seen]
    best = values.index(min(values) if experiment.early_stopping.mode == "min" else max(values))
    assert_same(model.state_dict(), seen[best][1])


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_decay_outside_zero_to_one_is_refused(decay):
    trainer = dataclasses.replace(CONFIG.experiments["mlp_digits"].trainer, ema_decay=decay)
    with pytest.raises(ConfigError, match=r"^experiments\.mlp_digits\.trainer\.ema_decay: must be in \[0, 1\) \(0 = off\)"):
        trainer.check("experiments.mlp_digits.trainer")


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_ema_decay_with_a_sharding_strategy_is_refused(strategy):
    trainer = dataclasses.replace(CONFIG.experiments["mlp_digits"].trainer, ema_decay=0.99, strategy=strategy)
    with pytest.raises(ConfigError, match=rf"^experiments\.mlp_digits\.trainer\.ema_decay: Lightning averages whole "
                                          rf"models only, not {strategy}'s shards; allowed with ema_decay: auto, ddp, ddp_spawn$"):
        trainer.check("experiments.mlp_digits.trainer")
