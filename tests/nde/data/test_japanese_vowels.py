"""Tests for the shipped Japanese Vowels data set, its loader and its conversion script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nde.data import (
    JAPANESE_VOWELS_CHANNELS,
    JAPANESE_VOWELS_COLUMNS,
    DataFormatError,
    available_datasets,
    dataset_path,
    load_japanese_vowels,
)

SCRIPT = Path(__file__).resolve().parents[3] / "datasets" / "japanese_vowels" / "convert_japanese_vowels.py"
# Per-speaker series counts of the UEA/UCI split (Kudo et al. 1999): 30 each in train, varied in test.
TRAIN_COUNTS = [30] * 9
TEST_COUNTS = [31, 35, 88, 44, 29, 24, 40, 50, 29]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_japanese_vowels()


def test_registry_and_files() -> None:
    path = dataset_path("japanese_vowels")
    for name in ("japanese_vowels.csv", "README.md", "convert_japanese_vowels.py"):
        assert (path / name).is_file()
    assert "japanese_vowels" in available_datasets()
    assert (path / "japanese_vowels.csv").stat().st_size < 2_000_000


def test_columns_and_dtypes(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == JAPANESE_VOWELS_COLUMNS
    assert JAPANESE_VOWELS_CHANNELS == tuple(f"c{j}" for j in range(1, 13))
    assert frame["time"].dtype == np.float64 and frame["label"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in JAPANESE_VOWELS_CHANNELS)
    assert np.isfinite(frame[list(JAPANESE_VOWELS_CHANNELS)].to_numpy()).all()


def test_counts_lengths_and_classes(frame: pd.DataFrame) -> None:
    assert len(frame) == 9961
    lengths = frame.groupby("series_id", sort=False).size()
    assert len(lengths) == 640
    assert lengths.min() == 7 and lengths.max() == 29
    assert (lengths == 7).sum() == 2 and (lengths == 29).sum() == 1
    ids = list(lengths.index)
    assert ids == [f"train_{i:03d}" for i in range(270)] + [f"test_{i:03d}" for i in range(370)]
    labels = frame.groupby("series_id", sort=False)["label"].first()
    is_train = labels.index.str.startswith("train_")
    assert labels[is_train].value_counts().sort_index().tolist() == TRAIN_COUNTS
    assert labels[~is_train].value_counts().sort_index().tolist() == TEST_COUNTS
    assert sorted(labels.unique()) == list(range(1, 10))


def test_time_is_frame_index(frame: pd.DataFrame) -> None:
    expected = frame.groupby("series_id", sort=False).cumcount().to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(frame["time"].to_numpy(), expected)


def test_values_match_source_file(frame: pd.DataFrame) -> None:
    # First / last frame values read off the source .ts lines (first train, last train, last test).
    def series(sid: str) -> pd.DataFrame:
        return frame[frame["series_id"] == sid]

    s = series("train_000")
    assert s.iloc[0][["c1", "c2", "c12"]].tolist() == [1.860936, -0.207383, 0.088728]
    assert int(s["label"].iloc[0]) == 1
    s = series("train_269")
    assert len(s) == 9 and int(s["label"].iloc[0]) == 9
    assert s.iloc[0][["c1", "c12"]].tolist() == [1.240598, 0.061848]
    assert s.iloc[-1][["c1", "c12"]].tolist() == [0.966744, 0.173642]
    s = series("test_369")
    assert len(s) == 11 and int(s["label"].iloc[0]) == 9
    assert s.iloc[0][["c1", "c2", "c12"]].tolist() == [1.421622, -0.386758, 0.101818]
    assert s.iloc[-1][["c1", "c2", "c12"]].tolist() == [1.177449, -0.40408, 0.224688]


TINY_TS = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true 1 2
@data
1.5,2.25,-3.0:5.18E-4,-0.1,0.2:2
0.125,-0.0:7,8:1
"""


def test_converter_on_tiny_files(tmp_path: Path) -> None:
    (tmp_path / "train.ts").write_text(TINY_TS)
    (tmp_path / "test.ts").write_text(TINY_TS.replace(":2\n0.125", ":1\n0.125"))
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--train", str(tmp_path / "train.ts"), "--test", str(tmp_path / "test.ts"),
         "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    assert "4 series, 10 rows" in result.stdout
    assert out.read_text().splitlines() == [
        "series_id,time,c1,c2,label",
        "train_000,0,1.5,0.000518,2",
        "train_000,1,2.25,-0.1,2",
        "train_000,2,-3,0.2,2",
        "train_001,0,0.125,7,1",
        "train_001,1,0,8,1",
        "test_000,0,1.5,0.000518,1",
        "test_000,1,2.25,-0.1,1",
        "test_000,2,-3,0.2,1",
        "test_001,0,0.125,7,1",
        "test_001,1,0,8,1",
    ]


def test_converter_rejects_ragged_channels(tmp_path: Path) -> None:
    bad = TINY_TS.replace("1.5,2.25,-3.0:", "1.5,2.25:")
    (tmp_path / "bad.ts").write_text(bad)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--train", str(tmp_path / "bad.ts"), "--test", str(tmp_path / "bad.ts"),
         "--out", str(tmp_path / "out.csv")],
        capture_output=True, text=True,
    )
    assert result.returncode != 0 and "different lengths" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_loader_reads_folder_and_rejects_missing_column(tmp_path: Path, frame: pd.DataFrame) -> None:
    frame.head(20).to_csv(tmp_path / "japanese_vowels.csv", index=False)
    small = load_japanese_vowels(tmp_path)
    pd.testing.assert_frame_equal(small, frame.head(20))
    bad = tmp_path / "bad.csv"
    frame.head(20).drop(columns="c7").to_csv(bad, index=False)
    with pytest.raises(DataFormatError, match=r"bad\.csv.*missing column.*'c7'"):
        load_japanese_vowels(bad)


def test_loader_rejects_label_change_and_unsorted_times(tmp_path: Path, frame: pd.DataFrame) -> None:
    df = frame.head(20).copy()
    df.loc[3, "label"] = 2
    df.to_csv(tmp_path / "lab.csv", index=False)
    with pytest.raises(DataFormatError, match=r"lab\.csv: series 'train_000', line 5: label differs"):
        load_japanese_vowels(tmp_path / "lab.csv")
    df = frame.head(20).copy()
    df.loc[4, "time"] = 1.0
    df.to_csv(tmp_path / "time.csv", index=False)
    with pytest.raises(DataFormatError, match=r"time\.csv: series 'train_000', line 6: times not sorted"):
        load_japanese_vowels(tmp_path / "time.csv")
    with pytest.raises(FileNotFoundError, match="japanese_vowels"):
        load_japanese_vowels(tmp_path / "nope.csv")
