"""Logistic regression one-vs-one (ch. 3): one logistic regression per pair of classes, combined by
voting; the best row of the book's MNIST comparison (Table 3.1).

Model: as least squares one-vs-one's (modules.least_squares_ovo): for each of the M = K(K−1)/2 pairs
m = (k, l), k < l, a logit sₘ = bₘ + wₘᵀx, and σ(sₘ) = P(y = l | y ∈ {k, l}, x), logistic regression's
sigmoid model of class l against class k. Pair m votes for l if σ(sₘ) > 1/2, that is sₘ > 0.
Loss: each pair's binary cross-entropy on its two classes' samples only, with the targets
(tᵢₘ + 1)/2 ∈ {0, 1} for tᵢₘ = ±1 (`pairwise_targets`),

    C(b, W) = −(1/n) Σᵢ Σ_{m : tᵢₘ ≠ 0} [uᵢₘ log σ(sᵢₘ) + (1 − uᵢₘ) log(1 − σ(sᵢₘ))],  uᵢₘ = (tᵢₘ + 1)/2,

M independent logistic regressions, each with the ridge penalty (λ/2)‖wₘ‖²: pair m's minimiser is
scikit-learn's LogisticRegression(C = 1/(nλ)) fitted on pair m's samples (it minimises
C Σᵢ BCE + ½‖w‖², the intercept unpenalized), as OneVsOneClassifier fits it. Training evaluates the loss
from the logits (`binary_cross_entropy_with_logits`), without overflow.

Voting, its tie-break (each class's summed logits, scikit-learn's), the prediction and the
probabilities for the metrics are least squares one-vs-one's, on the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.least_squares_ovo import LeastSquaresOneVsOne, pairwise_targets


def pairwise_cross_entropy(logits: torch.Tensor, y: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(1/n) Σᵢ Σ_{m : tᵢₘ ≠ 0} BCE(σ(sᵢₘ), (tᵢₘ + 1)/2) from the logits; logits (n, M), y (n,) int."""
    targets = pairwise_targets(y, pairs, logits.dtype)  # (n, M), ±1 in the pair, 0 outside
    return F.binary_cross_entropy_with_logits(logits, (targets + 1) / 2, weight=(targets != 0).to(logits.dtype),
                                              reduction="sum") / len(y)


class LogisticOneVsOne(LeastSquaresOneVsOne):
    """s = b + Wx on flattened inputs, one logit per pair of classes, one sigmoid model each."""

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pairwise_cross_entropy(scores, y, self.pairs)


MODEL = LogisticOneVsOne
