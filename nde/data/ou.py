"""Loader and forecasting truth for the shipped Ornstein-Uhlenbeck data set.

600 paths of the stationary OU process ``dX = θ (μ - X) dt + σ dW`` (θ = 0.5, μ = 1, σ = 0.8),
simulated exactly and observed without noise at the points of a Poisson process of rate 4 on
``[0, 10]`` (see ``datasets/ou/README.md``). The CSV has columns ``series_id,time,x``.

Because the law is known, so is the best possible probabilistic forecast: the OU process is Markov
with Gaussian transitions, so given the last observed value ``x`` at time ``s`` the value at
``s + Δ`` is ``N(μ + (x - μ) e^{-θΔ}, σ²/(2θ) (1 - e^{-2θΔ}))`` (:func:`ou_transition`).
:func:`ou_oracle_forecast_scores` scores this oracle, a floor for any model's forecast CRPS / MSE.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike

from nde.data._longcsv import read_long_csv
from nde.data.forecast import forecast_context_mask
from nde.data.registry import dataset_path

__all__ = [
    "OU_COLUMNS",
    "OU_PARAMETERS",
    "gaussian_crps",
    "load_ou",
    "ou_oracle_forecast_scores",
    "ou_transition",
]

OU_COLUMNS: tuple[str, ...] = ("series_id", "time", "x")

#: Parameters of the shipped data set (``datasets/ou/parameters.json`` holds the same values).
OU_PARAMETERS: dict[str, Any] = {
    "theta": 0.5,
    "mu": 1.0,
    "sigma": 0.8,
    "window": (0.0, 10.0),
    "rate": 4.0,
    "min_points": 5,
    "n_series": 600,
    "seed": 0,
}


def load_ou(path: str | Path | None = None) -> pd.DataFrame:
    """Load the OU data set as a long-format ``DataFrame``.

    Args:
        path: the CSV file, or a folder holding ``ou.csv``; default: the shipped file found with
            ``dataset_path("ou")``.

    Returns:
        One row per observation, in file order, with columns ``series_id`` (str), ``time`` and ``x``
        (float64). The shipped file has 600 series, 23 812 rows, 23-64 observations per series.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: (a ``ValueError``) empty file, a missing column, a missing / non-numeric
            value or times not strictly increasing within a series; the message names the file.
    """
    path = dataset_path("ou") / "ou.csv" if path is None else Path(path)
    if path.is_dir():
        path = path / "ou.csv"
    return read_long_csv(path, what="ou", columns=OU_COLUMNS)


def _check_params(theta: float, sigma: float) -> None:
    if not theta > 0:
        raise ValueError(f"theta must be > 0, got {theta}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")


def ou_transition(
    x_last: ArrayLike, dt: ArrayLike, theta: float, mu: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Gaussian law of ``X(s + dt)`` given ``X(s) = x_last`` for the OU process.

    Returns ``(mean, std)`` (float64 arrays, broadcast shape of ``x_last`` and ``dt``) with
    ``mean = μ + (x_last - μ) e^{-θ dt}`` and ``std = σ / sqrt(2θ) * sqrt(1 - e^{-2θ dt})``.

    Raises:
        ValueError: a negative ``dt``, ``theta <= 0`` or ``sigma < 0``.
    """
    _check_params(theta, sigma)
    x_last = np.asarray(x_last, dtype=np.float64)
    dt = np.asarray(dt, dtype=np.float64)
    if (dt < 0).any():
        raise ValueError("dt must be >= 0")
    decay = np.exp(-theta * dt)
    mean = np.asarray(mu + (x_last - mu) * decay)
    std = sigma / math.sqrt(2.0 * theta) * np.sqrt(-np.expm1(-2.0 * theta * dt))
    return mean, np.broadcast_to(std, mean.shape).copy()


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.as_tensor(z, dtype=torch.float64)).numpy().reshape(np.shape(z))


