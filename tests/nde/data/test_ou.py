"""Tests for the shipped Ornstein-Uhlenbeck data set, its generator and the oracle forecast scores."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nde.data import (
    OU_PARAMETERS,
    DataFormatError,
    available_datasets,
    dataset_path,
    forecast_context_mask,
    gaussian_crps,
    load_ou,
    ou_oracle_forecast_scores,
    ou_transition,
)

THETA, MU, SIGMA = 0.5, 1.0, 0.8
VAR = SIGMA**2 / (2 * THETA)  # stationary variance 0.64
SCRIPT = Path(__file__).resolve().parents[3] / "datasets" / "ou" / "make_ou.py"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_ou()


@pytest.fixture(scope="module")
def pairs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive observations within each series: ``(x_k, x_{k+1}, gap)``."""
    same = (frame["series_id"].to_numpy()[1:] == frame["series_id"].to_numpy()[:-1])
    x, t = frame["x"].to_numpy(), frame["time"].to_numpy()
    return x[:-1][same], x[1:][same], np.diff(t)[same]


def test_registry_files_and_parameters() -> None:
    path = dataset_path("ou")
    for name in ("ou.csv", "parameters.json", "README.md", "make_ou.py"):
        assert (path / name).is_file()
    assert "ou" in available_datasets()
    params = json.loads((path / "parameters.json").read_text())
    assert (params["theta"], params["mu"], params["sigma"]) == (THETA, MU, SIGMA)
    assert params["stationary_variance"] == 0.64
    for key, value in OU_PARAMETERS.items():
        assert params[key] == (list(value) if isinstance(value, tuple) else value), key


def test_shape_and_observation_times(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["series_id", "time", "x"] and len(frame) == 23812
    n = frame.groupby("series_id", sort=False).size()
    assert len(n) == 600 and n.min() >= 5
    assert list(n.index[:2]) == ["s0000", "s0001"]
    # Poisson(rate 4 x window 10 = 40) points per series.
    assert abs(n.mean() - 40) < 4 * math.sqrt(40 / 600)
    assert abs(n.var() - 40) < 4 * 40 * math.sqrt(2 / 599 + 1 / 40 / 600)  # var of Poisson = mean, loose SE
    t = frame["time"].to_numpy()
    assert t.min() >= 0 and t.max() <= 10
    # Uniform times: mean 5, variance 100/12 (23 812 near-independent points).
    assert abs(t.mean() - 5) < 4 * math.sqrt(100 / 12 / len(t))


def test_stationary_mean_and_variance(frame: pd.DataFrame) -> None:
    # First observation of each series: 600 independent draws of N(mu, sigma^2 / (2 theta)).
    x0 = frame.groupby("series_id", sort=False)["x"].first().to_numpy()
    n = len(x0)
    assert abs(x0.mean() - MU) < 4 * math.sqrt(VAR / n)
    assert abs(x0.var(ddof=1) - VAR) < 4 * VAR * math.sqrt(2 / (n - 1))
    # Last observations likewise (the process stays stationary).
    x1 = frame.groupby("series_id", sort=False)["x"].last().to_numpy()
    assert abs(x1.mean() - MU) < 4 * math.sqrt(VAR / n)
    assert abs(x1.var(ddof=1) - VAR) < 4 * VAR * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 0.05), (0.05, 0.15), (0.15, 0.3), (0.3, 0.6), (0.6, 2.0)])
def test_lag1_autocorrelation_at_gap(pairs: tuple[np.ndarray, np.ndarray, np.ndarray], lo: float, hi: float) -> None:
    # E[X(s + gap) - mu | X(s)] = exp(-theta gap) (X(s) - mu): the regression slope through the origin
    # on pairs with gap in [lo, hi) has mean sum(u^2 e^{-theta gap}) / sum(u^2) and the standard error below.
    x0, x1, gap = pairs
    sel = (gap >= lo) & (gap < hi)
    u, w, g = x0[sel] - MU, x1[sel] - MU, gap[sel]
    assert sel.sum() > 500
    slope = np.sum(u * w) / np.sum(u * u)
    rho = np.exp(-THETA * g)
    expected = np.sum(u * u * rho) / np.sum(u * u)
    se = math.sqrt(np.sum(u * u * VAR * (1 - rho**2))) / np.sum(u * u)
    assert abs(slope - expected) < 4 * se, (slope, expected, se)
    # And the plain lag-1 correlation of the stationary pairs is near the bin's mean of e^{-theta gap}.
    assert abs(np.corrcoef(u, w)[0, 1] - rho.mean()) < 4 * np.sqrt(np.mean((1 - rho**2) ** 2) / sel.sum())


