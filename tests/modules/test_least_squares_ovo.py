"""Least squares one-vs-one (ch. 3): the pairs, targets and loss vs a loop over pairs, voting and its
tie-break vs a hand loop, L-BFGS weights vs numpy's least squares per pair (ridge term included), a quick
fit on digits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from modules.least_squares_ovo import (
    LeastSquaresOneVsOne,
    class_pairs,
    ovo_decision,
    pairwise_squared_error,
    pairwise_targets,
    pairwise_votes,
    vote_shares,
)
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import load
from pipeline.prepare import prepare
from pipeline.spec import DataSpec

from conftest import quiet_trainer


def make_model(input_shape: tuple[int, ...], num_classes: int, l2: float = 0.0, optimizer: str = "lbfgs",
               lr: float = 1.0, family=LeastSquaresOneVsOne):
    return family(
        data=DataSpec("multiclass", input_shape, num_classes),
        optimizer=OptimizerConfig(name=optimizer, lr=lr, weight_decay=0.0, momentum=0.0, nesterov=False),
        scheduler=SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0),
        l2=l2,
    )


def class_data(n: int, p: int, num_classes: int, seed: int = 0):
    """Gaussian inputs labelled by the argmax of a random affine map plus noise: overlapping classes."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=generator)
    w = torch.randn(num_classes, p, generator=generator)
    y = (x @ w.T + torch.randn(n, num_classes, generator=generator)).argmax(dim=1)
    return x, y


def fit_full_batch(model, x, y, epochs: int):
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    quiet_trainer(max_epochs=epochs, num_sanity_val_steps=0).fit(model, train_dataloaders=loader, val_dataloaders=loader)


def hand_votes_and_decision(scores: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Votes and scikit-learn's tie-breaking decision values, one sample and one pair at a time."""
    n = len(scores)
    votes, confidence = np.zeros((n, num_classes)), np.zeros((n, num_classes))
    for i in range(n):
        for m, (k, l) in enumerate(itertools.combinations(range(num_classes), 2)):
            votes[i, l if scores[i, m] > 0 else k] += 1
            confidence[i, l] += scores[i, m]
            confidence[i, k] -= scores[i, m]
    return votes, votes + confidence / (3 * (np.abs(confidence) + 1))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "digits"
    prepare("digits", load(family_checks=False).data, out)
    return {split: tuple(torch.load(out / f"{split}.pt", weights_only=True).values()) for split in ("train", "test")}


def test_pairs_are_every_pair_of_classes_in_lexicographic_order():
    assert class_pairs(5).tolist() == [list(pair) for pair in itertools.combinations(range(5), 2)]
    assert len(class_pairs(10)) == 45


def test_targets_and_loss_are_each_pairs_own_least_squares_on_its_two_classes():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (30,))
    scores = torch.randn(30, 6, dtype=torch.float64)
    pairs = class_pairs(4)
    targets = pairwise_targets(y, pairs, torch.float64)
    total = 0.0
    for m, (k, l) in enumerate(itertools.combinations(range(4), 2)):
        expected = torch.where(y == l, 1.0, torch.where(y == k, -1.0, 0.0)).double()
        torch.testing.assert_close(targets[:, m], expected)
        inside = (y == k) | (y == l)
        total += ((scores[inside, m] - expected[inside]) ** 2).sum()
    torch.testing.assert_close(pairwise_squared_error(scores, y, pairs), total / 30)


def test_votes_and_the_tie_break_are_scikit_learns_rule_written_as_a_loop():
    torch.manual_seed(0)
    scores = torch.randn(200, 10, dtype=torch.float64)  # K = 5: 10 pairs
    votes, decision = hand_votes_and_decision(scores.numpy(), 5)
    pairs = class_pairs(5)
    np.testing.assert_array_equal(pairwise_votes(scores, pairs, 5).numpy(), votes)
    np.testing.assert_allclose(ovo_decision(scores, pairs, 5).numpy(), decision)
    assert (votes.sum(axis=1) == 10).all()  # one vote per pair


