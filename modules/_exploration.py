"""ε-greedy exploration's schedule (ch. 8), shared by the value-based families (DQN, tabular Q-learning).
Not a family: it imports nothing, so a family that uses it depends on this file alone."""

from __future__ import annotations


def epsilon_schedule(step: int, start: float, end: float, duration: int) -> float:
    """ε at environment step `step`: linear from `start` at step 0 to `end` at step `duration`, then `end`."""
    return end + (start - end) * max(0.0, 1.0 - step / duration)