def test_standardised_transitions_are_standard_normal(pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x0, x1, gap = pairs
    mean, std = ou_transition(x0, gap, THETA, MU, SIGMA)
    z = (x1 - mean) / std
    n = len(z)
    assert n == 23812 - 600
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.var() - 1) < 4 * math.sqrt(2 / n)
    assert abs(np.mean(np.abs(z) < 1.6448536269514722) - 0.9) < 4 * math.sqrt(0.09 / n)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 4 / math.sqrt(n)  # innovations uncorrelated


def test_ou_transition_closed_form() -> None:
    mean, std = ou_transition([3.0, 3.0, 3.0, -1.0], [0.0, 2.0, 200.0, 2.0], THETA, MU, SIGMA)
    # dt = 2: mean = 1 + 2 e^{-1}, std = 0.8 sqrt(1 - e^{-2}); dt -> inf: stationary N(1, 0.8^2).
    np.testing.assert_allclose(mean, [3.0, 1.7357588823428847, 1.0, 0.26424111765711533], rtol=1e-14)
    np.testing.assert_allclose(std, [0.0, 0.7438987960257549, 0.8, 0.7438987960257549], rtol=1e-14)
    m, s = ou_transition(np.zeros((2, 1)), np.array([0.5, 1.0, 1.5]), THETA, MU, SIGMA)
    assert m.shape == s.shape == (2, 3)
    with pytest.raises(ValueError, match="dt"):
        ou_transition(0.0, -0.1, THETA, MU, SIGMA)
    with pytest.raises(ValueError, match="theta"):
        ou_transition(0.0, 0.1, 0.0, MU, SIGMA)


def test_gaussian_crps_closed_form_values() -> None:
    # CRPS(N(0, 1), 0) = 2 phi(0) - 1/sqrt(pi) = sqrt(2/pi) - 1/sqrt(pi).
    assert gaussian_crps(0.0, 1.0, 0.0) == pytest.approx(0.2336949772551091, rel=1e-14)
    # Location-scale: CRPS(N(m, s^2), m + s z) = s CRPS(N(0, 1), z); for |z| large -> s (|z| - 1/sqrt(pi)).
    z = np.array([-3.0, -0.5, 0.7, 2.0])
    np.testing.assert_allclose(gaussian_crps(2.0, 3.0, 2.0 + 3.0 * z), 3.0 * gaussian_crps(0.0, 1.0, z), rtol=1e-13)
    assert gaussian_crps(0.0, 1.0, 40.0) == pytest.approx(40.0 - 1 / math.sqrt(math.pi), rel=1e-14)
    np.testing.assert_array_equal(gaussian_crps([1.0, 1.0], 0.0, [1.5, 0.25]), [0.5, 0.75])  # point forecast
    with pytest.raises(ValueError, match="std"):
        gaussian_crps(0.0, -1.0, 0.0)


@pytest.mark.parametrize("y", [-2.0, 0.3, 1.1, 5.0])
def test_gaussian_crps_matches_monte_carlo(y: float) -> None:
    mean, std, n = 0.3, 1.7, 200_000
    rng = np.random.default_rng(12345)
    x, x2 = mean + std * rng.standard_normal((2, n))
    terms = np.abs(x - y) - 0.5 * np.abs(x - x2)  # E[.] = CRPS (energy form)
    se = terms.std(ddof=1) / math.sqrt(n)
    assert abs(terms.mean() - float(gaussian_crps(mean, std, y))) < 4 * se


def test_forecast_context_mask() -> None:
    df = pd.DataFrame(
        {"id": ["a", "b", "a", "a", "b", "a", "c", "b"], "t": [0.0, 5.0, 8.0, 10.0, 6.0, 7.9, 1.0, 10.0]}
    )
    # a: span [0, 10], cutoff 8 (8 is context); b: span [5, 10], cutoff 9; c: one point, context.
    mask = forecast_context_mask(df, 0.2, id_col="id", time_col="t")
    np.testing.assert_array_equal(mask, [True, True, True, False, True, True, True, False])
    with pytest.raises(ValueError, match="forecast_fraction"):
        forecast_context_mask(df, 1.0, id_col="id", time_col="t")
    with pytest.raises(ValueError, match="'time'"):
        forecast_context_mask(df, 0.2, id_col="id")