def test_equal_votes_go_to_the_class_with_the_larger_summed_confidence():
    pairs = class_pairs(3)  # (0, 1), (0, 2), (1, 2): a cycle 0 > 1 > 2 > 0, one vote each
    scores = torch.tensor([[-2.0, 0.5, -0.1]])  # 0 beats 1 by 2, 2 beats 0 by 0.5, 1 beats 2 by 0.1
    assert pairwise_votes(scores, pairs, 3).tolist() == [[1.0, 1.0, 1.0]]
    # summed confidences: c₀ = 2 − 0.5 = 1.5, c₁ = −2 + 0.1 = −1.9, c₂ = 0.5 − 0.1 = 0.4
    assert ovo_decision(scores, pairs, 3).argmax().item() == 0
    assert vote_shares(scores, pairs, 3).argmax().item() == 0


def test_a_vote_always_outweighs_the_tie_break_and_the_shares_are_probabilities():
    torch.manual_seed(0)
    scores = torch.randn(500, 45) * 50  # large confidences: the tie-break term near ±1/3
    pairs = class_pairs(10)
    votes = pairwise_votes(scores, pairs, 10)
    decision = ovo_decision(scores, pairs, 10)
    assert ((decision - votes).abs() < 1 / 3).all()
    shares = vote_shares(scores, pairs, 10)
    assert (shares > 0).all()
    torch.testing.assert_close(shares.sum(dim=1), torch.ones(500))
    assert torch.equal(shares.argmax(dim=1), decision.argmax(dim=1))
    top = votes.max(dim=1).values
    assert (votes.gather(1, shares.argmax(dim=1, keepdim=True)).squeeze(1) == top).all()  # the most votes wins


def test_training_step_is_the_pairwise_squared_error_plus_ridge_penalty():
    torch.manual_seed(0)
    model = make_model((6,), num_classes=3, l2=0.4)
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    scores = x @ model.linear.weight.T + model.linear.bias
    assert scores.shape == (12, 3)
    expected = pairwise_squared_error(scores, y, class_pairs(3)) + 0.2 * (model.linear.weight**2).sum()
    torch.testing.assert_close(model.training_step((x, y), 0), expected)


def test_lbfgs_reaches_each_pairs_ridge_least_squares_solution_from_numpy():
    """Pair m minimises (1/n)‖tₘ − X̃ₘθₘ‖² + (λ/2)‖wₘ‖²: numpy's lstsq of [X̃ₘ; √(nλ/2)[0 I]] against [tₘ; 0]."""
    x, y = class_data(120, 5, 4)
    l2 = 0.05
    torch.manual_seed(0)
    model = make_model((5,), num_classes=4, l2=l2)
    fit_full_batch(model, x, y, epochs=10)
    xn, yn, n = x.double().numpy(), y.numpy(), len(y)
    for m, (k, l) in enumerate(itertools.combinations(range(4), 2)):
        inside = (yn == k) | (yn == l)
        design = np.hstack([np.ones((inside.sum(), 1)), xn[inside]])
        ridge = np.sqrt(n * l2 / 2) * np.hstack([np.zeros((5, 1)), np.eye(5)])
        theta = np.linalg.lstsq(np.vstack([design, ridge]), np.concatenate([np.where(yn[inside] == l, 1.0, -1.0), np.zeros(5)]),
                                rcond=None)[0]
        np.testing.assert_allclose(model.linear.bias[m].item(), theta[0], atol=2e-4)
        np.testing.assert_allclose(model.linear.weight[m].detach().double().numpy(), theta[1:], atol=2e-4)


def test_predict_is_the_vote_shares_of_flattened_images():
    torch.manual_seed(0)
    model = make_model((1, 4, 4), num_classes=5)
    x = torch.randn(8, 1, 4, 4)
    probabilities = model.predict(x)
    assert probabilities.shape == (8, 5)
    torch.testing.assert_close(probabilities, vote_shares(model(x), class_pairs(5), 5))


def test_quick_fit_on_digits_beats_one_vs_rest_least_squares(digits):
    (x_train, y_train), (x_test, y_test) = digits["train"], digits["test"]
    torch.manual_seed(0)
    model = make_model((1, 8, 8), num_classes=10, l2=1e-3)
    fit_full_batch(model, x_train, y_train, epochs=10)
    with torch.no_grad():
        accuracy = (model.predict(x_test).argmax(dim=1) == y_test).double().mean().item()
    assert accuracy > 0.96  # one-vs-rest least squares reaches about 0.94 with the same λ


def test_check_config_rejects_a_negative_penalty():
    with pytest.raises(ValueError, match=r"^l2: must be zero or positive, got -0\.5$"):
        LeastSquaresOneVsOne.check_config({"l2": -0.5})
