"""Scores of probabilistic forecasts of regular time series, in GluonTS's conventions.

Published forecasting numbers (DeepAR, TSDiff, ...) come from GluonTS's ``Evaluator``; these functions
reproduce its definitions so that our numbers can be set beside them. Shapes: ``observed [...]`` holds the
true values of any batch of forecast points (typically ``[N, H]``: ``N`` series or windows, horizon
``H``); a sample forecast is ``samples [S, ...]`` and a quantile forecast ``[Q, ...]`` (one slice per
quantile level). ``NaN`` in ``observed`` marks a missing value: it is left out of every sum and mean
(GluonTS masks it the same way). Aggregates are pooled over all points of all series, as GluonTS sums its
per-series sums.

- **Quantile loss** at level ``q`` of the quantile forecast ``ŷ_q``: ``QL_q = 2 |(y - ŷ_q)(1{y ≤ ŷ_q} - q)|``,
  twice the pinball loss ``ρ_q``.
- **Weighted quantile loss** ``wQL_q = Σ QL_q / Σ |y|`` and its mean over ``q ∈ {0.1, ..., 0.9}``
  (``mean_wQuantileLoss``, the "CRPS" column of the TSDiff / DeepAR tables). Because
  ``CRPS(F, y) = 2 ∫_0^1 ρ_q(y - F⁻¹(q)) dq = ∫_0^1 QL_q dq``, the mean wQL over a fine grid of levels is
  ``Σ CRPS / Σ |y|``; nine levels are a coarse quadrature of that integral.
- **ND** ``= Σ |y - ŷ_median| / Σ |y|``; **NRMSE** ``= sqrt(mean (y - ŷ_mean)²) / mean |y|``;
  **MASE** ``= mean |y - ŷ_median| / mean_t |y_t - y_{t-m}|`` per series (denominator over the in-sample
  history), averaged over series.

Quantiles of a sample forecast are taken as GluonTS's ``SampleForecast.quantile`` does (gluonts
``src/gluonts/model/forecast.py``): the sorted sample at index ``round((S - 1) q)`` (NumPy rounding, half
to even), no interpolation. The aggregation follows ``Evaluator.get_aggregate_metrics`` in gluonts
``src/gluonts/evaluation/_base.py`` (``QuantileLoss`` summed over series, ``wQuantileLoss = QuantileLoss /
abs_target_sum``, ``mean_wQuantileLoss`` = mean over levels, ``ND = abs_error / abs_target_sum``,
``NRMSE = sqrt(mean MSE) / mean abs_target_mean``, ``MASE`` = mean over series) and
``src/gluonts/evaluation/metrics.py`` (``quantile_loss``, ``calculate_seasonal_error``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from nde.metrics.probabilistic import crps_from_samples, interval_coverage

__all__ = [
    "DEFAULT_QUANTILES",
    "forecast_metrics",
    "mase",
    "mean_weighted_quantile_loss",
    "normalized_deviation",
    "nrmse",
    "quantile_coverage",
    "quantile_loss",
    "sample_quantiles",
    "seasonal_error",
    "weighted_quantile_losses",
]

#: GluonTS's default quantile levels (``Evaluator.default_quantiles``), used for ``mean_wQuantileLoss``.
DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

ForecastType = Literal["samples", "quantiles"]


def _as_float64(x: Tensor | ArrayLike, name: str) -> Tensor:
    """``x`` as a float64 tensor (on its own device if it is one)."""
    if isinstance(x, Tensor):
        return x.to(torch.float64)
    try:
        return torch.from_numpy(np.array(x, dtype=np.float64))  # a copy: inputs may be read-only views
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}: {err}") from None


def _check_levels(quantiles: Sequence[float] | float) -> list[float]:
    levels = [float(q) for q in np.atleast_1d(np.asarray(quantiles, dtype=np.float64))]
    if not levels:
        raise ValueError("quantiles must not be empty")
    bad = [q for q in levels if not 0.0 <= q <= 1.0]
    if bad:
        raise ValueError(f"quantile levels must be in [0, 1], got {bad}")
    return levels


def _check_forecast(forecast: Tensor, observed: Tensor, what: str) -> None:
    if forecast.ndim != observed.ndim + 1 or forecast.shape[1:] != observed.shape:
        raise ValueError(
            f"{what} must have shape [K, *observed.shape] = [K, {', '.join(map(str, observed.shape))}], "
            f"got {list(forecast.shape)}"
        )
    if forecast.shape[0] < 1:
        raise ValueError(f"{what} needs at least one slice along its first axis")
    if not torch.isfinite(forecast).all():
        raise ValueError(f"{what} contains NaN or infinite values")


def _observed_mask(observed: Tensor) -> Tensor:
    """True where ``observed`` is a value; NaN is missing; infinities are errors."""
    if torch.isinf(observed).any():
        raise ValueError("observed contains infinite values (use NaN for missing values)")
    mask = ~torch.isnan(observed)
    if not mask.any():
        raise ValueError("observed has no values (all NaN)")
    return mask


def _abs_target_sum(observed: Tensor, mask: Tensor) -> Tensor:
    total = torch.where(mask, observed.abs(), torch.zeros_like(observed)).sum()
    if total == 0:
        raise ValueError("the sum of |observed| is zero, so the weighted (normalised) score is undefined")
    return total


def sample_quantiles(samples: Tensor | ArrayLike, quantiles: Sequence[float] | float) -> Tensor:
    """Quantiles ``[Q, ...]`` of the sample forecast ``samples [S, ...]``, as GluonTS's ``SampleForecast``.

    The level-``q`` quantile is the order statistic ``x_(k)`` (0-based, ascending) with
    ``k = round((S - 1) q)``, NumPy's rounding (half to even): no interpolation, so every quantile is
    one of the samples. Example: ``S = 100``, ``q = 0.5`` gives ``k = round(49.5) = 50``.

    Raises:
        ValueError: a level outside ``[0, 1]``, no samples, or a NaN / infinite sample.
    """
    levels = _check_levels(quantiles)
    x = _as_float64(samples, "samples")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"samples must have shape [S, ...] with S >= 1, got {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("samples contain NaN or infinite values")
    s = x.shape[0]
    index = [int(np.round((s - 1) * q)) for q in levels]
    return x.sort(dim=0).values[index]


def quantile_loss(forecast_quantile: Tensor | ArrayLike, observed: Tensor | ArrayLike, q: float) -> Tensor:
    """Elementwise quantile loss ``2 |(y - ŷ_q)(1{y ≤ ŷ_q} - q)|`` of the level-``q`` forecast (shapes broadcast).

    This is twice the pinball loss ``ρ_q(y - ŷ_q)``; GluonTS's ``QuantileLoss[q]`` is its sum over a
    series. NaN in ``observed`` gives NaN. Returns float64.

    Raises:
        ValueError: ``q`` outside ``[0, 1]``.
    """
    (level,) = _check_levels(q)
    f = _as_float64(forecast_quantile, "forecast_quantile")
    y = _as_float64(observed, "observed").to(f.device)
    below = (y <= f).to(torch.float64)
    return 2.0 * ((y - f) * (below - level)).abs()


def _quantile_forecast(
    forecast: Tensor | ArrayLike, observed: Tensor, levels: list[float], forecast_type: ForecastType
) -> Tensor:
    f = _as_float64(forecast, "forecast").to(observed.device)
    if forecast_type == "samples":
        _check_forecast(f, observed, "samples")
        return sample_quantiles(f, levels)
    if forecast_type == "quantiles":
        _check_forecast(f, observed, "quantile forecast")
        if f.shape[0] != len(levels):
            raise ValueError(f"quantile forecast has {f.shape[0]} levels but {len(levels)} quantiles were given")
        return f
    raise ValueError(f"forecast_type must be 'samples' or 'quantiles', got {forecast_type!r}")


def weighted_quantile_losses(
    forecast: Tensor | ArrayLike,
    observed: Tensor | ArrayLike,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    forecast_type: ForecastType = "samples",
) -> Tensor:
    """GluonTS's ``wQuantileLoss[q]`` for each level: ``Σ QL_q / Σ |y|`` over all observed points, ``[Q]``.

    Args:
        forecast: ``samples [S, ...]`` (``forecast_type="samples"``; quantiles as
            :func:`sample_quantiles`) or quantile forecasts ``[Q, ...]`` in the order of ``quantiles``
            (``forecast_type="quantiles"``).
        observed: ``[...]`` true values; NaN = missing (left out of both sums).
        quantiles: levels in ``[0, 1]``; default ``0.1, ..., 0.9``.

    Raises:
        ValueError: shapes that do not match, a NaN / infinite forecast, an infinite observation, no
            observed value, ``Σ |y| = 0``, bad levels or ``forecast_type``.
    """
    levels = _check_levels(quantiles)
    y = _as_float64(observed, "observed")
    mask = _observed_mask(y)
    fq = _quantile_forecast(forecast, y, levels, forecast_type)
    denominator = _abs_target_sum(y, mask)
    q = torch.tensor(levels, dtype=torch.float64, device=y.device).view(-1, *([1] * y.ndim))
    y_filled = torch.where(mask, y, torch.zeros_like(y))
    losses = 2.0 * ((y_filled - fq) * ((y_filled <= fq).to(torch.float64) - q)).abs()
    losses = torch.where(mask, losses, torch.zeros_like(losses))
    return losses.reshape(len(levels), -1).sum(1) / denominator


def mean_weighted_quantile_loss(
    forecast: Tensor | ArrayLike,
    observed: Tensor | ArrayLike,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    forecast_type: ForecastType = "samples",
) -> float:
    """GluonTS's ``mean_wQuantileLoss``: the mean over levels of :func:`weighted_quantile_losses`.

    ``(1/Q) Σ_q [2 Σ_points |(y - ŷ_q)(1{y ≤ ŷ_q} - q)|] / Σ_points |y|``; with the default nine levels this is
    the "CRPS" that the TSDiff and DeepAR papers report. Same arguments and errors as
    :func:`weighted_quantile_losses`.
    """
    return float(weighted_quantile_losses(forecast, observed, quantiles, forecast_type=forecast_type).mean())


def quantile_coverage(
    forecast: Tensor | ArrayLike,
    observed: Tensor | ArrayLike,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    forecast_type: ForecastType = "samples",
) -> Tensor:
    """GluonTS's ``Coverage[q]``: the share of observed points with ``y ≤ ŷ_q``, ``[Q]`` (ideal: ``q``)."""
    levels = _check_levels(quantiles)
    y = _as_float64(observed, "observed")
    mask = _observed_mask(y)
    fq = _quantile_forecast(forecast, y, levels, forecast_type)
    below = (y <= fq) & mask
    return below.reshape(len(levels), -1).sum(1).to(torch.float64) / mask.sum()


