"""The one-shot digits' reference: one-nearest-neighbour in pixel space. On each episode of the test
split (pipeline.core.oneshot, the protocol in meta.json) the query takes the class of the support
image nearest to it in Euclidean distance between the standardized pixels, as the models' embeddings
do after training: what an embedding must beat to have learned anything about unseen classes (and,
on the validation split's episodes, about new images of the training classes)."""

from __future__ import annotations


def reference_rows(dataset: str) -> list[dict]:
    from pipeline import data
    from pipeline.core import oneshot

    protocol = data.load_meta(dataset)["oneshot"]
    metrics = {}
    for split, metric in (("test", "test/oneshot_accuracy"), ("val", oneshot.SEEN_METRIC)):
        x, y = data.load_split(dataset, split)
        metrics.update(oneshot.oneshot_metrics(x.flatten(1).double(), y.numpy(), protocol, metric)[0])
    return [{"name": "pixel_1nn", "family": "1-nearest neighbour in pixel space, same episodes", **dict(sorted(metrics.items()))}]
