"""Tests of the GluonTS-convention forecast metrics: hand-computed cases, closed forms, an independent
per-series re-implementation of GluonTS's Evaluator, invariances and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nde.data.ou import gaussian_crps
from nde.metrics import (
    DEFAULT_QUANTILES,
    crps_from_samples,
    forecast_metrics,
    mase,
    mean_weighted_quantile_loss,
    normalized_deviation,
    nrmse,
    quantile_coverage,
    quantile_loss,
    sample_quantiles,
    seasonal_error,
    weighted_quantile_losses,
)


def gluonts_style_reference(samples: np.ndarray, observed: np.ndarray, quantiles, insample, season):
    """Loop-per-series transcription of GluonTS's Evaluator: per-series metrics, then aggregation."""
    rows = []
    for i in range(observed.shape[0]):
        y = observed[i]
        sorted_samples = np.sort(samples[:, i], axis=0)
        q_of = {q: sorted_samples[int(np.round((len(sorted_samples) - 1) * q))] for q in quantiles}
        median = q_of[0.5] if 0.5 in q_of else sorted_samples[int(np.round((len(sorted_samples) - 1) * 0.5))]
        past = insample[i]
        m = season if season < len(past) else 1
        seasonal = np.mean(np.abs(past[:-m] - past[m:]))
        row = {
            "MSE": np.mean((y - samples[:, i].mean(0)) ** 2),
            "abs_error": np.sum(np.abs(y - median)),
            "abs_target_sum": np.sum(np.abs(y)),
            "abs_target_mean": np.mean(np.abs(y)),
            "MASE": np.mean(np.abs(y - median)) / seasonal,
        }
        for q in quantiles:
            row[q] = 2 * np.sum(np.abs((q_of[q] - y) * ((y <= q_of[q]) - q)))
        rows.append(row)
    total = {k: sum(r[k] for r in rows) for k in rows[0]}
    n = len(rows)
    return {
        "mean_wql": np.mean([total[q] / total["abs_target_sum"] for q in quantiles]),
        "nd": total["abs_error"] / total["abs_target_sum"],
        "nrmse": math.sqrt(total["MSE"] / n) / (total["abs_target_mean"] / n),
        "mase": total["MASE"] / n,
    }


# ----------------------------------------------------------------------------------- sample quantiles


def test_sample_quantiles_pick_order_statistics_by_rounded_index() -> None:
    x = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]).view(5, 1)
    # S = 5: indices round(4 q) = 0, 2, 4 for q = 0.1, 0.5, 0.9
    assert sample_quantiles(x, [0.1, 0.5, 0.9]).flatten().tolist() == [1.0, 3.0, 5.0]
    # Half to even: S = 6, q = 0.5 -> round(2.5) = 2 (the third smallest); S = 4 -> round(1.5) = 2.
    six = torch.arange(6.0).flip(0).view(6, 1)
    assert sample_quantiles(six, 0.5).item() == 2.0
    assert sample_quantiles(torch.arange(4.0).view(4, 1), 0.5).item() == 2.0
    # S = 100: q = 0.1 -> round(9.9) = 10, q = 0.5 -> round(49.5) = 50
    hundred = torch.arange(100.0).view(100, 1)
    assert sample_quantiles(hundred, [0.1, 0.5]).flatten().tolist() == [10.0, 50.0]
    assert sample_quantiles(hundred, [0.0, 1.0]).flatten().tolist() == [0.0, 99.0]


def test_quantile_loss_hand_values() -> None:
    # y = 3 below the forecast 5 at q = 0.1: 2 |(3 - 5)(1 - 0.1)| = 3.6; above 1: 2 |2 (0 - 0.1)| = 0.4
    assert quantile_loss(torch.tensor([5.0, 1.0]), torch.tensor([3.0, 3.0]), 0.1).tolist() == pytest.approx([3.6, 0.4])
    # q = 0.5 is the absolute error
    f, y = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    assert torch.allclose(quantile_loss(f, y, 0.5), (f - y).abs())


# --------------------------------------------------------------------------------- weighted quantile loss


def test_weighted_quantile_loss_hand_case() -> None:
    observed = np.array([[1.0, 2.0], [3.0, 4.0]])
    q_forecast = np.array([[[0.0, 2.0], [4.0, 4.0]], [[2.0, 3.0], [5.0, 6.0]]])  # levels 0.2 and 0.8
    # level 0.2: errors y - f = [1, 0, -1, 0]; QL = 2*[1*0.2, 0*..., 1*0.8, 0] = [0.4, 0, 1.6, 0] -> 2.0
    # level 0.8: y - f = [-1, -1, -2, -2]; QL = 2*(0.2)*[1, 1, 2, 2] = 2.4
    w = weighted_quantile_losses(q_forecast, observed, [0.2, 0.8], forecast_type="quantiles")
    assert w.tolist() == pytest.approx([2.0 / 10.0, 2.4 / 10.0])
    assert mean_weighted_quantile_loss(q_forecast, observed, [0.2, 0.8], forecast_type="quantiles") == pytest.approx(
        0.22
    )


