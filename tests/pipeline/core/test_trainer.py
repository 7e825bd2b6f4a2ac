"""The Trainer's progress bar: Lightning's own, configured through its public arguments."""

from __future__ import annotations

from pipeline.core.trainer import EpochProgressBar


def test_the_progress_bar_is_lightnings_own_with_a_refresh_rate():
    from lightning.pytorch.callbacks import TQDMProgressBar

    bar = EpochProgressBar(refresh_rate=7)
    assert type(bar).__mro__[1] is TQDMProgressBar and bar.refresh_rate == 7


def fit_printing(tmp_path, capsys, log_interval: float) -> list[str]:
    """The states the bar wrote in a 30-epoch fit, stdout not a terminal (pytest captures it)."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import CSVLogger

    trainer = L.Trainer(accelerator="cpu", max_epochs=30, limit_train_batches=4, limit_val_batches=2, num_sanity_val_steps=0,
                        logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[EpochProgressBar(refresh_rate=1, log_interval=log_interval)])
    capsys.readouterr()
    trainer.fit(BoringModel())
    out = capsys.readouterr().out
    assert "v_num" not in out and "Validation" not in out
    return [state for state in out.replace("\r", "\n").splitlines() if state.strip()]


def test_off_a_terminal_the_bar_writes_at_most_every_interval_and_its_last_state(tmp_path, capsys):
    written = fit_printing(tmp_path, capsys, log_interval=3600)
    assert len(written) == 1 and written[0].startswith("Epoch 29: 100%"), written  # the state it closed on
    assert len(fit_printing(tmp_path, capsys, log_interval=0)) >= 30 * 4  # unthrottled: every refresh
