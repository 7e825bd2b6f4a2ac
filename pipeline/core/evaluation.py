"""The evaluate stage's work, by kind of family (pipeline.core.supervised, graph, generative,
reinforcement): test metrics through torchmetrics, the DVC plot rows, the figures. It uses only what
a family exposes about its model (`predict`, `sample`, `act_greedy`, ...), so the LightningModules
know nothing of plots or of the evaluate stage, and a kind's class names its evaluation (`EVALUATION`).
"""

from __future__ import annotations

import copy
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader
from torchmetrics import MaxMetric, MeanMetric, MinMetric
from torchmetrics.aggregation import CatMetric

from pipeline import data, files, stagestats
from pipeline.core import figures as fig
from pipeline.core import metrics, scoring
from pipeline.core.episodes import greedy_returns
from pipeline.datamodules import BatchIndexDataset, make_datamodule
from pipeline.config import ExperimentConfig
from pipeline.params import family_class

SEEDS = tuple(range(10))  # a graph experiment's re-fits behind test/accuracy_mean and test/accuracy_std
GRID = 64  # generated samples in the PNG grid
TEST_SEED = 10_000  # test episode i starts from seed TEST_SEED + i (validation's are VAL_SEED + i)
TEST_EPISODES = 100  # CartPole-v1 is solved at a mean return of 475 over 100 consecutive episodes
RETURN_BUCKETS = (100, 200, 300, 400, 475)  # the plot rows: each test episode's return bucket


@dataclass
class Context:
    """What an evaluation gets: the experiment, the test split (as prepared; None for an environment), the dataset's
    facts, where its figures go (PNG, into a staging folder that becomes plots/figures/EXPERIMENT/) and its DVC plot rows
    (plots/predictions/EXPERIMENT.csv: actual, predicted); `examples` is text it may leave for MLflow."""

    experiment: ExperimentConfig
    x: Any
    y: Any
    meta: dict
    figures: Path
    predictions: Path
    examples: str | None = None


def supervised(model, context: Context) -> dict[str, float] | None:
    """Test metrics of a supervised family: predictions on every test sample (on as many processes as
    training had), torchmetrics per task, the confusion plot (deciles for regression), the figures."""
    experiment, x, y, meta = context.experiment, context.x, context.y, context.meta
    spec = model.data_spec
    if experiment.trainer.world_size == 1:
        with torch.no_grad():
            prediction = model.predict(x)
    else:
        prediction = _predict_distributed(model, x, experiment)
        if prediction is None:
            return None
    if spec.task == "regression":  # back to the target's own units
        prediction = prediction * meta["target_std"] + meta["target_mean"]
        y = y * meta["target_std"] + meta["target_mean"]
    results = metrics.test_metrics(spec.task, prediction, y, spec.num_classes, meta.get("noise_variance"))
    actual, predicted = _plot_labels(spec.task, prediction, y)
    write_csv(context.predictions, ["actual", "predicted"], zip(actual, predicted))
    with torch.no_grad():
        context.examples = model.examples(context.x, context.y)  # text for MLflow only: DVC renders plots/figures
    if spec.task == "regression":
        fig.predicted_vs_actual(prediction, y, context.figures / "predicted_vs_actual.png", experiment.name)
    else:
        matrix = metrics.confusion_matrix(spec.task, prediction, y, spec.num_classes)
        fig.confusion(matrix, context.figures / "confusion_matrix.png", experiment.name)
    return results


