"""The plumbing every supervised family shares: task losses, the shared step, epoch metrics (the
test metrics and plots are pipeline.core.evaluation's). A family subclasses `SupervisedModule` and writes only its
model (`forward` returning scores of shape (B, K), K = `data.num_outputs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.classification import Accuracy

from pipeline.spec import DataSpec
from pipeline.core.family import FamilyModule, NonFiniteLoss, build_optimizer, build_scheduler  # noqa: F401 (re-exported)
from pipeline.params import OptimizerConfig, SchedulerConfig


def task_loss(task: str, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The empirical risk each task trains on (ch. 2-3): squared error, binary or categorical cross-entropy
    (for sequences, the mean over every target token: the negative log-likelihood per token)."""
    if task == "multiclass":
        return F.cross_entropy(scores, y)  # scores (B, K), y (B,) int
    if task == "sequence":
        return F.cross_entropy(scores.flatten(0, 1), y.flatten())  # scores (B, L, K), y (B, L) int
    scores = scores.squeeze(-1)  # (B,)
    if task == "binary":
        return F.binary_cross_entropy_with_logits(scores, y)
    return F.mse_loss(scores, y)


def task_prediction(task: str, scores: torch.Tensor) -> torch.Tensor:
    """Scores -> what metrics consume: values (B,), P(y=1) (B,), class probabilities (B, K) or (B, L, K)."""
    if task in ("multiclass", "sequence"):
        return scores.softmax(dim=-1)
    scores = scores.squeeze(-1)
    return torch.sigmoid(scores) if task == "binary" else scores


class SupervisedModule(FamilyModule):
    """Training and validation steps for every task; epoch-level metrics only (no per-step logging).

    train/loss includes the family's penalty (what the optimizer minimises); val/loss does not.
    """

    EVALUATION = "supervised"  # pipeline.core.evaluation.supervised

    @classmethod
    def monitors(cls, data: DataSpec) -> tuple[str, ...]:
        return ("val/loss", f"val/{data.primary_metric}")

    def __init__(self, *, data: DataSpec, optimizer: OptimizerConfig, scheduler: SchedulerConfig):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.val_loss = MeanMetric()
        if data.task == "regression":
            self.val_metric = MeanSquaredError()
        elif data.task == "binary":
            self.val_metric = Accuracy(task="binary")
        else:  # multiclass; sequence: the accuracy over target tokens
            self.val_metric = Accuracy(task="multiclass", num_classes=data.num_classes)

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(self.data_spec.task, scores, y)

    def penalty(self) -> torch.Tensor | float:
        """A regularization term added to the training loss only (none by default)."""
        return 0.0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return task_prediction(self.data_spec.task, self(x))

    def examples(self, x: torch.Tensor, y: torch.Tensor) -> str | None:
        """A few test samples as text for people to read (evaluate saves it beside the figures); none by default."""
        return None

    @property
    def automatic_optimization(self) -> bool:
        """Lightning's automatic optimization (its closure around forward, zero_grad, backward and step)
        only where a step needs what it brings: L-BFGS's re-evaluations of the loss, gradient clipping,
        gradient accumulation. Otherwise `training_step` steps the optimizer itself, through Lightning
        (manual optimization: `manual_backward` and the LightningOptimizer's step, so precision, DDP,
        the step hooks and the global step are Lightning's as before), in the same order: forward,
        zero_grad, backward, step. That skips the closure machinery, 2-3 % of a small model's step
        (bench/train_loop.py --floors). Setting it False makes every step manual."""
        if not self._automatic_optimization:
            return False
        trainer = self._trainer
        return (trainer is None or self.optimizer_config.name == "lbfgs" or bool(trainer.gradient_clip_val)
                or trainer.accumulate_grad_batches != 1)

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y) + self.penalty()
        if not self.automatic_optimization:  # what Lightning's automatic loop would do, without its closure
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self._step_schedulers("step")
            if self.trainer.is_last_batch:  # as Lightning steps them: after the epoch's last step, before validation
                self._step_schedulers("epoch")
        return loss

    def _step_schedulers(self, interval: str) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == interval:
                config.scheduler.step()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        scores = self(x)
        self.val_loss.update(self.loss(scores, y), weight=len(y))
        prediction = task_prediction(self.data_spec.task, scores)
        if self.data_spec.task == "sequence":  # every target token is one classification
            prediction, y = prediction.flatten(0, 1), y.flatten()
        self.val_metric.update(prediction, y)

    def validation_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {"val/loss": self.val_loss.compute(), f"val/{self.data_spec.primary_metric}": self.val_metric.compute()}
        self.val_loss.reset()
        self.val_metric.reset()
        return metrics
