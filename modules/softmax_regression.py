"""Softmax regression (ch. 3): multinomial logistic regression for K classes.

Model: ŷ = S_softmax(b + Wx) ∈ ℝᴷ, with S_softmax(z)ₖ = e^{zₖ} / Σⱼ e^{zⱼ}, x ∈ ℝᵖ, W ∈ ℝᴷˣᵖ, b ∈ ℝᴷ.
Loss: the categorical cross-entropy C(b, W) = −(1/n) Σᵢ log ŷᵢ,yᵢ, yᵢ ∈ {0, …, K−1}.

With one-hot targets Y ∈ {0,1}ⁿˣᴷ and probabilities P ∈ ℝⁿˣᴷ, ∇_W C = (1/n) (P − Y)ᵀX and
∇_b C = mean over i of (P − Y). Training uses `cross_entropy` on the logits z = b + Wx (log-sum-exp
form of the same loss).
"""

from __future__ import annotations

import torch
from torch import nn

from modules.linear_regression import check_l2, ridge_penalty
from pipeline.data import DataSpec
from pipeline.params import OptimizerConfig, SchedulerConfig
from pipeline.supervised import SupervisedModule


def softmax(z: torch.Tensor) -> torch.Tensor:
    """S_softmax(z)ₖ = e^{zₖ − max z} / Σⱼ e^{zⱼ − max z} over the last axis (the shift cancels)."""
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def categorical_cross_entropy(probabilities: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−(1/n) Σᵢ log P[i, yᵢ]; probabilities (n, K), y (n,) int."""
    return -torch.log(probabilities[torch.arange(len(y)), y]).mean()


def softmax_gradient(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, w: torch.Tensor):
    """(∇_b C, ∇_W C) = (mean(P − Y), (P − Y)ᵀX / n); x (n, p), w (K, p), b (K,)."""
    p = softmax(x @ w.T + b)  # (n, K)
    residual = p - nn.functional.one_hot(y, p.shape[1]).to(p.dtype)  # (n, K)
    return residual.mean(dim=0), residual.T @ x / len(x)


class SoftmaxRegression(SupervisedModule):
    """z = b + Wx on flattened inputs; K logits."""

    TASKS = ("multiclass",)
    CHAPTER = 3

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
        in_features = int(torch.tensor(data.input_shape).prod())
        self.linear = nn.Linear(in_features, data.num_classes)

    check_config = staticmethod(check_l2)

    def penalty(self) -> torch.Tensor | float:
        return ridge_penalty(self.linear.weight, self.l2) if self.l2 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))  # (B, K) logits z


MODEL = SoftmaxRegression
