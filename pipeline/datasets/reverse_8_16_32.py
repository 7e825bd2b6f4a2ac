"""Reversal of digit strings of 8, 16 and 32 digits (ch. 7, encoder-decoders): target position i is source
position n - 1 - i, so attention's alignment is the mirror image (the anti-diagonal)."""

from __future__ import annotations

from pipeline.datasets._seq2seq import LENGTHS, SAMPLES_PER_LENGTH, dataset


def reverse(sources):
    """(n, S) digits -> (n, S) the digits in reverse order."""
    return sources[:, ::-1].copy()


DATASET = dataset(
    reverse, max(LENGTHS),
    f"distinct random strings of {', '.join(map(str, LENGTHS))} digits ({SAMPLES_PER_LENGTH} drawn at each length) "
    "and their reversal",
    {"task_rule": "target = source reversed", "alignment": "mirrored"},
)
