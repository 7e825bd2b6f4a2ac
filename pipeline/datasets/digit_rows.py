"""scikit-learn's digits read as sequences (ch. 7): each image is 8 time steps, its rows, of 8 pixels."""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec


def load():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target  # (N, 8, 8): 8 time steps, the image's rows, of 8 pixels each


DATASET = Dataset(
    DataSpec("multiclass", (8, 8), 10), load, "scikit-learn digits read as 8 rows of 8 pixels, 1797 x 8x8", "global"
)
