"""Logistic regression one-vs-one (ch. 3): the pairwise cross-entropy vs logistic regression's per pair,
the trained module vs scikit-learn's OneVsOneClassifier(LogisticRegression) (weights, decision values,
predictions), a quick fit on digits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from modules.least_squares_ovo import class_pairs, ovo_decision, vote_shares
from modules.logistic_ovo import LogisticOneVsOne, pairwise_cross_entropy
from modules.logistic_regression import binary_cross_entropy, sigmoid

from test_least_squares_ovo import class_data, digits, fit_full_batch, make_model  # noqa: F401 (digits: a fixture)


def test_loss_is_the_sum_over_pairs_of_logistic_regressions_cross_entropy_on_the_pairs_samples():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (40,))
    logits = torch.randn(40, 6, dtype=torch.float64) * 3
    total = 0.0
    for m, (k, l) in enumerate(itertools.combinations(range(4), 2)):
        inside = (y == k) | (y == l)
        total += binary_cross_entropy(sigmoid(logits[inside, m]), (y[inside] == l).double()) * inside.sum()
    torch.testing.assert_close(pairwise_cross_entropy(logits, y, class_pairs(4)), total / 40)


def test_training_step_is_the_pairwise_cross_entropy_plus_ridge_penalty():
    torch.manual_seed(0)
    model = make_model((6,), num_classes=3, l2=0.4, family=LogisticOneVsOne)
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    logits = x @ model.linear.weight.T + model.linear.bias
    expected = pairwise_cross_entropy(logits, y, class_pairs(3)) + 0.2 * (model.linear.weight**2).sum()
    torch.testing.assert_close(model.training_step((x, y), 0), expected)


def test_trained_module_is_scikit_learns_one_vs_one_logistic_regression():
    """Each pair's minimiser is LogisticRegression(C = 1/(nλ)) on the pair's samples; the votes, the
    tie-break and so the predictions are OneVsOneClassifier's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsOneClassifier

    x, y = class_data(300, 6, 5)
    l2 = 0.02
    torch.manual_seed(0)
    model = make_model((6,), num_classes=5, l2=l2, family=LogisticOneVsOne)
    fit_full_batch(model, x, y, epochs=15)
    reference = OneVsOneClassifier(LogisticRegression(C=1 / (len(y) * l2), tol=1e-10, max_iter=10_000))
    reference.fit(x.double().numpy(), y.numpy())
    for m, estimator in enumerate(reference.estimators_):  # pairs in the same order: (0, 1), (0, 2), …
        np.testing.assert_allclose(model.linear.weight[m].detach().double().numpy(), estimator.coef_[0], atol=3e-3)
        np.testing.assert_allclose(model.linear.bias[m].item(), estimator.intercept_[0], atol=3e-3)

    x_test, _ = class_data(500, 6, 5, seed=1)
    features = x_test.double().numpy()
    with torch.no_grad():
        logits = model(x_test).double()
    reference_logits = np.column_stack([estimator.decision_function(features) for estimator in reference.estimators_])
    np.testing.assert_allclose(logits.numpy(), reference_logits, atol=5e-3)
    # where every pair's logit is clear of zero, both vote alike: the same decision values and predictions
    clear = (np.abs(reference_logits) > 0.01).all(axis=1)
    assert clear.mean() > 0.9
    pairs = class_pairs(5)
    np.testing.assert_allclose(ovo_decision(logits, pairs, 5).numpy()[clear], reference.decision_function(features)[clear],
                               atol=1e-2)
    prediction = model.predict(x_test)
    np.testing.assert_array_equal(prediction.argmax(dim=1).numpy()[clear], reference.predict(features)[clear])
    torch.testing.assert_close(prediction, vote_shares(model(x_test), pairs, 5))

def test_quick_fit_on_digits_classifies_most_test_digits(digits):  # noqa: F811
    (x_train, y_train), (x_test, y_test) = digits["train"], digits["test"]
    torch.manual_seed(0)
    model = make_model((1, 8, 8), num_classes=10, l2=1e-3, family=LogisticOneVsOne)
    fit_full_batch(model, x_train, y_train, epochs=10)
    with torch.no_grad():
        accuracy = (model.predict(x_test).argmax(dim=1) == y_test).double().mean().item()
    assert accuracy > 0.95


def test_check_config_rejects_a_negative_penalty():
    with pytest.raises(ValueError, match=r"^l2: must be zero or positive, got -0\.5$"):
        LogisticOneVsOne.check_config({"l2": -0.5})
