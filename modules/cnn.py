"""Convolutional network (ch. 6).

A convolutional layer maps C_in channels of size n × n to C_out channels by
Z[c'] = b[c'] + Σ_c W[c', c] ⋆ X[c] (cross-correlation with k × k kernels), with padding p and
stride s, giving an output of side ⌊(n + 2p − k) / s⌋ + 1 (`conv_output_size`). Pooling (2 × 2,
stride 2) halves the side. A residual block (ch. 6) adds its input back, h = S(F(x) + P x), where F
is two convolutions and P is the identity, or a 1 × 1 convolution when the shape changes.

The network: blocks of [conv -> (batch norm) -> ReLU] (or residual blocks) each followed by pooling
while the side is at least 2, then flatten, dropout and an affine layer to K scores.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule


def conv_output_size(n: int, kernel_size: int, padding: int, stride: int) -> int:
    """Side of a convolution's output: ⌊(n + 2p − k) / s⌋ + 1."""
    return (n + 2 * padding - kernel_size) // stride + 1


def block_sides(side: int, channels: list[int], kernel_size: int, padding: int, stride: int, pool: str) -> list[int]:
    """The side after each convolution and each pooling, in order, by the formula above."""
    sides = []
    for _ in channels:
        side = conv_output_size(side, kernel_size, padding, stride)
        sides.append(side)
        if pool != "none" and side >= 2:
            side = conv_output_size(side, 2, 0, 2)
            sides.append(side)
    return sides


def conv_bn(c_in: int, c_out: int, kernel_size: int, padding: int, stride: int, batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=not batch_norm)
    return [conv, *([nn.BatchNorm2d(c_out)] if batch_norm else [])]


class ResidualBlock(nn.Module):
    """h = ReLU(F(x) + P x), F = conv -> BN -> ReLU -> conv -> BN (the first conv carries the stride)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, padding: int, stride: int, batch_norm: bool):
        super().__init__()
        self.f = nn.Sequential(
            *conv_bn(c_in, c_out, kernel_size, padding, stride, batch_norm),
            nn.ReLU(),
            *conv_bn(c_out, c_out, kernel_size, kernel_size // 2, 1, batch_norm),
        )
        same = c_in == c_out and stride == 1 and kernel_size == 2 * padding + 1
        self.projection = nn.Identity() if same else nn.Sequential(*conv_bn(c_in, c_out, 1, 0, stride, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.f(x) + self.projection(x))


class ConvolutionalNetwork(SupervisedModule):
    """x (B, C, H, W) -> blocks with pooling -> flatten -> dropout -> affine -> (B, K)."""

    TASKS = ("regression", "binary", "multiclass")
    IMAGE_INPUT = True
    CHAPTER = 6

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        channels: list[int],  # output channels of each block; its length is the number of blocks
        kernel_size: int,  # k, side of every square kernel
        padding: int,  # p, zero padding on each side
        stride: int,  # s, stride of each block's first convolution
        pool: Literal["max", "avg", "none"],  # 2 x 2 pooling after each block while the side is >= 2
        batch_norm: bool,  # batch normalization after each convolution
        residual: bool,  # residual blocks instead of single convolutions
        dropout: float,  # dropout probability before the affine head, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        c, side, _ = data.input_shape
        blocks: list[nn.Module] = []
        for c_out in channels:
            if residual:
                blocks.append(ResidualBlock(c, c_out, kernel_size, padding, stride, batch_norm))
                side = conv_output_size(side, kernel_size, padding, stride)
            else:
                blocks += [*conv_bn(c, c_out, kernel_size, padding, stride, batch_norm), nn.ReLU()]
                side = conv_output_size(side, kernel_size, padding, stride)
            if pool != "none" and side >= 2:
                blocks.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                side = conv_output_size(side, 2, 0, 2)
            c = c_out
        self.features = nn.Sequential(*blocks)
        self.feature_shape = (c, side, side)  # from the convolution-arithmetic formula
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * side * side, data.num_outputs))

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not 0 <= model["dropout"] < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {model['dropout']}")
        for key in ("kernel_size", "stride"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["padding"] < 0:
            raise ValueError(f"padding: must be zero or positive, got {model['padding']}")
        if not model["channels"] or any(c < 1 for c in model["channels"]):
            raise ValueError(f"channels: must be a non-empty list of positive integers, got {model['channels']}")
        k, p = model["kernel_size"], model["padding"]
        if model["residual"] and (k % 2 == 0 or p != k // 2):
            raise ValueError(f"padding: residual blocks need an odd kernel_size and padding = kernel_size // 2, got {k} and {p}")
        if data is not None:
            side = data.input_shape[-1]
            sides = block_sides(side, model["channels"], k, p, model["stride"], model["pool"])
            if min(sides) < 1:
                raise ValueError(
                    f"channels: {len(model['channels'])} blocks with kernel_size {k}, padding {p}, stride "
                    f"{model['stride']} shrink the {side}x{side} input below one pixel ({sides})"
                )

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "channels": [8, 8]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, K)


MODEL = ConvolutionalNetwork
