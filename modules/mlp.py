"""Deep feedforward network (ch. 5).

Layers ℓ = 1, …, L: a⁽ℓ⁾ = W⁽ℓ⁾h⁽ℓ⁻¹⁾ + b⁽ℓ⁾, h⁽ℓ⁾ = S(a⁽ℓ⁾), with h⁽⁰⁾ = x and a scalar activation
S applied elementwise; the output layer is affine (scores for the task's loss). Optional batch
normalization between the affine map and S, and dropout after S (ch. 5's regularization).

Its layers and initialization (Xavier or He) are modules/_feedforward.py's, which every family made
of a stack of affine layers builds with.
"""

from __future__ import annotations

import math

import torch

from modules._feedforward import Activation, Init, feedforward, initialize, small_widths
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule


class FeedforwardNetwork(SupervisedModule):
    """x (B, ...) -> flatten -> [affine -> (batch norm) -> S -> (dropout)] x L -> affine -> (B, K)."""

    TASKS = ("regression", "binary", "multiclass")
    CHAPTER = 5

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        hidden_sizes: list[int],  # widths of the hidden layers; its length is the depth L
        activation: Activation,  # the scalar activation S
        init: Init,  # weight initialization scheme
        batch_norm: bool,  # batch normalization before each activation
        dropout: float,  # dropout probability after each activation, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.net = feedforward(
            [math.prod(data.input_shape), *hidden_sizes, data.num_outputs], activation, batch_norm=batch_norm,
            dropout=dropout, init=lambda linear: initialize(linear, init),
            output_init=lambda linear: initialize(linear, "xavier"), flatten=True,
        )

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not 0 <= model["dropout"] < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {model['dropout']}")
        if any(width < 1 for width in model["hidden_sizes"]):
            raise ValueError(f"hidden_sizes: widths must be positive integers, got {model['hidden_sizes']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "hidden_sizes": small_widths(model["hidden_sizes"])}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, K)


MODEL = FeedforwardNetwork
