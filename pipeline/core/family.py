"""What every family's LightningModule shares, supervised or generative: the training loss summed
over an epoch and logged once (no per-step logging), the learning rate, the epoch-so-far state in
checkpoints, chapter 4's optimizers and schedules, and the evaluation entry point.

A family subclasses `SupervisedModule` (pipeline.core.supervised) or `GenerativeModule`
(pipeline.core.generative), never this class directly.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import lightning as L
import torch

from pipeline import stagestats
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig


def build_optimizer(parameters, config: OptimizerConfig) -> torch.optim.Optimizer:
    """Chapter 4: SGD (momentum, Nesterov), Adam, AdamW, RMSprop, Adagrad, L-BFGS."""
    common = {"lr": config.lr}
    if config.name == "sgd":
        return torch.optim.SGD(
            parameters, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay, **common
        )
    if config.name == "rmsprop":
        return torch.optim.RMSprop(parameters, momentum=config.momentum, weight_decay=config.weight_decay, **common)
    if config.name == "lbfgs":
        return torch.optim.LBFGS(parameters, line_search_fn="strong_wolfe", **common)
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}[config.name]
    return optimizer(parameters, weight_decay=config.weight_decay, **common)


def build_scheduler(optimizer, config: SchedulerConfig, max_epochs: int, total_steps: int) -> dict | None:
    """Step and cosine decay per epoch after an optional linear warmup; one-cycle per optimizer step."""
    from torch.optim import lr_scheduler as S

    if config.name == "onecycle":
        lr = optimizer.param_groups[0]["lr"]
        return {"scheduler": S.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps), "interval": "step"}
    main = None
    if config.name == "step":
        main = S.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    elif config.name == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs - config.warmup_epochs))
    if config.warmup_epochs:
        warmup = S.LinearLR(optimizer, start_factor=1 / (config.warmup_epochs + 1), total_iters=config.warmup_epochs)
        main = warmup if main is None else S.SequentialLR(optimizer, [warmup, main], [config.warmup_epochs])
    return None if main is None else {"scheduler": main, "interval": "epoch"}


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite."""


