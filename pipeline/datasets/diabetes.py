"""scikit-learn's diabetes: 442 patients, 10 standardized measurements, disease progression a year on (ch. 2)."""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec


def load():
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return bunch.data, bunch.target


DATASET = Dataset(DataSpec("regression", (10,), 0), load, "scikit-learn diabetes, 442 x 10")
