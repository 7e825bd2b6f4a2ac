"""What the embedding families share (Siamese networks, ch. 6): a network f maps a sample to a
vector, trained so that samples of one class lie close together and samples of different classes
far apart; the classes at test time need not be those of training. The evaluate stage tests the
embedding on N-way one-shot episodes of the test split (pipeline.core.oneshot).

A family subclasses `EmbeddingModule` and writes `embed(x)` -> (B, D) and
`embedding_loss(z, y)`, the loss of a batch's embeddings z (B, D) given their labels y (B,) (the
pairs or triplets it compares are drawn from the batch).
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from pipeline.spec import DataSpec
from pipeline.core.family import FamilyModule
from pipeline.config import OptimizerConfig, SchedulerConfig


class EmbeddingModule(FamilyModule):
    """Samples in, embeddings out; val/loss is the family's loss on the whole validation split."""

    TASKS = ("oneshot",)
    EVALUATION = "embedding"  # pipeline.core.evaluation.embedding

    def __init__(self, *, data: DataSpec, optimizer: OptimizerConfig, scheduler: SchedulerConfig):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.val_loss = MeanMetric()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings f(x) (B, D) of a batch of samples x."""
        raise NotImplementedError

    def embedding_loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of the embeddings z (B, D) of a batch with labels y (B,)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.embedding_loss(self.embed(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_loss.update(self.embedding_loss(self.embed(x), y), weight=len(y))

    def validation_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {"val/loss": self.val_loss.compute()}
        self.val_loss.reset()
        return metrics
