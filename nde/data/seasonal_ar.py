"""A simulated hourly seasonal AR data set whose forecast distribution is known exactly (an oracle).

Each series is ``y_t = μ(t) + x_t`` (``t`` in hours since a Monday 00:00) with a deterministic daily and
weekly profile

    μ(t) = level + A sin(2π (h - 6) / 24) + B cos(4π h / 24) + W 1{d ∈ (Saturday, Sunday)},
    h = t mod 24,  d = ⌊t / 24⌋ mod 7,

and a stationary multiplicative seasonal AR(1)×(1)_24 noise with Gaussian innovations

    (1 - φ L)(1 - Φ L^24) x_t = ε_t,   ε_t ~ N(0, σ²) i.i.d.,

i.e. ``x_t = φ x_{t-1} + Φ x_{t-24} - φΦ x_{t-25} + ε_t``, an AR(25). Shipped values (see
``datasets/seasonal_ar/README.md``): φ = 0.8, Φ = 0.5, σ = 1, level 20, A = 4, B = 1.5, W = -2.

Because the process is a linear AR(25) with Gaussian noise, the law of ``y_{T+1..T+H}`` given the past
depends only on the last 25 values and is exactly Gaussian: the mean follows the AR recursion with future
noise set to zero, and ``Var(y_{T+h}) = σ² Σ_{j<h} ψ_j²`` with the MA(∞) weights ``ψ_0 = 1``,
``ψ_j = Σ_{i=1}^{min(j,25)} a_i ψ_{j-i}`` (:func:`seasonal_ar_oracle_forecast`). Its CRPS (Gaussian closed
form) is the floor for any model's CRPS (:func:`seasonal_ar_oracle_scores`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike

from nde._rng import as_generator as _rng
from nde.data.ou import gaussian_crps
from nde.data.registry import dataset_path
from nde.data.timeseries import RegularTimeSeries, read_time_series, rolling_test_windows
from nde.metrics.forecast import DEFAULT_QUANTILES, mean_weighted_quantile_loss, normalized_deviation, nrmse

__all__ = [
    "SEASON",
    "SEASONAL_AR_DATASET",
    "SeasonalARParameters",
    "load_seasonal_ar",
    "seasonal_ar_oracle_crps",
    "seasonal_ar_oracle_forecast",
    "seasonal_ar_oracle_scores",
    "simulate_seasonal_ar",
]

#: The seasonal period in hours (one day); the AR order is ``SEASON + 1``.
SEASON = 24


@dataclass(frozen=True)
class SeasonalARParameters:
    """Parameters of the seasonal AR process; the defaults are those of the shipped data set.

    Attributes:
        phi: the AR(1) coefficient φ, ``|φ| < 1``.
        seasonal_phi: the seasonal AR coefficient Φ at lag 24, ``|Φ| < 1``.
        sigma: innovation standard deviation σ > 0.
        level, daily_amplitude, daily_harmonic, weekend_offset: ``level``, ``A``, ``B`` and ``W`` of μ(t).
    """

    phi: float = 0.8
    seasonal_phi: float = 0.5
    sigma: float = 1.0
    level: float = 20.0
    daily_amplitude: float = 4.0
    daily_harmonic: float = 1.5
    weekend_offset: float = -2.0

    def __post_init__(self) -> None:
        if not abs(self.phi) < 1 or not abs(self.seasonal_phi) < 1:
            raise ValueError(
                f"need |phi| < 1 and |seasonal_phi| < 1 (stationarity), got {self.phi}, {self.seasonal_phi}"
            )
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")

    def ar_coefficients(self) -> np.ndarray:
        """``[25]`` float64 ``a_1 .. a_25`` of ``x_t = Σ_i a_i x_{t-i} + ε_t``.

        ``a_1 = φ``, ``a_24 = Φ``, ``a_25 = -φΦ``, the others 0.
        """
        a = np.zeros(SEASON + 1)
        a[0] = self.phi
        a[SEASON - 1] += self.seasonal_phi
        a[SEASON] -= self.phi * self.seasonal_phi
        return a

    def mean(self, t: ArrayLike) -> np.ndarray:
        """The deterministic profile μ(t) at integer hours ``t`` since a Monday 00:00 (float64, shape of ``t``)."""
        t = np.asarray(t, dtype=np.int64)
        h = (t % 24).astype(np.float64)
        weekend = ((t // 24) % 7) >= 5
        return (
            self.level
            + self.daily_amplitude * np.sin(2.0 * np.pi * (h - 6.0) / 24.0)
            + self.daily_harmonic * np.cos(4.0 * np.pi * h / 24.0)
            + self.weekend_offset * weekend
        )

    def psi_weights(self, horizon: int) -> np.ndarray:
        """``[horizon]`` MA(∞) weights ``ψ_0 .. ψ_{horizon-1}`` of the noise ``x``."""
        a = self.ar_coefficients()
        psi = np.zeros(horizon)
        psi[0] = 1.0
        for j in range(1, horizon):
            i = np.arange(1, min(j, len(a)) + 1)
            psi[j] = float(np.dot(a[i - 1], psi[j - i]))
        return psi

    def forecast_std(self, horizon: int) -> np.ndarray:
        """``[horizon]`` exact standard deviations of ``y_{T+1} .. y_{T+horizon}`` given the past."""
        return self.sigma * np.sqrt(np.cumsum(self.psi_weights(horizon) ** 2))


#: The shipped data set: parameters, size and seed (``datasets/seasonal_ar/parameters.json`` holds the same).
SEASONAL_AR_DATASET: dict[str, Any] = {
    **asdict(SeasonalARParameters()),
    "season": SEASON,
    "n_series": 16,
    "length": 1344,
    "start": "2024-01-01 00:00:00",
    "freq": "h",
    "burn_in": 2400,
    "decimals": 4,
    "seed": 0,
    "prediction_length": 24,
    "context_length": 336,
    "test_windows": 7,
}


def simulate_seasonal_ar(
    n_series: int,
    length: int,
    seed: int | np.random.Generator = 0,
    params: SeasonalARParameters | None = None,
    *,
    start_index: int = 0,
    burn_in: int = 2400,
) -> np.ndarray:
    """Simulate ``[n_series, length]`` float64 paths ``y_t``, ``t = start_index .. start_index + length - 1``.

    The noise starts from ``x = 0`` ``burn_in`` steps before the first returned point; the memory of that
    start decays like ``max(φ, Φ^{1/24})^{burn_in}`` (``0.5^{100}`` for the defaults), so the returned paths
    are stationary to machine precision. One ``standard_normal`` draw of shape ``[n_series, burn_in +
    length]`` is used, so a seed gives the same paths on any platform.

    Raises:
        ValueError: non-positive sizes, a negative ``burn_in`` or a bad seed.
    """
    params = SeasonalARParameters() if params is None else params
    if n_series < 1 or length < 1 or burn_in < 0:
        raise ValueError(f"need n_series >= 1, length >= 1, burn_in >= 0; got {n_series}, {length}, {burn_in}")
    rng = _rng(seed)
    a = params.ar_coefficients()
    p = len(a)
    total = burn_in + length
    eps = params.sigma * rng.standard_normal((n_series, total))
    x = np.zeros((n_series, p + total))  # p leading zeros: the start x = 0
    for t in range(total):
        k = p + t
        # a_1 x_{t-1} + a_24 x_{t-24} + a_25 x_{t-25}: the only non-zero coefficients, in a fixed order.
        x[:, k] = a[0] * x[:, k - 1] + a[SEASON - 1] * x[:, k - SEASON] + a[SEASON] * x[:, k - SEASON - 1] + eps[:, t]
    t_index = np.arange(start_index, start_index + length)
    return params.mean(t_index)[None, :] + x[:, p + burn_in :]


def load_seasonal_ar(path: str | Path | None = None) -> RegularTimeSeries:
    """Load the shipped seasonal AR data set (16 hourly series of 1344 points from Monday 2024-01-01 00:00).

    Args:
        path: the CSV, or a folder holding ``seasonal_ar.csv``; default: the shipped file.
    """
    path = dataset_path("seasonal_ar") / "seasonal_ar.csv" if path is None else Path(path)
    if path.is_dir():
        path = path / "seasonal_ar.csv"
    return read_time_series(path)


def seasonal_ar_oracle_forecast(
    context: ArrayLike,
    horizon: int,
    *,
    start_index: ArrayLike = 0,
    params: SeasonalARParameters | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Gaussian forecast of ``y_{T+1} .. y_{T+horizon}`` given the past ``context [..., C]``.

    Args:
        context: ``[..., C]`` the last ``C >= 25`` values up to time ``T`` (only the last 25 matter).
        horizon: number of steps ``H`` to forecast.
        start_index: hours since a Monday 00:00 of ``context[..., 0]``, an int or ``[...]``
            (0 for a window that starts the shipped series; in general ``origin - C``).
        params: the process; default: the shipped one.

    Returns:
        ``(mean, std)``, both ``[..., H]`` float64: the conditional law is ``N(mean, std²)`` pointwise.

    Raises:
        ValueError: ``C < 25``, a missing value among the last 25, or ``horizon < 1``.
    """
    params = SeasonalARParameters() if params is None else params
    y = np.asarray(context, dtype=np.float64)
    p = SEASON + 1
    if y.ndim < 1 or y.shape[-1] < p:
        raise ValueError(f"context must have shape [..., C] with C >= {p}, got {list(y.shape)}")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
    if not np.isfinite(y[..., -p:]).all():
        raise ValueError(f"the oracle needs the last {p} context values; some are missing or not finite")
    c = y.shape[-1]
    t0 = np.asarray(start_index, dtype=np.int64)[..., None]
    past_t = t0 + np.arange(c - p, c)
    future_t = t0 + np.arange(c, c + horizon)
    x = np.concatenate([y[..., -p:] - params.mean(past_t), np.zeros((*y.shape[:-1], horizon))], axis=-1)
    a = params.ar_coefficients()
    for h in range(horizon):
        k = p + h
        x[..., k] = a[0] * x[..., k - 1] + a[SEASON - 1] * x[..., k - SEASON] + a[SEASON] * x[..., k - SEASON - 1]
    mean = params.mean(future_t) + x[..., p:]
    std = np.broadcast_to(params.forecast_std(horizon), mean.shape).copy()
    return mean, std


