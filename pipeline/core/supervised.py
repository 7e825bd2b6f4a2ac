"""The plumbing every supervised family shares: task losses, the shared step, epoch metrics (the
test metrics and plots are pipeline.core.evaluation's). A family subclasses `SupervisedModule` and writes only its
model (`forward` returning scores of shape (B, K), K = `data.num_outputs`, or other scores with its own
`predict_scores` of them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.classification import Accuracy

from pipeline.spec import DataSpec
from pipeline.core.family import FamilyModule
from pipeline.config import OptimizerConfig, SchedulerConfig


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


def sequence_examples(generate, x: torch.Tensor, y: torch.Tensor, target_length: int, meta: dict, count: int = 8,
                      temperature: float = 1.0) -> str:
    """Text for people to read: the first `count` test inputs' prompts, the true continuations, the greedy ones
    and samples at `temperature` from `generate(prompt, steps, temperature, generator)`, a line each.

    The prompt is what comes before the target (a source and its separator), or, where every input token
    is also a target (a language model), the first half of the window; the continuation runs to the
    window's end. Tokens show as the characters of meta["vocabulary"] where the data is a text, else as
    numbers."""
    steps = target_length if x.shape[1] > target_length else x.shape[1] - x.shape[1] // 2 + 1
    prompt, target = x[:count, : x.shape[1] + 1 - steps], y[:count, -steps:]
    greedy = generate(prompt, steps)
    sampled = generate(prompt, steps, temperature, torch.Generator().manual_seed(0))
    if "vocabulary" in meta:
        text = lambda row: repr("".join(meta["vocabulary"][token] for token in row.tolist()))  # noqa: E731
    else:
        text = lambda row: " ".join(map(str, row.tolist()))  # noqa: E731
    lines = [f"prompt | target | greedy | sampled (temperature {temperature:g})"]
    lines += [" | ".join(text(t) for t in row) for row in zip(prompt, target, greedy, sampled)]
    return "\n".join(lines) + "\n"


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

    def predict_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """What the validation metrics consume from `forward`'s scores: task_prediction's by default; a
        family whose scores are not one per class (one-vs-one's pairwise scores) maps them to (B, K) here."""
        return task_prediction(self.data_spec.task, scores)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_scores(self(x))

    def log_mlflow_model(self, run_id, checkpoint, meta):
        """A pyfunc model that takes raw samples: it standardizes them as prepare did (pipeline.core.served)."""
        from pipeline import data
        from pipeline.core import served

        example = data.load_split(meta["dataset"], "val")[0][:2]  # the input example MLflow keeps and checks
        return served.log_raw_input_model(self, run_id, checkpoint, meta, example)

    def attention(self, x: torch.Tensor) -> torch.Tensor | None:
        """Sequence task: the attention weights (B, L, S) of each target position over the source
        positions, for evaluate's figure; None for a family without attention (the default)."""
        return None

    def examples(self, x: torch.Tensor, y: torch.Tensor, meta: dict) -> str | None:
        """A few test samples as text for people to read (evaluate logs it to MLflow), given the prepared
        data's meta.json; none by default."""
        return None

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss(self(x), y) + self.penalty()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        scores = self(x)
        self.val_loss.update(self.loss(scores, y), weight=len(y))
        prediction = self.predict_scores(scores)
        if self.data_spec.task == "sequence":  # every target token is one classification
            prediction, y = prediction.flatten(0, 1), y.flatten()
        self.val_metric.update(prediction, y)

    def validation_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {"val/loss": self.val_loss.compute(), f"val/{self.data_spec.primary_metric}": self.val_metric.compute()}
        self.val_loss.reset()
        self.val_metric.reset()
        return metrics
