"""What the generative families share (autoencoders of ch. 3; VAE, GAN and diffusion of ch. 8):
training on the images alone (labels unused), one validation loss, and one way to score generated
samples, the same for every model and for the reference rows of the report.

A family subclasses `GenerativeModule` and writes `training_loss(x)` (or its own `training_step`,
e.g. a GAN's manual optimization), `sample(n, generator)` and, if it needs them,
`fit_sampler(x_train)` (e.g. a Gaussian over an autoencoder's codes) and `test_metrics(x, x_train)`.

Scoring, without downloading anything: the features are the penultimate layer of a CNN classifier
that the `scorer` stage trains on the dataset (pipeline.scorer), not Inception. N generated samples
against the N test images (N = the test split's size, the same for every model):
- FID and KID through torchmetrics' FrechetInceptionDistance and KernelInceptionDistance with that
  feature extractor;
- class coverage: the classifier's predicted class of each sample; how many classes appear and the
  KL divergence of that histogram from the uniform one (0 when every class is equally frequent).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics import MeanMetric

from pipeline import stagestats
from pipeline.spec import DataSpec
from pipeline.core.family import FamilyModule
from pipeline.params import ROOT, ConfigError, OptimizerConfig, SchedulerConfig

SCORERS = ROOT / "scorers"
GRID = 64  # samples in the PNG grid


class GenerativeModule(FamilyModule):
    """Images in, images out; val/loss is the family's own objective on the validation images."""

    TASKS = ("multiclass",)  # labelled image datasets: the labels only serve the scorer
    IMAGE_INPUT = True
    CHAPTER = 8

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

    def evaluate(self, context) -> dict[str, float] | None:
        return evaluate_generative(self, context)


# ---------------------------------------------------------------------------------------------
# The scorer's features and classes


class Features(nn.Module):
    """The scorer CNN's penultimate layer as torchmetrics' custom feature extractor: images -> (n, d)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_features = math.prod(network.feature_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x.float()).flatten(1)


def scorer_path(dataset: str) -> Path:
    return SCORERS / f"{dataset}.pt"


def load_scorer(dataset: str) -> nn.Module:
    """The classifier the scorer stage trained on `dataset`, in eval mode."""
    from pipeline import data
    from pipeline.scorer import build_network

    path = scorer_path(dataset)
    if not path.exists():
        raise ConfigError(f"{data.shown(path)}: missing; run `dvc repro scorer` to train the sample scorer")
    network = build_network(data.DATASETS[dataset].spec)
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network.eval()


def class_kl_from_uniform(classes: torch.Tensor, num_classes: int) -> float:
    """KL(p ‖ uniform) = Σ_k p_k log(K p_k) of the histogram p of `classes`, with 0 log 0 = 0."""
    p = torch.bincount(classes, minlength=num_classes).double() / len(classes)
    return float(torch.special.xlogy(p, p * num_classes).sum())


@torch.no_grad()
def sample_scores(samples: torch.Tensor, reference: torch.Tensor, scorer: nn.Module, seed: int = 0) -> dict[str, float]:
    """FID, KID, classes covered and the class histogram's KL from uniform of `samples` against the
    `reference` images (both in the prepared data's units, the same number of each)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(samples) != len(reference):
        raise ValueError(f"{len(samples)} samples against {len(reference)} reference images: the numbers must match")
    features = Features(scorer)
    fid = FrechetInceptionDistance(feature=features)
    with warnings.catch_warnings():  # that it keeps every feature: a few hundred vectors of 64 numbers
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=features, subsets=50, subset_size=min(100, len(samples)))
    for metric in (fid, kid):
        metric.update(reference.float(), real=True)
        metric.update(samples.float(), real=False)
    torch.manual_seed(seed)  # KID draws its subsets from the global generator
    kid_mean, _ = kid.compute()
    num_classes = scorer.data_spec.num_classes
    classes = scorer(samples.float()).argmax(-1)
    return {
        "fid": round(float(fid.compute()), 6),
        "kid": round(float(kid_mean), 6),
        "classes_covered": int(torch.unique(classes).numel()),
        "class_kl": round(class_kl_from_uniform(classes, num_classes), 6),
    }


# ---------------------------------------------------------------------------------------------
# The evaluate stage of a generative family


def evaluate_generative(model: GenerativeModule, context) -> dict[str, float] | None:
    """N samples (N = the test split's size, drawn with the experiment's seed) scored against the test
    images; the family's own test metrics; a sample grid (PNG); the samples' classes as a DVC plot
    (actual = generated, predicted = the scorer's class). Global rank 0 only."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from pipeline.core import figures as fig
    from pipeline.evaluate import write_csv

    if rank_zero_only.rank != 0:
        return None
    experiment, x = context.experiment, context.x
    from pipeline import data

    scorer = load_scorer(experiment.dataset)
    x_train, _ = data.load_split(experiment.dataset, "train")
    generator = torch.Generator().manual_seed(experiment.seed)
    with torch.no_grad():
        stagestats.mark("sampling")
        model.fit_sampler(x_train)
        samples = model.sample(len(x), generator)
        stagestats.mark("sampled")
        own = model.test_metrics(x, x_train)
        classes = scorer(samples.float()).argmax(-1)
    results = {f"test/{k}": v for k, v in sample_scores(samples, x, scorer, experiment.seed).items()}
    results.update({f"test/{k}": round(float(v), 6) for k, v in own.items()})
    write_csv(context.predictions, ["actual", "predicted"], (("generated", int(c)) for c in classes))
    fig.sample_grid(samples[:GRID], context.figures / "samples.png", f"{experiment.name}: samples")
    return dict(sorted(results.items()))
