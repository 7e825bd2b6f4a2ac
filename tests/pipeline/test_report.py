"""The report's target checks (pipeline.report.check_target), every form of params.yaml's targets."""

from __future__ import annotations

import pytest

from pipeline import report
from pipeline.report import check_target, target_threshold


@pytest.mark.parametrize(
    ("target", "value", "holds"),
    [
        ({"metric": "test/accuracy", "at_least": 0.9}, 0.95, True),
        ({"metric": "test/accuracy", "at_least": 0.9}, 0.85, False),
        ({"metric": "test/mse_over_pca", "at_most": 1.02}, 1.01, True),
        ({"metric": "test/mse_over_pca", "at_most": 1.02}, 1.03, False),
        ({"metric": "test/accuracy", "baseline": "svc", "at_least_delta": -0.01}, 0.976, True),
        ({"metric": "test/accuracy", "baseline": "svc", "at_least_delta": -0.01}, 0.974, False),
        ({"metric": "test/fid", "baseline": "gaussian_pixels", "at_most_ratio": 1.0}, 18.0, True),
        ({"metric": "test/fid", "baseline": "gaussian_pixels", "at_most_ratio": 1.0}, 19.0, False),
        ({"metric": "test/fid", "lowest_among": ["vae", "gan"]}, 3.0, True),
        ({"metric": "test/fid", "lowest_among": ["vae", "gan"]}, 5.0, False),  # not below the VAE's 4.0
        ({"metric": "test/fid", "lowest_among": ["vae", "gan"]}, None, False),
    ],
)
def test_each_target_form_holds_or_not(target, value, holds):
    baselines = {"svc": 0.985, "gaussian_pixels": 18.5}
    experiments = {"vae": 4.0, "gan": 9.0}
    statement, ok = check_target(target, value, baselines, experiments)
    assert ok is holds
    assert statement.startswith(target["metric"])


def test_a_target_that_cannot_be_checked_says_so():
    assert check_target({"metric": "test/fid", "baseline": "nope", "at_most_ratio": 1.0}, 3.0, {}, {})[1] is None
    statement, ok = check_target({"metric": "test/fid", "lowest_among": ["vae"]}, 3.0, {}, {"vae": None})
    assert ok is None and "no value" in statement


def test_each_target_form_has_the_threshold_its_statement_names():
    baselines = {"svc": 0.985, "gaussian_pixels": 18.5}
    assert target_threshold({"metric": "test/accuracy", "at_least": 0.9}, baselines) == 0.9
    assert target_threshold({"metric": "test/mse_over_pca", "at_most": 1.02}, baselines) == 1.02
    delta = {"metric": "test/accuracy", "baseline": "svc", "at_least_delta": -0.01}
    assert target_threshold(delta, baselines) == pytest.approx(0.975)
    assert target_threshold({"metric": "test/fid", "baseline": "gaussian_pixels", "at_most_ratio": 0.5}, baselines) == 9.25
    assert target_threshold({"metric": "test/fid", "baseline": "nope", "at_most_ratio": 1.0}, baselines) is None
    assert target_threshold({"metric": "test/fid", "lowest_among": ["vae"]}, baselines) is None


def test_a_large_training_split_is_subsampled_for_the_baselines_stratified():
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), [3000 if c == 0 else 1000 for c in range(10)])  # 12,000, one class 3x the others
    x = rng.normal(size=(len(y), 4))
    x_sub, y_sub = report.baseline_training_set(x, y)
    assert len(y_sub) == report.BASELINE_MAX_TRAIN == 10_000
    expected = np.bincount(y) * 10_000 / len(y)  # stratified: each class in its share of the split
    assert np.all(np.abs(np.bincount(y_sub) - expected) <= 1)
    rows = {tuple(row) for row in x.round(12).tolist()}
    assert all(tuple(row) in rows for row in x_sub.round(12).tolist())  # rows of the split, not new ones
    again = report.baseline_training_set(x, y)
    assert np.array_equal(again[0], x_sub)  # seeded
    small_x, small_y = report.baseline_training_set(x[:500], y[:500])
    assert np.array_equal(small_x, x[:500]) and np.array_equal(small_y, y[:500])  # a small split as it is


def test_the_columns_are_the_test_metrics_the_rows_hold_so_a_new_one_shows():
    rows = [{"name": "a", "test/accuracy": 0.9, "test/brand_new": 1.0, "parameters": 3},
            {"name": "b", "test/mse": 2.0, "test/accuracy": 0.8}]
    assert report.metric_columns(rows) == ["test/accuracy", "test/brand_new", "test/mse"]
