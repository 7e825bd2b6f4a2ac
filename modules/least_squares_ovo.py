"""Least squares classification one-vs-one (ch. 3): one least squares classifier per pair of classes,
combined by sign voting; a row of the book's MNIST comparison (Table 3.1) beside least squares
one-vs-rest, logistic one-vs-rest and one-vs-one, and softmax regression.

Model: for each of the M = K(K−1)/2 pairs m = (k, l), k < l, in the order (0, 1), (0, 2), …, (K−2, K−1),
a score sₘ = bₘ + wₘᵀx, with x ∈ ℝᵖ; all pairs at once s = b + Wx ∈ ℝᴹ, W ∈ ℝᴹˣᵖ, b ∈ ℝᴹ. Pair m
votes for l if sₘ > 0, for k otherwise.
Loss: pair m is fitted to the targets tᵢₘ = +1 if yᵢ = l, −1 if yᵢ = k, on its two classes' samples
only (tᵢₘ = 0 marks the others, which it never sees):

    C(b, W) = (1/n) Σᵢ Σ_{m : tᵢₘ ≠ 0} (tᵢₘ − sₘ(xᵢ))² = Σₘ Cₘ,

Cₘ being linear regression's loss (ch. 2) on pair m's samples, scaled by the one 1/n of the whole
training set: M independent least squares problems. With linear regression's ridge penalty
(λ/2)‖W‖² = Σₘ (λ/2)‖wₘ‖², pair m's minimiser solves (X̃ₘᵀX̃ₘ + (nλ/2) D) θₘ = X̃ₘᵀtₘ, with X̃ₘ = [1 Xₘ]
its samples' design matrix, θₘ = (bₘ, wₘ) and D = diag(0, 1, …, 1): the same λ for every pair, as
scikit-learn's OneVsOneClassifier gives each pair the same estimator.

Voting (`pairwise_votes`): vₖ = the number of pairs that vote for k; Σₖ vₖ = M. Ties between classes
with the most votes are broken as scikit-learn's OneVsOneClassifier breaks them: by each class's summed
confidence cₖ = Σ_{m=(j,k)} sₘ − Σ_{m=(k,l)} sₘ (the scores that argued for k, minus those against),
through the decision value dₖ = vₖ + cₖ / (3(|cₖ| + 1)) (`ovo_decision`): the added term lies in
(−1/3, 1/3), so it orders classes with equal votes and never outweighs one vote. The predicted class is
argmaxₖ dₖ.

Probabilities for the metrics (AUROC, ECE): the decision values shifted by 1/3 to be positive and
normalized, pₖ = (dₖ + 1/3) / Σⱼ (dⱼ + 1/3) (`vote_shares`): close to each class's share of the votes
vₖ / M, in the same order, and argmax p is the prediction, tie-break included. They are no calibrated
probabilities: a class that wins all its K − 1 contests gets a share of about 2/K; the ECE reports it.
Validation accuracy (pipeline.core.supervised) takes the same probabilities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule
from modules.linear_regression import check_l2, ridge_penalty


def class_pairs(num_classes: int) -> torch.Tensor:
    """The M = K(K−1)/2 pairs (k, l), k < l, in lexicographic order: (M, 2) int. The upper triangle's
    indices, row by row: a factory that also runs on the meta device (train's model-size check)."""
    return torch.triu_indices(num_classes, num_classes, offset=1).T


def pairwise_targets(y: torch.Tensor, pairs: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """tᵢₘ = +1 if yᵢ = l, −1 if yᵢ = k, 0 if yᵢ is neither class of pair m = (k, l); y (n,) int -> (n, M)."""
    return (y[:, None] == pairs[:, 1]).to(dtype) - (y[:, None] == pairs[:, 0]).to(dtype)


def pairwise_squared_error(scores: torch.Tensor, y: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(1/n) Σᵢ Σ_{m : tᵢₘ ≠ 0} (tᵢₘ − sᵢₘ)²; scores (n, M), y (n,) int."""
    targets = pairwise_targets(y, pairs, scores.dtype)  # (n, M)
    return ((scores - targets) ** 2 * (targets != 0)).sum() / len(y)


def pairwise_votes(scores: torch.Tensor, pairs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """vₖ = the number of pairs voting for k: pair (k, l) votes l if sₘ > 0, else k; scores (n, M) -> (n, K)."""
    winners = torch.where(scores > 0, pairs[:, 1], pairs[:, 0])  # (n, M)
    return F.one_hot(winners, num_classes).sum(dim=1).to(scores.dtype)


def ovo_decision(scores: torch.Tensor, pairs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """dₖ = vₖ + cₖ / (3(|cₖ| + 1)), cₖ = Σ_{m=(j,k)} sₘ − Σ_{m=(k,l)} sₘ; scores (n, M) -> (n, K)."""
    confidence = torch.zeros(len(scores), num_classes, dtype=scores.dtype, device=scores.device)  # (n, K)
    confidence = confidence.index_add(1, pairs[:, 1], scores).index_add(1, pairs[:, 0], -scores)
    return pairwise_votes(scores, pairs, num_classes) + confidence / (3 * (confidence.abs() + 1))


def vote_shares(scores: torch.Tensor, pairs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """pₖ = (dₖ + 1/3) / Σⱼ (dⱼ + 1/3); scores (n, M) -> (n, K), rows summing to one, argmax = argmax d."""
    shifted = ovo_decision(scores, pairs, num_classes) + 1 / 3  # > 0: vₖ ≥ 0 and the tie-break term > −1/3
    return shifted / shifted.sum(dim=-1, keepdim=True)


class LeastSquaresOneVsOne(SupervisedModule):
    """s = b + Wx on flattened inputs, one score per pair of classes; ridge penalty as linear regression's."""

    TASKS = ("multiclass",)
    CHAPTER = 3

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        l2: float,  # λ of the ridge penalty (λ/2)‖W‖² added to the training loss; 0 for none
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.l2 = l2
        # derived from K: not saved in checkpoints
        self.register_buffer("pairs", class_pairs(data.num_classes), persistent=False)  # (M, 2)
        self.linear = nn.Linear(math.prod(data.input_shape), len(self.pairs))  # weight (M, p) = W, bias (M,) = b

    check_config = staticmethod(check_l2)

    def penalty(self) -> torch.Tensor | float:
        return ridge_penalty(self.linear.weight, self.l2) if self.l2 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))  # (B, M) pairwise scores

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pairwise_squared_error(scores, y, self.pairs)

    def predict_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return vote_shares(scores, self.pairs, self.data_spec.num_classes)  # (B, K)


MODEL = LeastSquaresOneVsOne
