"""Siamese network (ch. 6): one embedding network f, applied to two (or three) images with the same
weights, trained so that distances between embeddings say whether images show the same class.

With d_ij = ‖f(x_i) − f(x_j)‖ and y_ij = 1 when x_i and x_j share a class (0 otherwise), two losses:

- contrastive (Hadsell, Chopra and LeCun 2006), over pairs (i, j):
  ℓ_ij = y_ij d_ij² + (1 − y_ij) max(0, m − d_ij)², pulling same-class pairs together and pushing
  other pairs at least the margin m apart;
- triplet (Schroff, Kalenichenko and Philbin 2015), over triplets of an anchor a, a positive p of
  its class and a negative n of another: ℓ_apn = max(0, d_ap − d_an + m).

The pairs and triplets come from the batch: every pair i < j of the batch's samples, and every
triplet (a, p, n) of them with p ≠ a in a's class and n in another ("batch all"); the loss is their
mean. At test time an image of a class never seen in training is classified by the support image
nearest to it (pipeline.core.oneshot).

The network f: blocks of [conv 3 × 3 -> batch norm -> ReLU -> max pool 2 × 2], then flatten and an
affine layer to the embedding's D dimensions.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.embedding import EmbeddingModule


def same_class(y: torch.Tensor) -> torch.Tensor:
    """y_ij = 1 when samples i and j share a class: y (B,) -> (B, B) bool."""
    return y[:, None] == y[None, :]


def contrastive_loss(z: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over the pairs i < j of the batch of y_ij d_ij² + (1 − y_ij) max(0, m − d_ij)².

    z: (B, D) embeddings; y: (B,) labels; m: the margin."""
    i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)  # every pair once, (P,) each
    distance = torch.linalg.vector_norm(z[i] - z[j], dim=-1)  # d_ij, (P,)
    similar = same_class(y)[i, j].to(z.dtype)  # y_ij, (P,)
    return (similar * distance**2 + (1 - similar) * torch.relu(margin - distance) ** 2).mean()


def triplet_loss(z: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over the batch's triplets (a, p ≠ a of a's class, n of another class) of max(0, d_ap − d_an + m);
    zero if the batch has none.

    z: (B, D) embeddings; y: (B,) labels; m: the margin."""
    distance = torch.cdist(z, z)  # d_ij, (B, B)
    same = same_class(y)
    positive = same & ~torch.eye(len(z), dtype=torch.bool, device=z.device)  # (a, p), (B, B)
    valid = positive[:, :, None] & ~same[:, None, :]  # (a, p, n), (B, B, B)
    losses = torch.relu(distance[:, :, None] - distance[:, None, :] + margin)  # d_ap − d_an + m, (B, B, B)
    return (losses * valid).sum() / valid.sum().clamp(min=1)


LOSSES = {"contrastive": contrastive_loss, "triplet": triplet_loss}


class EmbeddingNetwork(nn.Module):
    """f: x (B, C, H, W) -> conv blocks with pooling -> flatten -> affine -> (B, D)."""

    def __init__(self, input_shape: tuple[int, ...], channels: list[int], embedding_dim: int):
        super().__init__()
        c, side, _ = input_shape
        blocks: list[nn.Module] = []
        for c_out in channels:
            blocks += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            if side >= 2:  # 3 x 3 convolutions with padding 1 keep the side; pooling halves it
                blocks.append(nn.MaxPool2d(2))
                side //= 2
            c = c_out
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.projection = nn.Linear(c * side * side, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))  # (B, C, H, W) -> (B, D)


class SiameseNetwork(EmbeddingModule):
    """An embedding f trained with the contrastive or the triplet loss on the batch's pairs or triplets."""

    IMAGE_INPUT = True
    CHAPTER = 6

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        channels: list[int],  # output channels of each conv block; its length is the number of blocks
        embedding_dim: int,  # D, the dimension of f(x)
        loss: Literal["contrastive", "triplet"],  # over the batch's pairs, or its triplets
        margin: float,  # m, in the embedding's distance units
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.network = EmbeddingNetwork(data.input_shape, channels, embedding_dim)
        self.loss_name, self.margin = loss, margin

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not model["channels"] or any(c < 1 for c in model["channels"]):
            raise ValueError(f"channels: must be a non-empty list of positive integers, got {model['channels']}")
        if model["embedding_dim"] < 1:
            raise ValueError(f"embedding_dim: must be a positive integer, got {model['embedding_dim']}")
        if not model["margin"] > 0:
            raise ValueError(f"margin: must be positive, got {model['margin']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "channels": [8], "embedding_dim": 8}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)  # (B, D)

    def embedding_loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return LOSSES[self.loss_name](z, y, self.margin)


MODEL = SiameseNetwork
