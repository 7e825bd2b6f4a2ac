"""scikit-learn's digits: 1797 handwritten digits as 8x8 grey images."""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec


def load():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[:, None, :, :], bunch.target  # (N, 1, 8, 8)


DATASET = Dataset(DataSpec("multiclass", (1, 8, 8), 10), load, "scikit-learn digits, 1797 x 1x8x8", "global")
