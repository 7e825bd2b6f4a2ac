"""Fashion-MNIST (opt-in, from the network: data.download: [fashion_mnist]): Zalando's 60000 + 10000
images of clothes in 10 classes, 28x28, laid out as MNIST."""

from __future__ import annotations

from functools import partial

from pipeline import downloads
from pipeline.datasets._official import official_splits
from pipeline.spec import Dataset, DataSpec

DATASET = Dataset(
    DataSpec("multiclass", (1, 28, 28), 10), None, "Fashion-MNIST (Zalando), 60000 + 10000 x 1x28x28", "global",
    partial(official_splits, partial(downloads.read_idx_dataset, downloads.FASHION_MNIST, downloads.FASHION_MNIST_CLASSES)),
    fetch=partial(downloads.fetch_idx, downloads.FASHION_MNIST),
)
