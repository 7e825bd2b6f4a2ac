"""Addition of two numbers of 4, 8 and 16 digits (sources of 8, 16 and 32 digits; ch. 7, encoder-decoders).

Both numbers and their sum are written least significant digit first, and the source interleaves the two
numbers' digits: a_0 b_0 a_1 b_1 …. The sum's digit t is (a_t + b_t + carry_t) mod 10, so target position t
reads source positions 2t and 2t + 1 and the carry its decoder has seen: a monotone alignment with two
source positions per target digit, not a permutation. The sum has one digit more than the numbers.
"""

from __future__ import annotations

import numpy as np

from pipeline.datasets._seq2seq import LENGTHS, SAMPLES_PER_LENGTH, dataset


def add(sources: np.ndarray) -> np.ndarray:
    """(n, S) interleaved digits a_0 b_0 a_1 b_1 … -> (n, S / 2 + 1) the digits of a + b, least significant first."""
    a, b = sources[:, 0::2], sources[:, 1::2]
    digits, carry = [], np.zeros(len(sources), dtype=sources.dtype)
    for t in range(a.shape[1]):
        total = a[:, t] + b[:, t] + carry
        digits.append(total % 10)
        carry = total // 10
    return np.stack([*digits, carry], axis=1)


DATASET = dataset(
    add, max(LENGTHS) // 2 + 1,
    f"distinct random pairs of {', '.join(str(n // 2) for n in LENGTHS)}-digit numbers, digits interleaved, "
    f"least significant first ({SAMPLES_PER_LENGTH} drawn at each length), and their sum",
    {"task_rule": "target = the sum's digits, least significant first"},
)
