"""A graph family's evaluation: the supervised test metrics on the test nodes, and the mean and spread
of the test accuracy over re-fits of the experiment with other seeds."""

from __future__ import annotations

import copy
import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging

from pipeline import data
from pipeline.core.evaluation import Context, supervised
from pipeline.datamodules import make_datamodule
from pipeline.core.trainer import fit_settings
from pipeline.params import family_class

SEEDS = tuple(range(10))  # a graph experiment's re-fits behind test/accuracy_mean and test/accuracy_std


def evaluate(model, context: Context) -> dict[str, float] | None:
    """A graph family's supervised test metrics, and the mean and spread of the test accuracy of the
    experiment re-fitted with each of SEEDS: one seed's accuracy on a few labelled nodes varies a lot."""
    results = supervised.evaluate(model, context)
    accuracies = torch.tensor([refit_accuracy(context.experiment, seed) for seed in SEEDS])
    results["test/accuracy_mean"] = round(float(accuracies.mean()), 6)
    results["test/accuracy_std"] = round(float(accuracies.std()), 6)  # over the seeds (n - 1)
    return dict(sorted(results.items()))


class KeepBest(Callback):
    """Keeps, in memory, the weights of the best epoch by `monitor` (the first, on ties), as the train
    stage's best checkpoint does: under weight averaging, the average, which the checkpoint holds."""

    def __init__(self, monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        self.best, self.state = None, None

    def on_validation_end(self, trainer, module) -> None:
        value = float(trainer.callback_metrics[self.monitor])
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            checkpoint = {"state_dict": module.state_dict()}
            for callback in trainer.callbacks:  # the averaging callback's own hook puts its average in a checkpoint
                if isinstance(callback, WeightAveraging):
                    callback.on_save_checkpoint(trainer, module, checkpoint)
            self.best, self.state = value, copy.deepcopy(checkpoint["state_dict"])


def refit(experiment, seed: int):
    """The experiment's config trained again from scratch with `seed` (initialization, dropout): its
    optimizer, schedule, epochs, early stopping and choice of weights (best or last), on one device of
    its accelerator, no logging. The model comes back on the CPU (Lightning moves it there after a fit)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # ten fits' device banners are noise
    L.seed_everything(seed, verbose=False)
    model = family_class(experiment.family)(
        data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
        scheduler=experiment.scheduler, **experiment.model,
    )
    best = KeepBest(experiment.early_stopping.monitor, experiment.early_stopping.mode)
    learning, learning_callbacks = fit_settings(experiment)
    trainer = L.Trainer(  # on the experiment's accelerator: its precision may be one the CPU lacks (16-mixed)
        **learning, devices=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[best, *learning_callbacks],
    )
    trainer.fit(model, datamodule=make_datamodule(experiment.dataset, experiment.batch_size, seed))
    if experiment.checkpoint == "best":
        model.load_state_dict(best.state)
    return model.eval()


def refit_accuracy(experiment, seed: int) -> float:
    """Test accuracy (on the unlabelled nodes) of the experiment re-fitted with `seed`."""
    model = refit(experiment, seed)
    graph, y = data.load_split(experiment.dataset, "test")
    with torch.no_grad():
        return float((model(graph).argmax(dim=-1) == y).float().mean())