def test_matches_per_series_gluonts_evaluator() -> None:
    rng = np.random.default_rng(1)
    n, h, s, t = 6, 12, 57, 40
    observed = rng.gamma(3.0, 2.0, (n, h))
    samples = observed[None] + rng.normal(0.5, 1.5, (s, n, h))
    insample = rng.gamma(3.0, 2.0, (n, t))
    ref = gluonts_style_reference(samples, observed, DEFAULT_QUANTILES, insample, 7)
    median = sample_quantiles(samples, 0.5)[0]
    assert mean_weighted_quantile_loss(samples, observed) == pytest.approx(ref["mean_wql"], rel=1e-12)
    assert normalized_deviation(median, observed) == pytest.approx(ref["nd"], rel=1e-12)
    assert nrmse(samples.mean(0), observed) == pytest.approx(ref["nrmse"], rel=1e-12)
    assert mase(median, observed, insample, 7) == pytest.approx(ref["mase"], rel=1e-12)
    out = forecast_metrics(samples, observed, insample=insample, season=7)
    for key in ("mean_wql", "nd", "nrmse", "mase"):
        assert out[key] == pytest.approx(ref[key], rel=1e-12), key


def test_fine_quantile_grid_of_gaussian_gives_crps_closed_form() -> None:
    # CRPS(F, y) = ∫_0^1 QL_q dq, so the mean wQL over a fine midpoint grid of exact Gaussian quantiles
    # tends to Σ CRPS / Σ |y|; with K = 2000 levels the midpoint rule is accurate to about 1e-6.
    rng = np.random.default_rng(0)
    mu, sd = rng.normal(5.0, 1.0, 50), rng.uniform(0.5, 2.0, 50)
    y = rng.normal(mu, sd)
    exact = gaussian_crps(mu, sd, y).sum() / np.abs(y).sum()
    k = 2000
    levels = (np.arange(k) + 0.5) / k
    z = torch.special.ndtri(torch.tensor(levels)).numpy()
    q_forecast = mu[None] + sd[None] * z[:, None]
    got = mean_weighted_quantile_loss(q_forecast, y, levels, forecast_type="quantiles")
    assert got == pytest.approx(exact, rel=2e-6)
    # Nine levels are a coarse quadrature: close, but measurably different (here about 8% higher).
    nine = mean_weighted_quantile_loss(mu[None] + sd[None] * torch.special.ndtri(
        torch.tensor(DEFAULT_QUANTILES, dtype=torch.float64)).numpy()[:, None], y, forecast_type="quantiles")
    assert 1.0 < nine / exact < 1.2


def test_deterministic_samples_give_nd_for_every_score() -> None:
    # All samples equal: every quantile is the point, the mean QL over the symmetric levels is |y - ŷ|,
    # and the ensemble CRPS is the absolute error.
    rng = np.random.default_rng(2)
    y, point = rng.uniform(1, 5, (4, 9)), rng.uniform(1, 5, (4, 9))
    samples = np.broadcast_to(point, (30, 4, 9))
    nd = np.abs(y - point).sum() / np.abs(y).sum()
    out = forecast_metrics(samples, y)
    assert out["mean_wql"] == pytest.approx(nd, rel=1e-12)
    assert out["nd"] == pytest.approx(nd, rel=1e-12)
    assert out["crps_normalized"] == pytest.approx(nd, rel=1e-12)
    assert out["crps"] == pytest.approx(np.abs(y - point).mean(), rel=1e-12)
    assert out["coverage_90"] == pytest.approx(float((y == point).mean()))


