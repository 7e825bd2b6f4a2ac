"""The Trainer's progress bar: redrawn by the clock, not every n batches."""

from __future__ import annotations

import itertools

from pipeline.core import trainer as trainer_module
from pipeline.core.trainer import EpochProgressBar


def test_progress_bar_redraws_at_most_once_an_interval_and_at_the_last_batch(monkeypatch):
    clock = itertools.count()  # one second a batch
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: float(next(clock)))
    bar = EpochProgressBar(interval=5)
    assert [n for n in range(1, 24) if bar._should_update(n, 23)] == [1, 6, 11, 16, 21, 23]


def test_a_disabled_progress_bar_never_redraws():
    bar = EpochProgressBar(interval=0)
    bar.disable()
    assert not any(bar._should_update(n, 5) for n in range(1, 6))
