"""Make regularly sampled series irregular by dropping observation times at random.

As in Kidger et al. (2020), *Neural Controlled Differential Equations for Irregular Time Series*
(CharacterTrajectories experiment), where 30%, 50% or 70% of the time points of every series were
removed at random, all channels of a removed time point together.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["drop_observations"]


def drop_observations(
    frame: pd.DataFrame, fraction: float, *, id_col: str, seed: int, keep_at_least: int = 1
) -> pd.DataFrame:
    """Remove a random ``fraction`` of the rows (observation times) of every series.

    Each series (the rows sharing a value of ``id_col``) of ``n`` rows loses
    ``min(round(fraction * n), max(n - keep_at_least, 0))`` rows, chosen uniformly at random without
    replacement; a row is removed whole, i.e. all channels of that time point at once. Python's
    ``round`` is used (half to even: 2.5 -> 2). The rows kept are returned in their original order
    with their original index labels (use ``.reset_index(drop=True)`` for ``0 .. n - 1``).

    The choice is made with ``numpy.random.default_rng(seed)`` (one random key per row of
    ``frame``), so the same ``frame`` and ``seed`` always give the same result and the global
    NumPy state is neither used nor changed.

    Args:
        frame: long-format table, one row per (series, observation time).
        fraction: share of each series' rows to drop, in ``[0, 1)``.
        id_col: the series identifier column.
        seed: seed of the random generator.
        keep_at_least: never leave a series with fewer rows than this (a shorter series keeps all).

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)`` (or NaN), ``keep_at_least`` negative, ``id_col`` not a
            column of ``frame`` (the message names it), or a missing series id.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    fraction = float(fraction)
    if not (0.0 <= fraction < 1.0) or math.isnan(fraction):
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if isinstance(keep_at_least, bool) or int(keep_at_least) != keep_at_least or keep_at_least < 0:
        raise ValueError(f"keep_at_least must be a non-negative integer, got {keep_at_least!r}")
    if id_col not in frame.columns:
        raise ValueError(f"id_col {id_col!r} is not a column of the frame; columns are {list(frame.columns)}")
    codes, _ = pd.factorize(frame[id_col], sort=False)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"column {id_col!r}: missing series id at row {row} (index {frame.index[row]!r})")

    n_rows = len(frame)
    rng = np.random.default_rng(seed)
    keys = rng.random(n_rows)
    lengths = np.bincount(codes, minlength=int(codes.max()) + 1 if n_rows else 0)
    n_drop = np.array([round(fraction * int(n)) for n in lengths], dtype=np.int64)
    n_drop = np.minimum(n_drop, np.maximum(lengths - int(keep_at_least), 0))
    # Rank of each row's key within its series: the n_drop smallest keys of a series are dropped,
    # which is a uniform random subset of that size.
    order = np.lexsort((keys, codes))  # by series, then by key
    starts = np.cumsum(lengths) - lengths
    rank = np.empty(n_rows, dtype=np.int64)
    rank[order] = np.arange(n_rows) - np.repeat(starts, lengths)
    keep = rank >= n_drop[codes]
    return frame.iloc[np.flatnonzero(keep)]
