"""Two baseline forecasters of regular time series, with sample paths so their CRPS is comparable.

- :func:`seasonal_naive_forecast`: ``ŷ_{T+h} = y_{T+h-m⌈h/m⌉}``, the value one season ago (GluonTS's
  ``SeasonalNaivePredictor``, a point forecast), optionally with Gaussian noise of the in-sample
  seasonal-difference spread.
- :func:`linear_lag_forecast`: a global linear autoregression on a set of lags, fitted by least squares
  on the training parts of all series, ``y_t = b + Σ_l w_l y_{t-l} + e_t``, ``e_t ~ N(0, s²)``; sample
  paths are drawn autoregressively (each sampled value feeds the later steps), so the forecast
  uncertainty grows with the horizon as the fitted model implies.

Arrays are NumPy float64. Shapes: ``context [N, C]`` (the ``C`` values before each forecast origin,
NaN = missing), samples ``[S, N, H]`` (``S`` sample paths, ``H`` steps ahead): the layout
:func:`nde.metrics.forecast_metrics` takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from nde._rng import as_generator as _rng

__all__ = [
    "LinearLagModel",
    "fit_linear_lag_model",
    "linear_lag_forecast",
    "seasonal_naive_forecast",
]


def _context(context: ArrayLike) -> np.ndarray:
    c = np.asarray(context, dtype=np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[1] < 1:
        raise ValueError(f"context must have shape [N, C] (or [C]) with C >= 1, got {list(np.shape(context))}")
    if np.isinf(c).any():
        raise ValueError("context contains infinite values (use NaN for missing values)")
    return c


def _positive_int(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def seasonal_naive_forecast(
    context: ArrayLike,
    prediction_length: int,
    season: int,
    *,
    num_samples: int = 1,
    noise: bool = False,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Seasonal naive forecast: each step repeats the value one season earlier, ``[S, N, H]``.

    Point forecast (GluonTS's ``SeasonalNaivePredictor``): ``ŷ_{T+h} = context[C - m + ((h - 1) mod m)]``
    for ``h = 1 .. H`` (``m = season``); a missing value there is replaced by the same phase in the
    nearest earlier season that has one. With ``noise=False`` all ``S`` samples equal the point forecast,
    whose CRPS is then its absolute error. With ``noise=True`` sample ``s`` is
    ``ŷ_{T+h} + σ̂ sqrt(⌈h/m⌉) z``, ``z ~ N(0, 1)``, with ``σ̂² = mean_t (y_t - y_{t-m})²`` over the context
    (the variance of a seasonal random walk ``⌈h/m⌉`` seasons ahead).

    Raises:
        ValueError: ``C < season``, a phase with no observed value in the context, ``noise=True``
            with no complete seasonal pair in a context, or bad sizes / seed.
    """
    c = _context(context)
    h = _positive_int("prediction_length", prediction_length)
    m = _positive_int("season", season)
    s = _positive_int("num_samples", num_samples)
    n, width = c.shape
    if width < m:
        raise ValueError(f"context length {width} is shorter than the season {m}")
    steps = np.arange(h)
    index = width - m + (steps % m)  # [H]
    point = c[:, index]
    # Missing values: step back whole seasons, keeping the phase, until a value is found.
    back = index.copy()
    while np.isnan(point).any():
        back = back - m
        if (back < 0).all():
            row, col = (int(v) for v in np.argwhere(np.isnan(point))[0])
            raise ValueError(f"context row {row}: no observed value at the phase of forecast step {col + 1}")
        earlier = np.where(back >= 0, c[:, np.maximum(back, 0)], np.nan)
        point = np.where(np.isnan(point), earlier, point)
    samples = np.broadcast_to(point, (s, n, h)).copy()
    if noise:
        diff = c[:, m:] - c[:, :-m]
        ok = ~np.isnan(diff)
        count = ok.sum(1)
        if (count == 0).any():
            row = int(np.flatnonzero(count == 0)[0])
            raise ValueError(f"context row {row}: no pair of observed values one season apart (noise=True)")
        sigma = np.sqrt(np.where(ok, diff**2, 0.0).sum(1) / count)  # [N]
        seasons_ahead = np.ceil((steps + 1) / m)  # [H]
        z = _rng(seed).standard_normal((s, n, h))
        samples += sigma[None, :, None] * np.sqrt(seasons_ahead)[None, None, :] * z
    return samples