def _predict_distributed(model, x, experiment):
    """Predictions for all of `x` from world_size processes (Lightning's strategy and launcher), in
    x's order on global rank 0; None on the other ranks."""
    class Shares(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.gathered = None
            self.local = []  # this process's (indices, predictions)

        def predict_dataloader(self):
            rank, world = self.trainer.global_rank, self.trainer.world_size
            share = torch.arange(rank, len(x), world)  # every world-th sample, no padding
            dataset = BatchIndexDataset(torch.arange(len(x)), x)  # dataset[indices] -> (indices, x[indices])
            return DataLoader(dataset, sampler=[share], batch_size=None)

        def predict_step(self, batch, batch_idx):
            indices, features = batch
            self.local.append((indices.cpu(), self.model.predict(features).float().cpu()))

        def on_predict_epoch_end(self):
            shares = [None] * self.trainer.world_size if self.trainer.is_global_zero else None
            torch.distributed.gather_object(self.local, shares, dst=0)
            self.gathered = shares

    t = experiment.trainer
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy="ddp",  # inference only: plain data parallel whatever trained it (the weights are whole)
        precision="32-true", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False,
    )
    module = Shares()
    trainer.predict(module, return_predictions=False)
    if not trainer.is_global_zero:
        return None
    pieces = [piece for share in module.gathered for piece in share]
    indices = torch.cat([i for i, _ in pieces])
    predictions = torch.cat([p for _, p in pieces])
    if trainer.world_size != t.world_size or sorted(indices.tolist()) != list(range(len(x))):
        raise RuntimeError(f"distributed evaluation covered {len(indices)} test samples, not each of {len(x)} once")
    ordered = torch.empty_like(predictions)
    ordered[indices] = predictions
    return ordered


def _plot_labels(task: str, prediction, y) -> tuple[list, list]:
    """Class labels, or for regression the decile (d1..d10 of the test targets) of each value."""
    if task != "regression":  # classes; for sequences every target token
        return y.long().flatten().tolist(), metrics.predicted_labels(task, prediction).flatten().tolist()
    edges = torch.quantile(y, torch.linspace(0, 1, 11)[1:-1])
    decile = lambda v: [f"d{int(i) + 1:02d}" for i in torch.bucketize(v, edges)]  # noqa: E731
    return decile(y), decile(prediction)


def write_csv(path: Path, header: list[str], rows) -> None:
    """Replace the CSV file `path` whole: a kill or a full disk leaves the old file or the new one."""
    text = io.StringIO(newline="")  # the csv module ends rows with \r\n itself
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    encoded = text.getvalue().encode("utf-8")
    with files.replacing(path, size=len(encoded)) as handle:  # the path its caller chose (tests pass their own)
        handle.write(encoded)


def graph(model, context: Context) -> dict[str, float] | None:
    """A graph family's supervised test metrics, and the mean and spread of the test accuracy of the
    experiment re-fitted with each of SEEDS: one seed's accuracy on a few labelled nodes varies a lot."""
    results = supervised(model, context)
    accuracies = torch.tensor([refit_accuracy(context.experiment, seed) for seed in SEEDS])
    results["test/accuracy_mean"] = round(float(accuracies.mean()), 6)
    results["test/accuracy_std"] = round(float(accuracies.std()), 6)  # over the seeds (n - 1)
    return dict(sorted(results.items()))


