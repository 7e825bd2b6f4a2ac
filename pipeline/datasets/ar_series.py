"""A synthetic AR(2) series (ch. 7): forecast the next value from a window of past ones.

x_t = φ₁ x_{t-1} + φ₂ x_{t-2} + ε_t, ε_t ~ N(0, σ²) (stationary: the roots of 1 - φ₁z - φ₂z² lie
outside the unit circle). Given the past, the best one-step forecast is φ₁ x_{t-1} + φ₂ x_{t-2} and its
mean squared error is σ²: no forecaster can do better.
"""

from __future__ import annotations

import numpy as np

from pipeline.spec import Dataset, DataSpec

AR_COEFFICIENTS = (1.2, -0.5)
AR_NOISE_STD = 1.0
AR_LENGTH = 50_000  # points in the whole series, cut in time into train | val | test
AR_WINDOW = 16  # past values each forecast sees
AR_BURN_IN = 500  # steps dropped so the series starts in its stationary distribution


def ar_series(length: int, coefficients: tuple[float, ...], noise_std: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(series x, noise ε) of an AR(p) process, after a burn-in."""
    rng = np.random.default_rng(seed)
    p = len(coefficients)
    noise = rng.normal(0.0, noise_std, size=length + AR_BURN_IN)
    x = np.zeros(length + AR_BURN_IN)
    for t in range(p, len(x)):
        x[t] = sum(c * x[t - 1 - i] for i, c in enumerate(coefficients)) + noise[t]
    return x[AR_BURN_IN:], noise[AR_BURN_IN:]


def windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n - window, window, 1): the past `window` values; targets (n - window,): the next value."""
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window)
    return x[:, :, None].copy(), series[window:].copy()


def make_splits(config) -> tuple[dict, dict]:
    """One seeded series, cut in time (train, then val, then test), windows inside each part only."""
    series, _ = ar_series(AR_LENGTH, AR_COEFFICIENTS, AR_NOISE_STD, config.split_seed)
    n_test, n_val = int(AR_LENGTH * config.test_fraction), int(AR_LENGTH * config.val_fraction)
    cuts = {"train": series[: -n_val - n_test], "val": series[-n_val - n_test : -n_test], "test": series[-n_test:]}
    facts = {"noise_variance": AR_NOISE_STD**2, "ar_coefficients": list(AR_COEFFICIENTS), "window": AR_WINDOW}
    return {name: windows(part, AR_WINDOW) for name, part in cuts.items()}, facts


DATASET = Dataset(
    DataSpec("regression", (AR_WINDOW, 1), 0), None,
    f"AR(2) series, φ = {AR_COEFFICIENTS}, σ = {AR_NOISE_STD}, {AR_LENGTH} steps, windows of {AR_WINDOW}",
    "global", make_splits,
)
