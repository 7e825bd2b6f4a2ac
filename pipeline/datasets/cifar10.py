"""CIFAR-10 (opt-in, from the network: data.download: [cifar10]): 50000 + 10000 colour images, 32x32, 10 classes."""

from __future__ import annotations

from functools import partial

from pipeline import downloads
from pipeline.datasets._official import official_splits
from pipeline.spec import Dataset, DataSpec

DATASET = Dataset(
    DataSpec("multiclass", (3, 32, 32), 10), None, "CIFAR-10, 50000 + 10000 x 3x32x32 colour images", "global",
    partial(official_splits, downloads.read_cifar10), fetch=downloads.fetch_cifar10,
)
