"""MNIST (opt-in, from the network: data.download: [mnist]): 60000 + 10000 handwritten digits, 28x28."""

from __future__ import annotations

from functools import partial

from pipeline import downloads
from pipeline.datasets._official import official_splits
from pipeline.spec import Dataset, DataSpec

DATASET = Dataset(
    DataSpec("multiclass", (1, 28, 28), 10), None, "MNIST handwritten digits, 60000 + 10000 x 1x28x28", "global",
    partial(official_splits, partial(downloads.read_idx_dataset, downloads.MNIST, downloads.MNIST_CLASSES)),
    fetch=partial(downloads.fetch_idx, downloads.MNIST),
)