def _point_pair(point_forecast: Tensor | ArrayLike, observed: Tensor | ArrayLike) -> tuple[Tensor, Tensor, Tensor]:
    y = _as_float64(observed, "observed")
    f = _as_float64(point_forecast, "point_forecast").to(y.device)
    if f.shape != y.shape:
        raise ValueError(f"point_forecast must have the shape of observed {list(y.shape)}, got {list(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError("point_forecast contains NaN or infinite values")
    return f, y, _observed_mask(y)


def normalized_deviation(point_forecast: Tensor | ArrayLike, observed: Tensor | ArrayLike) -> float:
    """ND ``= Σ |y - ŷ| / Σ |y|`` over the observed points; GluonTS uses the median forecast for ``ŷ``.

    ``point_forecast`` and ``observed`` have the same shape ``[...]``; for a sample forecast pass
    ``sample_quantiles(samples, 0.5)[0]``.

    Raises:
        ValueError: shapes differ, a NaN / infinite forecast, no observed value, or ``Σ |y| = 0``.
    """
    f, y, mask = _point_pair(point_forecast, observed)
    err = torch.where(mask, (y - f).abs(), torch.zeros_like(y)).sum()
    return float(err / _abs_target_sum(y, mask))


def nrmse(point_forecast: Tensor | ArrayLike, observed: Tensor | ArrayLike) -> float:
    """NRMSE ``= sqrt(mean (y - ŷ)²) / mean |y|`` over the observed points; GluonTS uses the mean forecast.

    GluonTS averages per series first (``sqrt(mean_i MSE_i) / mean_i mean|y_i|``); that is the same
    number whenever every series has the same number of observed points, as in fixed-length windows
    without missing values.

    Raises:
        ValueError: shapes differ, a NaN / infinite forecast, no observed value, or ``mean |y| = 0``.
    """
    f, y, mask = _point_pair(point_forecast, observed)
    n = mask.sum()
    mse = torch.where(mask, (y - f) ** 2, torch.zeros_like(y)).sum() / n
    return float(mse.sqrt() / (_abs_target_sum(y, mask) / n))


def seasonal_error(insample: Tensor | ArrayLike, season: int) -> Tensor:
    """In-sample MAE of the seasonal naive forecast: ``mean_t |y_t - y_{t-m}|`` per series, ``[...]``.

    ``insample [..., T]`` is each series' history before the forecast start (NaN = missing: pairs
    with a missing end are skipped). As GluonTS's ``calculate_seasonal_error``, ``m = season`` when
    ``season < T`` and ``m = 1`` otherwise.

    Raises:
        ValueError: ``season < 1``, ``T < 2``, an infinite value, or a series without a complete pair.
    """
    if int(season) != season or season < 1:
        raise ValueError(f"season must be a positive integer, got {season!r}")
    x = _as_float64(insample, "insample")
    if x.ndim < 1 or x.shape[-1] < 2:
        raise ValueError(f"insample must have shape [..., T] with T >= 2, got {list(x.shape)}")
    if torch.isinf(x).any():
        raise ValueError("insample contains infinite values (use NaN for missing values)")
    m = int(season) if season < x.shape[-1] else 1
    diff = (x[..., m:] - x[..., :-m]).abs()
    ok = ~torch.isnan(diff)
    count = ok.sum(-1)
    if (count == 0).any():
        bad = tuple(int(i) for i in torch.nonzero(count == 0)[0].tolist())
        raise ValueError(f"insample series {bad}: no pair of observed values {m} steps apart")
    return torch.where(ok, diff, torch.zeros_like(diff)).sum(-1) / count


def mase(
    point_forecast: Tensor | ArrayLike,
    observed: Tensor | ArrayLike,
    insample: Tensor | ArrayLike,
    season: int,
    *,
    reduction: Literal["mean", "none"] = "mean",
) -> float | Tensor:
    """MASE: ``mean_h |y - ŷ| / seasonal_error(insample, season)`` per series, then the mean over series.

    Args:
        point_forecast: ``[..., H]`` point forecasts (GluonTS: the median of the samples).
        observed: ``[..., H]`` true values; NaN = missing (left out of the per-series mean).
        insample: ``[..., T]`` each series' history before the forecast start (GluonTS uses the whole
            history, not only the model's context window); see :func:`seasonal_error`.
        season: the seasonal period ``m`` (e.g. 24 for hourly data, as
            :func:`nde.data.timeseries.seasonality_for_frequency` gives).
        reduction: ``"mean"`` (a float, GluonTS's aggregate) or ``"none"`` (per series, ``[...]``).

    Raises:
        ValueError: shapes disagree, a series without an observed target, a zero seasonal error (a
            constant history), or the errors of :func:`seasonal_error`.
    """
    f, y, mask = _point_pair(point_forecast, observed)
    if y.ndim < 1:
        raise ValueError("observed must have shape [..., H]")
    scale = seasonal_error(insample, season).to(y.device)
    if scale.shape != y.shape[:-1]:
        raise ValueError(f"insample must have shape [{', '.join(map(str, y.shape[:-1]))}, T], "
                         f"got {list(_as_float64(insample, 'insample').shape)}")
    if (scale == 0).any():
        bad = tuple(int(i) for i in torch.nonzero(scale == 0)[0].tolist())
        raise ValueError(f"insample series {bad} has zero seasonal error (constant history): MASE is undefined")
    count = mask.sum(-1)
    if (count == 0).any():
        bad = tuple(int(i) for i in torch.nonzero(count == 0)[0].tolist())
        raise ValueError(f"series {bad} has no observed target value")
    mae = torch.where(mask, (y - f).abs(), torch.zeros_like(y)).sum(-1) / count
    per_series = mae / scale
    if reduction == "none":
        return per_series
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return float(per_series.mean())


def forecast_metrics(
    samples: Tensor | ArrayLike,
    observed: Tensor | ArrayLike,
    *,
    insample: Tensor | ArrayLike | None = None,
    season: int | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> dict[str, float]:
    """All scores of a sample forecast ``samples [S, ..., H]`` of ``observed [..., H]`` in one dictionary.

    Keys: ``crps`` (mean exact CRPS of the ensemble, :func:`~nde.metrics.crps_from_samples`, in the unit
    of ``y``), ``crps_normalized`` (``Σ CRPS / Σ |y|``: what ``mean_wql`` approximates), ``mean_wql``
    (:func:`mean_weighted_quantile_loss`), ``nd`` (of the sample median), ``nrmse`` (of the sample mean),
    ``coverage_50`` / ``coverage_90`` (shares of points inside the central 50% / 90% intervals,
    :func:`~nde.metrics.interval_coverage`), ``n_points`` (observed points) and, when ``insample [..., T]``
    and ``season`` are given, ``mase`` (of the sample median). NaN in ``observed`` = missing.
    """
    y = _as_float64(observed, "observed")
    mask = _observed_mask(y)
    x = _as_float64(samples, "samples").to(y.device)
    _check_forecast(x, y, "samples")
    y_filled = torch.where(mask, y, torch.zeros_like(y))
    crps = crps_from_samples(x, y_filled)[mask]
    median = sample_quantiles(x, [0.5])[0]
    out = {
        "crps": float(crps.mean()),
        "crps_normalized": float(crps.sum() / _abs_target_sum(y, mask)),
        "mean_wql": mean_weighted_quantile_loss(x, y, quantiles),
        "nd": normalized_deviation(median, y),
        "nrmse": nrmse(x.mean(0), y),
        "coverage_50": float(interval_coverage(x, y_filled, 0.5)[mask].double().mean()),
        "coverage_90": float(interval_coverage(x, y_filled, 0.9)[mask].double().mean()),
        "n_points": int(mask.sum()),
    }
    if (insample is None) != (season is None):
        raise ValueError("give both insample and season for MASE, or neither")
    if insample is not None and season is not None:
        out["mase"] = float(mase(median, y, insample, season))
    if not all(math.isfinite(v) for v in out.values()):
        raise ValueError(f"a score is not finite: {out}")
    return out
