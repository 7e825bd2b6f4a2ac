"""The Lightning Trainer of one experiment, from its params: callbacks, logger, devices, precision."""

from __future__ import annotations

import csv
import io
import sys
import time
import logging
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from pipeline import files
from pipeline.config import ExperimentConfig, TrainerConfig
from pipeline.params import family_class

SYSTEM_METRICS_SECONDS = 2.0  # between two samples of MLflow's system metrics: a training of seconds gets some


LOG_INTERVAL = 5.0  # seconds between two states of a progress bar written to a stream that is not a terminal


class LogTqdm(Tqdm):
    """Lightning's tqdm bar for a stream that is not a terminal (a log file, DVC's captured output): it
    writes at most every `interval` seconds, and its last state when it closes. Lightning redraws its bar
    through refresh(), which tqdm's own mininterval does not throttle; so refresh() is throttled here."""

    def __init__(self, *args, interval: float, **kwargs):
        self.interval = interval
        self.written_at = time.monotonic()  # tqdm's first draw, at construction, is skipped too
        super().__init__(*args, mininterval=interval, **kwargs)

    def refresh(self, nolock=False, lock_args=None):
        now = time.monotonic()
        if now - self.written_at < self.interval:
            return None
        self.written_at = now
        return super().refresh(nolock=nolock, lock_args=lock_args)


class EpochProgressBar(TQDMProgressBar):
    """Lightning's bar for training, redrawn every `refresh_rate` batches (a redraw writes to the stream:
    on a small model, every batch would cost more than the step). Not on a terminal, a line at most every
    `log_interval` seconds (LogTqdm). No validation bar, as a one-batch bar each epoch would flood
    non-terminal logs, and no `v_num` (the logger's version: the MLflow run id's tail, which the train
    stage's summary line gives whole)."""

    def __init__(self, refresh_rate: int = 20, log_interval: float = LOG_INTERVAL):
        super().__init__(refresh_rate=refresh_rate)
        self.log_interval = log_interval

    def init_train_tqdm(self):
        if sys.stdout.isatty():
            return super().init_train_tqdm()
        return LogTqdm(desc=self.train_description, position=2 * self.process_position, disable=self.is_disabled,
                       leave=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT, interval=self.log_interval)

    def init_validation_tqdm(self):
        return Tqdm(disable=True)  # created disabled: an enabled bar draws itself once on creation

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class SameFolderCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with the file written beside its final name, synced and renamed
    (pipeline.files.replacing): the previous checkpoint stays whole until the new one is.

    Lightning's own writes to a temporary file under $TMPDIR and moves it: where $TMPDIR is another
    filesystem, as on most clusters, the move is a copy in place, and a kill, a preemption or a full
    disk during it truncates the only resume point. Local paths only, as the project's checkpoints are.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()  # serialized whole first: its size is known before the disk is touched
        torch.save(checkpoint, buffer)
        with files.replacing(Path(path), size=buffer.getbuffer().nbytes) as handle:
            handle.write(buffer.getbuffer())


