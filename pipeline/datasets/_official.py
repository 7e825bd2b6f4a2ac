"""What the image datasets from the network (opt-in: data.download) share: pipeline/downloads.py reads
their files; the official test set is the test split, and val is carved from the official training set."""

from __future__ import annotations

from typing import Callable

import numpy as np


def official_splits(read: Callable[[], tuple[dict, dict]], config) -> tuple[dict, dict]:
    """The official test set as the test split (data.test_fraction does not apply); val_fraction of
    the official training set, stratified by class and seeded with data.split_seed, as the val split.
    Pixels become float32 here, so the scaling in `prepare` stays in float32 (a float64 copy of
    CIFAR-10 is 1.1 GB)."""
    from sklearn.model_selection import train_test_split

    parts, facts = read()
    x, y = parts["train"]
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=config.val_fraction, random_state=config.split_seed, stratify=y
    )
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": parts["test"]}
    facts = {**facts, "splits": f"test: the official test set; val: {config.val_fraction} of the official training set, "
                                f"stratified, seed {config.split_seed}; train: the rest of it"}
    return {name: (x.astype(np.float32), y) for name, (x, y) in splits.items()}, facts