def _oracle_by_loop(frame: pd.DataFrame, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-target (y, mean, std, series code) computed series by series, independently of the library."""
    ys, means, stds, codes = [], [], [], []
    for code, (_, s) in enumerate(frame.groupby("series_id", sort=False)):
        t, x = s["time"].to_numpy(), s["x"].to_numpy()
        cutoff = t[0] + (1 - fraction) * (t[-1] - t[0])
        k = np.flatnonzero(t <= cutoff)[-1]
        for j in range(k + 1, len(t)):
            decay = math.exp(-THETA * (t[j] - t[k]))
            ys.append(x[j])
            means.append(MU + (x[k] - MU) * decay)
            stds.append(math.sqrt(VAR * (1 - decay**2)))
            codes.append(code)
    return np.array(ys), np.array(means), np.array(stds), np.array(codes)


def test_oracle_scores_on_shipped_file(frame: pd.DataFrame) -> None:
    scores = ou_oracle_forecast_scores(frame, forecast_fraction=0.2)
    y, mean, std, codes = _oracle_by_loop(frame, 0.2)
    n = len(y)
    assert scores["n_targets"] == n == 5190 and scores["n_series"] == 600 and scores["level"] == 0.9
    crps = gaussian_crps(mean, std, y)
    err2 = (y - mean) ** 2
    inside = np.abs(y - mean) <= 1.6448536269514722 * std
    assert scores["crps"] == pytest.approx(crps.mean(), rel=1e-12)
    assert scores["mse"] == pytest.approx(err2.mean(), rel=1e-12)
    assert scores["coverage"] == inside.mean()
    # Regression values of the shipped file.
    assert scores["crps"] == pytest.approx(0.364495, abs=1e-6)
    assert scores["mse"] == pytest.approx(0.428760, abs=1e-6)
    assert scores["coverage"] == pytest.approx(0.901156, abs=1e-6)
    # Against the truth: coverage 0.9 within 3 binomial standard errors; E[CRPS] = std / sqrt(pi) and
    # E[squared error] = std^2 per target, within 4 standard errors clustered by series.
    assert abs(scores["coverage"] - 0.9) < 3 * math.sqrt(0.9 * 0.1 / n)

    def clustered_se(d: np.ndarray) -> float:
        return math.sqrt(np.sum(np.bincount(codes, weights=d) ** 2)) / n

    d = crps - std / math.sqrt(math.pi)
    assert abs(d.mean()) < 4 * clustered_se(d - d.mean())
    d = err2 - std**2
    assert abs(d.mean()) < 4 * clustered_se(d - d.mean())


def test_oracle_scores_row_order_and_fraction(frame: pd.DataFrame) -> None:
    head = frame[frame["series_id"].isin(["s0000", "s0001", "s0002"])]
    shuffled = head.sample(frac=1.0, random_state=0)
    a = ou_oracle_forecast_scores(head, 0.5)
    b = ou_oracle_forecast_scores(shuffled, 0.5)
    assert a == pytest.approx(b, rel=1e-12)
    y, mean, std, _ = _oracle_by_loop(head, 0.5)
    assert a["n_targets"] == len(y) and a["mse"] == pytest.approx(((y - mean) ** 2).mean(), rel=1e-12)
    assert a["crps"] == pytest.approx(gaussian_crps(mean, std, y).mean(), rel=1e-12)
    renamed = head.rename(columns={"series_id": "id", "time": "tt", "x": "v"})
    c = ou_oracle_forecast_scores(renamed, 0.5, id_col="id", time_col="tt", value_col="v", theta=1.0, sigma=0.5)
    assert c["n_targets"] == a["n_targets"] and c["crps"] != a["crps"]
    with pytest.raises(ValueError, match="'x'"):
        ou_oracle_forecast_scores(renamed, 0.5, id_col="id", time_col="tt")
    with pytest.raises(ValueError, match="forecast_fraction"):
        ou_oracle_forecast_scores(head, 0.0)


def test_make_script_reproduces_files(tmp_path: Path) -> None:
    out = tmp_path / "ou.csv"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True)
    shipped = dataset_path("ou")
    assert out.read_bytes() == (shipped / "ou.csv").read_bytes()
    assert (tmp_path / "parameters.json").read_bytes() == (shipped / "parameters.json").read_bytes()
    subprocess.run(
        [sys.executable, str(SCRIPT), "--seed", "1", "--n-series", "3", "--out", str(tmp_path / "small" / "ou.csv")],
        check=True, capture_output=True,
    )
    small = load_ou(tmp_path / "small")
    assert small["series_id"].nunique() == 3
    assert json.loads((tmp_path / "small" / "parameters.json").read_text())["seed"] == 1


def test_loader_rejects_missing_column(tmp_path: Path, frame: pd.DataFrame) -> None:
    bad = tmp_path / "bad_ou.csv"
    frame.head(10).drop(columns="x").to_csv(bad, index=False)
    with pytest.raises(DataFormatError, match=r"bad_ou\.csv.*missing column.*'x'"):
        load_ou(bad)
