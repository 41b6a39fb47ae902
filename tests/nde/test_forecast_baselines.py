"""Tests of the seasonal naive and linear-on-lags baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nde.data.seasonal_ar import SeasonalARParameters, simulate_seasonal_ar
from nde.forecast_baselines import (
    LinearLagModel,
    fit_linear_lag_model,
    linear_lag_forecast,
    seasonal_naive_forecast,
)


def test_seasonal_naive_repeats_the_last_season() -> None:
    context = np.arange(2 * 50.0).reshape(2, 50)
    out = seasonal_naive_forecast(context, 30, 24, num_samples=3)
    assert out.shape == (3, 2, 30)
    for h in range(30):  # step h + 1 takes the value (h mod 24) + 1 steps after the start of the last season
        np.testing.assert_array_equal(out[:, :, h], np.broadcast_to(context[:, 50 - 24 + h % 24], (3, 2)))
    # A missing value: the same phase one season earlier.
    gappy = context.copy()
    gappy[0, 50 - 24 + 5] = np.nan
    out = seasonal_naive_forecast(gappy, 24, 24)
    assert out[0, 0, 5] == context[0, 50 - 48 + 5]
    gappy[0, 50 - 48 + 5] = np.nan
    with pytest.raises(ValueError, match="context row 0: no observed value at the phase of forecast step 6"):
        seasonal_naive_forecast(gappy, 24, 24)


def test_seasonal_naive_noise_has_the_seasonal_random_walk_spread() -> None:
    # Context with seasonal differences ±1 (season 2): σ̂ = 1, so the spread is sqrt(⌈h/2⌉).
    context = np.array([[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    out = seasonal_naive_forecast(context, 5, 2, num_samples=40000, noise=True, seed=3)
    sd = out[:, 0, :].std(0)
    expected = np.sqrt(np.ceil(np.arange(1, 6) / 2))
    assert np.abs(sd / expected - 1).max() < 4 * math.sqrt(1 / (2 * 40000)) + 1e-3
    np.testing.assert_allclose(out[:, 0, :].mean(0), [1, 1, 1, 1, 1], atol=4 * 1.8 / math.sqrt(40000))
    with pytest.raises(ValueError, match="shorter than the season"):
        seasonal_naive_forecast(context, 3, 9)
    with pytest.raises(ValueError, match="num_samples"):
        seasonal_naive_forecast(context, 3, 2, num_samples=0)


def test_linear_model_recovers_seasonal_ar_coefficients() -> None:
    # y = 20 + x with (1 - 0.8 L)(1 - 0.5 L^24) x = ε: y_t = 2 + 0.8 y_{t-1} + 0.5 y_{t-24} - 0.4 y_{t-25} + ε.
    params = SeasonalARParameters(daily_amplitude=0.0, daily_harmonic=0.0, weekend_offset=0.0)
    y = simulate_seasonal_ar(8, 3000, seed=7, params=params)
    model = fit_linear_lag_model(y, [1, 24, 25])
    n = model.n_rows
    assert n == 8 * (3000 - 25) and model.n_dropped == 0
    # Least-squares standard errors are about σ / sqrt(n Var(y)) ~ 0.003; 0.03 is ten of them.
    np.testing.assert_allclose(model.weights, [0.8, 0.5, -0.4], atol=0.03)
    assert abs(model.intercept - 20 * (1 - 0.8 - 0.5 + 0.4)) < 0.6
    # The implied mean b / (1 - Σ w) is the level 20; its standard error is about 0.07.
    assert abs(model.intercept / (1 - model.weights.sum()) - 20.0) < 0.3
    assert abs(model.noise_std - 1.0) < 4 * math.sqrt(1 / (2 * n)) + 0.005
    # Unrelated lags get weights near zero.
    wide = fit_linear_lag_model(y, [1, 2, 12, 24, 25])
    assert np.abs(wide.weights[[1, 2]]).max() < 0.03


def test_linear_fit_matches_lstsq_and_ridge_shrinks() -> None:
    rng = np.random.default_rng(0)
    series = [rng.normal(size=80), rng.normal(size=60)]
    model = fit_linear_lag_model(series, [1, 3])
    rows_x, rows_y = [], []
    for s in series:
        for t in range(3, len(s)):
            rows_x.append([1.0, s[t - 1], s[t - 3]])
            rows_y.append(s[t])
    beta, *_ = np.linalg.lstsq(np.array(rows_x), np.array(rows_y), rcond=None)
    np.testing.assert_allclose([model.intercept, *model.weights], beta, rtol=1e-10)
    ridged = fit_linear_lag_model(series, [1, 3], ridge=1e6)
    assert np.abs(ridged.weights).max() < 1e-3
    # Missing values drop the rows that touch them, and are counted.
    gappy = [series[0].copy()]
    gappy[0][10] = np.nan
    assert fit_linear_lag_model(gappy, [1, 3]).n_dropped == 3  # targets 10, 11 and 13


def test_linear_sample_paths_have_the_ar1_law() -> None:
    # y_t = 1 + 0.6 y_{t-1} + N(0, 0.5²): h-step mean 1/(1-0.6) + 0.6^h (y_T - 2.5), variance 0.25 Σ_{j<h} 0.36^j.
    model = LinearLagModel(lags=(1,), intercept=1.0, weights=np.array([0.6]), noise_std=0.5, n_rows=0, n_dropped=0)
    context = np.array([[0.0, 4.0]])
    paths = model.sample(context, 6, num_samples=40000, seed=1)[:, 0, :]
    h = np.arange(1, 7)
    mean = 2.5 + 0.6**h * (4.0 - 2.5)
    var = 0.25 * np.cumsum(0.36 ** np.arange(6))
    np.testing.assert_allclose(model.mean_forecast(context, 6)[0], mean, rtol=1e-12)
    assert np.abs(paths.mean(0) - mean).max() < 4 * math.sqrt(var.max() / 40000)
    assert np.abs(paths.var(0) / var - 1).max() < 4 * math.sqrt(2 / 40000)


def test_linear_forecast_bad_inputs() -> None:
    y = np.arange(50.0) % 7
    samples = linear_lag_forecast([y], y[None, -10:], 4, [1, 7], num_samples=5)
    assert samples.shape == (5, 1, 4)
    with pytest.raises(ValueError, match="shorter than the largest lag"):
        linear_lag_forecast([y], y[None, -5:], 4, [1, 7])
    context = y[None, -10:].copy()
    context[0, -2] = np.nan
    with pytest.raises(ValueError, match="context row 0: a missing value"):
        linear_lag_forecast([y], context, 4, [1, 7])
    with pytest.raises(ValueError, match="distinct positive"):
        fit_linear_lag_model([y], [1, 1])
    with pytest.raises(ValueError, match="distinct positive"):
        fit_linear_lag_model([y], [0, 2])
    with pytest.raises(ValueError, match="usable rows"):
        fit_linear_lag_model([y[:9]], [1, 7])
    with pytest.raises(ValueError, match="ridge"):
        fit_linear_lag_model([y], [1], ridge=-1.0)