@dataclass(frozen=True)
class LinearLagModel:
    """A fitted linear autoregression ``y_t = intercept + Σ_l weights[l] y_{t - lags[l]} + N(0, noise_std²)``.

    Attributes:
        lags: the lags, increasing, in time steps.
        intercept: ``b``.
        weights: ``[L]`` float64 coefficients, in the order of ``lags``.
        noise_std: residual standard deviation ``sqrt(RSS / (n_rows - L - 1))``.
        n_rows: regression rows used (targets with all their lags observed).
        n_dropped: candidate rows left out because the target or a lag was missing.
    """

    lags: tuple[int, ...]
    intercept: float
    weights: np.ndarray
    noise_std: float
    n_rows: int
    n_dropped: int

    def _last_values(self, context: ArrayLike) -> np.ndarray:
        """``[N, max(lags)]`` the last context values, checked."""
        c = _context(context)
        p = max(self.lags)
        if c.shape[1] < p:
            raise ValueError(f"context length {c.shape[1]} is shorter than the largest lag {p}")
        used = c[:, c.shape[1] - p :]
        if np.isnan(used).any():
            row = int(np.argwhere(np.isnan(used))[0][0])
            raise ValueError(f"context row {row}: a missing value among the last {p} (the lags need them)")
        return used

    def sample(
        self,
        context: ArrayLike,
        prediction_length: int,
        num_samples: int = 100,
        seed: int | np.random.Generator = 0,
    ) -> np.ndarray:
        """``[S, N, H]`` sample paths drawn step by step, each sampled value feeding the later steps.

        Raises:
            ValueError: a context shorter than the largest lag or with a missing value among its last
                ``max(lags)`` values, or bad sizes / seed.
        """
        h = _positive_int("prediction_length", prediction_length)
        s = _positive_int("num_samples", num_samples)
        used = self._last_values(context)
        p = used.shape[1]
        z = _rng(seed).standard_normal((s, used.shape[0], h))
        path = np.concatenate([np.broadcast_to(used, (s, *used.shape)), np.zeros((s, used.shape[0], h))], axis=2)
        lag = np.asarray(self.lags)
        for k in range(h):
            t = p + k
            mean = self.intercept + path[:, :, t - lag] @ self.weights
            path[:, :, t] = mean + self.noise_std * z[:, :, k]
        return path[:, :, p:]

    def mean_forecast(self, context: ArrayLike, prediction_length: int) -> np.ndarray:
        """``[N, H]`` the exact conditional mean of the fitted model (the recursion with zero noise)."""
        h = _positive_int("prediction_length", prediction_length)
        used = self._last_values(context)
        p = used.shape[1]
        path = np.concatenate([used, np.zeros((used.shape[0], h))], axis=1)
        lag = np.asarray(self.lags)
        for k in range(h):
            t = p + k
            path[:, t] = self.intercept + path[:, t - lag] @ self.weights
        return path[:, p:]


def fit_linear_lag_model(
    train: Sequence[ArrayLike] | np.ndarray, lags: Sequence[int], *, ridge: float = 0.0
) -> LinearLagModel:
    """Least-squares fit of one linear autoregression on the lags, pooled over all training series.

    Every time ``t >= max(lags)`` of every series whose target and lags are all observed is a row
    ``(1, y_{t-l_1}, ..., y_{t-l_L}) -> y_t``. With ``ridge = λ > 0`` the weights (not the intercept) are
    penalised by ``λ Σ w²``.

    Args:
        train: ``N`` float arrays ``[T_i]`` (or ``[N, T]``), NaN = missing.
        lags: distinct positive lags.

    Raises:
        ValueError: bad lags or ``ridge``, an infinite value, or fewer usable rows than ``L + 2``.
    """
    lag = sorted({int(v) for v in lags})
    if not lag or lag[0] < 1 or len(lag) != len(list(lags)):
        raise ValueError(f"lags must be distinct positive integers, got {list(lags)}")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    p = lag[-1]
    rows_x, rows_y, dropped = [], [], 0
    if isinstance(train, np.ndarray) and train.ndim == 1:
        train = [train]
    series = [np.asarray(v, dtype=np.float64).ravel() for v in train]
    for i, v in enumerate(series):
        if np.isinf(v).any():
            raise ValueError(f"training series {i} contains infinite values (use NaN for missing values)")
        if len(v) <= p:
            continue
        x = np.stack([v[p - l : len(v) - l] for l in lag], axis=1)
        y = v[p:]
        ok = ~np.isnan(x).any(1) & ~np.isnan(y)
        dropped += int((~ok).sum())
        rows_x.append(x[ok])
        rows_y.append(y[ok])
    n_rows = sum(len(r) for r in rows_y)
    if n_rows < len(lag) + 2:
        raise ValueError(f"only {n_rows} usable rows for {len(lag)} lags (need at least {len(lag) + 2}); "
                         f"the series must be longer than the largest lag {p}")
    x = np.concatenate(rows_x)
    y = np.concatenate(rows_y)
    design = np.concatenate([np.ones((n_rows, 1)), x], axis=1)
    if ridge > 0:
        penalty = np.diag([0.0] + [float(ridge)] * len(lag))
        beta = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    else:
        beta = np.linalg.lstsq(design, y, rcond=None)[0]
    residual = y - design @ beta
    noise_std = float(np.sqrt(residual @ residual / (n_rows - len(lag) - 1)))
    return LinearLagModel(
        lags=tuple(lag),
        intercept=float(beta[0]),
        weights=beta[1:].copy(),
        noise_std=noise_std,
        n_rows=int(n_rows),
        n_dropped=dropped,
    )


def linear_lag_forecast(
    train: Sequence[ArrayLike] | np.ndarray,
    context: ArrayLike,
    prediction_length: int,
    lags: Sequence[int],
    *,
    num_samples: int = 100,
    seed: int | np.random.Generator = 0,
    ridge: float = 0.0,
) -> np.ndarray:
    """Fit :func:`fit_linear_lag_model` on ``train`` and draw ``[S, N, H]`` sample paths from ``context [N, C]``.

    ``C`` must be at least ``max(lags)``. Errors as :func:`fit_linear_lag_model` and
    :meth:`LinearLagModel.sample`.
    """
    model = fit_linear_lag_model(train, lags, ridge=ridge)
    return model.sample(context, prediction_length, num_samples=num_samples, seed=seed)
