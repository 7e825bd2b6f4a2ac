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

The network f, one of two (`network`):

- conv: blocks of [conv 3 × 3 -> batch norm -> ReLU -> max pool 2 × 2], then flatten and an affine
  layer to the embedding's D dimensions;
- spatial_transformer (Jaderberg et al. 2015): f(x) is the image itself, warped by an affine map θ(x)
  that a small network predicts from x, resampled on an S × S grid. The loss can only move, turn, scale
  and shear each image so that images of one class match pixel by pixel (a learned deskewing); what it
  learns about aligning digits carries over to digits it never saw, as an embedding of five classes does not.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from modules._feedforward import feedforward
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


def bounded_affine(t: torch.Tensor, bound: float) -> torch.Tensor:
    """θ = [I | 0] + b tanh(t): affine maps (B, 2, 3) whose every entry lies within b of the identity's.

    t: (B, 6) unbounded outputs of the localization network; b: the bound."""
    identity = torch.eye(2, 3, dtype=t.dtype, device=t.device)
    return identity + bound * torch.tanh(t).view(-1, 2, 3)


def affine_warp(x: torch.Tensor, theta: torch.Tensor, side: int) -> torch.Tensor:
    """x̃_b(u, v) = x_b(θ_b [u, v, 1]ᵀ): each image x_b read at the affine image of each point (u, v) of
    a side × side grid, by bilinear interpolation.

    Coordinates run over [−1, 1] across the image, at pixel centres: grid point j (of S) sits at
    u_j = (2j + 1)/S − 1, and source coordinate s at pixel position p = ((s + 1)W − 1)/2, clamped to
    [0, W − 1] so that points past the edge read the edge (PyTorch's grid_sample with
    align_corners=False and padding_mode="border"). Bilinear interpolation is the sum over pixels
    (q, r) of x[q, r] max(0, 1 − |p_y − q|) max(0, 1 − |p_x − r|).

    x: (B, C, H, W); θ: (B, 2, 3) -> (B, C, S, S)."""
    height, width = x.shape[-2:]
    grid = (2 * torch.arange(side, dtype=x.dtype, device=x.device) + 1) / side - 1  # (S,)
    v, u = torch.meshgrid(grid, grid, indexing="ij")  # (S, S) each: row, column coordinate
    points = torch.stack([u, v, torch.ones_like(u)], dim=-1).view(-1, 3)  # [u, v, 1], (S², 3)
    source = points @ theta.transpose(1, 2)  # (B, S², 2): the x, y coordinates read
    p_x = (((source[..., 0] + 1) * width - 1) / 2).clamp(0, width - 1)  # (B, S²)
    p_y = (((source[..., 1] + 1) * height - 1) / 2).clamp(0, height - 1)
    columns = torch.arange(width, dtype=x.dtype, device=x.device)
    rows = torch.arange(height, dtype=x.dtype, device=x.device)
    weight_x = torch.relu(1 - (p_x[..., None] - columns).abs())  # (B, S², W)
    weight_y = torch.relu(1 - (p_y[..., None] - rows).abs())  # (B, S², H)
    # Dense weighted sums rather than grid_sample, whose backward has no deterministic CUDA kernel: along
    # each row first, then down the columns.
    along_rows = x.flatten(1, 2) @ weight_x.transpose(1, 2)  # Σ_r x[q, r] w_x, (B, C H, S²)
    warped = (along_rows.view(len(x), x.shape[1], height, -1) * weight_y.transpose(1, 2)[:, None]).sum(2)  # (B, C, S²)
    return warped.view(len(x), x.shape[1], side, side)


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


def zero(linear: nn.Linear) -> None:
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)


class SpatialTransformer(nn.Module):
    """f: x (B, C, H, W) -> θ = bounded_affine(g(x), b), g an MLP [flatten -> affine -> ReLU -> affine to 6]
    -> affine_warp(x, θ, S) flattened, (B, C S²). g's last layer starts at zero: f starts as the image
    resampled on the S × S grid, and training moves θ away from the identity."""

    def __init__(self, input_shape: tuple[int, ...], width: int, bound: float, side: int):
        super().__init__()
        self.localization = feedforward([math.prod(input_shape), width, 6], "relu", output_init=zero, flatten=True)
        self.bound, self.side = bound, side

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        return bounded_affine(self.localization(x), self.bound)  # (B, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return affine_warp(x, self.theta(x), self.side).flatten(1)  # (B, C S²)


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
        network: Literal["conv", "spatial_transformer"],  # f: conv blocks and an affine map, or the warped image
        channels: list[int],  # conv: output channels of each conv block; its length is the number of blocks
        embedding_dim: int,  # conv: D, the dimension of f(x)
        localization_width: int,  # spatial_transformer: hidden units of g, the network that predicts θ
        warp_bound: float,  # spatial_transformer: b, how far each entry of θ may move from the identity's
        warp_side: int,  # spatial_transformer: S, the side of the grid the warped image is read on (D = C S²)
        loss: Literal["contrastive", "triplet"],  # over the batch's pairs, or its triplets
        margin: float,  # m, in the embedding's distance units
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        if network == "conv":
            self.network = EmbeddingNetwork(data.input_shape, channels, embedding_dim)
        else:
            self.network = SpatialTransformer(data.input_shape, localization_width, warp_bound, warp_side)
        self.loss_name, self.margin = loss, margin

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not model["channels"] or any(c < 1 for c in model["channels"]):
            raise ValueError(f"channels: must be a non-empty list of positive integers, got {model['channels']}")
        if model["embedding_dim"] < 1:
            raise ValueError(f"embedding_dim: must be a positive integer, got {model['embedding_dim']}")
        if model["localization_width"] < 1:
            raise ValueError(f"localization_width: must be a positive integer, got {model['localization_width']}")
        if not model["warp_bound"] > 0:
            raise ValueError(f"warp_bound: must be positive, got {model['warp_bound']}")
        if model["warp_side"] < 1:
            raise ValueError(f"warp_side: must be a positive integer, got {model['warp_side']}")
        # Bilinear reads finer than half a pixel add nothing, while the warp's dense sampling matrix,
        # S² x H W per image, grows with the square of S.
        finest = 2 * max(data.input_shape[-2:]) if data is not None else None
        if finest is not None and model["warp_side"] > finest:
            raise ValueError(f"warp_side: at most twice the image's larger side ({finest}), got {model['warp_side']}")
        if not model["margin"] > 0:
            raise ValueError(f"margin: must be positive, got {model['margin']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "channels": [8], "embedding_dim": 8, "localization_width": 8, "warp_side": 8}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)  # (B, D)

    def embedding_loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return LOSSES[self.loss_name](z, y, self.margin)


MODEL = SiameseNetwork
