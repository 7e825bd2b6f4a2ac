"""The report's target checks (pipeline.report.check_target), every form of params.yaml's targets."""

from __future__ import annotations

import pytest

from pipeline import baselines, report
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
        ({"metric": "test/accuracy", "book": 0.9297, "at_least_delta": -0.01}, 0.9198, True),
        ({"metric": "test/accuracy", "book": 0.9297, "at_least_delta": -0.01}, 0.9196, False),
        ({"metric": "test/fid", "lowest_among": ["vae", "gan"]}, 3.0, True),
        ({"metric": "test/fid", "lowest_among": ["vae", "gan"]}, 5.0, False),  # not below the VAE's 4.0
        ({"metric": "test/fid", "lowest_among": ["vae", "gan"]}, None, False),
        ({"metric": "test/fid", "experiment": "vae", "at_most_ratio": 1.5}, 6.0, True),
        ({"metric": "test/fid", "experiment": "vae", "at_most_ratio": 1.5}, 6.5, False),
        ({"metric": "parameters", "experiment": "cnn", "at_most_ratio": 0.5}, 50_000, True),
        ({"metric": "parameters", "experiment": "cnn", "at_most_ratio": 0.5}, 50_001, False),
        ({"metric": "test/accuracy", "experiment": "cnn", "at_least_delta": -0.005}, 0.985, True),
        ({"metric": "test/accuracy", "experiment": "cnn", "at_least_delta": -0.005}, 0.98, False),
        ({"metric": "test/accuracy", "experiment": "cnn", "at_least_delta": -0.005}, None, False),
    ],
)
def test_each_target_form_holds_or_not(target, value, holds):
    baselines = {"svc": 0.985, "gaussian_pixels": 18.5}
    experiments = {"vae": 4.0, "gan": 9.0, "cnn": {"parameters": 100_000}.get(target["metric"], 0.9889)}
    statement, ok = check_target(target, value, baselines, experiments)
    assert ok is holds
    assert statement.startswith(target["metric"])


def test_a_target_that_cannot_be_checked_says_so():
    assert check_target({"metric": "test/fid", "baseline": "nope", "at_most_ratio": 1.0}, 3.0, {}, {})[1] is None
    statement, ok = check_target({"metric": "test/fid", "lowest_among": ["vae"]}, 3.0, {}, {"vae": None})
    assert ok is None and "no value" in statement
    statement, ok = check_target({"metric": "test/fid", "experiment": "vae", "at_most_ratio": 1.0}, 3.0, {}, {"vae": None})
    assert (statement, ok) == ("test/fid vs missing experiment vae", None)


def test_each_target_form_has_the_threshold_its_statement_names():
    baselines = {"svc": 0.985, "gaussian_pixels": 18.5}
    assert target_threshold({"metric": "test/accuracy", "at_least": 0.9}, baselines) == 0.9
    assert target_threshold({"metric": "test/mse_over_pca", "at_most": 1.02}, baselines) == 1.02
    delta = {"metric": "test/accuracy", "baseline": "svc", "at_least_delta": -0.01}
    assert target_threshold(delta, baselines) == pytest.approx(0.975)
    assert target_threshold({"metric": "test/fid", "baseline": "gaussian_pixels", "at_most_ratio": 0.5}, baselines) == 9.25
    assert target_threshold({"metric": "test/fid", "baseline": "nope", "at_most_ratio": 1.0}, baselines) is None
    book = {"metric": "test/accuracy", "book": 0.9297, "at_least_delta": -0.01}
    assert target_threshold(book, baselines) == pytest.approx(0.9197)
    assert check_target(book, 0.93, baselines)[0] == "test/accuracy >= book 0.9297 -0.01 = 0.9197"
    assert target_threshold({"metric": "test/fid", "lowest_among": ["vae"]}, baselines) is None
    experiments = {"svc": 0.5, "cnn": 0.9889}  # an experiment's value, never a baseline's of the same name
    assert target_threshold({**delta, "baseline": "svc"}, baselines, experiments) == pytest.approx(0.975)
    delta = {"metric": "test/accuracy", "experiment": "svc", "at_least_delta": -0.01}
    assert target_threshold(delta, baselines, experiments) == pytest.approx(0.49)
    ratio = {"metric": "parameters", "experiment": "cnn", "at_most_ratio": 0.5}
    assert target_threshold(ratio, baselines, {"cnn": 94_000}) == 47_000


def test_a_statement_against_an_experiment_names_it_and_its_threshold():
    statement, ok = check_target({"metric": "parameters", "experiment": "cnn_digits", "at_most_ratio": 0.6}, 40_000, {},
                                 {"cnn_digits": 94_282})
    assert (statement, ok) == ("parameters <= 0.6 x cnn_digits = 56,569", True)
    statement, _ = check_target({"metric": "test/accuracy", "experiment": "cnn_digits", "at_least_delta": -0.005}, 0.99,
                                {}, {"cnn_digits": 0.988889})
    assert statement == "test/accuracy >= cnn_digits -0.005 = 0.9839"


