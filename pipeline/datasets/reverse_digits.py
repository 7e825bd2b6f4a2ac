"""A synthetic sequence task (ch. 7, the transformer decoder): reverse a string of digits.

Input tokens: the source's digits, a separator, then the target shifted right (teacher forcing: each
position sees the true target so far); the target's L tokens are predicted at the input's last L
positions.
"""

from __future__ import annotations

import numpy as np

from pipeline.spec import Dataset, DataSpec

REVERSE_LENGTH = 8
REVERSE_SAMPLES = 15_000
SEPARATOR = 10  # the token after the source digits 0..9


def reverse_task(sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sources (n, S) digits -> decoder inputs (n, 2S) = [source, SEP, target[:-1]], targets (n, S) = source reversed."""
    targets = sources[:, ::-1]
    separator = np.full((len(sources), 1), SEPARATOR)
    return np.concatenate([sources, separator, targets[:, :-1]], axis=1), targets.copy()


def make_splits(config) -> tuple[dict, dict]:
    """Distinct seeded random digit strings, shared out at random: no test string is seen in training."""
    rng = np.random.default_rng(config.split_seed)
    sources = np.unique(rng.integers(0, 10, size=(REVERSE_SAMPLES, REVERSE_LENGTH)), axis=0)
    sources = sources[rng.permutation(len(sources))]
    n_test, n_val = int(len(sources) * config.test_fraction), int(len(sources) * config.val_fraction)
    parts = {"train": sources[n_test + n_val :], "val": sources[n_test : n_test + n_val], "test": sources[:n_test]}
    return {name: reverse_task(part) for name, part in parts.items()}, {"task_rule": "target = source reversed"}


DATASET = Dataset(
    DataSpec("sequence", (2 * REVERSE_LENGTH,), 10, vocab_size=11, target_length=REVERSE_LENGTH), None,
    f"distinct random strings of {REVERSE_LENGTH} digits and their reversal, {REVERSE_SAMPLES} drawn",
    "none", make_splits,
)