class FamilyModule(L.LightningModule):
    """The shared training loss, learning rate, checkpoint state and optimizers of every family."""

    TASKS: tuple[str, ...] = ()  # the data tasks the family can learn
    IMAGE_INPUT = False  # True if samples must be (C, H, W) images
    SEQUENCE_INPUT = False  # True if samples must be sequences: (T, D) feature vectors, or tokens (T,) (task sequence)
    DATA_KIND = "samples"  # the kind of dataset it learns from (pipeline.spec.KINDS): graph (pipeline.core.graph), graphs (pipeline.core.graph_level)
    CHAPTER = 0  # the book's chapter, a tag in MLflow
    STEP_METRIC: str | None = None  # the epoch metric whose value is MLflow's step (pipeline.core.trainer); None: the epoch
    # How it optimizes, which decides the Trainer settings and strategies it can train with (pipeline.params):
    MANUAL_OPTIMIZATION = False  # True: training_step steps its optimizers itself (Lightning's manual optimization)
    OPTIMIZERS = 1  # how many optimizers configure_optimizers returns
    UNUSED_PARAMETERS = False  # True: some backward pass leaves a trainable parameter without a gradient (DDP must look)
    # Operations its training needs that have no deterministic CUDA kernel (PyTorch's
    # torch.use_deterministic_algorithms list), with what they are for; empty when there are none.
    NONDETERMINISTIC_ON_CUDA = ""
    # An instance's choice (from its params): True moves each epoch's training windows of a text by random
    # offsets (pipeline.datamodules.OffsetWindows); the train stage builds the DataModule accordingly.
    random_window_offsets = False

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        """Raise ValueError("key: what is allowed") for values the types alone don't rule out."""

    @staticmethod
    def small_config(model: dict) -> dict:
        """`model` (an experiment's `model:` settings) with sizes small enough that tests train the family
        in seconds, as a new dict with the same keys. The default keeps every value."""
        return dict(model)

    @classmethod
    def check_experiment(cls, experiment) -> None:
        """Raise ValueError("key: what is allowed") for an experiment setting outside `model:` (a
        pipeline.config.ExperimentConfig, keys relative to it) the family cannot train with."""

    @classmethod
    def monitors(cls, data: DataSpec) -> tuple[str, ...]:
        """The validation metrics early stopping and the best checkpoint may monitor."""
        return ("val/loss",)

    def __init__(self, *, data: DataSpec, optimizer: OptimizerConfig, scheduler: SchedulerConfig):
        super().__init__()
        # Every constructor argument of the family (Lightning collects the subclasses' __init__ arguments
        # too), so that `MODEL.load_from_checkpoint(path)` rebuilds the model. As plain values: checkpoints
        # are read with torch.load(weights_only=True), which refuses pickled classes. The pipeline logs
        # params to MLflow itself, hence logger=False.
        self.save_hyperparameters(logger=False)
        self.automatic_optimization = not self.MANUAL_OPTIMIZATION
        self.hparams.update(data=dataclasses.asdict(data), optimizer=dataclasses.asdict(optimizer),
                            scheduler=dataclasses.asdict(scheduler))
        self.data_spec = data
        self.optimizer_config = optimizer
        self.scheduler_config = scheduler
        self._train_loss_sum = torch.zeros(())
        self._train_batches = 0
        self.epochs_run = 0  # by this process's fit: a resumed fit starts past the checkpoint's epochs

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs):
        """Lightning's, with the data spec and optimizer settings the checkpoint holds as plain values
        turned back into the classes the constructor takes."""
        raw = checkpoint_path.read() if hasattr(checkpoint_path, "read") else Path(checkpoint_path).read_bytes()
        saved = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True).get("hyper_parameters") or {}
        for key, kind in (("data", DataSpec), ("optimizer", OptimizerConfig), ("scheduler", SchedulerConfig)):
            if isinstance(saved.get(key), dict) and key not in kwargs:
                values = saved[key]
                if kind is DataSpec:
                    values = {**values, "input_shape": tuple(values["input_shape"])}
                kwargs[key] = kind(**values)
        return super().load_from_checkpoint(io.BytesIO(raw), map_location=map_location, **kwargs)

    def log_mlflow_model(self, run_id: str, checkpoint: Path, meta: dict):
        """Log the trained model to its MLflow run (pipeline.core.served), from `checkpoint` (the slim one
        models/EXPERIMENT keeps) and `meta` (the prepared data's meta.json). MLflow's ModelInfo. By
        default the pytorch flavour: the family's inputs are its own (noise, a graph, observations)."""
        from pipeline.core import served

        return served.log_pytorch_model(type(self), run_id, checkpoint)

    def validation_metrics(self) -> dict[str, torch.Tensor]:
        """The epoch's validation metrics (`val/...`), computed and reset; called once an epoch."""
        raise NotImplementedError

    def evaluate(self, context) -> dict[str, float] | None:
        """The evaluate stage's work on the test split (pipeline.evaluate.Context): write the plots and
        figures, return the test metrics (`test/...`); None on processes other than global rank 0."""
        raise NotImplementedError

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # A running sum, logged once an epoch: per-step self.log costs more than a tiny model's step.
        # Here, not in training_step, which L-BFGS calls once per function evaluation.
        loss = outputs["loss"].detach()
        if not torch.isfinite(loss):  # stop at once: every later step would only spread the NaN
            raise NonFiniteLoss(f"training loss {loss.item()} at epoch {self.current_epoch}, step {self.trainer.global_step}")
        self._train_loss_sum.add_(loss)
        self._train_batches += 1

    def on_train_start(self) -> None:
        stagestats.mark("work")  # the stage's start-up ends here (bench/benchmarks.py)
        self._train_loss_sum = self._train_loss_sum.to(self.device)  # restored from a checkpoint on the CPU

    def on_train_epoch_start(self) -> None:
        self.epochs_run += 1
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._train_batches = 0
        self._epoch_lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # the rate this epoch trains at

    def on_validation_epoch_end(self) -> None:
        metrics = self.validation_metrics()
        if self._train_batches:
            metrics["train/loss"] = self._train_loss_sum / self._train_batches
        # Under DDP the torchmetrics values are already reduced over processes; train/loss is averaged.
        self.log_dict(metrics, prog_bar=True, sync_dist=True)
        if self._train_batches:
            self.log("train/lr", float(self._epoch_lr), sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The epoch so far, for a checkpoint saved in the middle of an epoch: Lightning resumes such an
        # epoch without calling on_train_epoch_start (which resets these when an epoch does start).
        checkpoint["epoch_so_far"] = {
            "train_loss_sum": self._train_loss_sum.detach().cpu(),
            "train_batches": self._train_batches,
            "lr": float(getattr(self, "_epoch_lr", 0.0)),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "epoch_so_far" in checkpoint:
            so_far = checkpoint["epoch_so_far"]
            self._train_loss_sum = so_far["train_loss_sum"].clone()
            self._train_batches = so_far["train_batches"]
            self._epoch_lr = so_far["lr"]

    def configure_optimizers(self):
        optimizer = build_optimizer(self.parameters(), self.optimizer_config)
        scheduler = build_scheduler(
            optimizer, self.scheduler_config, self.trainer.max_epochs, int(self.trainer.estimated_stepping_batches)
        )
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        # L-BFGS's line search evaluates the loss as often as the loss values ask, each a backward
        # whose gradients DDP averages over the processes: each process's own loss on its own share
        # would make them decide differently, and one would wait for the others' gradients for ever.
        # So under DDP it sees the loss averaged over the processes, as the gradient is.
        if optimizer_closure is not None and self.optimizer_config.name == "lbfgs" and self.trainer.world_size > 1:
            local_closure = optimizer_closure

            def optimizer_closure():
                loss = local_closure()  # None where training_step skipped the batch
                return loss if loss is None else self.trainer.strategy.reduce(loss.detach().clone(), reduce_op="mean")

        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def work_done(self, epochs: int) -> tuple[float, str]:
        """What `epochs` epochs of this fit processed, for the run summary's throughput (runs/EXPERIMENT.json): (amount, unit)."""
        return epochs * len(self.trainer.datamodule.splits["train"]), "samples"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
