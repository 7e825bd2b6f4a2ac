"""scikit-learn's breast cancer Wisconsin: 569 tumours, 30 features, malignant or benign (ch. 3)."""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec


def load():
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return bunch.data, bunch.target


DATASET = Dataset(DataSpec("binary", (30,), 2), load, "scikit-learn breast cancer Wisconsin, 569 x 30")
