"""Least squares classification (ch. 3): linear regression fitted to one-hot labels, the naive baseline
of the book's MNIST comparison (Table 3.1) beside logistic one-vs-rest and softmax regression.

Model: ŷ = b + Wx ∈ ℝᴷ, with x ∈ ℝᵖ, W ∈ ℝᴷˣᵖ, b ∈ ℝᴷ; the predicted class is argmaxₖ ŷₖ.
Loss: the squared error to the one-hot encoding e_y ∈ {0,1}ᴷ of the label y ∈ {0, …, K−1},

    C(b, W) = (1/n) Σᵢ ‖e_{yᵢ} − ŷᵢ‖² = Σₖ Cₖ,

Cₖ being linear regression's loss (ch. 2) on the k-th column of Y = [e_{y₁} … e_{yₙ}]ᵀ ∈ {0,1}ⁿˣᴷ: K
independent linear regressions, so the minimiser solves the normal equations X̃ᵀX̃ Θ = X̃ᵀY, one column
of Θ per class (`one_hot_least_squares`), with X̃ = [1 X] and Θ = [b W]ᵀ ∈ ℝ⁽ᵖ⁺¹⁾ˣᴷ. The ridge penalty
(λ/2)‖W‖² is linear regression's, the same λ for every class.

Probabilities for the metrics (AUROC, ECE). The scores ŷ are not probabilities: entries may be negative
or exceed one. At the minimiser they do sum to one for every x: the rows of Y sum to one and X̃ holds
the intercept column, so the K column fits add up to the fit of the all-ones column, which is b = 1,
W = 0 (exact, and free of penalty). `predict` reports the Euclidean projection of ŷ on the probability
simplex, p = argmin {‖p − ŷ‖² : p ≥ 0, Σₖ pₖ = 1}, that is pₖ = max(ŷₖ − τ, 0) with τ the one number
that makes Σₖ pₖ = 1 (`simplex_projection`): the probability vector nearest to the scores in the squared
error the model is fitted by. It keeps the order of the scores (argmax and accuracy are the least
squares classifier's own) and leaves ŷ as it is when ŷ is already a probability vector. The softmax of
the scores, the other candidate, would report softmax's calibration rather than the model's: scores in
[0, 1] give at most e / (e + K − 1) ≈ 0.23 for K = 10, so every prediction would look uncertain.
The projected probabilities are still underconfident, as the scores are (on digits the mean top
probability is 0.62 at test accuracy 0.94, ECE 0.32): the ECE reports that weakness of the naive
classifier rather than hiding it. Validation accuracy (pipeline.core.supervised) takes the argmax of
the scores' softmax: the same class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.linear_regression import LinearRegression, design_matrix


def one_hot_squared_error(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/n) Σᵢ ‖e_{yᵢ} − ŷᵢ‖²; scores (n, K), y (n,) int."""
    target = F.one_hot(y, scores.shape[-1]).to(scores.dtype)  # (n, K)
    return ((scores - target) ** 2).sum(dim=-1).mean()


def one_hot_squared_error_gradient(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, w: torch.Tensor):
    """(∇_b C, ∇_W C) = (2 mean(Ŷ − Y), 2 (Ŷ − Y)ᵀX / n) with Ŷ = XWᵀ + b; x (n, p), w (K, p), b (K,)."""
    residual = x @ w.T + b - F.one_hot(y, len(b)).to(x.dtype)  # (n, K)
    return 2 * residual.mean(dim=0), 2 * residual.T @ x / len(x)


def one_hot_least_squares(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Θ* = argmin ‖Y − X̃Θ‖², all K columns at once, in float64; returns (b (K,), W (K, p)) for x (n, p).

    The SVD-based driver gives the minimum-norm Θ* when X̃ is rank deficient, as on image data whose
    constant pixels repeat the intercept column (digits' corners); the default QR-based driver (gelsy)
    returns a wrong solution there."""
    targets = F.one_hot(y, num_classes).double()  # (n, K)
    theta = torch.linalg.lstsq(design_matrix(x.double()), targets, driver="gelsd").solution  # (p + 1, K)
    return theta[0], theta[1:].T


def simplex_projection(scores: torch.Tensor) -> torch.Tensor:
    """p = argmin {‖p − ŷ‖² : p ≥ 0, Σ p = 1} over the last axis, pₖ = max(ŷₖ − τ, 0).

    With u the scores sorted in decreasing order, the support of p is its first ρ entries,
    ρ = max {j : uⱼ − (Σ_{i≤j} uᵢ − 1)/j > 0}, and τ = (Σ_{i≤ρ} uᵢ − 1)/ρ (Held, Wolfe and Crowder, 1974).
    """
    u = scores.sort(dim=-1, descending=True).values  # (..., K)
    j = torch.arange(1, u.shape[-1] + 1, dtype=u.dtype, device=u.device)  # (K,)
    excess = u.cumsum(dim=-1) - 1  # Σ_{i≤j} uᵢ − 1, (..., K)
    rho = (u - excess / j > 0).sum(dim=-1, keepdim=True)  # (..., 1), at least 1: j = 1 always qualifies
    tau = excess.gather(-1, rho - 1) / rho  # (..., 1)
    return (scores - tau).clamp_min(0)


class LeastSquaresClassifier(LinearRegression):
    """ŷ = b + Wx on flattened inputs, K scores fitted to one-hot labels. The affine map and ridge penalty are linear regression's."""

    TASKS = ("multiclass",)
    CHAPTER = 3

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return one_hot_squared_error(scores, y)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return simplex_projection(self(x))  # (B, K) class probabilities, the scores' order kept


MODEL = LeastSquaresClassifier
