"""Regular time series in long format: reading, rolling test windows, and per-frequency lags / seasonality.

The input is one row per time point with three columns (names configurable)::

    item_id,timestamp,target
    a,2024-01-01 00:00:00,12.5
    a,2024-01-01 01:00:00,
    ...

``item_id`` names the series, ``timestamp`` is anything :func:`pandas.to_datetime` parses and ``target``
is a number; an empty target (NaN) is a missing value and is kept as NaN. Rows may come in any order;
within an item the timestamps must be distinct and lie on one regular grid (a missing time point is a
row with an empty target, not an absent row). The grid's frequency is inferred per item with
:func:`pandas.infer_freq` and must agree across items, or it is given explicitly.

Rolling evaluation (GluonTS's convention, used by TSDiff): the last ``windows`` non-overlapping blocks of
``prediction_length`` points of each series are the test windows; the training part of a series ends
before its first test window, and the context of a later window includes the true values of the
earlier ones.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from nde.data.registry import dataset_path
from nde.data.spirals import DataFormatError

__all__ = [
    "RegularTimeSeries",
    "RollingWindows",
    "lags_for_frequency",
    "load_time_series",
    "read_time_series",
    "rolling_test_windows",
    "seasonality_for_frequency",
]


@dataclass(frozen=True)
class RegularTimeSeries:
    """``N`` regularly sampled univariate series with timestamps.

    Attributes:
        item_ids: ``N`` series names, in order of first appearance in the input.
        starts: ``N`` timestamps of each series' first point.
        freq: the common frequency as a pandas alias (e.g. ``"h"``, ``"30min"``, ``"MS"``).
        values: ``N`` float64 arrays ``[T_i]`` in time order; NaN = missing.
    """

    item_ids: tuple[str, ...]
    starts: tuple[pd.Timestamp, ...]
    freq: str
    values: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def lengths(self) -> np.ndarray:
        """``[N]`` int64 number of time points per series (missing values included)."""
        return np.array([len(v) for v in self.values], dtype=np.int64)

    def timestamps(self, i: int) -> pd.DatetimeIndex:
        """The ``T_i`` timestamps of series ``i``."""
        return pd.date_range(self.starts[i], periods=len(self.values[i]), freq=self.freq)

    def to_frame(
        self, *, item_col: str = "item_id", timestamp_col: str = "timestamp", target_col: str = "target"
    ) -> pd.DataFrame:
        """The long-format table (one row per time point, series after series)."""
        parts = [
            pd.DataFrame({item_col: item, timestamp_col: self.timestamps(i), target_col: self.values[i]})
            for i, item in enumerate(self.item_ids)
        ]
        return pd.concat(parts, ignore_index=True)

    def stack(self) -> np.ndarray:
        """``[N, T]`` float64 array of all values; needs equal lengths.

        Raises:
            ValueError: the series do not all have the same length.
        """
        lengths = self.lengths
        if len(set(lengths.tolist())) != 1:
            raise ValueError(f"series lengths differ ({lengths.min()} to {lengths.max()}); stack needs equal lengths")
        return np.stack(self.values)


def _offset(freq: str | pd.DateOffset) -> pd.DateOffset:
    try:
        return to_offset(freq)
    except (ValueError, TypeError) as err:
        raise ValueError(f"invalid frequency {freq!r}: {err}") from None


def _infer_offset(index: pd.DatetimeIndex) -> pd.DateOffset | None:
    """``pd.infer_freq`` as an offset (``None`` when irregular); works with strings or offsets returned."""
    with warnings.catch_warnings():
        # pandas 3 warns that infer_freq will return an offset instead of a string; both are handled.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        found = pd.infer_freq(index)
    return None if found is None else to_offset(found)


def _longest_regular_prefix(index: pd.DatetimeIndex) -> int:
    """Largest ``m`` such that ``index[:m]`` is regular (``m >= 2``); ``infer_freq`` needs 3 points."""
    lo, hi = 2, len(index)  # index[:2] is always regular; index[:hi] is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _infer_offset(index[:mid]) is None:
            hi = mid
        else:
            lo = mid
    return lo


def read_time_series(
    source: str | Path | pd.DataFrame,
    *,
    item_col: str = "item_id",
    timestamp_col: str = "timestamp",
    target_col: str = "target",
    freq: str | None = None,
) -> RegularTimeSeries:
    """Read long-format regular time series from a CSV file or a ``DataFrame``.

    Args:
        source: a CSV path or a ``DataFrame`` with the three columns (others are ignored).
        item_col, timestamp_col, target_col: the column names.
        freq: the frequency (a pandas alias such as ``"h"``, ``"30min"``, ``"D"``, ``"MS"``); default:
            inferred per item with :func:`pandas.infer_freq` (items with fewer than 3 points take the
            others' frequency).

    Returns:
        A :class:`RegularTimeSeries`; items in order of first appearance, each sorted by time.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: (a ``ValueError``) empty input, a missing column, a missing item id, a
            timestamp that does not parse, a target that is not a number (empty is fine: missing) or
            is infinite, duplicate timestamps within an item, timestamps off a regular grid, items
            with different frequencies, or a frequency that cannot be inferred. Messages name the
            file, the item and the CSV line (or the frame's row position).
        ValueError: an invalid ``freq``.
    """
    if isinstance(source, pd.DataFrame):
        frame, where, first_line = source, "frame", None
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"time series file not found: {path}")
        try:
            frame = pd.read_csv(path, dtype={item_col: str}, keep_default_na=True)
        except pd.errors.EmptyDataError:
            raise DataFormatError(f"{path}: file is empty") from None
        where, first_line = str(path), 2  # line 1 is the header

    def at(row: int) -> str:
        return f"line {row + first_line}" if first_line is not None else f"row {row}"

    missing = [c for c in (item_col, timestamp_col, target_col) if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{where}: missing column(s) {missing}; expected {[item_col, timestamp_col, target_col]}, "
            f"found {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise DataFormatError(f"{where}: no data rows")
    given_offset = None if freq is None else _offset(freq)

    raw_ids = frame[item_col]
    bad = raw_ids.isna().to_numpy()
    if bad.any():
        raise DataFormatError(f"{where}: {at(int(np.flatnonzero(bad)[0]))}: missing {item_col}")
    ids = raw_ids.astype(str).to_numpy(dtype=object)

    raw_t = frame[timestamp_col]
    t = pd.to_datetime(raw_t, errors="coerce")
    bad = t.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{where}: item {ids[row]!r}, {at(row)}: {timestamp_col} {raw_t.iloc[row]!r} is not a timestamp"
        )
    t_ns = pd.DatetimeIndex(t)

    raw_y = frame[target_col]
    y = pd.to_numeric(raw_y, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(y) & ~raw_y.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{where}: item {ids[row]!r}, {at(row)}: {target_col} {raw_y.iloc[row]!r} is not a number"
        )
    bad = np.isinf(y)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{where}: item {ids[row]!r}, {at(row)}: {target_col} is infinite")

    codes, uniques = pd.factorize(pd.Series(ids), sort=False)
    # Within each item, time order; the sort is stable so ties keep file order for the duplicate message.
    order = np.lexsort((t_ns.asi8, codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    groups = np.split(order, bounds)

    indexes: list[pd.DatetimeIndex] = []
    for g in groups:
        idx = t_ns[g]
        same = np.flatnonzero(idx[1:] == idx[:-1])
        if same.size:
            k = int(same[0])
            raise DataFormatError(
                f"{where}: item {ids[g[0]]!r}, {at(int(g[k + 1]))}: duplicate {timestamp_col} {idx[k]} "
                f"(also at {at(int(g[k]))})"
            )
        indexes.append(idx)

    if given_offset is not None:
        offset = given_offset
    else:
        inferred: dict[str, tuple[int, pd.DateOffset]] = {}
        for gi, (g, idx) in enumerate(zip(groups, indexes, strict=True)):
            if len(idx) < 3:
                continue
            found = _infer_offset(idx)
            if found is None:
                k = _longest_regular_prefix(idx)
                raise DataFormatError(
                    f"{where}: item {uniques[gi]!r}, {at(int(g[k]))}: timestamps are not regular "
                    f"({idx[k - 2]}, {idx[k - 1]}, then {idx[k]}); pandas.infer_freq finds no frequency. "
                    f"Give a row with an empty {target_col} for a missing time point"
                )
            inferred.setdefault(found.freqstr, (gi, found))
        if not inferred:
            raise DataFormatError(
                f"{where}: cannot infer the frequency: every item has fewer than 3 timestamps; pass freq="
            )
        if len(inferred) > 1:
            (f1, (g1, _)), (f2, (g2, _)) = list(inferred.items())[:2]
            raise DataFormatError(
                f"{where}: items disagree on the frequency: item {uniques[g1]!r} has {f1!r}, "
                f"item {uniques[g2]!r} has {f2!r}"
            )
        offset = next(iter(inferred.values()))[1]

    for gi, (g, idx) in enumerate(zip(groups, indexes, strict=True)):
        expected = pd.date_range(idx[0], periods=len(idx), freq=offset)
        off = np.flatnonzero(expected != idx)
        if off.size:
            k = int(off[0])
            raise DataFormatError(
                f"{where}: item {uniques[gi]!r}, {at(int(g[k]))}: {timestamp_col} {idx[k]} is not on the "
                f"{offset.freqstr!r} grid from {idx[0]} (expected {expected[k]})"
            )

    return RegularTimeSeries(
        item_ids=tuple(str(u) for u in uniques),
        starts=tuple(idx[0] for idx in indexes),
        freq=offset.freqstr,
        values=tuple(y[g].copy() for g in groups),
    )


def load_time_series(name: str) -> RegularTimeSeries:
    """Read the shipped data set ``datasets/<name>/<name>.csv`` (e.g. ``"taylor"``, ``"seasonal_ar"``).

    Raises:
        UnknownDatasetError: no shipped data set ``name``.
        FileNotFoundError: the folder has no ``<name>.csv``.
    """
    return read_time_series(dataset_path(name) / f"{name}.csv")


@dataclass(frozen=True)
class RollingWindows:
    """The last ``windows`` forecast windows of every series (``M = N * windows`` rows, item-major).

    Window ``w = 0 .. windows-1`` of a series of length ``T`` starts at ``origin = T - (windows - w) H``
    (``H = prediction_length``); its context is the ``C = context_length`` values before ``origin``
    and its target the ``H`` values from ``origin`` on.

    Attributes:
        series: the series the windows come from.
        prediction_length, context_length, windows: ``H``, ``C`` and the number of windows per series.
        item_index: ``[M]`` int64 index of each window's series in ``series``.
        window_index: ``[M]`` int64 position ``w`` of the window among its series' windows.
        origin: ``[M]`` int64 position of the first forecast point in its series.
        forecast_start: ``M`` timestamps of the first forecast points.
        context: ``[M, C]`` float64 values before each origin (NaN = missing).
        target: ``[M, H]`` float64 true values to forecast (NaN = missing).
        train: ``N`` float64 arrays, each series up to (not including) its first test window.
    """

    series: RegularTimeSeries
    prediction_length: int
    context_length: int
    windows: int
    item_index: np.ndarray
    window_index: np.ndarray
    origin: np.ndarray
    forecast_start: tuple[pd.Timestamp, ...]
    context: np.ndarray
    target: np.ndarray
    train: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.origin)

    def histories(self) -> np.ndarray:
        """``[M, L]`` each window's whole history before its origin, left-padded with NaN to ``L = max origin``.

        GluonTS's MASE scales by the seasonal error of this history (not only the context):
        ``nde.metrics.mase(point, windows.target, windows.histories(), season)``.
        """
        width = int(self.origin.max())
        out = np.full((len(self), width), np.nan)
        for k, (i, o) in enumerate(zip(self.item_index, self.origin, strict=True)):
            out[k, width - o :] = self.series.values[i][:o]
        return out


def rolling_test_windows(
    series: RegularTimeSeries, prediction_length: int, context_length: int, windows: int = 1
) -> RollingWindows:
    """Split every series into a training part and its last ``windows`` test windows (GluonTS rolling test).

    The test windows of a series of length ``T`` cover its last ``windows * prediction_length`` points in
    non-overlapping blocks; the training part is the first ``T - windows * prediction_length`` points,
    so nothing of a test window is seen in training. Each window's context is the ``context_length``
    points before it, which for later windows includes the earlier test windows' true values (as in a
    forecast made after those values were observed).

    Raises:
        ValueError: a non-positive length or ``windows``, or a series shorter than
            ``context_length + windows * prediction_length`` (named in the message).
    """
    for name, value, least in (("prediction_length", prediction_length, 1), ("context_length", context_length, 0),
                               ("windows", windows, 1)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    h, c, w = int(prediction_length), int(context_length), int(windows)
    item_index, window_index, origin, starts, context, target, train = [], [], [], [], [], [], []
    for i, values in enumerate(series.values):
        n = len(values)
        first = n - w * h
        if first < max(c, 1):
            raise ValueError(
                f"item {series.item_ids[i]!r} has {n} points; context_length {c} + {w} windows x "
                f"prediction_length {h} needs at least {max(c, 1) + w * h}"
            )
        train.append(values[:first].copy())
        stamps = series.timestamps(i)
        for k in range(w):
            o = first + k * h
            item_index.append(i)
            window_index.append(k)
            origin.append(o)
            starts.append(stamps[o])
            context.append(values[o - c : o])
            target.append(values[o : o + h])
    return RollingWindows(
        series=series,
        prediction_length=h,
        context_length=c,
        windows=w,
        item_index=np.array(item_index, dtype=np.int64),
        window_index=np.array(window_index, dtype=np.int64),
        origin=np.array(origin, dtype=np.int64),
        forecast_start=tuple(starts),
        context=np.array(context, dtype=np.float64).reshape(len(origin), c),
        target=np.array(target, dtype=np.float64),
        train=tuple(train),
    )


# ------------------------------------------------------------------------------------- frequencies

_SECONDS_PER_DAY = 86_400


def _granularity(freq: str | pd.DateOffset) -> tuple[str, int]:
    """``(unit, multiple)`` of a frequency; unit in s, min, h, D, B, W, M, Q, Y."""
    offset = _offset(freq)
    n = int(offset.n)
    if n < 1:
        raise ValueError(f"frequency {freq!r} must have a positive multiple")
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (pd.offsets.Second, "s"),
        (pd.offsets.Minute, "min"),
        (pd.offsets.Hour, "h"),
        (pd.offsets.Day, "D"),
        (pd.offsets.BusinessDay, "B"),
        (pd.offsets.Week, "W"),
        ((pd.offsets.MonthBegin, pd.offsets.MonthEnd), "M"),
        ((pd.offsets.QuarterBegin, pd.offsets.QuarterEnd), "Q"),
        ((pd.offsets.YearBegin, pd.offsets.YearEnd), "Y"),
    )
    for kind, unit in kinds:
        if isinstance(offset, kind):
            return unit, n
    raise ValueError(f"unsupported frequency {freq!r} ({type(offset).__name__})")


def seasonality_for_frequency(freq: str | pd.DateOffset) -> int:
    """The default seasonal period of GluonTS's ``get_seasonality`` (used for MASE and seasonal naive).

    Base periods: second 3600 (an hour), minute 1440 (a day), hour 24, day 1, business day 5, week 1,
    month 12, quarter 4, year 1; for a multiple ``n`` (``"30min"``, ``"2h"``) the period is
    ``base // n`` when ``n`` divides ``base`` and 1 otherwise. So ``"h"`` gives 24, ``"30min"`` 48,
    ``"MS"`` / ``"ME"`` 12. (GluonTS itself knows only month-end names; month starts give 12 here.)

    Raises:
        ValueError: an invalid or unsupported frequency.
    """
    unit, n = _granularity(freq)
    base = {"s": 3600, "min": 1440, "h": 24, "D": 1, "B": 5, "W": 1, "M": 12, "Q": 4, "Y": 1}[unit]
    return base // n if base % n == 0 else 1


def _tsdiff_lags(unit: str, n: int, freq: str | pd.DateOffset) -> list[int]:
    if unit in ("s", "min", "h"):
        step = {"s": 1, "min": 60, "h": 3600}[unit] * n
        if _SECONDS_PER_DAY % step:
            raise ValueError(f"frequency {freq!r} does not divide a day; TSDiff-style lags are whole days")
        per_day = _SECONDS_PER_DAY // step
        return [per_day * k for k in (1, 2, 3, 4, 5, 6, 7, 14, 21, 28)]
    if unit in ("D", "B") and n == 1:
        return [30 * k for k in range(1, 13)]
    raise ValueError(
        f"TSDiff defines lags for hourly and daily data only (and here for any sub-daily step that divides "
        f"a day); no TSDiff lags for {freq!r}: use convention='gluonts'"
    )


def _gluonts_lags(unit: str, n: int, freq: str | pd.DateOffset, lag_ub: int) -> list[int]:
    # The arithmetic, including float floor divisions such as 7 // (1 / 24), is GluonTS's own.
    def around(middle: float, delta: int) -> list[float]:
        return list(np.arange(middle - delta, middle + delta + 1))

    def minute(m: float, cycles: int = 3) -> list[list[float]]:
        return [around(k * 60 // m, 2) for k in range(1, cycles + 1)]

    def hour(m: float, cycles: int = 7) -> list[list[float]]:
        return [around(k * 24 // m, 1) for k in range(1, cycles + 1)]

    def day(m: float, cycles: int = 4) -> list[list[float]]:
        return [around(k * 7 // m, 1) for k in range(1, cycles + 1)] + [around(30 // m, 1)]

    def week(m: float, cycles: int = 3) -> list[list[float]]:
        return [around(k * 52 // m, 1) for k in range(1, cycles + 1)] + [[4 // m, 8 // m, 12 // m]]

    def month(m: float, cycles: int = 3) -> list[list[float]]:
        return [around(k * 12 // m, 1) for k in range(1, cycles + 1)]

    if unit == "M":
        groups = month(n)
    elif unit == "W":
        groups = week(n)
    elif unit == "D":
        groups = day(n) + week(n / 7.0)
    elif unit == "B":
        groups = []  # GluonTS has no seasonal lags for business days
    elif unit == "h":
        groups = hour(n) + day(n / 24.0) + week(n / (24.0 * 7))
    elif unit == "min":
        groups = minute(n) + hour(n / 60.0) + day(n / (60.0 * 24)) + week(n / (60.0 * 24 * 7))
    else:
        raise ValueError(f"GluonTS defines no lags for {freq!r}")
    seasonal = {int(lag) for group in groups for lag in group if 7 < lag <= lag_ub}
    return [1, 2, 3, 4, 5, 6, 7, *sorted(seasonal)]


def lags_for_frequency(
    freq: str | pd.DateOffset,
    convention: Literal["tsdiff", "gluonts"] = "tsdiff",
    *,
    lag_ub: int = 1200,
) -> list[int]:
    """Lags (in time steps, ``y_{t-lag}``) that TSDiff or GluonTS feed a model for a given frequency.

    ``convention="tsdiff"``: TSDiff's ``get_lags_for_freq`` (amazon-science/unconditional-time-series-
    diffusion, ``src/uncond_ts_diff/utils.py``): the same time on the 1st to 7th, 14th, 21st and 28th
    previous day for hourly data, ``24 * [1, ..., 7, 14, 21, 28] = [24, 48, ..., 168, 336, 504, 672]``, and
    ``30 * [1, ..., 12]`` (monthly steps over a year) for daily / business-day data. TSDiff stops at
    multiples of one hour; here any step that divides a day uses the same days, e.g. ``"30min"`` gives
    ``48 * [1, ..., 7, 14, 21, 28]``. Other frequencies raise.

    ``convention="gluonts"``: GluonTS's ``get_lags_for_frequency`` (``src/gluonts/time_feature/lag.py``):
    ``[1, ..., 7]`` and then, for each coarser cycle (hour, day, week, month, year), the same phase in the
    previous cycles ± 1 (± 2 for minutes), kept when ``7 < lag <= lag_ub``. Hourly:
    ``[1..7, 23, 24, 25, 47, 48, 49, ..., 167, 168, 169, 335, 336, 337, 503, 504, 505, 671, 672, 673,
    719, 720, 721]``; monthly: ``[1..7, 11, 12, 13, 23, 24, 25, 35, 36, 37]``.

    Raises:
        ValueError: an invalid frequency, one the convention has no lags for, or a bad ``convention``.
    """
    unit, n = _granularity(freq)
    if convention == "tsdiff":
        return _tsdiff_lags(unit, n, freq)
    if convention == "gluonts":
        if int(lag_ub) != lag_ub or lag_ub < 1:
            raise ValueError(f"lag_ub must be a positive integer, got {lag_ub!r}")
        return _gluonts_lags(unit, n, freq, int(lag_ub))
    raise ValueError(f"convention must be 'tsdiff' or 'gluonts', got {convention!r}")