def test_a_large_training_split_is_subsampled_for_the_baselines_stratified():
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), [3000 if c == 0 else 1000 for c in range(10)])  # 12,000, one class 3x the others
    x = rng.normal(size=(len(y), 4))
    x_sub, y_sub = baselines.baseline_training_set(x, y)
    assert len(y_sub) == baselines.BASELINE_MAX_TRAIN == 10_000
    expected = np.bincount(y) * 10_000 / len(y)  # stratified: each class in its share of the split
    assert np.all(np.abs(np.bincount(y_sub) - expected) <= 1)
    rows = {tuple(row) for row in x.round(12).tolist()}
    assert all(tuple(row) in rows for row in x_sub.round(12).tolist())  # rows of the split, not new ones
    again = baselines.baseline_training_set(x, y)
    assert np.array_equal(again[0], x_sub)  # seeded
    small_x, small_y = baselines.baseline_training_set(x[:500], y[:500])
    assert np.array_equal(small_x, x[:500]) and np.array_equal(small_y, y[:500])  # a small split as it is


def test_the_columns_are_the_test_metrics_the_rows_hold_so_a_new_one_shows():
    rows = [{"name": "a", "test/accuracy": 0.9, "test/brand_new": 1.0, "parameters": 3},
            {"name": "b", "test/mse": 2.0, "test/accuracy": 0.8}]
    assert report.metric_columns(rows) == ["test/accuracy", "test/brand_new", "test/mse"]


def test_datasets_follow_the_books_chapters_and_each_its_experiments_by_chapter():
    rows = [
        {"name": "gcn_sbm", "kind": "model", "dataset": "sbm", "chapter": 8},
        {"name": "svc", "kind": "baseline", "dataset": "digits"},
        {"name": "cnn_digits", "kind": "model", "dataset": "digits", "chapter": 6},
        {"name": "logistic_regression", "kind": "baseline", "dataset": "digits"},
        {"name": "softmax_digits", "kind": "model", "dataset": "digits", "chapter": 3},
        {"name": "svc", "kind": "baseline", "dataset": "sbm"},
        {"name": "linear_diabetes", "kind": "model", "dataset": "diabetes", "chapter": 2},
        {"name": "lstm_ar_series", "kind": "model", "dataset": "ar_series", "chapter": 7},
    ]
    assert [(row["dataset"], row["name"]) for row in report.in_book_order(rows)] == [
        ("diabetes", "linear_diabetes"),
        ("digits", "softmax_digits"), ("digits", "cnn_digits"), ("digits", "logistic_regression"), ("digits", "svc"),
        ("ar_series", "lstm_ar_series"),  # chapter 7, though first by name
        ("sbm", "gcn_sbm"), ("sbm", "svc"),
    ]


def test_the_accuracy_overview_shows_a_bar_at_one_half(tmp_path, monkeypatch):
    from pipeline.core import figures

    drawn = []
    monkeypatch.setattr(figures, "save", lambda figure, path: drawn.append(figure))
    rows = [{"name": "gcn_sbm", "kind": "model", "dataset": "sbm", "test/accuracy": 0.5},
            {"name": "svc", "kind": "baseline", "dataset": "digits", "test/accuracy": 0.9833}]
    report.comparison_figure(rows, "test/accuracy", tmp_path / "comparison.png")
    low, high = drawn[0].axes[0].get_xlim()
    assert low <= 0.5 - 0.05 and high >= 1.0  # the 0.5 bar has a length a reader sees
    for values in ([0.97, 0.99], [0.93], [0.0, 1.0], [0.05]):
        low, _ = report.accuracy_limits(values)
        assert 0 <= low <= min(values) - 0.05 or low == 0, values


def test_a_datasets_reference_file_adds_its_rows_as_baselines(tmp_path, monkeypatch):
    """A file pipeline/references/DATASET.py is the way to a reference no scikit-learn model gives."""
    import sys
    import types

    from pipeline import references

    module = types.ModuleType("pipeline.references.cartpole")
    module.reference_rows = lambda dataset: [{"name": "random_policy", "family": "uniform actions", "test/mean_return": 22.0}]
    monkeypatch.setitem(sys.modules, "pipeline.references.cartpole", module)
    monkeypatch.setattr(references, "DATASETS", ("cartpole",))
    rows = baselines.baseline_rows("cartpole")
    assert rows == [{"name": "random_policy", "family": "uniform actions", "test/mean_return": 22.0,
                     "kind": "baseline", "dataset": "cartpole"}]
    monkeypatch.setattr(references, "DATASETS", ())
    assert baselines.baseline_rows("cartpole") == []


def test_the_report_reads_the_baselines_stages_rows_and_names_that_stage_when_they_are_missing(tmp_path, monkeypatch):
    import json

    from pipeline.params import ConfigError

    monkeypatch.setattr(report, "BASELINES", tmp_path / "baselines")
    with pytest.raises(ConfigError, match=r"baselines/digits.json: missing; run `dvc repro baselines` to build it"):
        report.baseline_rows("digits")
    rows = [{"name": "svc", "kind": "baseline", "dataset": "digits", "test/accuracy": 0.9833}]
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "digits.json").write_text(json.dumps(rows))
    assert report.baseline_rows("digits") == rows