def test_invariances_and_missing_values() -> None:
    rng = np.random.default_rng(3)
    y = rng.gamma(2.0, 3.0, (5, 8))
    samples = y[None] + rng.normal(0, 2, (40, 5, 8))
    insample = rng.gamma(2.0, 3.0, (5, 30))
    base = forecast_metrics(samples, y, insample=insample, season=4)
    # Scale: normalised scores unchanged, CRPS scales.
    scaled = forecast_metrics(3.0 * samples, 3.0 * y, insample=3.0 * insample, season=4)
    for key in ("mean_wql", "nd", "nrmse", "mase", "crps_normalized", "coverage_90"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-12), key
    assert scaled["crps"] == pytest.approx(3.0 * base["crps"], rel=1e-12)
    # Sample order and series order do not matter.
    perm_s, perm_n = rng.permutation(40), rng.permutation(5)
    shuffled = forecast_metrics(samples[perm_s][:, perm_n], y[perm_n], insample=insample[perm_n], season=4)
    for key, value in base.items():
        assert shuffled[key] == pytest.approx(value, rel=1e-12), key
    # A NaN target is the same as leaving the point out.
    y_nan = y.copy()
    y_nan[1, 3] = np.nan
    keep = ~np.isnan(y_nan)
    got = mean_weighted_quantile_loss(samples, y_nan)
    assert got == pytest.approx(mean_weighted_quantile_loss(samples[:, keep], y[keep]), rel=1e-12)
    assert normalized_deviation(samples.mean(0), y_nan) == pytest.approx(
        normalized_deviation(samples.mean(0)[keep], y[keep]), rel=1e-12)
    assert forecast_metrics(samples, y_nan)["n_points"] == 39
    assert forecast_metrics(samples, y_nan)["crps"] == pytest.approx(
        float(crps_from_samples(torch.as_tensor(samples[:, keep]), torch.as_tensor(y[keep])).mean()), rel=1e-12)


def test_quantile_coverage_of_calibrated_samples() -> None:
    # Observations drawn from the forecast law itself: Coverage[q] ≈ q within 4 binomial SEs.
    rng = np.random.default_rng(4)
    samples = rng.normal(size=(200, 4000))
    y = rng.normal(size=4000)
    cov = quantile_coverage(samples, y)
    for q, c in zip(DEFAULT_QUANTILES, cov.tolist(), strict=True):
        assert abs(c - q) < 4 * math.sqrt(q * (1 - q) / 4000) + 0.01, q


# ------------------------------------------------------------------------------------------ point scores


def test_nrmse_nd_mase_hand_values() -> None:
    y = torch.tensor([1.0, -1.0, 2.0])
    zero = torch.zeros(3)
    assert nrmse(zero, y) == pytest.approx(math.sqrt(2.0) / (4.0 / 3.0))
    assert normalized_deviation(zero, y) == pytest.approx(1.0)
    insample = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    assert seasonal_error(insample, 2).tolist() == [2.0]
    assert seasonal_error(insample, 6).tolist() == [1.0]  # season >= T falls back to 1, as GluonTS
    # MAE 1 over a seasonal error of 2
    assert mase(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]]), insample, 2) == pytest.approx(0.5)
    # Per series, then the mean: scales 2 and 1, MAEs 1 and 1 -> (0.5 + 1) / 2
    two = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]])
    f = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    obs = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert mase(f, obs, two, 2, reduction="none").tolist() == pytest.approx([0.5, 1.0])
    assert mase(f, obs, two, 2) == pytest.approx(0.75)
    # Missing values in the history: the pairs with a NaN end are skipped.
    gappy = torch.tensor([[1.0, float("nan"), 3.0, 4.0, 7.0, 6.0]])
    assert seasonal_error(gappy, 2).item() == pytest.approx((2.0 + 4.0 + 2.0) / 3.0)


# ------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors() -> None:
    y = torch.ones(3, 4)
    s = torch.ones(10, 3, 4)
    with pytest.raises(ValueError, match="shape"):
        mean_weighted_quantile_loss(torch.ones(10, 4, 3), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        mean_weighted_quantile_loss(torch.full((10, 3, 4), float("nan")), y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_weighted_quantile_loss(s, y, [0.5, 1.5])
    with pytest.raises(ValueError, match="forecast_type"):
        mean_weighted_quantile_loss(s, y, forecast_type="sample")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="9 quantiles"):
        mean_weighted_quantile_loss(torch.ones(3, 3, 4), y, forecast_type="quantiles")
    with pytest.raises(ValueError, match="all NaN"):
        mean_weighted_quantile_loss(s, torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="zero"):
        mean_weighted_quantile_loss(s, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="infinite"):
        normalized_deviation(y, torch.full((3, 4), float("inf")))
    with pytest.raises(ValueError, match="shape of observed"):
        nrmse(torch.ones(4), y)
    with pytest.raises(ValueError, match="constant history"):
        mase(y, y, torch.ones(3, 10), 2)
    with pytest.raises(ValueError, match="season must be"):
        seasonal_error(torch.ones(3, 10), 0)
    with pytest.raises(ValueError, match="reduction"):
        mase(y, y, torch.arange(30.0).view(3, 10), 2, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="insample must have shape"):
        mase(y, y, torch.arange(20.0).view(2, 10), 2)
    with pytest.raises(ValueError, match="both insample and season"):
        forecast_metrics(s, y, insample=torch.ones(3, 10))
    with pytest.raises(ValueError, match="S >= 1"):
        sample_quantiles(torch.ones(0, 3), 0.5)
