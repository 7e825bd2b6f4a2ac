"""What the generative families share (autoencoders of ch. 3; VAE, GAN and diffusion of ch. 8):
training on the images alone (labels unused) and one validation loss. The evaluate stage scores
their samples (pipeline.core.evaluation, with pipeline.core.scoring's yardstick).

A family subclasses `GenerativeModule` and writes `training_loss(x)` (or its own `training_step`,
e.g. a GAN's manual optimization), `sample(n, generator)` and, if it needs them,
`fit_sampler(x_train)` (e.g. a Gaussian over an autoencoder's codes) and `test_metrics(x, x_train)`.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from pipeline.spec import DataSpec
from pipeline.core.family import FamilyModule
from pipeline.config import OptimizerConfig, SchedulerConfig



class GenerativeModule(FamilyModule):
    """Images in, images out; val/loss is the family's own objective on the validation images."""

    TASKS = ("multiclass",)  # labelled image datasets: the labels only serve the scorer
    IMAGE_INPUT = True
    CHAPTER = 8
    EVALUATION = "generative"  # pipeline.core.evaluation.generative

    def __init__(self, *, data: DataSpec, optimizer: OptimizerConfig, scheduler: SchedulerConfig):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.val_loss = MeanMetric()

    # --- what a family writes -------------------------------------------------------------------

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The objective the optimizer minimises on a batch of images x (B, C, H, W)."""
        raise NotImplementedError

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The objective on validation images (in eval mode, without gradients); the training one by default."""
        return self.training_loss(x)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n new images (n, C, H, W) in the prepared data's units, drawn with `generator` only."""
        raise NotImplementedError

    def fit_sampler(self, x_train: torch.Tensor) -> None:
        """Called by the evaluate stage before `sample`, with the training images; nothing by default."""

    def test_metrics(self, x: torch.Tensor, x_train: torch.Tensor) -> dict[str, float]:
        """Metrics of the test images x beyond sample quality (e.g. reconstruction MSE, and PCA's fitted on
        x_train beside it), keys without `test/`."""
        return {}

    # --- the loop -------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        x, _ = batch
        return self.training_loss(x)

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self.val_loss.update(self.validation_loss(x), weight=len(x))

    def validation_metrics(self) -> dict[str, torch.Tensor]:
        metrics = {"val/loss": self.val_loss.compute()}
        self.val_loss.reset()
        return metrics