def gaussian_crps(mean: ArrayLike, std: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Continuous ranked probability score of the forecast ``N(mean, std²)`` at outcome ``y``.

    Closed form (Gneiting & Raftery 2007): ``std * [z (2Φ(z) - 1) + 2φ(z) - 1/sqrt(π)]`` with
    ``z = (y - mean) / std``; it equals ``E|X - y| - E|X - X'| / 2`` for independent ``X, X'`` of the
    forecast law. Where ``std == 0`` it is ``|y - mean|``. Lower is better; same unit as ``y``.

    Returns:
        float64 array of the broadcast shape of the inputs.

    Raises:
        ValueError: a negative ``std``.
    """
    mean, std, y = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (mean, std, y)))
    if (std < 0).any():
        raise ValueError("std must be >= 0")
    pos = std > 0
    safe = np.where(pos, std, 1.0)
    z = (y - mean) / safe
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    crps = safe * (z * (2.0 * _norm_cdf(z) - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    return np.where(pos, crps, np.abs(y - mean))


def ou_oracle_forecast_scores(
    frame: pd.DataFrame,
    forecast_fraction: float = 0.2,
    *,
    id_col: str = "series_id",
    time_col: str = "time",
    value_col: str = "x",
    theta: float | None = None,
    mu: float | None = None,
    sigma: float | None = None,
    level: float = 0.9,
) -> dict[str, float]:
    """Scores of the exact (oracle) OU forecast on the targets of every series of ``frame``.

    Split (the one ``nde fit --task forecast`` uses, :func:`nde.data.forecast_context_mask`): for a
    series with first / last observation times ``t_first`` / ``t_last``, the context is the
    observations with ``time <= t_first + (1 - forecast_fraction) * (t_last - t_first)`` and the
    targets are the rest. Each target at time ``t`` is forecast, by the Markov property, from the last
    context observation ``(s, x_s)`` alone: ``N(mean, std²) = ou_transition(x_s, t - s, θ, μ, σ)``.

    Args:
        frame: long-format table, e.g. :func:`load_ou`; rows need not be sorted.
        forecast_fraction: share of each series' time span to forecast, in ``(0, 1)``.
        id_col, time_col, value_col: column names.
        theta, mu, sigma: the OU parameters; default: those of the shipped data (``OU_PARAMETERS``).
        level: nominal coverage of the central prediction interval ``mean ± z std``.

    Returns:
        ``{"crps": mean CRPS, "mse": mean squared error of the conditional mean, "coverage": share of
        targets inside the central ``level`` interval, "level": level, "n_series": series with at least
        one target, "n_targets": number of targets}``; means are over all targets pooled.

    Raises:
        ValueError: bad ``forecast_fraction`` or ``level``, a missing column, missing / non-finite
            times or values, duplicate times within a series, or no target at all.
    """
    theta = float(OU_PARAMETERS["theta"]) if theta is None else float(theta)
    mu = float(OU_PARAMETERS["mu"]) if mu is None else float(mu)
    sigma = float(OU_PARAMETERS["sigma"]) if sigma is None else float(sigma)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if value_col not in frame.columns:
        raise ValueError(f"column {value_col!r} is not in the frame; columns are {list(frame.columns)}")
    is_ctx = forecast_context_mask(frame, forecast_fraction, id_col=id_col, time_col=time_col)
    codes, _ = pd.factorize(frame[id_col], sort=False)
    t = pd.to_numeric(frame[time_col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    x = pd.to_numeric(frame[value_col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"column {value_col!r}: missing or non-finite value at row {row}")

    order = np.lexsort((t, codes))  # by series, then time
    codes_s, t_s, x_s, ctx_s = codes[order], t[order], x[order], is_ctx[order]
    if ((codes_s[1:] == codes_s[:-1]) & (np.diff(t_s) == 0)).any():
        raise ValueError(f"column {time_col!r}: duplicate time within a series")
    n_series = int(codes.max()) + 1
    lengths = np.bincount(codes_s, minlength=n_series)
    starts = np.cumsum(lengths) - lengths
    n_ctx = np.bincount(codes_s, weights=ctx_s.astype(np.float64), minlength=n_series).astype(np.int64)
    last_ctx = starts + n_ctx - 1  # context rows are a prefix of each (time-sorted) series

    tgt = np.flatnonzero(~ctx_s)
    if tgt.size == 0:
        raise ValueError("no forecast targets: every series has a single observation time")
    anchor = last_ctx[codes_s[tgt]]
    mean, std = ou_transition(x_s[anchor], t_s[tgt] - t_s[anchor], theta, mu, sigma)
    y = x_s[tgt]
    z = float(torch.special.ndtri(torch.tensor(0.5 + level / 2.0, dtype=torch.float64)))
    return {
        "crps": float(gaussian_crps(mean, std, y).mean()),
        "mse": float(((y - mean) ** 2).mean()),
        "coverage": float((np.abs(y - mean) <= z * std).mean()),
        "level": float(level),
        "n_series": int(np.unique(codes_s[tgt]).size),
        "n_targets": int(tgt.size),
    }
