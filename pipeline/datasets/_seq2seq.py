"""Sequence-to-sequence digit tasks (ch. 7, encoder-decoders) with sources of 8, 16 and 32 digits in one
dataset, each length as often.

Layout of a sample (the sequence task's, as in reverse_digits.py): the source's digits then PAD up to the
longest source, the separator, then the target shifted right (teacher forcing); the target is its digits
then PAD up to the longest target. PAD is a target class: predicting it ends the output, so exact match
asks for the right digits and the right length. A sample's source length is its count of digits.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.spec import Dataset, DataSpec

LENGTHS = (8, 16, 32)  # source lengths
SAMPLES_PER_LENGTH = 3_000
PAD, SEPARATOR = 10, 11  # after the digits 0..9; PAD is the eleventh target class
NUM_CLASSES, VOCAB_SIZE = 11, 12


def layout(sources: list[np.ndarray], targets: list[np.ndarray], target_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Sources and targets of mixed lengths -> inputs (n, max(LENGTHS) + target_length) =
    [source, PAD…, SEP, target[:-1], PAD…] and targets (n, target_length) = [target, PAD…]."""
    n = len(sources)
    source = np.full((n, max(LENGTHS)), PAD)
    target = np.full((n, target_length), PAD)
    for i, (s, t) in enumerate(zip(sources, targets)):
        source[i, : len(s)], target[i, : len(t)] = s, t
    separator = np.full((n, 1), SEPARATOR)
    return np.concatenate([source, separator, target[:, :-1]], axis=1), target


def make_splits_for(task: Callable[[np.ndarray], np.ndarray], target_length: int, facts: dict):
    """prepare's make_splits for `task` (sources (n, S) -> targets (n, L)): at each length, distinct seeded
    random digit strings shared out at random, so no test string is seen in training."""

    def make_splits(config) -> tuple[dict, dict]:
        rng = np.random.default_rng(config.split_seed)
        parts = {"train": ([], []), "val": ([], []), "test": ([], [])}
        for length in LENGTHS:
            sources = np.unique(rng.integers(0, 10, size=(SAMPLES_PER_LENGTH, length)), axis=0)
            sources = sources[rng.permutation(len(sources))]
            n_test, n_val = int(len(sources) * config.test_fraction), int(len(sources) * config.val_fraction)
            chosen = {"train": sources[n_test + n_val :], "val": sources[n_test : n_test + n_val], "test": sources[:n_test]}
            for name, part in chosen.items():
                parts[name][0].extend(part)
                parts[name][1].extend(task(part))
        splits = {}
        for name, (sources, targets) in parts.items():
            order = rng.permutation(len(sources))  # the lengths mixed in every batch
            splits[name] = layout([sources[i] for i in order], [targets[i] for i in order], target_length)
        return splits, {**facts, "source_lengths": list(LENGTHS), "pad_token": PAD, "separator": SEPARATOR}

    return make_splits


def dataset(task: Callable[[np.ndarray], np.ndarray], target_length: int, description: str, facts: dict) -> Dataset:
    spec = DataSpec("sequence", (max(LENGTHS) + target_length,), NUM_CLASSES, vocab_size=VOCAB_SIZE,
                    target_length=target_length, pad_token=PAD)
    return Dataset(spec, None, description, "none", make_splits_for(task, target_length, facts))