class LearningCurve(Callback):
    """Collects the epoch metrics (train/loss, val/loss, val/<metric>) into rows for a DVC plot."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        if metrics:
            self.rows.append({"epoch": trainer.current_epoch, **dict(sorted(metrics.items()))})

    def state_dict(self) -> dict:  # in checkpoints: a resumed training's curve starts at epoch 0
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))

    def write(self, loss_path: Path, metric_path: Path) -> None:
        """Two CSVs for DVC plots: epoch, train/loss, val/loss; and epoch with every other epoch metric
        but the learning rate: val/<metric> (a supervised family's only y), or e.g. a reinforcement
        learning family's train/episode_return against train/env_steps beside val/mean_return."""
        losses = ("epoch", "train/loss", "val/loss")
        logged = sorted({k for row in self.rows for k in row} - {"epoch", *losses, "train/lr"})
        metrics = ["epoch", *(k for k in logged if not k.startswith("val/")), *(k for k in logged if k.startswith("val/"))]
        for path, fields in ((loss_path, losses), (metric_path, metrics)):
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
            files.write_text(path, text.getvalue())


class EpochStepLogger(MLFlowLogger):
    """Lightning's MLflow logger, with the epoch as MLflow's step of an epoch's metrics instead of Lightning's
    count of optimizer steps, so that MLflow's charts have the x of plots/learning_curves/EXPERIMENT.csv; or,
    for a family that declares one (FamilyModule.STEP_METRIC), that metric's value among them (a
    reinforcement-learning agent's environment steps). The families log epoch aggregates only
    (pipeline.core.family), each with the `epoch` Lightning adds to what it logs; where the epoch is the
    step it is not logged again as a metric of its own."""

    def __init__(self, *, step_metric: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.step_metric = step_metric

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        metrics = dict(metrics)
        if self.step_metric in metrics:
            step = int(metrics[self.step_metric])
        elif "epoch" in metrics:
            step = int(metrics.pop("epoch"))
        super().log_metrics(metrics, step)


class SystemMetrics(Callback):
    """MLflow's system metrics (system/cpu_utilization_percentage, system/system_memory_usage_megabytes, disk,
    network; the GPUs' where pynvml is installed) sampled into the run every `seconds` while the fit runs;
    MLflow's MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides the interval. A resumed training goes on
    from the run's last system step.

    Not MLflow's `mlflow.start_run(log_system_metrics=True)`: it makes the run the process's active run,
    which MLflow ends as FINISHED when the process exits, over the FAILED or KILLED the train stage records.
    Its SystemMetricsMonitor takes the run id and the store instead."""

    def __init__(self, run_id: str, tracking_uri: str, seconds: float = SYSTEM_METRICS_SECONDS):
        self.run_id, self.tracking_uri, self.seconds = run_id, tracking_uri, seconds
        self.monitor = None

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its start and stop lines
        self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.seconds, resume_logging=True,
                                            tracking_uri=self.tracking_uri)
        self.monitor.start()

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self.stop()

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling and log what was sampled (once; a later call does nothing). MLflow's monitor logs a
        sample when its interval ends: the samples of the last, unfinished interval are logged here, so
        that a training shorter than one interval has its point too."""
        if self.monitor is None:
            return
        monitor, self.monitor = self.monitor, None
        monitor.finish()
        try:
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as error:  # as MLflow's own monitor does: a lost sample never stops the training
            warnings.warn(f"MLflow system metrics: the last sample was not logged ({type(error).__name__}: {error})")


def weight_averaging(trainer: TrainerConfig) -> list[Callback]:
    """Lightning's exponential moving average of the weights where params ask for it (trainer.ema_decay):
    validation, checkpoints and the model left after the fit then use the average."""
    return [EMAWeightAveraging(decay=trainer.ema_decay)] if trainer.ema_decay else []


def fit_settings(experiment: ExperimentConfig) -> tuple[dict, list[Callback]]:
    """The Trainer arguments and callbacks that decide what a fit of `experiment` learns. The train stage's
    Trainer and an evaluation's re-fit (pipeline.core.evaluation.graph) both take them from here, so a
    re-fit cannot leave one out and train another model."""
    t, stopping = experiment.trainer, experiment.early_stopping
    arguments = dict(accelerator=t.accelerator, precision=t.precision, max_epochs=experiment.max_epochs,
                     gradient_clip_val=t.gradient_clip_val or None, accumulate_grad_batches=t.accumulate_grad_batches,
                     deterministic=t.deterministic)
    callbacks = [EarlyStopping(monitor=stopping.monitor, mode=stopping.mode, patience=stopping.patience)] if stopping.patience else []
    return arguments, callbacks + weight_averaging(t)


def build_trainer(
    experiment: ExperimentConfig,
    checkpoint_dir: Path,
    tracking_uri: str,
    run_id: str | None,
    curve: LearningCurve,
    extra_callbacks: tuple[Callback, ...] | list[Callback] = (),
    system_metrics: bool = False,
) -> L.Trainer:
    """The Trainer of one experiment. `run_id` is None on processes other than global rank 0, whose
    logger then logs nothing (Lightning's loggers log from rank 0 only), and which record no system
    metrics (`system_metrics`: params.yaml's tracking.system_metrics). Checkpoints are written at
    each epoch's end into `checkpoint_dir`: last.ckpt (to resume), and best.ckpt under `checkpoint: best`.
    Each process takes its own share of the training data (pipeline.datamodules.EpochBatches), so
    Lightning's DistributedSampler is off."""
    stopping = experiment.early_stopping
    learning, learning_callbacks = fit_settings(experiment)
    callbacks = [*checkpoints(checkpoint_dir, stopping.monitor if experiment.checkpoint == "best" else None, stopping.mode),
                 curve, EpochProgressBar(), *extra_callbacks,  # the learning rate: train/lr, logged by the module
                 *learning_callbacks]
    if system_metrics and run_id is not None:
        callbacks.append(SystemMetrics(run_id, tracking_uri))
    t = experiment.trainer
    family = family_class(experiment.family)
    trainer = L.Trainer(
        **learning,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy(t.strategy, t.world_size, family.UNUSED_PARAMETERS),
        sync_batchnorm=t.sync_batchnorm,
        use_distributed_sampler=False,
        logger=EpochStepLogger(tracking_uri=tracking_uri, run_id=run_id, step_metric=family.STEP_METRIC),
        callbacks=callbacks,
        default_root_dir=checkpoint_dir,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=50,
        plugins=[SameFolderCheckpointIO()],
    )
    return trainer


def strategy(name: str, world_size: int, unused_parameters: bool) -> str:
    """Lightning's strategy for params' `trainer.strategy`. DDP by default expects every trainable
    parameter to get a gradient in every backward pass and fails otherwise (a GAN's critic step leaves
    the generator without one: Lightning #20328); a family that declares UNUSED_PARAMETERS gets DDP's
    search for them, which costs a pass over the graph, so only where it is needed. `auto` on more than
    one process is DDP."""
    if not unused_parameters:
        return name
    if name == "auto" and world_size > 1:
        name = "ddp"
    return f"{name}_find_unused_parameters_true" if name in ("ddp", "ddp_spawn") else name


def checkpoints(folder: Path, monitor: str | None, mode: str) -> list[ModelCheckpoint]:
    """last.ckpt, the whole state at every epoch's end, and with a `monitor`, best.ckpt, the best epoch's
    by it, a file of its own. Without a monitor the weights kept are last.ckpt's (resume.kept): a second
    file would hold the same state, serialized and synced once more every epoch.

    Not Lightning's save_last: it writes last.ckpt only in an epoch that also wrote best.ckpt
    (save_last="link" links it to that file), so once the monitored value stops improving the
    resume point is an older epoch, and with a link there is no second copy. Saved at the train
    epoch's end, after the epoch's curve row is in the callbacks' state."""
    common = dict(dirpath=folder, save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
                  save_on_train_epoch_end=True)
    last = ModelCheckpoint(filename="last", **common)
    if monitor is None:
        return [last]
    return [ModelCheckpoint(filename="best", monitor=monitor, mode=mode, **common), last]
