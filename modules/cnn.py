"""Convolutional network (ch. 6).

A convolutional layer maps C_in channels of size n × n to C_out channels by
Z[c'] = b[c'] + Σ_c W[c', c] ⋆ X[c] (cross-correlation with k × k kernels), with padding p, stride s
and dilation d (the kernel's taps d pixels apart, so that it spans d(k − 1) + 1 pixels), giving an
output of side ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1 (`conv_output_size`). Pooling (2 × 2, stride 2)
halves the side.

The network is a sequence of blocks, each of `units_per_block` units followed by pooling while the side
is at least 2, then flatten, dropout and an affine layer to K scores. A unit is one of (ch. 6):
- plain: conv -> (batch norm) -> ReLU; several per block are VGG's stacks of small kernels, whose
  receptive field grows as a larger kernel's with fewer weights;
- residual: h = S(F(x) + P x), where F is two convolutions and P is the identity, or a 1 × 1
  convolution when the shape changes;
- inception: parallel branches, a 1 × 1 convolution, a k × k one, two k × k ones (GoogLeNet's 5 × 5
  receptive field for k = 3) and k × k max pooling, each larger one after a 1 × 1 convolution that
  mixes the channels first, concatenated along the channels.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule

INCEPTION_BRANCHES = 4


def conv_output_size(n: int, kernel_size: int, padding: int, stride: int, dilation: int = 1) -> int:
    """Side of a convolution's (or pooling's) output: ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1."""
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def block_sides(side: int, channels: list[int], units_per_block: int, kernel_size: int, padding: int, stride: int,
                dilation: int, pool: str) -> list[int]:
    """The side after each unit and each pooling, in order, by the formula above. A residual or inception
    unit changes the side as its first k × k convolution does: its other layers keep the side."""
    sides = []
    for _ in channels:
        for unit in range(units_per_block):
            side = conv_output_size(side, kernel_size, padding, stride if unit == 0 else 1, dilation)
            sides.append(side)
        if pool != "none" and side >= 2:
            side = conv_output_size(side, 2, 0, 2)
            sides.append(side)
    return sides


def side_kept(kernel_size: int, padding: int, dilation: int) -> bool:
    """Whether a stride-1 convolution keeps the side: 2p = d(k − 1), which needs k odd for every d."""
    return kernel_size % 2 == 1 and 2 * padding == dilation * (kernel_size - 1)


def conv_bn(c_in: int, c_out: int, kernel_size: int, padding: int, stride: int, dilation: int,
            batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=not batch_norm)
    return [conv, *([nn.BatchNorm2d(c_out)] if batch_norm else [])]


class ResidualBlock(nn.Module):
    """h = ReLU(F(x) + P x), F = conv -> BN -> ReLU -> conv -> BN (the first conv carries the stride)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, padding: int, stride: int, dilation: int,
                 batch_norm: bool):
        super().__init__()
        self.f = nn.Sequential(
            *conv_bn(c_in, c_out, kernel_size, padding, stride, dilation, batch_norm),
            nn.ReLU(),
            *conv_bn(c_out, c_out, kernel_size, dilation * (kernel_size // 2), 1, dilation, batch_norm),
        )
        same = c_in == c_out and stride == 1 and side_kept(kernel_size, padding, dilation)
        self.projection = nn.Identity() if same else nn.Sequential(*conv_bn(c_in, c_out, 1, 0, stride, 1, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.f(x) + self.projection(x))


class InceptionBlock(nn.Module):
    """h = [B_1(x), B_2(x), B_3(x), B_4(x)] along the channels, each branch C_out / 4 channels of the same side:
    B_1 = 1 × 1 conv; B_2 = 1 × 1 conv -> k × k conv; B_3 = 1 × 1 conv -> k × k conv -> k × k conv;
    B_4 = k × k max pooling -> 1 × 1 conv; every conv followed by (BN and) ReLU, each branch's first
    layer carrying the stride."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, padding: int, stride: int, dilation: int,
                 batch_norm: bool):
        super().__init__()
        width = c_out // INCEPTION_BRANCHES

        def conv(c: int, k: int, p: int, s: int, d: int) -> list[nn.Module]:
            return [*conv_bn(c, width, k, p, s, d, batch_norm), nn.ReLU()]

        k, p, d = kernel_size, padding, dilation
        self.branches = nn.ModuleList([
            nn.Sequential(*conv(c_in, 1, 0, stride, 1)),
            nn.Sequential(*conv(c_in, 1, 0, stride, 1), *conv(width, k, p, 1, d)),
            nn.Sequential(*conv(c_in, 1, 0, stride, 1), *conv(width, k, p, 1, d), *conv(width, k, p, 1, d)),
            nn.Sequential(nn.MaxPool2d(k, stride, padding=k // 2), *conv(c_in, 1, 0, 1, 1)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, C_out, H', W')


def make_unit(block: str, c_in: int, c_out: int, kernel_size: int, padding: int, stride: int, dilation: int,
              batch_norm: bool) -> list[nn.Module]:
    """One unit's layers: a plain unit's are flat (conv, BN, ReLU) so that the network's layer indices stay
    those of a network of plain units."""
    if block == "plain":
        return [*conv_bn(c_in, c_out, kernel_size, padding, stride, dilation, batch_norm), nn.ReLU()]
    kind = ResidualBlock if block == "residual" else InceptionBlock
    return [kind(c_in, c_out, kernel_size, padding, stride, dilation, batch_norm)]


class ConvolutionalNetwork(SupervisedModule):
    """x (B, C, H, W) -> blocks of units, each block followed by pooling -> flatten -> dropout -> affine -> (B, K)."""

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
        block: Literal["plain", "residual", "inception"],  # the kind of unit in every block
        units_per_block: int,  # units before each pooling (several plain ones: VGG-style blocks)
        kernel_size: int,  # k, side of every square kernel
        padding: int,  # p, zero padding on each side
        stride: int,  # s, stride of each block's first unit
        dilation: int,  # d, spacing of every k x k kernel's taps (1: adjacent pixels)
        pool: Literal["max", "avg", "none"],  # 2 x 2 pooling after each block while the side is >= 2
        batch_norm: bool,  # batch normalization after each convolution
        dropout: float,  # dropout probability before the affine head, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        c, side, _ = data.input_shape
        layers: list[nn.Module] = []
        for c_out in channels:
            for unit in range(units_per_block):
                s = stride if unit == 0 else 1
                layers += make_unit(block, c, c_out, kernel_size, padding, s, dilation, batch_norm)
                side = conv_output_size(side, kernel_size, padding, s, dilation)
                c = c_out
            if pool != "none" and side >= 2:
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                side = conv_output_size(side, 2, 0, 2)
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, side, side)  # from the convolution-arithmetic formula
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * side * side, data.num_outputs))

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not 0 <= model["dropout"] < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {model['dropout']}")
        for key in ("kernel_size", "stride", "dilation", "units_per_block"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["padding"] < 0:
            raise ValueError(f"padding: must be zero or positive, got {model['padding']}")
        if not model["channels"] or any(c < 1 for c in model["channels"]):
            raise ValueError(f"channels: must be a non-empty list of positive integers, got {model['channels']}")
        k, p, d, block = model["kernel_size"], model["padding"], model["dilation"], model["block"]
        if block != "plain" and not side_kept(k, p, d):
            raise ValueError(f"padding: {block} blocks need an odd kernel_size and padding = dilation * (kernel_size // 2), "
                             f"got kernel_size {k}, padding {p}, dilation {d}")
        if block == "inception" and any(c % INCEPTION_BRANCHES for c in model["channels"]):
            raise ValueError(f"channels: inception blocks split each block's channels over {INCEPTION_BRANCHES} branches, "
                             f"so they must be multiples of {INCEPTION_BRANCHES}, got {model['channels']}")
        if data is not None:
            side = data.input_shape[-1]
            sides = block_sides(side, model["channels"], model["units_per_block"], k, p, model["stride"], d, model["pool"])
            if min(sides) < 1:
                raise ValueError(
                    f"channels: {len(model['channels'])} blocks of {model['units_per_block']} units with kernel_size {k}, "
                    f"padding {p}, stride {model['stride']}, dilation {d} shrink the {side}x{side} input below one pixel ({sides})"
                )

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "channels": [8, 8]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, K)


MODEL = ConvolutionalNetwork
