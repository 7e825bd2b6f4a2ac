"""Every other digit of strings of 8, 16 and 32 digits (ch. 7, encoder-decoders): target position t is
source position 2t, so the alignment skips every odd source position; it is not a permutation, and the
target has half the source's length."""

from __future__ import annotations

from pipeline.datasets._seq2seq import LENGTHS, SAMPLES_PER_LENGTH, dataset


def every_other(sources):
    """(n, S) digits -> (n, S / 2) the digits at the even positions 0, 2, 4, …."""
    return sources[:, 0::2].copy()


DATASET = dataset(
    every_other, max(LENGTHS) // 2,
    f"distinct random strings of {', '.join(map(str, LENGTHS))} digits ({SAMPLES_PER_LENGTH} drawn at each length) "
    "and their digits at even positions",
    {"task_rule": "target = the source's digits at positions 0, 2, 4, …", "alignment": "every other"},
)
