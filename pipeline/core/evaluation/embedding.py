"""An embedding family's evaluation: N-way one-shot classification of the test split's classes
(pipeline.core.oneshot), on the episodes the dataset's meta.json fixes; the DVC plot rows are each
episode's true and predicted class, the figure their confusion matrix. The same on the validation
split, new images of the training classes, as test/seen_classes_oneshot_accuracy: the embedding
never trained on them (the validation loss chooses no weights unless checkpoint: best says so)."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from pipeline import data
from pipeline.core import figures as fig
from pipeline.core import oneshot
from pipeline.core.evaluation import Context, write_csv


def evaluate(model, context: Context) -> dict[str, float] | None:
    """test/oneshot_accuracy (and its standard error) of the model's embeddings of the test samples, and
    the same of the validation samples; on global rank 0 alone: the embeddings are one forward pass."""
    if rank_zero_only.rank != 0:
        return None
    with torch.no_grad():
        z = model.embed(context.x)  # (n, D)
    protocol = context.meta["oneshot"]
    results, actual, predicted = oneshot.oneshot_metrics(z, context.y.numpy(), protocol)
    x_val, y_val = data.load_split(context.experiment.dataset, "val")
    with torch.no_grad():
        seen, _, _ = oneshot.oneshot_metrics(model.embed(x_val), y_val.numpy(), protocol, oneshot.SEEN_METRIC)
    results.update(seen)
    write_csv(context.predictions, ["actual", "predicted"], zip(actual.tolist(), predicted.tolist()))
    classes = sorted(set(actual.tolist()) | set(predicted.tolist()))
    position = {c: i for i, c in enumerate(classes)}
    matrix = torch.zeros(len(classes), len(classes), dtype=torch.long)
    for a, p in zip(actual.tolist(), predicted.tolist()):
        matrix[position[a], position[p]] += 1
    fig.confusion(matrix, context.figures / "oneshot_confusion_matrix.png", context.experiment.name, classes)
    return dict(sorted(results.items()))
