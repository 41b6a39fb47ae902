"""Tests for nde.data.drop_observations (random removal of observation times per series)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nde.data import drop_observations, load_japanese_vowels


def _frame() -> pd.DataFrame:
    """Series a (10 rows), b (7), c (1), d (2), rows of a and b interleaved; index labels 100..119."""
    ids = ["a", "b"] * 7 + ["a", "a", "c", "a", "d", "d"]
    pos: dict[str, int] = {}
    times = []
    for sid in ids:
        times.append(float(pos.get(sid, 0)))
        pos[sid] = pos.get(sid, 0) + 1
    n = len(ids)
    return pd.DataFrame(
        {"sid": ids, "t": times, "u": np.arange(n, dtype=float), "v": -np.arange(n, dtype=float)},
        index=np.arange(100, 100 + n),
    )


@pytest.mark.parametrize(
    ("fraction", "keep_at_least", "expected"),
    [
        # round(f * n) rows dropped (half to even), but at least keep_at_least kept.
        (0.5, 1, {"a": 5, "b": 3, "c": 1, "d": 1}),  # b: round(3.5) = 4 dropped; c: round(0.5) = 0
        (0.5, 3, {"a": 5, "b": 3, "c": 1, "d": 2}),  # d is shorter than 3: keeps all
        (0.3, 1, {"a": 7, "b": 5, "c": 1, "d": 1}),  # b: round(2.1) = 2; d: round(0.6) = 1
        (0.0, 1, {"a": 10, "b": 7, "c": 1, "d": 2}),
        (0.95, 0, {"a": 0, "b": 0, "c": 0, "d": 0}),  # round(9.5) = 10, round(6.65) = 7, round(1.9) = 2, c: 1
        (0.95, 2, {"a": 2, "b": 2, "c": 1, "d": 2}),
    ],
)
def test_exact_counts_per_series(fraction: float, keep_at_least: int, expected: dict[str, int]) -> None:
    df = _frame()
    out = drop_observations(df, fraction, id_col="sid", seed=0, keep_at_least=keep_at_least)
    counts = out["sid"].value_counts().to_dict()
    assert {k: counts.get(k, 0) for k in expected} == expected


def test_rows_kept_whole_in_order_with_index() -> None:
    df = _frame()
    before = df.copy()
    out = drop_observations(df, 0.5, id_col="sid", seed=3)
    pd.testing.assert_frame_equal(df, before)  # input untouched
    assert out.index.is_monotonic_increasing  # original order, original labels
    pd.testing.assert_frame_equal(out, df.loc[out.index])  # whole rows (all channels) kept or dropped
    assert len(out) == 10


def test_deterministic_by_seed() -> None:
    df = load_japanese_vowels()
    a = drop_observations(df, 0.3, id_col="series_id", seed=7)
    b = drop_observations(df, 0.3, id_col="series_id", seed=7)
    c = drop_observations(df, 0.3, id_col="series_id", seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.index.equals(c.index) and len(a) == len(c)
    # Exact counts on the real data: each series of n frames keeps n - round(0.3 n).
    n = df.groupby("series_id", sort=False).size()
    kept = a.groupby("series_id", sort=False).size()
    expected = n - np.array([round(0.3 * k) for k in n])
    pd.testing.assert_series_equal(kept, expected, check_names=False)
    assert int(expected.sum()) == 7013  # from the length histogram of the source .ts files


def test_uniform_choice() -> None:
    # Every row of a 10-row series is dropped with probability 3/10 (3 of 10 drawn uniformly).
    df = pd.DataFrame({"id": ["s"] * 10, "t": np.arange(10.0)})
    n_seeds = 1000
    dropped = np.zeros(10)
    for seed in range(n_seeds):
        out = drop_observations(df, 0.3, id_col="id", seed=seed)
        dropped[np.setdiff1d(np.arange(10), out.index.to_numpy())] += 1
    rate = dropped / n_seeds
    se = np.sqrt(0.3 * 0.7 / n_seeds)
    assert dropped.sum() == 3 * n_seeds
    assert np.all(np.abs(rate - 0.3) < 4 * se), rate


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, float("nan")])
def test_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        drop_observations(_frame(), fraction, id_col="sid", seed=0)


def test_bad_id_col_and_keep_at_least() -> None:
    with pytest.raises(ValueError, match="'series'"):
        drop_observations(_frame(), 0.3, id_col="series", seed=0)
    with pytest.raises(ValueError, match="keep_at_least"):
        drop_observations(_frame(), 0.3, id_col="sid", seed=0, keep_at_least=-1)
    df = _frame()
    df.loc[105, "sid"] = None
    with pytest.raises(ValueError, match="missing series id at row 5"):
        drop_observations(df, 0.3, id_col="sid", seed=0)


def test_empty_frame() -> None:
    df = _frame().iloc[:0]
    assert len(drop_observations(df, 0.5, id_col="sid", seed=0)) == 0