class KeepBest(Callback):
    """Keeps, in memory, the weights of the best epoch by `monitor` (the first, on ties), as the train
    stage's best checkpoint does."""

    def __init__(self, monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        self.best, self.state = None, None

    def on_validation_end(self, trainer, module) -> None:
        value = float(trainer.callback_metrics[self.monitor])
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.state = value, copy.deepcopy(module.state_dict())


def refit(experiment, seed: int):
    """The experiment's config trained again from scratch with `seed` (initialization, dropout): its
    optimizer, schedule, epochs, early stopping and choice of weights (best or last), no logging."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # ten fits' device banners are noise
    L.seed_everything(seed, verbose=False)
    model = family_class(experiment.family)(
        data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
        scheduler=experiment.scheduler, **experiment.model,
    )
    stopping = experiment.early_stopping
    best = KeepBest(stopping.monitor, stopping.mode)
    callbacks = [best] + ([EarlyStopping(stopping.monitor, mode=stopping.mode, patience=stopping.patience)]
                          if stopping.patience else [])
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=experiment.max_epochs, precision=experiment.trainer.precision,
        gradient_clip_val=experiment.trainer.gradient_clip_val or None, deterministic=experiment.trainer.deterministic,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=callbacks,
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


# ---------------------------------------------------------------------------------------------
# The evaluate stage of a generative family


def generative(model, context: Context) -> dict[str, float] | None:
    """N samples (N = the test split's size, drawn with the experiment's seed) scored against the test
    images; the family's own test metrics; a sample grid (PNG); the samples' classes as a DVC plot
    (actual = generated, predicted = the scorer's class). Global rank 0 only."""
    if rank_zero_only.rank != 0:
        return None
    experiment, x = context.experiment, context.x
    scorer = scoring.load_scorer(experiment.dataset)
    x_train, _ = data.load_split(experiment.dataset, "train")
    generator = torch.Generator().manual_seed(experiment.seed)
    with torch.no_grad():
        stagestats.mark("sampling")
        model.fit_sampler(x_train)
        samples = model.sample(len(x), generator)
        stagestats.mark("sampled")
        own = model.test_metrics(x, x_train)
        classes = scorer(samples.float()).argmax(-1)
    results = {f"test/{k}": v for k, v in scoring.sample_scores(samples, x, scorer, experiment.seed).items()}
    results.update({f"test/{k}": round(float(v), 6) for k, v in own.items()})
    write_csv(context.predictions, ["actual", "predicted"], (("generated", int(c)) for c in classes))
    fig.sample_grid(samples[:GRID], context.figures / "samples.png", f"{experiment.name}: samples")
    return dict(sorted(results.items()))


def reinforcement(model, context: Context) -> dict[str, float] | None:
    """TEST_EPISODES greedy episodes (seeds TEST_SEED + i), their returns aggregated with torchmetrics;
    the DVC plot rows (actual = greedy policy, predicted = the return's bucket); a histogram of the
    returns. Global rank 0 only."""
    if rank_zero_only.rank != 0:
        return None
    def policy(observations: torch.Tensor) -> torch.Tensor:
        return model.act_greedy(observations.to(model.device)).cpu()

    returns = greedy_returns(policy, model.environment, [TEST_SEED + i for i in range(TEST_EPISODES)])
    mean, low, high, every = MeanMetric(), MinMetric(), MaxMetric(), CatMetric()
    for metric in (mean, low, high, every):
        metric.update(returns)
    results = {
        "test/mean_return": float(mean.compute()),
        "test/std_return": float(every.compute().double().std()),
        "test/min_return": float(low.compute()),
        "test/max_return": float(high.compute()),
    }
    write_csv(context.predictions, ["actual", "predicted"], (("greedy policy", return_bucket(r)) for r in returns.tolist()))
    fig.return_histogram(returns, context.figures / "test_returns.png",
                         f"{context.experiment.name}: {TEST_EPISODES} greedy test episodes")
    return {k: round(v, 6) for k, v in sorted(results.items())}


def return_bucket(value: float) -> str:
    """The bucket of RETURN_BUCKETS a return falls in, e.g. '400-475' or '475+'."""
    lower = 0
    for upper in RETURN_BUCKETS:
        if value < upper:
            return f"{lower}-{upper}"
        lower = upper
    return f"{lower}+"


EVALUATORS = {"supervised": supervised, "graph": graph, "generative": generative, "reinforcement": reinforcement}


def evaluate(model, context: Context) -> dict[str, float] | None:
    """The test metrics of `model` (written plots and figures into context's paths) by its kind's
    evaluation; None on processes other than global rank 0."""
    kind = getattr(model, "EVALUATION", None)
    if kind not in EVALUATORS:
        raise TypeError(f"{type(model).__name__}.EVALUATION: {kind!r}; a family subclasses one of the kinds, "
                        f"whose EVALUATION is one of {', '.join(EVALUATORS)}")
    return EVALUATORS[kind](model, context)
