"""Stage evaluate@EXPERIMENT: test metrics of the best checkpoint, plots, into the same MLflow run.

    python -m pipeline.evaluate EXPERIMENT    (under DVC: python -m pipeline.evaluate, the experiment from DVC_STAGE)

Writes metrics/EXPERIMENT.json (DVC metrics), plots/predictions/EXPERIMENT.csv (actual vs
predicted, a DVC confusion plot: classes, or deciles of the target for regression) and
plots/figures/EXPERIMENT/*.png; logs the test metrics and figures to the training run, each metric
once per run (evaluating the same model again adds no point to its history).

The outputs persist between runs (DVC does not delete them first): each is replaced whole, and only
once the evaluation succeeded. The figures are drawn into plots/figures/.EXPERIMENT.partial/, which
then takes the place of plots/figures/EXPERIMENT/: no figure of an earlier evaluation survives, and
a failed one leaves the previous folder as it was.

It runs on as many processes as the experiment trains on (trainer.devices x num_nodes, through the
same launcher). Then each process predicts its own share of the test split, every world-th sample,
unpadded (DistributedSampler would repeat samples to even the shares out), and global rank 0
gathers the predictions back into the split's order: every test sample is counted once, and the
metrics are those of one process.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import cli, data, files, stagestats
from pipeline.core import launch, tracking
from pipeline.params import ROOT, ConfigError, ExperimentConfig, load_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0])
    cli.experiment_argument(parser, "evaluate")
    args = parser.parse_args(argv)

    config, experiment = load_experiment(cli.experiment_name(args.experiment, "evaluate"))
    cli.set_threads(experiment.trainer.threads)
    model_dir = ROOT / "models" / experiment.name
    checkpoint, run_file = model_dir / "best.ckpt", model_dir / "run.json"
    for path in (checkpoint, run_file):
        if not path.exists():
            raise ConfigError(f"{path.relative_to(ROOT)}: missing; run `dvc repro train@{experiment.name}` to build it")
    # an environment has no test split: its family's evaluate plays test episodes
    x, y = (None, None) if data.DATASETS[experiment.dataset].is_environment else data.load_split(experiment.dataset, "test")
    meta = data.load_meta(experiment.dataset)
    tracking.check_reachable()  # before any work, not after predicting
    tracking.check_run(run_file, experiment.name)
    launch.check_experiment(experiment)
    launch.launch(experiment, module="pipeline.evaluate")  # as many processes as training had

    from pipeline.params import family_class

    try:  # the model as any user rebuilds it: its constructor's arguments are in the checkpoint
        model = family_class(experiment.family).load_from_checkpoint(checkpoint, map_location="cpu")
    except Exception as error:
        raise ConfigError(
            f"{checkpoint.relative_to(ROOT)}: unreadable checkpoint ({type(error).__name__}); "
            f"run `dvc repro -f train@{experiment.name}` to rebuild it"
        ) from None
    model.eval()
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    plots = ROOT / "plots"
    figures = plots / "figures" / experiment.name
    context = Context(experiment, x, y, meta, plots / "figures" / f".{experiment.name}.partial",
                      plots / "predictions" / f"{experiment.name}.csv")
    stagestats.mark("work")
    if rank_zero_only.rank != 0:  # its share of the predictions goes to global rank 0, which alone writes
        model.evaluate(context)
        return 0
    files.remove(context.figures)  # left by an evaluation that was stopped
    context.figures.mkdir(parents=True)
    try:
        results = _evaluate_and_log(model, context, json.loads(run_file.read_text())["mlflow_run_id"])
        files.replace_dir(context.figures, figures)
        files.write_text(ROOT / "metrics" / f"{experiment.name}.json", json.dumps(results, indent=2) + "\n")
    except BaseException:
        files.remove(context.figures)  # no half-drawn folder left; the previous figures are replaced only by a complete one
        raise
    tested = "test episodes" if y is None else f"{len(y)} test samples"
    print(f"{experiment.name}: {tested} on {experiment.trainer.world_size} process(es): "
          + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return 0


def _evaluate_and_log(model, context: Context, run_id: str) -> dict[str, float]:
    """The family's test metrics and figures (into context.figures), and the learning curve; all of it
    logged to the training's MLflow run, each test metric once per run."""
    from pipeline.core import figures as fig

    results = model.evaluate(context)
    name = context.experiment.name
    plots = ROOT / "plots"
    fig.learning_curve(plots / "learning_curves" / f"{name}.csv", plots / "validation" / f"{name}.csv",
                       context.figures / "learning_curve.png", name)
    mlflow_client = tracking.client()
    tracking.log_new_values(mlflow_client, run_id, results)
    mlflow_client.log_artifacts(run_id, str(context.figures), "figures")
    if context.examples is not None:
        mlflow_client.log_text(run_id, context.examples, "examples.txt")
    mlflow_client.set_tag(run_id, "dvc.evaluated", "true")
    return results


@dataclass
class Context:
    """What a family's `evaluate` gets: the experiment, the test split (as prepared; None for an environment), the dataset's
    facts, where its figures go (PNG, into a staging folder that becomes plots/figures/EXPERIMENT/) and its DVC plot rows
    (plots/predictions/EXPERIMENT.csv: actual, predicted); `examples` is text it may leave for MLflow."""

    experiment: ExperimentConfig
    x: Any
    y: Any
    meta: dict
    figures: Path
    predictions: Path
    examples: str | None = None


def evaluate_supervised(model, context: Context) -> dict[str, float] | None:
    """Test metrics of a supervised family: predictions on every test sample (on as many processes as
    training had), torchmetrics per task, the confusion plot (deciles for regression), the figures."""
    import torch

    from pipeline.core import figures as fig
    from pipeline.core import metrics

    experiment, x, y, meta = context.experiment, context.x, context.y, context.meta
    spec = data.DATASETS[experiment.dataset].spec
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
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    class Shares(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.gathered = None
            self.local = []  # this process's (indices, predictions)

        def predict_dataloader(self):
            rank, world = self.trainer.global_rank, self.trainer.world_size
            share = torch.arange(rank, len(x), world)  # every world-th sample, no padding
            dataset = data.BatchIndexDataset(torch.arange(len(x)), x)  # dataset[indices] -> (indices, x[indices])
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
    from pipeline.core import metrics

    if task != "regression":  # classes; for sequences every target token
        return y.long().flatten().tolist(), metrics.predicted_labels(task, prediction).flatten().tolist()
    import torch

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


if __name__ == "__main__":
    cli.run_and_exit(main)