def _hours_since_monday(start: pd.Timestamp) -> int:
    return int(start.day_of_week) * 24 + int(start.hour)


def seasonal_ar_oracle_scores(
    data: RegularTimeSeries | ArrayLike | None = None,
    prediction_length: int = 24,
    windows: int = 1,
    *,
    params: SeasonalARParameters | None = None,
    level: float = 0.9,
) -> dict[str, float]:
    """Scores of the exact oracle forecast on the last ``windows`` windows of ``prediction_length`` points.

    The windows are those of :func:`nde.data.timeseries.rolling_test_windows` (non-overlapping, at the
    end of each series); each is forecast from the values before it by :func:`seasonal_ar_oracle_forecast`.

    Args:
        data: a :class:`RegularTimeSeries` with hourly timestamps (its weekday/hour fixes the phase of
            μ), or ``[N, T]`` values whose first column is a Monday 00:00; default: the shipped set.
        prediction_length, windows: the window length ``H`` and the number of windows per series.
        params: the process; default: the shipped one.
        level: nominal level of the central interval for ``coverage``.

    Returns:
        ``crps`` (mean Gaussian CRPS, closed form), ``expected_crps`` (its expectation under the model,
        ``mean_h std_h / sqrt(π)``), ``crps_normalized`` (``Σ CRPS / Σ |y|``), ``mean_wql`` (exact
        Gaussian quantiles at 0.1..0.9), ``nd`` and ``nrmse`` (median = mean), ``coverage``, ``level``,
        ``n_series``, ``n_points``.

    Raises:
        ValueError: a frequency other than hourly, a series too short, or a bad ``level``.
    """
    params = SeasonalARParameters() if params is None else params
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if data is None:
        data = load_seasonal_ar()
    if isinstance(data, RegularTimeSeries):
        series = data
        if series.freq != "h":
            raise ValueError(f"the seasonal AR oracle is for hourly series, got freq {series.freq!r}")
    else:
        values = np.asarray(data, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"data must be a RegularTimeSeries or [N, T] values, got shape {list(values.shape)}")
        start = pd.Timestamp("2024-01-01")  # a Monday
        series = RegularTimeSeries(
            item_ids=tuple(f"s{i}" for i in range(len(values))),
            starts=(start,) * len(values),
            freq="h",
            values=tuple(values),
        )
    split = rolling_test_windows(series, prediction_length, SEASON + 1, windows)
    phase = np.array([_hours_since_monday(series.starts[i]) for i in split.item_index])
    mean, std = seasonal_ar_oracle_forecast(
        split.context, prediction_length, start_index=phase + split.origin - split.context_length, params=params
    )
    y = split.target
    ok = ~np.isnan(y)
    crps = gaussian_crps(mean, std, np.where(ok, y, mean))[ok]
    z = torch.special.ndtri(torch.tensor(DEFAULT_QUANTILES, dtype=torch.float64)).numpy()
    quantile_forecast = mean[None] + std[None] * z.reshape(-1, 1, 1)
    z_level = float(torch.special.ndtri(torch.tensor(0.5 + level / 2.0, dtype=torch.float64)))
    return {
        "crps": float(crps.mean()),
        "expected_crps": float(std[0].mean() / math.sqrt(math.pi)),
        "crps_normalized": float(crps.sum() / np.abs(y[ok]).sum()),
        "mean_wql": mean_weighted_quantile_loss(quantile_forecast, y, forecast_type="quantiles"),
        "nd": normalized_deviation(mean, y),
        "nrmse": nrmse(mean, y),
        "coverage": float((np.abs(y - mean)[ok] <= z_level * std[ok]).mean()),
        "level": float(level),
        "n_series": len(series),
        "n_points": int(ok.sum()),
    }


def seasonal_ar_oracle_crps(
    data: RegularTimeSeries | ArrayLike | None = None,
    prediction_length: int = 24,
    windows: int = 1,
    *,
    params: SeasonalARParameters | None = None,
) -> float:
    """Mean exact CRPS of the oracle on the last ``windows`` windows; see :func:`seasonal_ar_oracle_scores`."""
    return seasonal_ar_oracle_scores(data, prediction_length, windows, params=params)["crps"]
