"""Linear regression (ch. 2).

Model: ŷ = b + wᵀx, with input x ∈ ℝᵖ, weights w ∈ ℝᵖ, intercept b ∈ ℝ.
Loss: the mean squared error C(b, w) = (1/n) Σᵢ (yᵢ − b − wᵀxᵢ)².

C is a convex quadratic whose minimiser solves the normal equations X̃ᵀX̃ θ = X̃ᵀy with
X̃ = [1 X] ∈ ℝⁿˣ⁽ᵖ⁺¹⁾ and θ = (b, w): `least_squares` computes it in closed form, the reference
that gradient-based training is measured against.
"""

from __future__ import annotations

import math
import torch
from torch import nn

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule


def design_matrix(x: torch.Tensor) -> torch.Tensor:
    """X̃ = [1 X]: (n, p) -> (n, p + 1)."""
    return torch.cat([torch.ones(len(x), 1, dtype=x.dtype, device=x.device), x], dim=1)


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """θ* = argmin ‖y − X̃θ‖², solved by the SVD-based least-squares routine (the minimum-norm θ* if X̃
    is rank deficient, where the default QR-based driver can return a wrong one); returns (b, w)."""
    theta = torch.linalg.lstsq(design_matrix(x.double()), y.double().unsqueeze(1), driver="gelsd").solution.squeeze(1)
    return theta[0], theta[1:]


def squared_error_gradient(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, w: torch.Tensor):
    """∇C = (2/n) X̃ᵀ(X̃θ − y), split into (∂C/∂b, ∂C/∂w)."""
    residual = b + x @ w - y  # (n,)
    return 2 * residual.mean(), 2 * x.T @ residual / len(x)


def ridge_penalty(w: torch.Tensor, l2: float) -> torch.Tensor:
    """(λ/2)‖w‖², the intercept left unpenalized."""
    return 0.5 * l2 * (w**2).sum()


def check_l2(model: dict, data: DataSpec | None = None) -> None:
    if model["l2"] < 0:
        raise ValueError(f"l2: must be zero or positive, got {model['l2']}")


class LinearRegression(SupervisedModule):
    """ŷ = b + wᵀx on flattened inputs, one output per target (the logistic and softmax families reuse it)."""

    TASKS = ("regression",)
    CHAPTER = 2

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        l2: float,  # λ of the ridge penalty (λ/2)‖w‖² added to the training loss; 0 for none
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.l2 = l2
        in_features = math.prod(data.input_shape)
        self.linear = nn.Linear(in_features, data.num_outputs)  # weight (K, p) = wᵀ, bias (K,) = b; K = 1 here

    check_config = staticmethod(check_l2)

    def penalty(self) -> torch.Tensor | float:
        return ridge_penalty(self.linear.weight, self.l2) if self.l2 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))  # (B, K)


MODEL = LinearRegression
