"""Synthesis and the linear predictive score: known window laws, known linear processes, the AR(1) oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nde.diffusion import make_sampler
from nde.metrics.forecast import forecast_metrics
from nde.tsdiff import SAMPLER_NAMES, TSDiff, TSDiffConfig
from nde.tsdiff.synthesis import (
    fit_ridge,
    linear_predictive_score,
    sample_real_windows,
    scale_windows,
    synthesize,
)
from tests.nde.tsdiff.test_refine import COV, MEAN, GaussianTSDiff


def test_synthetic_windows_follow_the_model_distribution() -> None:
    # With the exact denoiser of N(MEAN, COV), DDPM reproduces that law up to its discretisation: the mean to
    # Monte Carlo precision; the variances come out 5-15% low, the known under-dispersion of DDPM's posterior
    # variance with TSDiff's coarse schedule (100 steps, betas up to 0.1).
    model = GaussianTSDiff()
    n = 4000
    x = torch.from_numpy(synthesize(model, n, batch_size=1500, seed=0))
    assert x.shape == (n, 6)
    chol = torch.linalg.cholesky(COV)
    z = torch.linalg.solve_triangular(chol, (x - MEAN).T, upper=False).T
    assert float(z.mean(0).abs().max()) < 5 / math.sqrt(n)
    cov = torch.cov(z.T)
    assert bool(((cov.diagonal() > 0.8) & (cov.diagonal() < 1.05)).all()), cov.diagonal()
    assert float((cov - torch.diag(cov.diagonal())).abs().max()) < 5 / math.sqrt(n)


def test_synthesize_is_the_unguided_sampler() -> None:
    model = GaussianTSDiff()
    for name, steps in (("ddpm", 100), ("ddim", 100), ("dpmpp", 20)):
        direct = make_sampler(SAMPLER_NAMES[name], model.schedule).sample(
            model, (7, 6, 1), steps, None, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        assert torch.equal(torch.from_numpy(synthesize(model, 7, sampler=name, seed=5)), direct[..., 0])  # type: ignore[arg-type]


def test_synthesize_shapes_seeds_and_errors() -> None:
    torch.manual_seed(0)
    config = TSDiffConfig(context_length=6, prediction_length=2, lags=(2, 4), hidden_dim=4, num_blocks=1,
                          state_dim=2, step_embedding_dim=4, num_steps=10)
    model = TSDiff(config)
    first = synthesize(model, 5, batch_size=2, seed=3)
    assert first.shape == (5, 8) and np.isfinite(first).all()
    assert np.array_equal(first, synthesize(model, 5, batch_size=2, seed=3))
    assert not np.array_equal(first, synthesize(model, 5, batch_size=2, seed=4))
    every = synthesize(model, 3, sampler="dpmpp", with_lags=True)  # 20 default steps, capped at N = 10
    assert every.shape == (3, 8, 3)
    with pytest.raises(ValueError, match="unknown sampler"):
        synthesize(model, 2, sampler="euler")  # type: ignore[arg-type]
    for kwargs in ({"num_samples": 0}, {"num_samples": 2, "batch_size": 0}, {"num_samples": 2, "steps": 0}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            synthesize(model, **kwargs)


def test_ridge_equals_the_augmented_least_squares_solution() -> None:
    # Ridge with an unpenalised intercept is ordinary least squares on [X 1; sqrt(α) I 0] -> [Y; 0].
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((50, 3))
    for alpha in (0.0, 2.5):
        fit = fit_ridge(x, y, alpha)
        design = np.block([[x, np.ones((50, 1))], [math.sqrt(alpha) * np.eye(4), np.zeros((4, 1))]])
        beta = np.linalg.lstsq(design, np.vstack([y, np.zeros((4, 3))]), rcond=None)[0]
        assert np.allclose(fit.weights, beta[:4].T, atol=1e-12)
        assert np.allclose(fit.intercept, beta[4], atol=1e-12)
        assert np.allclose(fit.predict(x), x @ beta[:4] + beta[4], atol=1e-12)


def test_exactly_linear_windows_are_forecast_exactly() -> None:
    # Level + sinusoid of period 12 satisfies the homogeneous recurrence (1 - L)(1 - 2 cos ω L + L²) y = 0, which
    # is scale-free: a linear map of the scaled context predicts the scaled future exactly, whatever the level.
    rng = np.random.default_rng(1)
    t = np.arange(12)

    def windows(n: int) -> np.ndarray:
        level, amplitude, phase = rng.uniform(5, 50, (n, 1)), rng.uniform(0.5, 3, (n, 1)), rng.uniform(0, 7, (n, 1))
        return level + amplitude * np.sin(2 * np.pi * t / 12 + phase)

    synthetic = scale_windows(windows(200), 8)[0]
    scores = linear_predictive_score(synthetic, windows(50), 8, real_windows=windows(200), ridge=0.0)
    for key in ("tstr", "trtr"):
        assert scores[key]["nd"] < 1e-8 and scores[key]["nrmse"] < 1e-8
        assert scores[key]["n_train"] == 200 and scores[key]["n_test"] == 50


def _ar1(n_series: int, length: int, seed: int, phi: float = 0.8, level: float = 10.0) -> np.ndarray:
    """Stationary AR(1) paths ``y_t = level + phi (y_{t-1} - level) + e_t``, ``e_t ~ N(0, 1)``."""
    rng = np.random.default_rng(seed)
    y = np.empty((n_series, length))
    y[:, 0] = level + rng.standard_normal(n_series) / math.sqrt(1 - phi**2)
    for k in range(1, length):
        y[:, k] = level + phi * (y[:, k - 1] - level) + rng.standard_normal(n_series)
    return y


def test_linear_score_on_an_ar1_process_approaches_the_oracle() -> None:
    # A zero-mean AR(1): its oracle forecast phi^h y_T is homogeneous, so mean scaling loses nothing and the
    # ridge fitted on many real windows must score as the oracle. (With a level, the scaled regression can only
    # reach the level through the noisy context mean, and loses some 10% here: a property of the protocol.)
    c, p, phi = 8, 4, 0.8
    real = sample_real_windows(list(_ar1(20, 400, seed=0, phi=phi, level=0.0)), c + p, 5000, seed=1)
    test = _ar1(2000, c + p, seed=2, phi=phi, level=0.0)
    # The oracle point forecast is the conditional mean (= median) phi^h y_T.
    oracle_point = phi ** np.arange(1, p + 1)[None, :] * test[:, c - 1 : c]
    oracle = forecast_metrics(oracle_point[None], test[:, c:])
    scores = linear_predictive_score(scale_windows(real, c)[0], test, c, real_windows=real)
    trtr, tstr = scores["trtr"], scores["tstr"]
    assert tstr == trtr  # the scaled real windows as "synthetic" data: the same fit
    assert oracle["nd"] * 0.99 < trtr["nd"] < oracle["nd"] * 1.02
    assert oracle["nrmse"] * 0.99 < trtr["nrmse"] < oracle["nrmse"] * 1.02
    assert trtr["crps"] == pytest.approx(trtr["nd"] * np.abs(test[:, c:]).mean(), rel=1e-12)  # CRPS of a point = MAE
    # A generator that misses the dynamics (white noise) scores clearly worse.
    white = scale_windows(np.random.default_rng(3).standard_normal((5000, c + p)), c)[0]
    worse = linear_predictive_score(white, test, c)
    assert "trtr" not in worse
    assert worse["tstr"]["nd"] > 1.2 * trtr["nd"]


def test_windows_with_missing_values_are_dropped_and_counted() -> None:
    rng = np.random.default_rng(4)
    synthetic = 1 + 0.1 * rng.standard_normal((30, 6))
    synthetic[0, 2] = np.nan
    test = 10 + rng.standard_normal((10, 6))
    test[1, 0] = np.nan  # a context value: the window cannot be forecast
    test[2, 5] = np.nan  # a target value: that point is left out of the scores
    scores = linear_predictive_score(synthetic, test, 4)["tstr"]
    assert (scores["n_train"], scores["n_train_dropped"], scores["n_test"], scores["n_test_dropped"]) == (29, 1, 9, 1)
    assert math.isfinite(scores["nd"])


def test_scale_windows_and_real_windows() -> None:
    windows = np.array([[1.0, -3.0, 2.0, 5.0], [np.nan, 4.0, 0.0, 1.0], [0.0, 0.0, 7.0, 7.0],
                        [np.nan, np.nan, 1.0, 1.0]])
    scaled, scale = scale_windows(windows, 2, min_scale=0.5)
    assert np.allclose(scale[:3], [2.0, 4.0, 0.5]) and np.isnan(scale[3])
    assert np.allclose(scaled[0], [0.5, -1.5, 1.0, 2.5])
    series = [np.arange(10.0), np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0]), np.arange(2.0)]
    drawn = sample_real_windows(series, 4, 200, seed=0)
    assert drawn.shape == (200, 4) and np.isfinite(drawn).all()
    assert np.allclose(np.diff(drawn, axis=1), 1.0)  # consecutive values only, never across the gap
    assert {tuple(w) for w in drawn} == {(s, s + 1.0, s + 2.0, s + 3.0) for s in np.arange(7.0)}
    with pytest.raises(ValueError, match="no series has 11 consecutive"):
        sample_real_windows(series, 11, 5)


def test_bad_inputs() -> None:
    good = np.ones((5, 6))
    with pytest.raises(ValueError, match="C \\+ P = 6 columns"):
        linear_predictive_score(good, np.ones((5, 7)), 4)
    with pytest.raises(ValueError, match="C \\+ P = 6 columns"):
        linear_predictive_score(good, good, 4, real_windows=np.ones((5, 5)))
    with pytest.raises(ValueError, match="must be shorter than the windows"):
        linear_predictive_score(good, good, 6)
    with pytest.raises(ValueError, match="2-D array"):
        linear_predictive_score(np.ones(6), good, 4)
    with pytest.raises(ValueError, match="infinite"):
        linear_predictive_score(np.full((5, 6), np.inf), good, 4)
    with pytest.raises(ValueError, match="ridge must be"):
        linear_predictive_score(good, good, 4, ridge=-1.0)
    with pytest.raises(ValueError, match="no complete training window"):
        linear_predictive_score(np.full((5, 6), np.nan), good, 4)
    with pytest.raises(ValueError, match="no test window"):
        linear_predictive_score(good, np.full((5, 6), np.nan), 4)
    with pytest.raises(ValueError, match="same M"):
        fit_ridge(np.ones((4, 2)), np.ones((3, 1)))
