"""scikit-learn's digits split by class for one-shot learning (ch. 6, Siamese networks): training and
validation images of the digits 0-4, test images of the unseen digits 5-9.

A model learns an embedding on the seen classes; the test asks N-way one-shot questions about the
unseen ones (pipeline.core.oneshot: each episode shows one support image of N classes and a query).
The episodes are fixed by ONESHOT in meta.json, so every model and the reference answer the same ones.
"""

from __future__ import annotations

from pipeline.spec import Dataset, DataSpec

SEEN_CLASSES = (0, 1, 2, 3, 4)  # training and validation
UNSEEN_CLASSES = (5, 6, 7, 8, 9)  # test
ONESHOT = {"ways": 5, "episodes": 1000, "seed": 0}  # N-way one-shot episodes drawn from the test split


def make_splits(config) -> tuple[dict, dict]:
    """Every image of the unseen classes is a test image; the seen classes' images are shared out
    between training and validation (val_fraction of them), stratified, with split_seed."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x, y = bunch.images[:, None, :, :], bunch.target  # (N, 1, 8, 8)
    seen = np.isin(y, SEEN_CLASSES)
    x_train, x_val, y_train, y_val = train_test_split(
        x[seen], y[seen], test_size=config.val_fraction, random_state=config.split_seed, stratify=y[seen]
    )
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x[~seen], y[~seen])}
    facts = {"seen_classes": list(SEEN_CLASSES), "unseen_classes": list(UNSEEN_CLASSES), "oneshot": ONESHOT}
    return splits, facts


DATASET = Dataset(
    DataSpec("oneshot", (1, 8, 8), len(SEEN_CLASSES)), None,
    "scikit-learn digits, 1x8x8: classes 0-4 for training and validation, the unseen 5-9 for one-shot tests",
    "global", make_splits,
)
