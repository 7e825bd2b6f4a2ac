"""A supervised family's evaluation: predictions on every test sample (on as many processes as training
had), torchmetrics per task, the confusion plot (deciles for regression), the figures."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from pipeline.core import figures as fig
from pipeline.core import metrics
from pipeline.core.evaluation import Context, write_csv
from pipeline.datamodules import BatchIndexDataset


def evaluate(model, context: Context) -> dict[str, float] | None:
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
    if spec.task == "sequence" and spec.pad_token is not None:  # sources of several lengths: each one's exact match
        results = dict(sorted({**results, **_by_length(model, x, y, prediction, meta, context)}.items()))
    actual, predicted = _plot_labels(spec.task, prediction, y)
    write_csv(context.predictions, ["actual", "predicted"], zip(actual, predicted))
    with torch.no_grad():
        context.examples = model.examples(context.x, context.y, meta)  # text for MLflow only: DVC renders plots/figures
    if spec.task == "regression":
        fig.predicted_vs_actual(prediction, y, context.figures / "predicted_vs_actual.png", experiment.name)
    else:
        matrix = metrics.confusion_matrix(spec.task, prediction, y, spec.num_classes)
        fig.confusion(matrix, context.figures / "confusion_matrix.png", experiment.name)
    return results


def _by_length(model, x, y, prediction, meta, context) -> dict[str, float]:
    """Exact match per source length; with attention, a figure of the first test samples' weights (and,
    where the dataset's alignment is the mirror image, the share of rows whose argmax is mirrored)."""
    spec = model.data_spec
    source = x[:, : -spec.target_length]
    results = metrics.exact_match_per_length(prediction, y, source, spec.pad_token)
    with torch.no_grad():
        weights = model.attention(x)
    if weights is not None:
        if meta.get("alignment") == "mirrored":
            results["test/attention_mirrored"] = metrics.mirrored_attention(weights, source, spec.pad_token)
        fig.attention(weights, source, spec.pad_token, context.figures / "attention.png", context.experiment.name)
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
