"""Tests for the shipped spirals data set, its loader and the data-set registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nde.data import (
    DataFormatError,
    SpiralsData,
    UnknownDatasetError,
    available_datasets,
    dataset_path,
    load_spirals,
    split_indices,
)

N_SERIES = 1000
N_OBS = 70


@pytest.fixture(scope="module")
def data() -> SpiralsData:
    return load_spirals()


def test_registry_finds_spirals() -> None:
    path = dataset_path("spirals")
    assert (path / "spirals.csv").is_file()
    assert (path / "README.md").is_file()
    assert "spirals" in available_datasets()


@pytest.mark.parametrize("name", ["no_such_dataset", "", "../spirals", "spirals/..", "__pycache__"])
def test_registry_unknown_name(name: str) -> None:
    with pytest.raises(UnknownDatasetError, match="spirals") as info:
        dataset_path(name)
    assert isinstance(info.value, ValueError)


def test_shapes_and_dtypes(data: SpiralsData) -> None:
    assert len(data) == N_SERIES
    assert data.times.shape == (N_SERIES, N_OBS) and data.times.dtype == torch.float32
    assert data.values.shape == (N_SERIES, N_OBS, 2) and data.values.dtype == torch.float32
    assert data.mask.shape == (N_SERIES, N_OBS) and data.mask.dtype == torch.bool
    assert data.lengths.shape == (N_SERIES,) and data.lengths.dtype == torch.long
    assert data.labels.shape == (N_SERIES,) and data.labels.dtype == torch.long
    assert len(set(data.series_ids)) == N_SERIES
    assert torch.isfinite(data.times).all() and torch.isfinite(data.values).all()


def test_seventy_observations_per_series(data: SpiralsData) -> None:
    assert (data.lengths == N_OBS).all()
    assert data.mask.all()


def test_balanced_labels(data: SpiralsData) -> None:
    assert set(data.labels.tolist()) == {0, 1}
    assert int(data.labels.sum()) == N_SERIES // 2


def test_times_strictly_increasing_and_irregular(data: SpiralsData) -> None:
    dt = data.times.diff(dim=1)
    assert (dt > 0).all()
    assert data.times.min() >= 0
    # Irregular: the gaps differ within series (30% of a regular grid was dropped at random).
    assert (dt.max(dim=1).values - dt.min(dim=1).values > 1e-3).float().mean() > 0.99


def test_label_is_rotation_direction(data: SpiralsData) -> None:
    x, y = data.values[..., 0].double(), data.values[..., 1].double()
    # Mean of x dy - y dx over consecutive observed points: > 0 anticlockwise, < 0 clockwise.
    cross = (x[:, :-1] * y.diff(dim=1) - y[:, :-1] * x.diff(dim=1)).mean(dim=1)
    agree = ((cross > 0).long() == data.labels).double().mean()
    assert agree >= 0.99


def test_single_point_does_not_give_the_class(data: SpiralsData) -> None:
    # The start phase is uniform, so e.g. the first observed angle has the same spread in both classes.
    angle0 = torch.atan2(data.values[:, 0, 1], data.values[:, 0, 0])
    for label in (0, 1):
        a = angle0[data.labels == label]
        assert a.min() < -2.5 and a.max() > 2.5
        assert abs(float(a.mean())) < 0.5


def test_regenerate_byte_for_byte(tmp_path: Path) -> None:
    folder = dataset_path("spirals")
    out = tmp_path / "spirals.csv"
    subprocess.run(
        [sys.executable, str(folder / "make_spirals.py"), "--seed", "0", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == (folder / "spirals.csv").read_bytes()


def test_load_from_folder_and_small_file(tmp_path: Path) -> None:
    (tmp_path / "spirals.csv").write_text(
        "series_id,time,x,y,label\nb,0.0,1,0,1\na,0.5,0,0,0\nb,1.0,0,1,1\na,1.0,1,1,0\na,2.0,2,2,0\n"
    )
    d = load_spirals(tmp_path)
    assert d.series_ids == ["b", "a"]
    assert d.lengths.tolist() == [2, 3]
    assert d.labels.tolist() == [1, 0]
    assert d.mask.tolist() == [[True, True, False], [True, True, True]]
    # Padding repeats the last observation.
    assert d.times.tolist() == [[0.0, 1.0, 1.0], [0.5, 1.0, 2.0]]
    assert d.values[0].tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    sub = d.subset(torch.tensor([1]))
    assert sub.series_ids == ["a"] and sub.values.shape == (1, 3, 2)


HEADER = "series_id,time,x,y,label\n"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", "empty"),
        (HEADER, "no data rows"),
        ("series_id,time,x,label\ns1,0,1,0\n", r"missing column.*'y'"),
        (HEADER + "s1,0,1,0,0\ns1,2,1,0,0\ns1,1,1,0,0\n", "'s1'.*not sorted"),
        (HEADER + "s1,0,1,0,0\ns2,0,1,0,1\ns2,1,1,0,1\ns2,1,2,0,1\n", "'s2'.*duplicate time"),
        (HEADER + "s1,0,1,0,0\ns1,1,nan,0,0\n", "'s1'.*x is NaN"),
        (HEADER + "s1,0,1,0,0\ns1,1,1,,0\n", "'s1'.*y is NaN"),
        (HEADER + "s1,0,1,0,0\ns1,1,1,0,1\n", "'s1'.*label differs"),
        (HEADER + "s1,0,1,0,2\n", "'s1'.*label must be 0"),
    ],
    ids=["empty", "header", "no-column", "unsorted", "duplicate", "nan", "blank", "label", "label-2"],
)
def test_bad_input(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_spirals(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_spirals(tmp_path / "nope.csv")


def test_split_indices_partition_and_reproducible() -> None:
    train, val, test = split_indices(N_SERIES, seed=3)
    assert (len(train), len(val), len(test)) == (700, 150, 150)
    assert torch.cat([train, val, test]).sort().values.equal(torch.arange(N_SERIES))
    again = split_indices(N_SERIES, seed=3)
    assert all(a.equal(b) for a, b in zip((train, val, test), again, strict=True))
    other = split_indices(N_SERIES, seed=4)
    assert not train.equal(other[0])
    for n in (0, 1, 7, 101):
        parts = split_indices(n, fractions=(0.5, 0.25, 0.25), seed=0)
        assert torch.cat(parts).sort().values.equal(torch.arange(n))


def test_split_indices_bad_fractions() -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, fractions=(0.5, 0.5))
