"""Data: seeded stratified splits, train-only standardization, whole-batch loading, seeded order."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from pipeline import data
from pipeline.datasets import ar_series, reverse_digits
from pipeline.prepare import prepare, split
from pipeline.config import DataConfig
from pipeline.params import ConfigError

CONFIG = DataConfig(split_seed=0, val_fraction=0.1, test_fraction=0.2)


def rows(x: np.ndarray) -> Counter:
    return Counter(map(tuple, x.reshape(len(x), -1).tolist()))


@pytest.mark.parametrize("dataset", ["breast_cancer", "digits", "toy"])
def test_split_is_stratified_by_class(dataset, toy):
    parts = split(dataset, CONFIG)
    y = np.concatenate([part[1] for part in parts.values()])
    classes, counts = np.unique(y, return_counts=True)
    for name, (_, y_part) in parts.items():
        for k, count in zip(classes, counts):
            expected = len(y_part) * count / len(y)
            assert abs((y_part == k).sum() - expected) <= 1, (name, k)


@pytest.mark.parametrize("dataset", ["diabetes", "breast_cancer", "toy"])
def test_split_is_a_partition_of_the_raw_samples(dataset, toy):
    x, y = data.DATASETS[dataset].load()
    parts = split(dataset, CONFIG)
    joined = np.concatenate([np.column_stack([p[0].reshape(len(p[0]), -1), p[1]]) for p in parts.values()])
    assert rows(joined) == rows(np.column_stack([x.reshape(len(x), -1), y]))  # disjoint and complete
    assert len(parts["test"][1]) == pytest.approx(0.2 * len(y), abs=1)
    assert len(parts["val"][1]) == pytest.approx(0.1 * len(y), abs=1)


def test_split_is_reproducible_for_a_seed_and_changes_with_it(toy):
    first, again = split(toy, CONFIG), split(toy, CONFIG)
    other = split(toy, DataConfig(split_seed=1, val_fraction=0.1, test_fraction=0.2))
    for name in data.SPLITS:
        np.testing.assert_array_equal(first[name][0], again[name][0])
        np.testing.assert_array_equal(first[name][1], again[name][1])
    assert not np.array_equal(first["test"][0], other["test"][0])


def load(path):
    blob = torch.load(path, weights_only=True)
    return blob["x"], blob["y"]


def test_prepare_standardizes_every_split_with_training_statistics(tmp_path):
    meta = prepare("breast_cancer", CONFIG, tmp_path)
    raw = split("breast_cancer", CONFIG)
    mean, std = raw["train"][0].mean(axis=0), raw["train"][0].std(axis=0)

    x_train, _ = load(tmp_path / "train.pt")
    torch.testing.assert_close(x_train.mean(dim=0), torch.zeros(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_train.std(dim=0, unbiased=False), torch.ones(30), atol=1e-4, rtol=0)
    for name in ("val", "test"):
        x, y = load(tmp_path / f"{name}.pt")
        np.testing.assert_allclose(x.numpy(), (raw[name][0] - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), raw[name][1])
    x_test, _ = load(tmp_path / "test.pt")
    assert x_test.mean(dim=0).abs().max() > 1e-3  # not re-centred on its own statistics
    assert meta["sizes"] == {name: len(raw[name][1]) for name in data.SPLITS}
    # what a model served on raw inputs standardizes them with (pipeline.core.served)
    assert meta["input_mean"] == mean.tolist() and meta["input_std"] == std.tolist()


def test_prepare_scales_images_with_one_mean_and_std_for_all_pixels(tmp_path):
    meta = prepare("digits", CONFIG, tmp_path)
    raw = split("digits", CONFIG)
    assert (meta["input_mean"], meta["input_std"]) == (raw["train"][0].mean(), raw["train"][0].std())
    x_train, _ = load(tmp_path / "train.pt")
    x_test, _ = load(tmp_path / "test.pt")
    assert abs(x_train.mean().item()) < 1e-5
    assert x_train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    expected = (raw["test"][0] - raw["train"][0].mean()) / raw["train"][0].std()
    np.testing.assert_allclose(x_test.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_prepare_standardizes_regression_targets_with_training_statistics(tmp_path):
    meta = prepare("diabetes", CONFIG, tmp_path)
    raw = split("diabetes", CONFIG)
    assert meta["target_mean"] == pytest.approx(raw["train"][1].mean())
    assert meta["target_std"] == pytest.approx(raw["train"][1].std())
    _, y_train = load(tmp_path / "train.pt")
    _, y_test = load(tmp_path / "test.pt")
    assert abs(y_train.mean().item()) < 1e-5
    expected = (raw["test"][1] - meta["target_mean"]) / meta["target_std"]
    np.testing.assert_allclose(y_test.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_prepare_leaves_a_constant_feature_finite(tmp_path, toy):
    prepare(toy, CONFIG, tmp_path)
    x_train, _ = load(tmp_path / "train.pt")
    assert torch.isfinite(x_train).all()
    assert torch.count_nonzero(x_train[:, 2]) == 0


@pytest.mark.parametrize(
    ("dataset", "y_dtype"), [("diabetes", torch.float32), ("breast_cancer", torch.float32), ("digits", torch.long)]
)
def test_prepared_files_are_plain_tensors_with_the_spec_shape(dataset, y_dtype, tmp_path):
    spec = data.DATASETS[dataset].spec
    prepare(dataset, CONFIG, tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["task"] == spec.task and tuple(meta["input_shape"]) == spec.input_shape
    for name in data.SPLITS:
        x, y = load(tmp_path / f"{name}.pt")  # weights_only=True: tensors only, no pickled code
        assert x.dtype == torch.float32 and y.dtype == y_dtype
        assert x.shape == (meta["sizes"][name], *spec.input_shape)
        assert y.shape == (meta["sizes"][name],)


def test_load_split_names_a_missing_or_unreadable_file(prepared_toy):
    with pytest.raises(ConfigError, match=r"^prepared/nothing/train\.pt: prepared dataset missing"):
        data.load_split("nothing", "train")
    (data.PREPARED / prepared_toy / "val.pt").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match=r"^prepared/toy/val\.pt: unreadable \("):
        data.load_split(prepared_toy, "val")


# ---------------------------------------------------------------------------------------------
# Sequence datasets (ch. 7)


def test_digit_rows_are_the_digits_split_read_row_by_row(tmp_path):
    prepare("digits", CONFIG, tmp_path / "digits")
    prepare("digit_rows", CONFIG, tmp_path / "rows")
    for name in data.SPLITS:
        images, labels = load(tmp_path / "digits" / f"{name}.pt")
        rows_x, rows_y = load(tmp_path / "rows" / f"{name}.pt")
        assert rows_x.shape == (len(images), 8, 8)  # 8 time steps of 8 pixels
        assert torch.equal(rows_x, images[:, 0]) and torch.equal(rows_y, labels)  # same split, same scaling


def test_ar_series_noise_is_what_the_recursion_leaves_and_has_the_stated_variance():
    phi1, phi2 = ar_series.AR_COEFFICIENTS
    series, noise = ar_series.ar_series(200_000, ar_series.AR_COEFFICIENTS, 1.5, seed=3)
    residual = series[2:] - phi1 * series[1:-1] - phi2 * series[:-2]
    np.testing.assert_allclose(residual, noise[2:], atol=1e-9)
    assert noise.var() == pytest.approx(1.5**2, rel=0.01)  # 200 000 draws: the sample variance is within 0.3 %
    assert abs(np.corrcoef(noise[1:], noise[:-1])[0, 1]) < 0.01  # white
    # the AR(2) stationary variance σ²(1 − φ₂) / ((1 + φ₂)((1 − φ₂)² − φ₁²)): the burn-in left no transient
    expected = 1.5**2 * (1 - phi2) / ((1 + phi2) * ((1 - phi2) ** 2 - phi1**2))
    assert series.var() == pytest.approx(expected, rel=0.05)


def test_windows_pair_the_past_values_with_the_next_one():
    series = np.arange(10.0)
    x, y = ar_series.windows(series, 3)
    assert x.shape == (7, 3, 1)
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(y, np.arange(3.0, 10.0))
    np.testing.assert_array_equal(x[-1, :, 0], [6, 7, 8])


def test_ar_series_is_cut_in_time_and_a_least_squares_forecast_reaches_the_noise_floor(tmp_path):
    """Test windows come after every training value; the best linear forecast on the prepared data
    has a test error within sampling error of σ² (the floor the experiment's target is set against)."""
    from sklearn.linear_model import LinearRegression

    meta = prepare("ar_series", CONFIG, tmp_path)
    parts = split("ar_series", CONFIG)
    train_end = len(parts["train"][1]) + ar_series.AR_WINDOW
    series, _ = ar_series.ar_series(ar_series.AR_LENGTH, ar_series.AR_COEFFICIENTS, ar_series.AR_NOISE_STD, CONFIG.split_seed)
    np.testing.assert_array_equal(parts["train"][1], series[ar_series.AR_WINDOW : train_end])
    np.testing.assert_array_equal(parts["test"][1], series[-len(parts["test"][1]) :])
    x_train, y_train = load(tmp_path / "train.pt")
    x_test, y_test = load(tmp_path / "test.pt")
    fit = LinearRegression().fit(x_train.flatten(1).numpy(), y_train.numpy())
    error = ((fit.predict(x_test.flatten(1).numpy()) - y_test.numpy()) * meta["target_std"]) ** 2
    assert meta["noise_variance"] == ar_series.AR_NOISE_STD**2
    assert error.mean() / meta["noise_variance"] == pytest.approx(1.0, abs=0.05)  # ~10 000 test points: ±1.4 % s.d.


def test_reverse_digits_targets_are_reversed_sources_never_seen_in_training(tmp_path):
    meta = prepare("reverse_digits", CONFIG, tmp_path)
    length = reverse_digits.REVERSE_LENGTH
    sources = {}
    for name in data.SPLITS:
        x, y = load(tmp_path / f"{name}.pt")
        assert x.dtype == y.dtype == torch.long and x.shape == (meta["sizes"][name], 2 * length)
        assert torch.equal(y, x[:, :length].flip(1))  # the target is the source reversed
        assert (x[:, length] == reverse_digits.SEPARATOR).all()
        assert torch.equal(x[:, length + 1 :], y[:, :-1])  # then the target shifted right (teacher forcing)
        sources[name] = {tuple(row) for row in x[:, :length].tolist()}
        assert len(sources[name]) == len(x)
    assert not sources["test"] & sources["train"] and not sources["val"] & sources["train"]
    assert sum(meta["sizes"].values()) == len(set.union(*sources.values()))
