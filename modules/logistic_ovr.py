"""Logistic regression one-vs-rest (ch. 3): K independent sigmoid models for K classes, the middle row of
the book's MNIST comparison (Table 3.1) between least squares classification and softmax regression.

Model: z = b + Wx ∈ ℝᴷ, with x ∈ ℝᵖ, W ∈ ℝᴷˣᵖ, b ∈ ℝᴷ; class k against the rest is logistic
regression's sigmoid model σ(zₖ) = P(y = k | x), each k fitted on its own; the predicted class is
argmaxₖ σ(zₖ) = argmaxₖ zₖ.
Loss: the sum over classes of logistic regression's binary cross-entropy on the k-th column of the
one-hot labels Y ∈ {0,1}ⁿˣᴷ,

    C(b, W) = −(1/n) Σᵢ Σₖ [Yᵢₖ log σ(zᵢₖ) + (1 − Yᵢₖ) log(1 − σ(zᵢₖ))] = Σₖ Cₖ,

so that its gradient in class k's parameters is class k's binary gradient alone:
∇_W C = (σ(Z) − Y)ᵀX / n and ∇_b C = the mean over i of σ(Z) − Y, with Z = XWᵀ + b ∈ ℝⁿˣᴷ. The ridge
penalty (λ/2)‖W‖² is linear regression's, the same λ for every class as for one logistic regression.
Training evaluates the loss from the logits (`binary_cross_entropy_with_logits`), without overflow.

Probabilities for the metrics (AUROC, ECE): the K sigmoids come from K separate models and need not sum
to one. `predict` reports them normalized, pₖ = σ(zₖ) / Σⱼ σ(zⱼ): a probability vector in the same
order as the sigmoids (argmax and accuracy are the one-vs-rest classifier's own). Validation accuracy
(pipeline.core.supervised) takes the argmax of the logits' softmax: the same class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.linear_regression import LinearRegression


def one_vs_rest_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σₖ Cₖ = (1/n) Σᵢ Σₖ BCE(σ(zᵢₖ), Yᵢₖ) from the logits; logits (n, K), y (n,) int."""
    targets = F.one_hot(y, logits.shape[-1]).to(logits.dtype)  # (n, K)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(y)


def one_vs_rest_gradient(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, w: torch.Tensor):
    """(∇_b C, ∇_W C) = (mean(σ(Z) − Y), (σ(Z) − Y)ᵀX / n) with Z = XWᵀ + b; x (n, p), w (K, p), b (K,)."""
    error = torch.sigmoid(x @ w.T + b) - F.one_hot(y, len(b)).to(x.dtype)  # (n, K)
    return error.mean(dim=0), error.T @ x / len(x)


def normalized_sigmoids(logits: torch.Tensor) -> torch.Tensor:
    """pₖ = σ(zₖ) / Σⱼ σ(zⱼ) over the last axis, computed as the softmax of log σ(z): defined even where
    every σ(zⱼ) underflows to zero."""
    return F.logsigmoid(logits).softmax(dim=-1)  # (..., K)


class LogisticOneVsRest(LinearRegression):
    """z = b + Wx on flattened inputs, K logits, one sigmoid model each. The affine map and ridge penalty are linear regression's."""

    TASKS = ("multiclass",)
    CHAPTER = 3

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return one_vs_rest_cross_entropy(scores, y)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return normalized_sigmoids(self(x))  # (B, K)


MODEL = LogisticOneVsRest
