"""Logistic regression (ch. 3): the sigmoid model for binary classification.

Model: ŷ = σ(b + wᵀx) = P(y = 1 | x), with σ(z) = 1 / (1 + e⁻ᶻ), x ∈ ℝᵖ, w ∈ ℝᵖ, b ∈ ℝ.
Loss: the binary cross-entropy C(b, w) = −(1/n) Σᵢ [yᵢ log ŷᵢ + (1 − yᵢ) log(1 − ŷᵢ)], yᵢ ∈ {0, 1}.

Its gradient has the closed form ∇_w C = (1/n) Xᵀ(σ(Xw + b) − y), ∂C/∂b = mean(σ(Xw + b) − y).
Training evaluates the loss from the logit z = b + wᵀx (`binary_cross_entropy_with_logits`), which
is the same function computed without overflow of e⁻ᶻ.
"""

from __future__ import annotations

import torch

from modules.linear_regression import LinearRegression


def sigmoid(z: torch.Tensor) -> torch.Tensor:
    """σ(z) = 1 / (1 + e⁻ᶻ)."""
    return 1 / (1 + torch.exp(-z))


def binary_cross_entropy(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−(1/n) Σ [y log ŷ + (1 − y) log(1 − ŷ)] written out; y_hat, y: (n,)."""
    return -(y * torch.log(y_hat) + (1 - y) * torch.log(1 - y_hat)).mean()


def logistic_gradient(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, w: torch.Tensor):
    """(∂C/∂b, ∇_w C) = (mean(σ(Xw + b) − y), Xᵀ(σ(Xw + b) − y)/n); x (n, p), y (n,), w (p,)."""
    error = sigmoid(x @ w + b) - y  # (n,)
    return error.mean(), x.T @ error / len(x)


class LogisticRegression(LinearRegression):
    """z = b + wᵀx on flattened inputs; P(y = 1 | x) = σ(z). The affine map and ridge penalty are linear regression's."""

    TASKS = ("binary",)
    CHAPTER = 3


MODEL = LogisticRegression
