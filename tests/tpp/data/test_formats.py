"""EasyTPP JSON, NHP pickles and the long table: reading the peers' files, exact round trips, every error."""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tpp.data import (
    SPLITS,
    EventSequences,
    GapMismatchWarning,
    TPPDataError,
    UnsafePickleError,
    from_frame,
    read_csv,
    read_easytpp_dir,
    read_easytpp_json,
    read_easytpp_pickle,
    safe_pickle_load,
    to_frame,
    write_csv,
    write_easytpp_dir,
    write_easytpp_json,
    write_easytpp_pickle,
)

FIXTURES = Path(__file__).parent / "fixtures"
JSON_SAMPLE = FIXTURES / "easytpp-json-sample" / "synthetic_data.json"
PICKLES = FIXTURES / "easytpp-pickle-sample"


def assert_same(a: EventSequences, b: EventSequences) -> None:
    """Bit-for-bit equality of two data sets (times compared as float64 bit patterns)."""
    assert a.num_marks == b.num_marks
    assert a.ids == b.ids
    assert len(a) == len(b)
    for ta, tb, ma, mb in zip(a.times, b.times, a.marks, b.marks, strict=True):
        assert ta.dtype == tb.dtype == np.float64
        assert np.array_equal(ta.view(np.int64), tb.view(np.int64))
        assert np.array_equal(ma, mb) and ma.dtype == mb.dtype == np.int64
    if a.windows is None:
        assert b.windows is None
    else:
        assert b.windows is not None and np.array_equal(a.windows, b.windows)


def small() -> EventSequences:
    rng = np.random.default_rng(0)
    times = [np.cumsum(rng.exponential(0.7, n)) for n in (4, 1, 7)]
    marks = [rng.integers(0, 3, len(t)) for t in times]
    return EventSequences(times, marks, 4, ids=[10, 11, 12])  # mark 3 is unused: num_marks must survive


# ------------------------------------------------------------------------------------------------------------
# The shared JSON sample
# ------------------------------------------------------------------------------------------------------------


def test_json_sample_raises_naming_file_sequence_and_event() -> None:
    with pytest.raises(TPPDataError) as info:
        read_easytpp_json(JSON_SAMPLE)
    msg = str(info.value)
    assert msg.startswith(f"{JSON_SAMPLE}: sequence 0 (seq_idx 0), event 0: time_since_last_event ")
    assert "is neither 0 nor time_since_start[0] = 0.0" in msg
    assert "(208 of 299 events in 8 of 8 sequences disagree)" in msg
    assert "gaps='recompute'" in msg


def test_json_sample_recompute_counts_disagreements() -> None:
    raw = json.loads(JSON_SAMPLE.read_text())
    with pytest.warns(GapMismatchWarning) as record:
        seqs = read_easytpp_json(JSON_SAMPLE, gaps="recompute")
    (warning,) = record
    assert (warning.message.count, warning.message.sequences, warning.message.events) == (208, 8, 299)
    assert "208 of 299 events" in str(warning.message)
    assert len(seqs) == 8 and seqs.num_marks == 3 and seqs.windows is None
    assert seqs.ids == [r["seq_idx"] for r in raw]
    assert seqs.lengths.tolist() == [40] * 7 + [19]
    for rec, t, m in zip(raw, seqs.times, seqs.marks, strict=True):
        assert t.tolist() == rec["time_since_start"]  # trusted, bit for bit
        assert m.tolist() == rec["type_event"]


