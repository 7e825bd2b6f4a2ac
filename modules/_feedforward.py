"""The stack of affine layers every family made of one builds (ch. 5): the feedforward network, the
autoencoders, VAE, GAN, DQN, PPO, the transformer's position-wise network, the diffusion model's time
embedding. Not a family: it imports nothing of the pipeline, so a family that uses it depends on
this file alone, not on the MLP family's.

Initialization (ch. 5) draws W⁽ℓ⁾ with variance matched to the layer widths n_in, n_out:
Xavier (Glorot) uniform, Var = 2 / (n_in + n_out), for tanh/sigmoid; He (Kaiming) normal,
Var = 2 / n_in, for ReLU-like S. Biases start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from torch import nn

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu"]
Init = Literal["xavier", "he"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def init_std(init: Init, fan_in: int, fan_out: int) -> float:
    """Standard deviation of W⁽ℓ⁾'s entries: √(2 / (n_in + n_out)) (Xavier) or √(2 / n_in) (He)."""
    return math.sqrt(2 / (fan_in + fan_out)) if init == "xavier" else math.sqrt(2 / fan_in)


def initialize(linear: nn.Linear, init: Init) -> None:
    if init == "xavier":
        nn.init.xavier_uniform_(linear.weight)
    else:
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    nn.init.zeros_(linear.bias)


def small_widths(widths: list[int]) -> list[int]:
    """Hidden widths for a fast test: one layer of 32 units, or none if there were none (linear stays linear)."""
    return [32] if widths else []


class Feedforward(nn.Sequential):
    """What `feedforward` builds: an nn.Sequential whose type says it is a stack of affine layers."""


def feedforward(
    widths: list[int],  # n₀ (inputs), the hidden widths, then the output width
    activation: Activation | Callable[[], nn.Module],  # S, by name or as a module factory
    *,
    batch_norm: bool = False,  # batch normalization between each hidden affine map and S
    dropout: float = 0.0,  # dropout probability after each S; 0 = none
    init: Callable[[nn.Linear], None] | None = None,  # initializes each hidden affine map in place
    output_init: Callable[[nn.Linear], None] | None = None,  # initializes the output layer in place
    flatten: bool = False,  # flatten (B, ...) inputs to (B, n₀) first
) -> Feedforward:
    """(flatten) -> [affine -> (batch norm) -> S -> (dropout)] x L -> affine, between consecutive
    `widths`: the output layer is affine, with no activation after it.

    Each affine map is initialized as soon as it is made (`init` for the hidden ones, `output_init` for
    the last; PyTorch's default where None), so a network draws its random numbers layer by layer."""
    if len(widths) < 2:
        raise ValueError(f"widths: an input and an output width at least, got {widths}")
    make_activation = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        linear = nn.Linear(fan_in, fan_out)
        if init is not None:
            init(linear)
        layers += [linear, *([nn.BatchNorm1d(fan_out)] if batch_norm else []), make_activation()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    output = nn.Linear(widths[-2], widths[-1])
    if output_init is not None:
        output_init(output)
    return Feedforward(*layers, output)
