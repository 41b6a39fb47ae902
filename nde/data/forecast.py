"""The context / target split of irregular series for forecasting.

For each series with first and last observation times ``t_first`` and ``t_last``, the *context* is
the observations with ``time <= t_first + (1 - forecast_fraction) * (t_last - t_first)`` and the
*targets* are the rest: the last ``forecast_fraction`` of each series' time span is forecast. This is
the split used by ``nde fit --task forecast`` and by :func:`nde.data.ou_oracle_forecast_scores`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["forecast_context_mask", "forecast_cutoff"]


def forecast_cutoff(t_first: np.ndarray | float, t_last: np.ndarray | float, forecast_fraction: float):
    """The last context time: ``t_first + (1 - forecast_fraction) * (t_last - t_first)`` (elementwise)."""
    return t_first + (1.0 - forecast_fraction) * (t_last - t_first)


def forecast_context_mask(
    frame: pd.DataFrame, forecast_fraction: float = 0.2, *, id_col: str = "series_id", time_col: str = "time"
) -> np.ndarray:
    """Boolean ``[n_rows]`` array, True for the context rows of ``frame`` and False for the targets.

    Row ``r`` of series ``s`` is context when ``time[r] <= t_first(s) + (1 - forecast_fraction) *
    (t_last(s) - t_first(s))``, with ``t_first`` / ``t_last`` the smallest / largest time of ``s``.
    Every series keeps its first observation as context; a series with two or more distinct times
    has at least one target. Rows need not be sorted.

    Raises:
        ValueError: ``forecast_fraction`` not in ``(0, 1)``, a missing column (named in the message),
            a missing series id or a missing / non-finite time.
    """
    forecast_fraction = float(forecast_fraction)
    if not (0.0 < forecast_fraction < 1.0) or math.isnan(forecast_fraction):
        raise ValueError(f"forecast_fraction must be in (0, 1), got {forecast_fraction}")
    for col in (id_col, time_col):
        if col not in frame.columns:
            raise ValueError(f"column {col!r} is not in the frame; columns are {list(frame.columns)}")
    codes, _ = pd.factorize(frame[id_col], sort=False)
    if (codes < 0).any():
        raise ValueError(f"column {id_col!r}: missing series id at row {int(np.flatnonzero(codes < 0)[0])}")
    t = pd.to_numeric(frame[time_col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(t).all():
        row = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f"column {time_col!r}: missing or non-finite time at row {row}")
    n_series = int(codes.max()) + 1 if len(codes) else 0
    t_first = np.full(n_series, np.inf)
    t_last = np.full(n_series, -np.inf)
    np.minimum.at(t_first, codes, t)
    np.maximum.at(t_last, codes, t)
    cutoff = forecast_cutoff(t_first, t_last, forecast_fraction)
    return t <= cutoff[codes]
