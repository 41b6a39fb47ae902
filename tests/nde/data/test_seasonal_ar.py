"""Tests of the simulated seasonal AR data set: the process, the exact oracle forecast against simulation,
the shipped file and its generator, and the oracle / seasonal-naive gap the TSDiff targets rely on."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nde.data.registry import available_datasets, dataset_path
from nde.data.seasonal_ar import (
    SEASONAL_AR_DATASET,
    SeasonalARParameters,
    load_seasonal_ar,
    seasonal_ar_oracle_crps,
    seasonal_ar_oracle_forecast,
    seasonal_ar_oracle_scores,
    simulate_seasonal_ar,
)
from nde.data.timeseries import rolling_test_windows
from nde.forecast_baselines import seasonal_naive_forecast
from nde.metrics import forecast_metrics

SCRIPT = Path(__file__).resolve().parents[3] / "datasets" / "seasonal_ar" / "make.py"
PHI, BIG_PHI = 0.8, 0.5


def test_coefficients_and_psi_weights_closed_form() -> None:
    p = SeasonalARParameters()
    a = p.ar_coefficients()
    assert a.shape == (25,) and a[0] == PHI and a[23] == BIG_PHI and a[24] == pytest.approx(-PHI * BIG_PHI)
    assert np.count_nonzero(a) == 3
    # (1 - φL)^-1 (1 - ΦL^24)^-1 = Σ_i φ^i L^i Σ_k Φ^k L^24k: ψ_j = φ^j below 24, ψ_24 = φ^24 + Φ, ψ_25 = φ^25 + φΦ
    psi = p.psi_weights(26)
    np.testing.assert_allclose(psi[:24], PHI ** np.arange(24), rtol=1e-13)
    assert psi[24] == pytest.approx(PHI**24 + BIG_PHI, rel=1e-13)
    assert psi[25] == pytest.approx(PHI**25 + PHI * BIG_PHI, rel=1e-13)
    np.testing.assert_allclose(p.forecast_std(24), np.sqrt(np.cumsum(PHI ** (2 * np.arange(24)))), rtol=1e-13)
    # Profile: Monday 06:00 is level + 0 + 1.5 cos(π) = 18.5; Saturday 06:00 has the weekend offset.
    assert p.mean([6, 5 * 24 + 6]).tolist() == pytest.approx([18.5, 16.5])
    with pytest.raises(ValueError, match="stationarity"):
        SeasonalARParameters(seasonal_phi=1.0)
    with pytest.raises(ValueError, match="sigma"):
        SeasonalARParameters(sigma=0.0)


def test_simulated_noise_has_the_stationary_variance() -> None:
    # Without the profile, y = level + x; Var(x) = σ² Σ ψ_j² (the sum converges: ψ decays like 0.5^(j/24)).
    params = SeasonalARParameters(level=0.0, daily_amplitude=0.0, daily_harmonic=0.0, weekend_offset=0.0)
    x = simulate_seasonal_ar(400, 200, seed=5, params=params)
    var = float(np.sum(params.psi_weights(3000) ** 2))
    # Points 100 apart are nearly independent (|ρ| < 0.05); 800 such values per column pair.
    sample = x[:, ::100].ravel()
    assert abs(sample.var() - var) < 4 * var * math.sqrt(2 / len(sample)) + 0.05 * var
    assert abs(sample.mean()) < 4 * math.sqrt(var / len(sample)) * 3  # loose: mild correlation


@pytest.mark.parametrize("start_index", [0, 5 * 24 - 30])  # a Monday start; a window across the weekend
def test_oracle_matches_simulation(start_index: int) -> None:
    # Paths of 60 + 24 points; the oracle forecast from the first 60 must make the last 24 standard normal.
    n, c, h = 3000, 60, 24
    y = simulate_seasonal_ar(n, c + h, seed=11, start_index=start_index)
    mean, std = seasonal_ar_oracle_forecast(y[:, :c], h, start_index=start_index)
    z = (y[:, c:] - mean) / std
    se = 1 / math.sqrt(n)
    assert np.abs(z.mean(0)).max() < 4.5 * se
    assert np.abs(z.var(0) - 1).max() < 4.5 * math.sqrt(2) * se
    # One-step errors are the innovations: uncorrelated with the last context value.
    assert abs(np.corrcoef(z[:, 0], y[:, c - 1])[0, 1]) < 4.5 * se
    # The phase matters: an oracle shifted by a day is biased on a weekend boundary.
    if start_index:
        shifted, _ = seasonal_ar_oracle_forecast(y[:, :c], h, start_index=start_index + 24)
        assert np.abs(((y[:, c:] - shifted) / std).mean(0)).max() > 0.5


def test_oracle_bad_inputs() -> None:
    with pytest.raises(ValueError, match="C >= 25"):
        seasonal_ar_oracle_forecast(np.zeros((2, 24)), 3)
    context = np.zeros((2, 30))
    context[1, -3] = np.nan
    with pytest.raises(ValueError, match="last 25"):
        seasonal_ar_oracle_forecast(context, 3)
    with pytest.raises(ValueError, match="horizon"):
        seasonal_ar_oracle_forecast(np.zeros(30), 0)
    with pytest.raises(ValueError, match="n_series"):
        simulate_seasonal_ar(0, 10)


@pytest.fixture(scope="module")
def shipped():
    return load_seasonal_ar()


def test_shipped_file_and_parameters(shipped) -> None:
    assert "seasonal_ar" in available_datasets()
    folder = dataset_path("seasonal_ar")
    for name in ("seasonal_ar.csv", "parameters.json", "README.md", "make.py"):
        assert (folder / name).is_file(), name
    params = json.loads((folder / "parameters.json").read_text())
    for key, value in SEASONAL_AR_DATASET.items():
        assert params[key] == value, key
    assert len(shipped) == 16 and shipped.freq == "h" and shipped.lengths.tolist() == [1344] * 16
    assert all(str(s) == "2024-01-01 00:00:00" and s.day_of_week == 0 for s in shipped.starts)
    values = shipped.stack()
    # Per hour of the week, the mean over series and weeks follows μ(t); the noise sd is about 1.9.
    mu = SeasonalARParameters().mean(np.arange(1344))
    assert abs((values - mu).mean()) < 0.25
    assert 1.6 < (values - mu).std() < 2.3


def test_oracle_scores_on_shipped_data_and_seasonal_naive_gap(shipped) -> None:
    scores = seasonal_ar_oracle_scores(shipped, 24, 7)
    assert scores["n_points"] == 16 * 7 * 24 and scores["n_series"] == 16
    assert scores["crps"] == pytest.approx(0.933337, abs=1e-6)  # the number quoted in the README
    # Its expectation under the model: mean_h std_h / sqrt(π)
    expected = SeasonalARParameters().forecast_std(24).mean() / math.sqrt(math.pi)
    assert scores["expected_crps"] == pytest.approx(expected, rel=1e-12)
    assert abs(scores["crps"] / expected - 1) < 0.08
    assert abs(scores["coverage"] - 0.9) < 0.03
    assert seasonal_ar_oracle_crps(shipped, 24, 7) == scores["crps"]
    # The same numbers from [N, T] values (first column a Monday 00:00).
    assert seasonal_ar_oracle_scores(shipped.stack(), 24, 7)["crps"] == pytest.approx(scores["crps"], rel=1e-12)
    # GluonTS's seasonal naive (a point forecast) is far from the oracle: the TSDiff target needs >= 1.64x.
    w = rolling_test_windows(shipped, 24, 336, 7)
    naive = forecast_metrics(seasonal_naive_forecast(w.context, 24, 24), w.target)
    assert naive["crps"] / scores["crps"] > 1.8
    assert naive["mean_wql"] / scores["mean_wql"] > 1.6
    with pytest.raises(ValueError, match="hourly"):
        seasonal_ar_oracle_scores(type(shipped)(shipped.item_ids, shipped.starts, "30min", shipped.values))


def test_make_script_reproduces_the_file(tmp_path: Path) -> None:
    out = tmp_path / "seasonal_ar.csv"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True)
    folder = dataset_path("seasonal_ar")
    assert out.read_bytes() == (folder / "seasonal_ar.csv").read_bytes()
    assert (tmp_path / "parameters.json").read_bytes() == (folder / "parameters.json").read_bytes()
