"""The one-shot digits' reference: one-nearest-neighbour in pixel space. On each episode of the test
split (pipeline.core.oneshot, the protocol in meta.json) the query takes the class of the support
image nearest to it in Euclidean distance between the standardized pixels, as the models' embeddings
do after training: what an embedding must beat to have learned anything about unseen classes."""

from __future__ import annotations


def reference_rows(dataset: str) -> list[dict]:
    from pipeline import data
    from pipeline.core import oneshot

    x, y = data.load_split(dataset, "test")
    metrics, _, _ = oneshot.oneshot_metrics(x.flatten(1).double(), y.numpy(), data.load_meta(dataset)["oneshot"])
    return [{"name": "pixel_1nn", "family": "1-nearest neighbour in pixel space, same episodes", **metrics}]
