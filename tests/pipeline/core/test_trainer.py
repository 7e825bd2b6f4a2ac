"""The Trainer's progress bar: Lightning's own, configured through its public arguments."""

from __future__ import annotations

from pipeline.core.trainer import EpochProgressBar


def test_the_progress_bar_is_lightnings_own_with_a_refresh_rate():
    from lightning.pytorch.callbacks import TQDMProgressBar

    bar = EpochProgressBar(refresh_rate=7)
    assert type(bar).__mro__[1] is TQDMProgressBar and bar.refresh_rate == 7
