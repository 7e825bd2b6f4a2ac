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

from modules.linear_regression import LinearRegression


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


class SoftmaxRegression(LinearRegression):
    """z = b + Wx on flattened inputs, K logits. The affine map and ridge penalty are linear regression's."""

    TASKS = ("multiclass",)
    CHAPTER = 3


MODEL = SoftmaxRegression
