"""The shipped football event data set (datasets/football_events) and its conversion script make.py.

The shipped splits are checked against the numbers in the folder's README and summary.json; the pure conversion
``convert_events`` against a hand-written StatsBomb-like match whose sequences are worked out by hand; the whole
pipeline (wheel -> checked files -> EasyTPP splits, twice, byte for byte) on a fake wheel of such matches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from nde.data import available_datasets, dataset_path
from tpp.data import SPLITS, EventSequences, read_easytpp_dir

FOLDER = dataset_path("football_events")
K = 7
# From README.md ("Split and sizes"): sequences, events, and the events of each mark per split.
SIZES = {"train": (126, 2711), "dev": (152, 2735), "test": (155, 2608)}
MARK_COUNTS = {
    "train": [1121, 67, 963, 367, 125, 27, 41],
    "dev": [1115, 96, 970, 355, 123, 22, 54],
    "test": [1031, 104, 854, 382, 166, 27, 44],
}
GAPS = {"train": (1.082, 1.364), "dev": (1.060, 1.351), "test": (1.071, 1.326)}  # median, mean (s)


def _load_make() -> ModuleType:
    spec = importlib.util.spec_from_file_location("football_events_make", FOLDER / "make.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


make = _load_make()


@pytest.fixture(scope="module")
def splits() -> dict[str, EventSequences]:
    return read_easytpp_dir(FOLDER)


# ------------------------------------------------------------------------------------------- shipped files


def test_registry_and_size() -> None:
    assert "football_events" in available_datasets()
    names = ("train.json", "dev.json", "test.json", "summary.json", "README.md", "make.py")
    assert all((FOLDER / n).is_file() for n in names)
    assert sum((FOLDER / n).stat().st_size for n in names) < 2_000_000


def test_sizes_and_marks_match_readme(splits: dict[str, EventSequences]) -> None:
    assert list(splits) == list(SPLITS)
    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    for split, seqs in splits.items():
        assert seqs.num_marks == K
        assert (len(seqs), seqs.num_events) == SIZES[split]
        counts = np.bincount(np.concatenate(seqs.marks), minlength=K).tolist()
        assert counts == MARK_COUNTS[split]
        gaps = np.concatenate([np.diff(t) for t in seqs.times])
        assert round(float(np.median(gaps)), 3) == GAPS[split][0]
        assert round(float(np.mean(gaps)), 3) == GAPS[split][1]
        # The README's size row says the same: "| train | 126 | 2,711 | 21.52 (3–127) | 1.082 / 1.364 | ..."
        row = re.search(rf"^\| {split} \| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \((\d+)–(\d+)\) \| ([\d.]+) / ([\d.]+) \|",
                        readme, re.MULTILINE)
        assert row is not None, split
        lengths = seqs.lengths
        assert int(row[1].replace(",", "")) == len(seqs) and int(row[2].replace(",", "")) == seqs.num_events
        assert float(row[3]) == round(float(lengths.mean()), 2)
        assert (int(row[4]), int(row[5])) == (lengths.min(), lengths.max())
        assert (float(row[6]), float(row[7])) == GAPS[split]
        # ... and so does its mark-frequency row: "| train | 0.414 (1,121) | ..."
        freq = re.search(rf"^\| {split} \|((?: [\d.]+ \([\d,]+\) \|){{{K}}})$", readme, re.MULTILINE)
        assert freq is not None, split
        cells = re.findall(r"([\d.]+) \(([\d,]+)\)", freq[1])
        assert [int(c.replace(",", "")) for _, c in cells] == counts
        assert [float(f) for f, _ in cells] == [round(c / seqs.num_events, 3) for c in counts]


def test_summary_json_matches_files(splits: dict[str, EventSequences]) -> None:
    info = json.loads((FOLDER / "summary.json").read_text(encoding="utf-8"))
    assert info["marks"] == list(make.MARKS)
    for split, seqs in splits.items():
        assert info["splits"][split] == make.split_summary(seqs)
    total = info["conversion_total"]
    dropped = (total["excluded"] + total["bookkeeping"] + total["shootout"] + total["out_of_time_order"]
               + total["ties"] + total["short_possession_events"])
    assert total["events"] == 11839 and total["kept"] == 8054 and total["events"] - dropped == total["kept"]
    assert (total["excluded"], total["bookkeeping"], total["out_of_time_order"], total["ties"]) == (5, 107, 2, 3510)
    assert total["kept"] == sum(s.num_events for s in splits.values())
    assert [f["sha256"] for f in info["source"]["files"]] == [m.sha256 for m in make.MATCHES]


def test_sequences_are_valid_possessions(splits: dict[str, EventSequences]) -> None:
    for number, split in enumerate(SPLITS):  # match 0 -> train, 1 -> dev, 2 -> test
        seqs = splits[split]
        for seq_idx, t, m in zip(seqs.ids, seqs.times, seqs.marks, strict=True):
            assert len(t) >= make.MIN_EVENTS
            assert t[0] == 0.0
            assert np.all(np.diff(t) > 0), (split, seq_idx)  # strictly positive gaps: the tie rule held
            assert np.allclose(t * 1000, np.round(t * 1000), rtol=0, atol=1e-6)  # millisecond clock
            assert m.min() >= 0 and m.max() < K
            match, period, possession = seq_idx // 10000, seq_idx // 1000 % 10, seq_idx % 1000
            assert (match, period) in {(number, 1), (number, 2)} and possession >= 1
        assert len(set(seqs.ids)) == len(seqs)


# --------------------------------------------------------------------------------------- pure conversion


def ev(index: int, kind: str, period: int, possession: int, timestamp: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"e{index}", "index": index, "period": period, "possession": possession, "timestamp": timestamp,
            "type": {"id": 0, "name": kind}, **extra}


def hand_match() -> list[dict[str, Any]]:
    events = [
        ev(1, "Starting XI", 1, 1, "00:00:00.000"),            # bookkeeping
        ev(2, "Half Start", 1, 1, "00:00:00.000"),             # bookkeeping
        ev(3, "Pass", 1, 2, "00:00:01.000"),                   # t = 0
        ev(4, "Ball Receipt*", 1, 2, "00:00:02.500"),          # tied with the carry: dropped
        ev(5, "Carry", 1, 2, "00:00:02.500"),                  # t = 1.5
        ev(6, "Pressure", 1, 2, "00:00:03.000"),               # t = 2.0
        ev(7, "Substitution", 1, 2, "00:00:03.100"),           # bookkeeping
        ev(8, "Shot", 1, 2, "00:00:04.250"),                   # t = 3.25
        ev(9, "Pass", 1, 3, "00:00:10.000"),                   # possession 3 has 2 events: dropped
        ev(10, "Ball Receipt*", 1, 3, "00:00:11.000"),
        ev(11, "Half End", 1, 3, "00:45:00.000"),              # bookkeeping
        ev(12, "Pass", 2, 4, "00:00:00.100"),                  # period clock restarts: t = 0
        ev(13, "Duel", 2, 4, "00:00:00.600"),                  # t = 0.5
        ev(14, "Foul Committed", 2, 4, "00:00:01.000"),        # tied with the foul won: dropped
        ev(15, "Foul Won", 2, 4, "00:00:01.000"),              # t = 0.9
        ev(16, "Ball Receipt*", 2, 4, "00:00:00.050"),         # stamped before event 15: dropped
        ev(17, "Clearance", 2, 4, "00:00:02.000"),             # t = 1.9
        ev(18, "Shot", 5, 5, "00:00:30.000"),                  # penalty shootout: dropped
        ev(19, "Shot", 5, 5, "00:01:30.000"),
        ev(20, "Shot", 5, 5, "00:02:30.000"),
    ]
    return events


def test_convert_events_by_hand() -> None:
    events = hand_match()
    shuffled = [events[i] for i in np.random.default_rng(0).permutation(len(events))]  # order comes from index
    injected = ev(99, "Own Goal For", 1, 2, "00:00:02.000", id="kloppy-test-event")
    possessions, counts = make.convert_events([*shuffled, injected], "hand.json", match=2,
                                              excluded_ids=["kloppy-test-event"])
    assert [(p.period, p.possession, p.seq_idx) for p in possessions] == [(1, 2, 21002), (2, 4, 22004)]
    np.testing.assert_allclose(possessions[0].times, [0.0, 1.5, 2.0, 3.25], rtol=0, atol=1e-12)
    assert possessions[0].marks.tolist() == [0, 2, 3, 5]  # pass, carry, pressure, shot
    np.testing.assert_allclose(possessions[1].times, [0.0, 0.5, 0.9, 1.9], rtol=0, atol=1e-12)
    assert possessions[1].marks.tolist() == [0, 4, 6, 4]  # pass, defensive action, other (foul won), clearance
    assert (counts.events, counts.excluded, counts.bookkeeping, counts.shootout) == (21, 1, 4, 3)
    assert (counts.out_of_time_order, counts.ties, counts.short_possessions, counts.short_possession_events) == \
        (1, 2, 1, 2)
    assert (counts.possessions, counts.kept) == (2, 8)
    assert counts.types["Shot"] == 4 and "Own Goal For" not in counts.types


def test_parse_timestamp() -> None:
    assert make.parse_timestamp("01:02:03.456", "x") == 3_723_456
    assert make.parse_timestamp("00:47:32.053", "x") == 2_852_053
    assert make.parse_timestamp("00:00:00.5", "x") == 500
    for bad in ("1:02.000", "00:61:00.000", "00:00:00.0001", "00:00:0a.000", "00:00:00,000"):
        with pytest.raises(make.FootballDataError, match="timestamp"):
            make.parse_timestamp(bad, "x")


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e[4].pop("timestamp"), r"hand.json: event 4 \(index 5, id 'e5'\): missing timestamp"),
    (lambda e: e[4].update(timestamp=2.5), "timestamp must be a string"),
    (lambda e: e[4].update(type={"name": "Teleport"}), "unknown StatsBomb event type 'Teleport'"),
    (lambda e: e[4].update(index=4), "index 4 repeats that of event id 'e4'"),
    (lambda e: e[4].update(period="1"), "period must be an integer"),
    (lambda e: e[4].pop("type"), "missing type.name"),
    (lambda e: e.append(7), "event 20: expected an object"),
])
def test_convert_events_rejects_bad_events(change: Any, message: str) -> None:
    events = hand_match()
    change(events)
    with pytest.raises(make.FootballDataError, match=message):
        make.convert_events(events, "hand.json")


def test_convert_events_rejects_missing_excluded_id_and_non_list() -> None:
    with pytest.raises(make.FootballDataError, match=r"excluded event ids not found: \['nope'\]"):
        make.convert_events(hand_match(), "hand.json", excluded_ids=["nope"])
    with pytest.raises(make.FootballDataError, match="expected a JSON list of events, got dict"):
        make.convert_events({"events": []}, "hand.json")  # type: ignore[arg-type]


def test_every_mark_and_known_type_is_mapped() -> None:
    assert sorted({m for m in make.TYPE_TO_MARK.values() if m is not None}) == list(range(K))
    assert len(make.MARKS) == K
    assert len(make.TYPE_TO_MARK) == 35  # the event types of StatsBomb's open-data specification (v4)


# ------------------------------------------------------------------------------------ wheel and rebuild


def _fake_wheel(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    spec = make.MATCHES[0]
    with pytest.raises(make.FootballDataError, match=f"{spec.path}: SHA-256 .* != expected {spec.sha256}"):
        make.load_match(b"[]", spec)
    wheel = tmp_path / "fake.whl"
    _fake_wheel(wheel, {m.path: json.dumps(hand_match()).encode() for m in make.MATCHES})
    with pytest.raises(make.FootballDataError, match="SHA-256"):
        make.read_wheel(wheel)
    _fake_wheel(wheel, {})
    with pytest.raises(make.FootballDataError, match=f"has no {make.MATCHES[0].path}"):
        make.read_wheel(wheel)


def test_pipeline_on_a_fake_wheel_is_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three hand matches (the third with one possession fewer) stand in for the real files, with their hashes.
    files, specs = {}, []
    for number, split in enumerate(SPLITS):
        events = hand_match()[: 17 if number < 2 else 11]
        data = json.dumps(events).encode()
        path = f"kloppy/tests/files/match{number}.json"
        files[path] = data
        specs.append(make.MatchFile(path, hashlib.sha256(data).hexdigest(), split, f"match {number}"))
    wheel = tmp_path / "fake.whl"
    _fake_wheel(wheel, files)
    monkeypatch.setattr(make, "MATCHES", tuple(specs))
    out = [tmp_path / "a", tmp_path / "b"]
    for folder in out:
        make.main(["--wheel", str(wheel), "--out", str(folder)])
    for name in ("train.json", "dev.json", "test.json", "summary.json"):
        assert (out[0] / name).read_bytes() == (out[1] / name).read_bytes()
    back = read_easytpp_dir(out[0])
    assert [len(back[s]) for s in SPLITS] == [2, 2, 1]
    assert back["dev"].ids == [11002, 12004] and back["test"].ids == [21002]
    np.testing.assert_allclose(back["train"].times[1], [0.0, 0.5, 0.9, 1.9], rtol=0, atol=1e-12)


@pytest.mark.skipif(not os.environ.get("FOOTBALL_EVENTS_WHEEL"),
                    reason="set FOOTBALL_EVENTS_WHEEL to kloppy-3.19.1-py3-none-any.whl to rebuild from it")
def test_rebuild_from_the_kloppy_wheel_is_byte_for_byte(tmp_path: Path) -> None:
    make.main(["--wheel", os.environ["FOOTBALL_EVENTS_WHEEL"], "--out", str(tmp_path)])
    for name in ("train.json", "dev.json", "test.json", "summary.json"):
        assert (tmp_path / name).read_bytes() == (FOLDER / name).read_bytes(), name