def test_json_sample_round_trip(tmp_path: Path) -> None:
    with pytest.warns(GapMismatchWarning):
        seqs = read_easytpp_json(JSON_SAMPLE, gaps="recompute")
    out = tmp_path / "train.json"
    write_easytpp_json(seqs, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the written gaps are consistent: no warning, no error
        again = read_easytpp_json(out)
    assert_same(seqs, again)
    raw, written = json.loads(JSON_SAMPLE.read_text()), json.loads(out.read_text())
    for a, b in zip(raw, written, strict=True):
        assert list(b) == list(a)  # same keys, same order
        for key in ("dim_process", "seq_idx", "seq_len", "time_since_start", "type_event"):
            assert a[key] == b[key]
        assert b["time_since_last_event"][0] == 0.0
        assert b["time_since_last_event"][1:] == np.diff(a["time_since_start"]).tolist()
    first = out.read_bytes()
    write_easytpp_json(again, out)
    assert out.read_bytes() == first  # file -> EventSequences -> file is the identity on our files


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    seqs = small()
    for first_gap in ("zero", "start"):
        path = tmp_path / f"{first_gap}.json"
        write_easytpp_json(seqs, path, first_gap=first_gap)
        assert_same(seqs, read_easytpp_json(path))
        rec = json.loads(path.read_text())[0]
        assert rec["time_since_last_event"][0] == (0.0 if first_gap == "zero" else rec["time_since_start"][0])


def test_json_lines_are_read(tmp_path: Path) -> None:
    seqs = small()
    write_easytpp_json(seqs, tmp_path / "a.json")
    records = json.loads((tmp_path / "a.json").read_text())
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert_same(seqs, read_easytpp_json(tmp_path / "b.jsonl"))


def test_dir_round_trip_and_pickle_refusal(tmp_path: Path) -> None:
    splits = {"train": small(), "dev": small().subset([2]), "test": small().subset([0, 1])}
    write_easytpp_dir(splits, tmp_path)
    read = read_easytpp_dir(tmp_path)
    assert list(read) == list(SPLITS)
    for split in SPLITS:
        assert_same(splits[split], read[split])
    (tmp_path / "test.json").unlink()
    write_easytpp_pickle(splits["test"], tmp_path / "test.pkl", "test")
    with pytest.raises(UnsafePickleError, match=r"test\.pkl: split 'test' exists only as a pickle.*allow_pickle=True"):
        read_easytpp_dir(tmp_path)
    assert read_easytpp_dir(tmp_path, allow_pickle=True)["test"].num_events == splits["test"].num_events
    (tmp_path / "test.pkl").unlink()
    with pytest.raises(TPPDataError, match=r"split 'test' not found \(expected test\.json or test\.pkl\)"):
        read_easytpp_dir(tmp_path)


def test_dir_rejects_dim_process_differing_between_splits(tmp_path: Path) -> None:
    seqs = small()
    write_easytpp_dir({"train": seqs, "dev": seqs}, tmp_path)
    write_easytpp_json(EventSequences(seqs.times, seqs.marks, 5), tmp_path / "test.json")
    with pytest.raises(TPPDataError, match=r"dim_process differs between splits: \{'train': 4, 'dev': 4, 'test': 5\}"):
        read_easytpp_dir(tmp_path)


# ------------------------------------------------------------------------------------------------------------
# Validation: each error, with its message
# ------------------------------------------------------------------------------------------------------------


def records() -> list[dict[str, Any]]:
    return [
        {"dim_process": 3, "seq_idx": 10, "seq_len": 3, "time_since_start": [0.5, 1.0, 2.0],
         "time_since_last_event": [0.0, 0.5, 1.0], "type_event": [0, 2, 1]},
        {"dim_process": 3, "seq_idx": 11, "seq_len": 3, "time_since_start": [0.25, 1.5, 2.5],
         "time_since_last_event": [0.25, 1.25, 1.0], "type_event": [1, 1, 0]},
    ]


def _set(key: str, value: Any, seq: int = 1) -> Any:
    def edit(recs: list[dict[str, Any]]) -> None:
        recs[seq][key] = value
    return edit


def _item(key: str, pos: int, value: Any, seq: int = 1) -> Any:
    def edit(recs: list[dict[str, Any]]) -> None:
        recs[seq][key][pos] = value
    return edit


def _empty(recs: list[dict[str, Any]]) -> None:
    recs[1].update(seq_len=0, time_since_start=[], time_since_last_event=[], type_event=[])


def _unsorted(recs: list[dict[str, Any]]) -> None:
    recs[1].update(time_since_start=[0.25, 1.5, 1.25], time_since_last_event=[0.25, 1.25, -0.25])


def _missing(recs: list[dict[str, Any]]) -> None:
    del recs[1]["type_event"]


WHERE = r"train\.json: sequence 1 \(seq_idx 11\)"
CASES = {
    "unsorted": (_unsorted, WHERE + r", event 2: time_since_start 1\.25 is before the previous event's 1\.5"),
    "gap mismatch": (_item("time_since_last_event", 2, 0.75),
                     WHERE + r", event 2: time_since_last_event 0\.75 != 1\.0 = time_since_start\[2\] - "
                             r"time_since_start\[1\] \(1 of 6 events in 1 of 2 sequences disagree\); pass "
                             r"gaps='recompute'"),
    "first gap": (_item("time_since_last_event", 0, 0.125),
                  WHERE + r", event 0: time_since_last_event 0\.125 is neither 0 nor time_since_start\[0\] = 0\.25"),
    "mark out of range": (_item("type_event", 1, 3), WHERE + r", event 1: type_event 3 is outside \[0, 3\)"),
    "negative mark": (_item("type_event", 2, -1), WHERE + r", event 2: type_event -1 is outside \[0, 3\)"),
    "fractional mark": (_item("type_event", 0, 1.5), WHERE + r", event 0: type_event 1\.5 is not an integer"),
    "NaN time": (_item("time_since_start", 1, float("nan")), WHERE + r", event 1: time_since_start nan is not finite"),
    "infinite gap": (_item("time_since_last_event", 2, float("inf")),
                     WHERE + r", event 2: time_since_last_event inf is not finite"),
    "string time": (_item("time_since_start", 0, "0.25"),
                    WHERE + r", event 0: time_since_start '0\.25' is not a number"),
    "empty sequence": (_empty, WHERE + r": empty sequence"),
    "seq_len mismatch": (_set("seq_len", 4), WHERE + r": seq_len 4 != 3 = len\(time_since_start\)"),
    "list lengths": (_set("type_event", [1, 1]), WHERE + r": time_since_start, time_since_last_event and type_event "
                                                         r"have lengths 3, 3 and 2"),
    "mixed dim_process": (_set("dim_process", 4), WHERE + r": dim_process 4 differs from 3 in sequence 0"),
    "bad dim_process": (_set("dim_process", 0, seq=0), r"train\.json: sequence 0 \(seq_idx 10\): dim_process must be "
                                                       r"a positive integer, got 0"),
    "missing key": (_missing, WHERE + r": missing key\(s\) type_event"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_json_validation_errors(case: str, tmp_path: Path) -> None:
    edit, pattern = CASES[case]
    recs = records()
    edit(recs)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(recs))  # json.dumps writes NaN and Infinity, as Python's json reads them
    with pytest.raises(TPPDataError, match=pattern):
        read_easytpp_json(path)


def test_valid_records_read_with_either_first_gap(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records()))  # sequence 0: first gap 0; sequence 1: first gap t[0]
    seqs = read_easytpp_json(path)
    assert seqs.ids == [10, 11] and seqs.lengths.tolist() == [3, 3]


def test_gap_tolerance_is_relative_to_the_times(tmp_path: Path) -> None:
    recs = records()
    recs[1]["time_since_start"] = [1000.25, 1001.5, 1002.5]
    recs[1]["time_since_last_event"] = [0.0, 1.25 + 5e-4, 1.0 - 5e-4]  # within 1e-9 + 1e-6 * 1002.5
    path = tmp_path / "train.json"
    path.write_text(json.dumps(recs))
    read_easytpp_json(path)
    recs[1]["time_since_last_event"][2] = 1.0 - 2e-3
    path.write_text(json.dumps(recs))
    with pytest.raises(TPPDataError, match=r"event 2: time_since_last_event 0\.998 != 1\.0"):
        read_easytpp_json(path)


def test_malformed_json_files(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text("[{\"dim_process\": 3,")
    with pytest.raises(TPPDataError, match=r"train\.json: not valid JSON"):
        read_easytpp_json(path)
    path.write_text("[]")
    with pytest.raises(TPPDataError, match=r"train\.json: no sequences"):
        read_easytpp_json(path)
    path.write_text(json.dumps({"dim_process": 3}))
    with pytest.raises(TPPDataError, match=r"train\.json: sequence 0: missing key"):
        read_easytpp_json(path)  # a lone object is one JSON line
    path.write_text(json.dumps(records()[0]) + "\n{oops\n")
    with pytest.raises(TPPDataError, match=r"train\.json: line 2: not valid JSON"):
        read_easytpp_json(path)


def test_bad_gaps_mode(tmp_path: Path) -> None:
    write_easytpp_json(small(), tmp_path / "a.json")
    with pytest.raises(ValueError, match="gaps must be 'check' or 'recompute'"):
        read_easytpp_json(tmp_path / "a.json", gaps="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------
# Pickles
# ------------------------------------------------------------------------------------------------------------


def test_pickle_sample_needs_allow_pickle() -> None:
    for kwargs in ({}, {"allow_pickle": False}, {"allow_pickle": 1}):
        with pytest.raises(UnsafePickleError, match=r"dev\.pkl: refusing to unpickle by default.*allow_pickle=True"):
            read_easytpp_pickle(PICKLES / "dev.pkl", "dev", **kwargs)
    with pytest.raises(UnsafePickleError, match="allow_pickle=True"):
        read_easytpp_dir(PICKLES)


def test_pickle_sample_reads_with_allow_pickle() -> None:
    splits = read_easytpp_dir(PICKLES, allow_pickle=True)
    assert {k: len(v) for k, v in splits.items()} == {"train": 800, "dev": 100, "test": 100}
    for split, seqs in splits.items():
        assert seqs.num_marks == 50
        assert set(seqs.lengths.tolist()) == {5}
        assert seqs.ids == list(range(len(seqs)))
        raw = safe_pickle_load(PICKLES / f"{split}.pkl", allow_pickle=True)
        assert raw["dim_process"] == 50 and len(raw["log_lik"]) == len(seqs)
        for events, t, m in zip(raw[split], seqs.times, seqs.marks, strict=True):
            assert t.tolist() == [e["time_since_start"] for e in events]
            assert m.tolist() == [e["type_event"] for e in events]
            assert events[0]["time_since_last_event"] == events[0]["time_since_start"]  # NHP's first gap


def test_pickle_round_trip_is_exact(tmp_path: Path) -> None:
    seqs = read_easytpp_pickle(PICKLES / "dev.pkl", "dev", allow_pickle=True)
    out = tmp_path / "dev.pkl"
    write_easytpp_pickle(seqs, out, "dev")
    again = read_easytpp_pickle(out, "dev", allow_pickle=True)
    assert_same(seqs, again)
    raw = safe_pickle_load(out, allow_pickle=True)
    assert set(raw) == {"dim_process", "dev"}
    assert raw["dev"][0][0]["time_since_last_event"] == raw["dev"][0][0]["time_since_start"]
    first = out.read_bytes()
    write_easytpp_pickle(again, out, "dev")
    assert out.read_bytes() == first
    mine = small()
    write_easytpp_pickle(mine, out, "train", first_gap="zero")
    back = read_easytpp_pickle(out, "train", allow_pickle=True)
    assert back.ids == [0, 1, 2]  # the pickle format has no seq_idx
    assert_same(EventSequences(mine.times, mine.marks, mine.num_marks), back)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_with_numpy_scalars_is_read(tmp_path: Path, protocol: int) -> None:
    data = {"dim_process": np.int64(3), "train": [[
        {"time_since_start": np.float32(0.5), "time_since_last_event": np.float32(0.5), "type_event": np.int64(2)},
        {"time_since_start": np.float64(1.5), "time_since_last_event": np.float64(1.0), "type_event": np.int32(0)},
    ]]}
    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    seqs = read_easytpp_pickle(path, "train", allow_pickle=True)
    assert seqs.times[0].tolist() == [0.5, 1.5] and seqs.marks[0].tolist() == [2, 0] and seqs.num_marks == 3


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.target}",)


class _EvalEvil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return eval, ("__import__('os').getcwd()",)


def test_malicious_pickle_is_refused_even_with_allow_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps({"dim_process": 3, "train": [[_Evil(marker)]]}))
    for read in (lambda: read_easytpp_pickle(path, "train", allow_pickle=True),
                 lambda: read_easytpp_dir(tmp_path, allow_pickle=True, splits=["train"]),
                 lambda: safe_pickle_load(path, allow_pickle=True)):
        with pytest.raises(UnsafePickleError, match=r"train\.pkl: refusing to unpickle global (posix|nt|os)\.system"):
            read()
    assert not marker.exists()
    path.write_bytes(pickle.dumps([_EvalEvil()]))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global builtins\.eval"):
        safe_pickle_load(path, allow_pickle=True)
    path.write_bytes(pickle.dumps({"dim_process": 3, "train": [[{"x": _Evil}]]}))  # a class is a global too
    with pytest.raises(UnsafePickleError, match=r"global tests\.tpp\.data\.test_formats\._Evil|global .*_Evil"):
        safe_pickle_load(path, allow_pickle=True)


def test_pickle_layout_and_event_errors(tmp_path: Path) -> None:
    path = tmp_path / "dev.pkl"
    path.write_bytes(pickle.dumps({"dim_process": 3, "train": []}))
    with pytest.raises(TPPDataError, match=r"dev\.pkl: no split 'dev' \(keys: 'dim_process', 'train'\)"):
        read_easytpp_pickle(path, "dev", allow_pickle=True)
    event = {"time_since_start": 1.0, "time_since_last_event": 1.0, "type_event": 0}
    path.write_bytes(pickle.dumps({"dim_process": 3, "dev": [[event], [event, {**event, "type_event": 7}]]}))
    with pytest.raises(TPPDataError, match=r"dev\.pkl: split 'dev', sequence 1, event 1: type_event 7 is outside"):
        read_easytpp_pickle(path, "dev", allow_pickle=True)
    path.write_bytes(pickle.dumps({"dim_process": 3, "dev": [[event, {"time_since_start": 2.0}]]}))
    with pytest.raises(TPPDataError, match=r"sequence 0, event 1: missing key 'time_since_last_event'"):
        read_easytpp_pickle(path, "dev", allow_pickle=True)
    path.write_bytes(pickle.dumps({"dim_process": 3, "dev": [[event]]})[:-5])
    with pytest.raises(TPPDataError, match=r"dev\.pkl: cannot unpickle"):
        read_easytpp_pickle(path, "dev", allow_pickle=True)


# ------------------------------------------------------------------------------------------------------------
# Long table
# ------------------------------------------------------------------------------------------------------------


def test_frame_and_csv_round_trips_are_exact(tmp_path: Path) -> None:
    seqs = small()
    df = to_frame(seqs)
    assert list(df.columns) == ["seq_id", "time", "mark"] and len(df) == seqs.num_events
    assert_same(seqs, from_frame(df))  # num_marks 4 comes from df.attrs
    windowed = EventSequences(seqs.times, seqs.marks, 4, np.array([[0.0, 9.5], [-1.0, 3.0], [0.0, 20.0]]),
                              ids=seqs.ids)
    assert_same(windowed, from_frame(to_frame(windowed)))
    path = tmp_path / "events.csv"
    write_csv(windowed, path)
    assert_same(windowed, read_csv(path, num_marks=4))
    assert read_csv(path).num_marks == 3  # without num_marks: max(mark) + 1


def test_frame_groups_interleaved_rows_and_sorts_on_request() -> None:
    df = pd.DataFrame({"seq_id": [7, 3, 7, 3], "time": [0.5, 0.1, 0.25, 0.2], "mark": [1, 0, 0, 1]})
    with pytest.raises(TPPDataError, match=r"<DataFrame>, row 2: time 0\.25 of sequence 7 is before the previous "
                                           r"event's 0\.5 \(row 0\).*sort=True"):
        from_frame(df)
    seqs = from_frame(df, sort=True)
    assert seqs.ids == [7, 3]
    assert seqs.times[0].tolist() == [0.25, 0.5] and seqs.marks[0].tolist() == [0, 1]
    assert seqs.times[1].tolist() == [0.1, 0.2]


FRAME_CASES = {
    "nan time": ({"time": [0.0, np.nan, 1.0]}, {}, r"row 1: time nan is not a finite number"),
    "text time": ({"time": [0.0, "x", 1.0]}, {}, r"row 1: time 'x' is not a finite number"),
    "mark range": ({"mark": [0, 1, 5]}, {"num_marks": 3}, r"row 2: mark 5 is outside \[0, 3\)"),
    "negative mark": ({"mark": [0, -1, 1]}, {}, r"row 1: mark -1 is outside"),
    "fractional mark": ({"mark": [0, 1.5, 1]}, {}, r"row 1: mark 1\.5 is not an integer"),
    "missing id": ({"seq_id": [0, None, 1]}, {}, r"row 1: seq_id is missing"),
    "text ids": ({"seq_id": ["a", "a", "b"]}, {}, r"column 'seq_id' must hold integer sequence ids.*pd\.factorize"),
    "missing column": ({"mark": None}, {}, r"missing column\(s\) \['mark'\]"),
    "window varies": ({"window_start": [0.0, 0.1, 0.0], "window_end": [5.0, 5.0, 5.0]}, {},
                      r"row 1: window_start 0\.1 differs from 0\.0 in row 0 of the same sequence 0"),
}


@pytest.mark.parametrize("case", list(FRAME_CASES))
def test_frame_errors_name_the_row(case: str) -> None:
    change, kwargs, pattern = FRAME_CASES[case]
    data: dict[str, Any] = {"seq_id": [0, 0, 1], "time": [0.0, 0.5, 1.0], "mark": [0, 1, 1]}
    for key, value in change.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    with pytest.raises(TPPDataError, match=r"<DataFrame>[:,] " + pattern):
        from_frame(pd.DataFrame(data), **kwargs)


def test_frame_errors_name_index_labels_and_csv_lines(tmp_path: Path) -> None:
    df = pd.DataFrame({"seq_id": [0, 0], "time": [0.0, np.inf], "mark": [0, 0]}, index=["a", "b"])
    with pytest.raises(TPPDataError, match=re.escape("row 1 (index 'b'): time inf is not a finite number")):
        from_frame(df)
    path = tmp_path / "events.csv"
    path.write_text("seq_id,time,mark\n0,0.0,0\n0,1.0,0\n1,0.5,9\n")
    with pytest.raises(TPPDataError, match=re.escape(f"{path}, line 4: mark 9 is outside [0, 3)")):
        read_csv(path, num_marks=3)
    path.write_text("")
    with pytest.raises(TPPDataError, match="cannot parse CSV"):
        read_csv(path)
