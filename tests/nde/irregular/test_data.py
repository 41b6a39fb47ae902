"""Tests for nde.irregular.data: validation, padding, masks, controls, standardisation and splits."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from nde.data import dataset_path
from nde.irregular.data import IrregularDataError, IrregularDataset, Standardizer, cde_controls

NAN = math.nan


def small_frame() -> pd.DataFrame:
    # series "a": 3 times, "b": 2 times; channels x, y with gaps.
    return pd.DataFrame(
        {
            "id": ["a", "a", "a", "b", "b"],
            "t": [0.0, 1.0, 2.5, 0.5, 2.0],
            "x": [1.0, NAN, 3.0, NAN, 5.0],
            "y": [NAN, 2.0, NAN, 4.0, NAN],
            "label": ["cat", "cat", "cat", "ant", "ant"],
        }
    )


def make(df: pd.DataFrame | None = None, **kw) -> IrregularDataset:
    kw.setdefault("label_col", "label")
    return IrregularDataset.from_frame(small_frame() if df is None else df, id_col="id", time_col="t", **kw)


def test_storage_and_labels():
    ds = make()
    assert len(ds) == 2 and ds.n_channels == 2
    assert ds.series_ids == ["a", "b"] and ds.channel_names == ["x", "y"]
    assert ds.classes == ["ant", "cat"]
    assert ds.labels.tolist() == [1, 0]
    s = ds[1]
    assert s.series_id == "b" and s.label == 0
    assert s.times.tolist() == [0.5, 2.0]
    assert s.mask.tolist() == [[False, True], [True, False]]


def test_batch_padding_and_masks_elementwise():
    b = make().batch()
    assert b.times.dtype == torch.float32 and b.mask.dtype == torch.bool
    assert b.lengths.tolist() == [3, 2]
    assert b.times.tolist() == [[0.0, 1.0, 2.5], [0.5, 2.0, 2.0]]  # padding repeats last time
    exp_mask = [[[True, False], [False, True], [True, False]], [[False, True], [True, False], [False, False]]]
    assert b.mask.tolist() == exp_mask
    v = b.values
    assert v[0, 0, 0] == 1 and torch.isnan(v[0, 0, 1]) and v[0, 1, 1] == 2 and v[0, 2, 0] == 3
    # padded row repeats the last row of series b: (5, NaN)
    assert v[1, 2, 0] == 5 and torch.isnan(v[1, 2, 1])
    # padding never leaks: mask False at every padded position
    assert not b.mask[~b.time_mask].any()
    assert b.labels.tolist() == [1, 0]
    b64 = make().batch([1], dtype=torch.float64)
    assert b64.values.dtype == torch.float64 and b64.series_ids == ["b"] and b64.times.shape == (1, 2)


def test_cde_controls_ffill_bfill_and_counts():
    ds = make()
    c = cde_controls(ds.batch())
    assert c.shape == (2, 3, 5)
    assert not torch.isnan(c).any()
    expected = torch.tensor(
        [
            # time, x ffill, y (bfill at start), count x, count y
            [[0.0, 1.0, 2.0, 1.0, 0.0], [1.0, 1.0, 2.0, 1.0, 1.0], [2.5, 3.0, 2.0, 2.0, 1.0]],
            [[0.5, 5.0, 4.0, 0.0, 1.0], [2.0, 5.0, 4.0, 1.0, 1.0], [2.0, 5.0, 4.0, 1.0, 1.0]],
        ]
    )
    torch.testing.assert_close(c, expected)
    c2 = cde_controls(ds.batch(), include_time=False, include_counts=False)
    torch.testing.assert_close(c2, expected[..., 1:3])


def test_cde_controls_never_observed_channel_is_zero():
    df = pd.DataFrame({"id": ["a", "a", "b"], "t": [0, 1, 0], "x": [1.0, 2.0, 3.0], "y": [NAN, NAN, 7.0]})
    c = cde_controls(IrregularDataset.from_frame(df, id_col="id", time_col="t").batch())
    assert c[0, :, 2].tolist() == [0.0, 0.0] and c[0, :, 4].tolist() == [0.0, 0.0]
    assert c[1, :, 2].tolist() == [7.0, 7.0]


def test_default_value_cols_and_explicit():
    df = small_frame()
    assert make(df).channel_names == ["x", "y"]
    df["note"] = "text"
    # A text column is never dropped silently: the caller names the channels.
    with pytest.raises(IrregularDataError, match=r"column\(s\) \['note'\] are not numeric"):
        make(df)
    ds = make(df, value_cols=["y", "x"])
    assert ds.channel_names == ["y", "x"] and ds[0].values[1, 0].item() == 2.0
    assert ds[0].mask[0].tolist() == [False, True]


def test_timestamps_converted_to_days():
    df = pd.DataFrame(
        {
            "id": ["a", "a", "b"],
            "t": ["2024-01-01 12:00", "2024-01-02 00:00", "2024-01-01 00:00"],
            "x": [1.0, 2.0, 3.0],
        }
    )
    ds = IrregularDataset.from_frame(df, id_col="id", time_col="t")
    assert ds[0].times.tolist() == [0.5, 1.0]
    assert ds[1].times.tolist() == [0.0]
    assert ds.time_origin is not None
    df["t"] = pd.to_datetime(df["t"])
    ds2 = IrregularDataset.from_frame(df, id_col="id", time_col="t")
    assert ds2[0].times.tolist() == [0.5, 1.0]


def test_numeric_strings_are_numbers():
    df = pd.DataFrame({"id": ["a", "a"], "t": ["0", "2.5"], "x": [1.0, 2.0]})
    ds = IrregularDataset.from_frame(df, id_col="id", time_col="t")
    assert ds[0].times.tolist() == [0.0, 2.5] and ds.time_origin is None


def test_standardizer_matches_numpy_and_inverts():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(20):
        n = int(rng.integers(2, 8))
        t = np.cumsum(rng.uniform(0.1, 1.0, n))
        for k in range(n):
            x = rng.normal(3, 2) if rng.random() < 0.7 else NAN
            y = rng.normal(-1, 0.5)
            rows.append({"id": f"s{s}", "t": t[k], "x": x, "y": y, "label": s % 2})
    df = pd.DataFrame(rows)
    df.loc[df.groupby("id").head(1).index, "y"] = 1.0  # keep every row non-empty
    ds = IrregularDataset.from_frame(df, id_col="id", time_col="t", label_col="label")
    train, val, _ = ds.split(seed=1)
    st = Standardizer().fit(train)
    obs = np.concatenate([train[i].values.numpy() for i in range(len(train))])
    np.testing.assert_allclose(st.mean, np.nanmean(obs, axis=0), rtol=1e-12)
    np.testing.assert_allclose(st.std, np.nanstd(obs, axis=0), rtol=1e-12)
    durations = [train[i].times[-1] - train[i].times[0] for i in range(len(train))]
    assert st.time_scale == pytest.approx(float(np.mean(durations)))
    # the standardized training set has observed mean 0, std 1
    z = st.transform(train)
    zo = np.concatenate([z[i].values.numpy() for i in range(len(z))])
    np.testing.assert_allclose(np.nanmean(zo, axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(zo, axis=0), 1, atol=1e-12)
    # inverse is exact (float64) on another split, NaN positions preserved
    zv = st.transform(val)
    for i in range(len(val)):
        back = st.inverse_transform_values(zv[i].values)
        torch.testing.assert_close(back, val[i].values, equal_nan=True, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(st.inverse_transform_times(zv[i].times), val[i].times, rtol=1e-12, atol=1e-12)
    # dict round trip through JSON
    st2 = Standardizer.from_dict(json.loads(json.dumps(st.to_dict())))
    np.testing.assert_array_equal(st2.mean, st.mean)
    np.testing.assert_array_equal(st2.std, st.std)
    assert st2.time_scale == st.time_scale


def test_standardizer_zero_std_and_given_time_scale():
    df = pd.DataFrame({"id": ["a", "a", "b"], "t": [0, 1, 0], "x": [2.0, 2.0, 2.0]})
    st = Standardizer().fit(IrregularDataset.from_frame(df, id_col="id", time_col="t"), time_scale=10.0)
    assert st.std.tolist() == [1.0] and st.mean.tolist() == [2.0] and st.time_scale == 10.0


def test_split_partition_reproducible_stratified():
    rows = [{"id": f"s{i:02d}", "t": 0.0, "x": float(i), "label": "rare" if i < 3 else "common"} for i in range(40)]
    ds = IrregularDataset.from_frame(pd.DataFrame(rows), id_col="id", time_col="t", label_col="label")
    parts = ds.split((0.7, 0.15, 0.15), seed=3)
    ids = [p.series_ids for p in parts]
    flat = [s for p in ids for s in p]
    assert sorted(flat) == sorted(ds.series_ids) and len(flat) == len(set(flat)) == 40
    assert [p.series_ids for p in ds.split((0.7, 0.15, 0.15), seed=3)] == ids
    assert [p.series_ids for p in ds.split((0.7, 0.15, 0.15), seed=4)] != ids
    for p in parts:  # each class in each split, labels carried along with classes
        assert p.classes == ["common", "rare"]
        assert set(p.labels.tolist()) == {0, 1}
        for sid, lab in zip(p.series_ids, p.labels.tolist(), strict=True):
            assert (int(sid[1:]) < 3) == (lab == 1)
    # per class, largest remainder: common 37 -> (26, 6, 5); rare 3 -> (1, 1, 1) so every split has one
    assert [len(p) for p in parts] == [27, 7, 6]
    unl = IrregularDataset.from_frame(pd.DataFrame(rows).drop(columns="label"), id_col="id", time_col="t")
    assert [len(p) for p in unl.split(seed=0)] == [28, 6, 6]


@pytest.mark.parametrize(
    ("mutate", "kw", "match"),
    [
        (lambda d: d.drop(columns="t"), {}, r"<DataFrame>: missing column\(s\) \['t'\]"),
        (lambda d: d.assign(x=d["x"].astype(object).where(d.index != 3, "oops")), {"value_cols": ["x", "y"]},
         r"series 'b', row 3: column 'x': value 'oops' is not a finite number"),
        (lambda d: d.assign(t=d["t"].where(d.index != 4, NAN)), {}, r"series 'b', row 4: column 't': time nan"),
        (lambda d: d.assign(t=[0.0, 2.0, 1.0, 0.5, 2.0]), {},
         r"series 'a', column 't': times not sorted .* t=1\.0 \(row 2\) follows t=2\.0 \(row 1\)"),
        (lambda d: d.assign(t=[0.0, 1.0, 2.5, 0.5, 0.5]), {}, r"series 'b', column 't': duplicate time"),
        (lambda d: d.assign(x=[1.0, NAN, 3.0, NAN, NAN], y=[NAN, 2.0, NAN, NAN, NAN]), {},
         r"series 'b': empty series"),
        (lambda d: d.assign(y=[NAN, NAN, NAN, 4.0, NAN]), {},
         r"series 'a', row 1: .* all NaN .* nothing observed"),
        (lambda d: d.assign(label=["cat", "cat", "cat", "ant", None]), {},
         r"series 'b', row 4: column 'label': label is missing"),
        (lambda d: d.assign(label=["cat", "dog", "cat", "ant", "ant"]), {},
         r"series 'a', row 1: column 'label': label differs within the series"),
        (lambda d: d.assign(id=["a", None, "a", "b", "b"]), {}, r"row 1: column 'id': missing series id"),
    ],
)
def test_bad_input_errors(mutate, kw, match):
    with pytest.raises(IrregularDataError, match=match):
        make(mutate(small_frame()), **kw)


def test_unparseable_timestamp():
    df = pd.DataFrame({"id": ["a", "b"], "t": ["2024-01-01", "not a date"], "x": [1.0, 2.0]})
    with pytest.raises(IrregularDataError, match=r"series 'b', row 1: column 't': time 'not a date'"):
        IrregularDataset.from_frame(df, id_col="id", time_col="t")


def test_drop_empty_rows_counts():
    df = small_frame().assign(y=[NAN, NAN, NAN, 4.0, NAN])
    ds = make(df, drop_empty_rows=True)
    assert ds.dropped_empty_rows == 1
    assert ds[0].times.tolist() == [0.0, 2.5]
    assert make().dropped_empty_rows == 0


def test_from_csv(tmp_path):
    path = tmp_path / "obs.csv"
    small_frame().to_csv(path, index=False)
    ds = IrregularDataset.from_csv(path, id_col="id", time_col="t", label_col="label")
    ref = make()
    b, rb = ds.batch(), ref.batch()
    torch.testing.assert_close(b.values, rb.values, equal_nan=True)
    assert b.mask.tolist() == rb.mask.tolist() and ds.source == str(path)
    bad = small_frame().assign(t=[0.0, 1.0, 2.5, 0.5, 0.5])
    bad.to_csv(path, index=False)
    with pytest.raises(IrregularDataError, match=rf"{path.name}: series 'b', column 't': duplicate time.*\(line 6\)"):
        IrregularDataset.from_csv(path, id_col="id", time_col="t", label_col="label")
    with pytest.raises(FileNotFoundError):
        IrregularDataset.from_csv(tmp_path / "nope.csv", id_col="id", time_col="t")


def test_spirals_round_trip():
    path = dataset_path("spirals") / "spirals.csv"
    ds = IrregularDataset.from_csv(path, id_col="series_id", time_col="time", label_col="label")
    assert len(ds) == 1000 and ds.n_channels == 2 and ds.channel_names == ["x", "y"]
    assert ds.classes == [0, 1]
    b = ds.batch()
    assert b.times.shape == (1000, 70) and b.values.shape == (1000, 70, 2)
    assert (b.lengths == 70).all() and b.mask.all()
    df = pd.read_csv(path, dtype={"series_id": str})
    first = df[df["series_id"] == ds.series_ids[0]]
    np.testing.assert_allclose(b.values[0].numpy(), first[["x", "y"]].to_numpy(), rtol=1e-6)
    assert b.labels[0] == int(first["label"].iloc[0])
    c = cde_controls(b)
    assert c.shape == (1000, 70, 5) and not torch.isnan(c).any()
