"""Tests of the long-format regular time series reader, rolling test windows, lags and seasonality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nde.data.spirals import DataFormatError
from nde.data.timeseries import (
    RegularTimeSeries,
    lags_for_frequency,
    read_time_series,
    rolling_test_windows,
    seasonality_for_frequency,
)


def frame(item: str, start: str, n: int, freq: str, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": item,
        "timestamp": pd.date_range(start, periods=n, freq=freq),
        "target": offset + np.arange(n, dtype=float),
    })


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- reading


def test_reads_csv_infers_frequency_and_keeps_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "item_id,timestamp,target\n"
                           "b,2024-01-01 00:30,1\n"
                           "a,2024-01-01 01:00,\n"  # missing value, kept as NaN
                           "a,2024-01-01 00:00,5\n"  # rows need not be sorted
                           "b,2024-01-01 00:00,0\n"
                           "a,2024-01-01 02:00,7.5\n"
                           "b,2024-01-01 01:00,2\n")
    with pytest.raises(DataFormatError, match="items disagree on the frequency"):
        read_time_series(path)  # a is hourly, b half-hourly
    path = write(tmp_path, path.read_text().replace("b,2024-01-01 00:30,1", "b,2024-01-01 02:00,1"))
    data = read_time_series(path)
    assert data.item_ids == ("b", "a")  # order of first appearance
    assert data.freq == "h"
    assert data.starts == (pd.Timestamp("2024-01-01 00:00"), pd.Timestamp("2024-01-01 00:00"))
    np.testing.assert_array_equal(data.values[0], [0.0, 2.0, 1.0])
    np.testing.assert_array_equal(data.values[1], [5.0, np.nan, 7.5])
    assert data.lengths.tolist() == [3, 3]
    np.testing.assert_array_equal(data.stack(), np.stack(data.values))
    assert list(data.timestamps(1)) == list(pd.date_range("2024-01-01", periods=3, freq="h"))


@pytest.mark.parametrize(("freq", "start", "expected"), [
    ("30min", "2000-06-05", "30min"), ("D", "2024-02-27", "D"), ("MS", "1749-01-01", "MS"),
    ("ME", "2020-01-31", "ME"), ("W-SUN", "2024-01-07", "W-SUN"),
])
def test_frame_frequencies_and_round_trip(freq: str, start: str, expected: str) -> None:
    df = pd.concat([frame("x", start, 10, freq), frame("y", start, 5, freq, 100.0)])
    data = read_time_series(df)
    assert data.freq == expected
    back = data.to_frame()
    assert back["timestamp"].tolist() == df["timestamp"].tolist()
    np.testing.assert_array_equal(back["target"].to_numpy(), df["target"].to_numpy())


def test_short_items_take_the_common_frequency_and_custom_columns() -> None:
    df = pd.concat([frame("long", "2024-01-01", 6, "h"), frame("short", "2024-03-01 05:00", 2, "h")])
    df = df.rename(columns={"item_id": "id", "timestamp": "ds", "target": "y"})
    data = read_time_series(df, item_col="id", timestamp_col="ds", target_col="y")
    assert data.freq == "h" and data.lengths.tolist() == [6, 2]
    bad = df.copy()
    bad.iloc[-1, 1] = pd.Timestamp("2024-03-01 05:30")
    with pytest.raises(DataFormatError, match=r"item 'short', row 7: .* not on the 'h' grid"):
        read_time_series(bad, item_col="id", timestamp_col="ds", target_col="y")
    with pytest.raises(DataFormatError, match="fewer than 3 timestamps; pass freq"):
        read_time_series(frame("a", "2024-01-01", 2, "h"))
    assert read_time_series(frame("a", "2024-01-01", 2, "h"), freq="h").freq == "h"


def test_explicit_frequency_is_checked() -> None:
    df = frame("a", "2024-01-01", 5, "h")
    assert read_time_series(df, freq="1h").freq == "h"
    with pytest.raises(DataFormatError, match=r"item 'a', row 1: .* not on the '30min' grid"):
        read_time_series(df, freq="30min")
    with pytest.raises(ValueError, match="invalid frequency"):
        read_time_series(df, freq="fortnightly")


def test_csv_errors_name_file_item_and_line(tmp_path: Path) -> None:
    header = "item_id,timestamp,target\n"
    good = ["a,2024-01-01 00:00,1", "a,2024-01-01 01:00,2", "a,2024-01-01 02:00,3", "a,2024-01-01 03:00,4"]

    def csv(lines: list[str]) -> Path:
        return write(tmp_path, header + "\n".join(lines) + "\n")

    cases = [
        ([*good[:2], "a,2024-01-01 01:00,9", *good[2:]], r"item 'a', line 4: duplicate timestamp .* line 3"),
        ([*good[:3], "a,2024-01-01 05:00,4"], r"item 'a', line 5: timestamps are not regular"),
        ([*good[:1], "a,yesterday,2", *good[2:]], r"item 'a', line 3: timestamp 'yesterday' is not a timestamp"),
        ([*good[:2], "a,2024-01-01 02:00,three", *good[3:]], r"item 'a', line 4: target 'three' is not a number"),
        ([*good[:2], "a,2024-01-01 02:00,inf", *good[3:]], r"item 'a', line 4: target is infinite"),
        ([*good[:3], ",2024-01-01 03:00,4"], r"line 5: missing item_id"),
    ]
    for lines, pattern in cases:
        with pytest.raises(DataFormatError, match=pattern) as err:
            read_time_series(csv(lines))
        assert str(tmp_path / "data.csv") in str(err.value)
    # An irregular step far into a long series is located exactly (binary search on regular prefixes).
    stamps = list(pd.date_range("2024-01-01", periods=50, freq="h").strftime("%Y-%m-%d %H:%M"))
    stamps[37] = "2024-01-02 13:30"  # instead of 13:00
    with pytest.raises(DataFormatError, match="line 39: timestamps are not regular"):
        read_time_series(csv([f"a,{t},1" for t in stamps]))
    with pytest.raises(DataFormatError, match="missing column"):
        read_time_series(write(tmp_path, "item,timestamp,target\na,2024-01-01,1\n"))
    with pytest.raises(DataFormatError, match="no data rows"):
        read_time_series(write(tmp_path, header))
    with pytest.raises(DataFormatError, match="empty"):
        read_time_series(write(tmp_path, ""))
    with pytest.raises(FileNotFoundError):
        read_time_series(tmp_path / "absent.csv")


# --------------------------------------------------------------------------------------- rolling windows


def test_rolling_windows_hand_case() -> None:
    df = pd.concat([frame("a", "2024-01-01", 20, "h"), frame("b", "2024-01-01", 12, "h", 100.0)])
    data = read_time_series(df)
    w = rolling_test_windows(data, prediction_length=3, context_length=4, windows=2)
    assert len(w) == 4
    assert w.item_index.tolist() == [0, 0, 1, 1] and w.window_index.tolist() == [0, 1, 0, 1]
    assert w.origin.tolist() == [14, 17, 6, 9]
    np.testing.assert_array_equal(w.context[0], [10, 11, 12, 13])
    np.testing.assert_array_equal(w.context[1], [13, 14, 15, 16])  # includes the first test window
    np.testing.assert_array_equal(w.target[1], [17, 18, 19])
    np.testing.assert_array_equal(w.target[3], [109, 110, 111])
    np.testing.assert_array_equal(w.train[0], np.arange(14.0))
    np.testing.assert_array_equal(w.train[1], 100.0 + np.arange(6.0))
    assert w.forecast_start[1] == pd.Timestamp("2024-01-01 17:00")
    hist = w.histories()
    assert hist.shape == (4, 17)
    np.testing.assert_array_equal(hist[1], np.arange(17.0))
    assert np.isnan(hist[2, :11]).all()
    np.testing.assert_array_equal(hist[2, 11:], 100.0 + np.arange(6.0))
    with pytest.raises(ValueError, match=r"item 'b' has 12 points; .* needs at least 13"):
        rolling_test_windows(data, 3, 7, 2)
    with pytest.raises(ValueError, match="prediction_length"):
        rolling_test_windows(data, 0, 4, 2)
    with pytest.raises(ValueError, match="windows"):
        rolling_test_windows(data, 3, 4, 0)


def test_stack_needs_equal_lengths() -> None:
    data = RegularTimeSeries(("a", "b"), (pd.Timestamp(0), pd.Timestamp(0)), "h", (np.zeros(3), np.zeros(4)))
    with pytest.raises(ValueError, match="lengths differ"):
        data.stack()


# ------------------------------------------------------------------------------------ lags / seasonality


def test_tsdiff_lags() -> None:
    # TSDiff's get_lags_for_freq: hourly = 24 * [1..7, 14, 21, 28]; daily = 30 * [1..12].
    assert lags_for_frequency("h") == [24, 48, 72, 96, 120, 144, 168, 336, 504, 672]
    assert lags_for_frequency("30min") == [48 * k for k in (1, 2, 3, 4, 5, 6, 7, 14, 21, 28)]
    assert lags_for_frequency("D") == [30 * k for k in range(1, 13)]
    for freq in ("W", "MS", "7min"):
        with pytest.raises(ValueError, match=r"TSDiff|divide a day"):
            lags_for_frequency(freq)


def test_gluonts_lags() -> None:
    hourly = [1, 2, 3, 4, 5, 6, 7, 23, 24, 25, 47, 48, 49, 71, 72, 73, 95, 96, 97, 119, 120, 121, 143, 144, 145,
              167, 168, 169, 335, 336, 337, 503, 504, 505, 671, 672, 673, 719, 720, 721]
    assert lags_for_frequency("h", "gluonts") == hourly
    assert lags_for_frequency("h", "gluonts", lag_ub=100) == [v for v in hourly if v <= 100]
    monthly = [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 23, 24, 25, 35, 36, 37]
    assert lags_for_frequency("MS", "gluonts") == monthly == lags_for_frequency("ME", "gluonts")
    assert lags_for_frequency("B", "gluonts") == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="no lags"):
        lags_for_frequency("YS", "gluonts")
    with pytest.raises(ValueError, match="convention"):
        lags_for_frequency("h", "deepar")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid frequency"):
        lags_for_frequency("hourly")


@pytest.mark.parametrize(("freq", "season"), [
    ("h", 24), ("30min", 48), ("2h", 12), ("5h", 1), ("D", 1), ("B", 5), ("W", 1), ("MS", 12), ("ME", 12),
    ("QS", 4), ("min", 1440), ("7min", 1), ("s", 3600),
])
def test_seasonality(freq: str, season: int) -> None:
    assert seasonality_for_frequency(freq) == season
