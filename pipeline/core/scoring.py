"""The yardstick of generated images (ch. 8), the same for every generative model and for the report's
reference rows: a CNN classifier that the scorer stage trains on the dataset (pipeline.scorer), not
Inception, so nothing is downloaded.

N generated samples are scored against the N test images (N = the test split's size):
- FID and KID through torchmetrics' FrechetInceptionDistance and KernelInceptionDistance, with the
  classifier's penultimate layer as the feature extractor;
- class coverage: the classifier's predicted class of each sample; how many classes appear and the
  KL divergence of that histogram from the uniform one (0 when every class is equally frequent).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from modules.cnn import ConvolutionalNetwork
from pipeline import data
from pipeline.spec import SCORERS, DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import ConfigError

# The scorer's fixed configuration, independent of params.yaml's experiments: tuning an experiment
# never moves the yardstick.
SEED = 0
EPOCHS = 20
BATCH_SIZE = 64
ARCHITECTURE = dict(channels=[32, 64, 64], block="plain", units_per_block=1, kernel_size=3, padding=1, stride=1,
                    dilation=1, pool="max", batch_norm=True, dropout=0.2)  # 8x8 -> 4 -> 2 -> 1: 64 features
OPTIMIZER = OptimizerConfig(name="adamw", lr=3e-3, weight_decay=1e-2, momentum=0.0, nesterov=False)
SCHEDULER = SchedulerConfig(name="cosine", step_size=1, gamma=1.0, warmup_epochs=0)


def build_network(spec: DataSpec) -> ConvolutionalNetwork:
    """The scorer's CNN (modules/cnn.py), untrained: the scorer stage trains it, load_scorer fills in its weights."""
    return ConvolutionalNetwork(data=spec, optimizer=OPTIMIZER, scheduler=SCHEDULER, **ARCHITECTURE)


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
