"""Build the football match event data set (EasyTPP JSON) from StatsBomb Open Data carried by the kloppy wheel.

Input: three full-match StatsBomb event files (JSON lists of events) inside ``kloppy-3.19.1-py3-none-any.whl``
(``kloppy/tests/files/``), read straight from the wheel with :mod:`zipfile`; each file's SHA-256 must equal the
value in :data:`MATCHES`. Without ``--wheel`` the wheel is fetched with ``pip download kloppy==3.19.1 --no-deps``
into a temporary folder.

Conversion (:func:`convert_events`, pure: a list of event dicts in, sequences and counts out):

1. Events are put in StatsBomb's order (the ``index`` field, which must be unique); events that kloppy added to
   its copy of a file for its own tests are removed by id first (:attr:`MatchFile.excluded_ids`).
2. Bookkeeping events (Starting XI, Half Start/End, Substitution, Tactical Shift, Player On/Off, Camera On/off,
   Injury Stoppage, Referee Ball-Drop, Bad Behaviour) and penalty-shootout events (period 5) are dropped.
3. One sequence per possession (StatsBomb's ``possession`` field) within a period, events in ``index`` order.
   Event times are ``timestamp`` (``HH:MM:SS.mmm`` on the period clock, which restarts at 0 each period) in
   integer milliseconds, shifted so that the possession's first event is at 0, written in seconds. An event
   stamped before an earlier event of its possession is dropped (a broken timestamp: two ball receipts
   stamped ``00:00:00.189`` and ``00:00:01.546`` at the end of a first half).
4. Ties: of the events of a possession that share one timestamp only the *last* in StatsBomb's order is kept
   (zero gaps break log-normal and most neural TPP models). A tie is almost always an arrival and the action
   that follows it at the same instant (ball receipt then carry, ball recovery then carry, receipt then a
   one-touch pass), so the kept event is the action.
5. Possessions with fewer than :data:`MIN_EVENTS` events left are dropped.

Marks (:data:`MARKS`, ``K = 7``): StatsBomb event types grouped by :data:`TYPE_TO_MARK`; an event type that is not
listed there raises an error (nothing is silently mapped). Each sequence's ``seq_idx`` is
``10000 * match + 1000 * period + possession`` with ``match`` the position of its file in :data:`MATCHES`.

Split by match: train = Barcelona v Deportivo Alavés, dev = Barcelona v Girona, test = Turkey v Italy.
Output: ``train.json``, ``dev.json``, ``test.json`` (:func:`tpp.data.write_easytpp_json`, deterministic) and
``summary.json`` (what was dropped, sizes, mark frequencies, gaps); re-running rebuilds them byte for byte::

    python datasets/football_events/make.py [--wheel kloppy-3.19.1-py3-none-any.whl] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nde.train import atomic_write_text
from tpp.data import SPLITS, EventSequences, read_easytpp_dir, write_easytpp_json

KLOPPY_VERSION = "3.19.1"
WHEEL_NAME = f"kloppy-{KLOPPY_VERSION}-py3-none-any.whl"

MARKS: tuple[str, ...] = ("pass", "ball_receipt", "carry", "pressure", "defensive_action", "shot", "other")
"""Mark ``k`` is ``MARKS[k]``."""

_PASS, _RECEIPT, _CARRY, _PRESSURE, _DEFENCE, _SHOT, _OTHER = range(len(MARKS))

TYPE_TO_MARK: dict[str, int | None] = {
    # On-ball actions of the team in possession.
    "Pass": _PASS,
    "Ball Receipt*": _RECEIPT,
    "Carry": _CARRY,
    "Dribble": _CARRY,  # a take-on: carrying the ball past an opponent
    "Pressure": _PRESSURE,
    "Shot": _SHOT,
    # Winning or contesting the ball, and goalkeeping.
    "Duel": _DEFENCE,
    "Ball Recovery": _DEFENCE,
    "Interception": _DEFENCE,
    "Clearance": _DEFENCE,
    "Block": _DEFENCE,
    "Dribbled Past": _DEFENCE,
    "50/50": _DEFENCE,
    "Goal Keeper": _DEFENCE,
    "Shield": _DEFENCE,
    # Rare in-play events.
    "Foul Committed": _OTHER,
    "Foul Won": _OTHER,
    "Miscontrol": _OTHER,
    "Dispossessed": _OTHER,
    "Error": _OTHER,
    "Offside": _OTHER,
    "Own Goal For": _OTHER,
    "Own Goal Against": _OTHER,
    # Bookkeeping, not play: dropped.
    "Starting XI": None,
    "Half Start": None,
    "Half End": None,
    "Substitution": None,
    "Tactical Shift": None,
    "Player On": None,
    "Player Off": None,
    "Camera On": None,
    "Camera off": None,
    "Injury Stoppage": None,
    "Referee Ball-Drop": None,
    "Bad Behaviour": None,
}
"""StatsBomb event type name -> mark, or None for a bookkeeping event (dropped). Covers every type of the
StatsBomb Open Data event specification (v4)."""

MIN_EVENTS = 3
"""Possessions with fewer events (after dropping bookkeeping events and ties) are dropped."""

SHOOTOUT_PERIOD = 5
"""StatsBomb's period of a penalty shootout, which is not open play: its events are dropped."""


@dataclass(frozen=True)
class MatchFile:
    """One StatsBomb event file inside the kloppy wheel.

    Attributes:
        path: the file's path inside the wheel.
        sha256: its SHA-256 (hex).
        split: the split its possessions go to.
        match: a readable name (home v away, score).
        excluded_ids: ids of events that are not StatsBomb's: kloppy appended them to its test copy of the file
            (duplicate ``index`` values, truncated ids, an own goal that did not happen).
    """

    path: str
    sha256: str
    split: str
    match: str
    excluded_ids: tuple[str, ...] = ()


MATCHES: tuple[MatchFile, ...] = (
    MatchFile("kloppy/tests/files/statsbomb_event.json",
              "c894a3301e1f406da251edd8ddb133c23824e578abe0b0e7065259f92bae3f10", "train",
              "Barcelona 3-0 Deportivo Alavés (La Liga 2018/19)",
              ("d9152217-8772-454c-b461-9d1d66070859", "d9152217-8772-454c-b461-9d1d66070129",
               "d9152217-8772-454c-b461-9d1d42070129", "f942c5b5-df4b-4ee4-9e90-ed5f5",
               "89dd4f4b-0a70-48d8-a0e7-ac4c")),
    MatchFile("kloppy/tests/files/statsbomb_15986_event.json",
              "5370661dbd0690d4e46820bb4ffa41107c94cafb1998247067546d5cff35899f", "dev",
              "Barcelona 2-2 Girona (La Liga 2018/19, StatsBomb match 15986)"),
    MatchFile("kloppy/tests/files/statsbomb_3788741_event.json",
              "59cfc6f9359ced2886735c179786e70536bc549aced858a85cacdea1667751d9", "test",
              "Turkey 0-3 Italy (UEFA Euro 2020, StatsBomb match 3788741)"),
)


class FootballDataError(ValueError):
    """A source file or event that cannot be converted; the message names the file and the event."""


@dataclass
class Possession:
    """One possession: ``times [n]`` float64 seconds from its first event (``times[0] = 0``, strictly increasing)
    and ``marks [n]`` int64 in ``[0, len(MARKS))``."""

    match: int
    period: int
    possession: int
    times: np.ndarray
    marks: np.ndarray

    @property
    def seq_idx(self) -> int:
        return 10000 * self.match + 1000 * self.period + self.possession


@dataclass
class ConversionCounts:
    """What :func:`convert_events` read, dropped and kept (events unless named otherwise)."""

    events: int = 0
    excluded: int = 0
    bookkeeping: int = 0
    shootout: int = 0
    out_of_time_order: int = 0  # dropped: stamped before an earlier event (index order) of their possession
    ties: int = 0  # dropped by the tie rule
    short_possessions: int = 0  # possessions dropped for having fewer than MIN_EVENTS events
    short_possession_events: int = 0
    possessions: int = 0  # kept
    kept: int = 0
    types: dict[str, int] = field(default_factory=dict)  # StatsBomb type counts of the events read

    def add(self, other: ConversionCounts) -> None:
        for name, value in vars(other).items():
            if name == "types":
                for key, count in value.items():
                    self.types[key] = self.types.get(key, 0) + count
            else:
                setattr(self, name, getattr(self, name) + value)


def parse_timestamp(text: Any, where: str) -> int:
    """StatsBomb's ``timestamp`` ``"HH:MM:SS.fff"`` (period clock) -> integer milliseconds."""
    if not isinstance(text, str):
        raise FootballDataError(f"{where}: timestamp must be a string 'HH:MM:SS.fff', got {text!r}")
    parts = text.split(":")
    seconds, _, fraction = parts[-1].partition(".")
    fields = [*parts[:-1], seconds]
    if len(parts) != 3 or not all(p.isdigit() for p in fields) or not (fraction.isdigit() and len(fraction) <= 6):
        raise FootballDataError(f"{where}: timestamp {text!r} is not 'HH:MM:SS.fff'")
    hours, minutes, secs = (int(p) for p in fields)
    if minutes >= 60 or secs >= 60:
        raise FootballDataError(f"{where}: timestamp {text!r} has minutes or seconds >= 60")
    micros = int(fraction.ljust(6, "0"))
    if micros % 1000:
        raise FootballDataError(f"{where}: timestamp {text!r} is finer than a millisecond")
    return ((hours * 60 + minutes) * 60 + secs) * 1000 + micros // 1000


def _int_field(event: dict[str, Any], key: str, where: str) -> int:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FootballDataError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def _type_name(event: dict[str, Any], where: str) -> str:
    kind = event.get("type")
    name = kind.get("name") if isinstance(kind, dict) else None
    if not isinstance(name, str):
        raise FootballDataError(f"{where}: missing type.name (got type {kind!r})")
    if name not in TYPE_TO_MARK:
        raise FootballDataError(f"{where}: unknown StatsBomb event type {name!r}; add it to TYPE_TO_MARK (a mark, or "
                                "None to drop it as bookkeeping)")
    return name


def convert_events(events: Sequence[Any], source: str = "<events>", match: int = 0,
                   excluded_ids: Iterable[str] = ()) -> tuple[list[Possession], ConversionCounts]:
    """Convert one match's StatsBomb events to possession sequences (steps 1-5 of the module docstring).

    Args:
        events: the match's events (dicts with ``id``, ``index``, ``period``, ``timestamp``, ``possession``,
            ``type.name``), in any order.
        source: name used in error messages (the file).
        match: the match's number, used in :attr:`Possession.seq_idx`.
        excluded_ids: ids of events to remove before anything else (each must be present).

    Returns:
        The kept possessions ordered by (period, possession), and the counts of what was read and dropped.

    Raises:
        FootballDataError: an event that is not a dict, lacks a field or has a malformed one (timestamp not
            ``HH:MM:SS.fff``, non-integer index/period/possession, unknown type), a duplicate ``index``, or an
            excluded id that is not in the file; the message names the source and the event's index and id.
    """
    if not isinstance(events, list | tuple):
        raise FootballDataError(f"{source}: expected a JSON list of events, got {type(events).__name__}")
    counts = ConversionCounts(events=len(events))
    excluded = set(excluded_ids)
    found: set[str] = set()
    rows: list[tuple[int, int, int, int, int]] = []  # (period, possession, index, ms, mark)
    seen_index: dict[int, str] = {}
    for position, event in enumerate(events):
        where = f"{source}: event {position}"
        if not isinstance(event, dict):
            raise FootballDataError(f"{where}: expected an object, got {type(event).__name__}")
        if event.get("id") in excluded:
            found.add(event["id"])
            counts.excluded += 1
            continue
        index = _int_field(event, "index", where)
        where = f"{source}: event {position} (index {index}, id {event.get('id')!r})"
        if index in seen_index:
            raise FootballDataError(f"{where}: index {index} repeats that of event id {seen_index[index]!r}")
        seen_index[index] = str(event.get("id"))
        name = _type_name(event, where)
        counts.types[name] = counts.types.get(name, 0) + 1
        period = _int_field(event, "period", where)
        if "timestamp" not in event:
            raise FootballDataError(f"{where}: missing timestamp")
        ms = parse_timestamp(event["timestamp"], where)
        possession = _int_field(event, "possession", where)
        mark = TYPE_TO_MARK[name]
        if mark is None:
            counts.bookkeeping += 1
        elif period == SHOOTOUT_PERIOD:
            counts.shootout += 1
        else:
            rows.append((period, possession, index, ms, mark))
    missing = sorted(excluded - found)
    if missing:
        raise FootballDataError(f"{source}: excluded event ids not found: {missing} (is this the expected file?)")

    groups: dict[tuple[int, int], list[tuple[int, int, int, int, int]]] = {}
    for row in sorted(rows):  # by (period, possession, index)
        groups.setdefault(row[:2], []).append(row)
    possessions: list[Possession] = []
    for (period, possession), group in groups.items():
        ms = np.array([r[3] for r in group], dtype=np.int64)
        marks = np.array([r[4] for r in group], dtype=np.int64)
        # An event stamped before an earlier event of its possession has a broken timestamp (in these files a
        # ball receipt stamped 00:00:01 at the end of a half): drop it rather than move it.
        in_order = ms >= np.maximum.accumulate(ms)
        counts.out_of_time_order += int(np.sum(~in_order))
        ms, marks = ms[in_order], marks[in_order]
        last_of_tie = np.append(ms[1:] != ms[:-1], True)  # keep the last event of each run of equal times
        counts.ties += int(np.sum(~last_of_tie))
        ms, marks = ms[last_of_tie], marks[last_of_tie]
        if len(ms) < MIN_EVENTS:
            counts.short_possessions += 1
            counts.short_possession_events += len(ms)
            continue
        times = (ms - ms[0]) / 1000.0
        possessions.append(Possession(match, period, possession, times, marks))
    counts.possessions = len(possessions)
    counts.kept = sum(len(p.times) for p in possessions)
    return possessions, counts


def check_sha256(data: bytes, expected: str, name: str) -> None:
    """Raise :class:`FootballDataError` when ``sha256(data)`` is not ``expected``."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise FootballDataError(f"{name}: SHA-256 {digest} != expected {expected}; this is not the file the data "
                                f"set was built from (kloppy {KLOPPY_VERSION})")


def load_match(data: bytes, spec: MatchFile) -> list[Any]:
    """The events of one match file: SHA-256 checked, then parsed as JSON."""
    check_sha256(data, spec.sha256, spec.path)
    return json.loads(data.decode("utf-8"))


def read_wheel(wheel: str | Path) -> dict[str, list[Any]]:
    """``{path: events}`` of every file in :data:`MATCHES`, read from the kloppy wheel and checked."""
    out = {}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for spec in MATCHES:
            if spec.path not in names:
                raise FootballDataError(f"{wheel}: has no {spec.path} (expected {WHEEL_NAME})")
            out[spec.path] = load_match(archive.read(spec.path), spec)
    return out


def build_splits(match_events: dict[str, list[Any]]) -> tuple[dict[str, EventSequences], dict[str, ConversionCounts]]:
    """Convert every match of :data:`MATCHES` and gather its possessions into its split.

    Returns:
        ``{split: EventSequences}`` (train, dev, test; ``num_marks = len(MARKS)``, ``ids`` = ``seq_idx``) and the
        conversion counts per file.
    """
    per_split: dict[str, list[Possession]] = {split: [] for split in SPLITS}
    counts: dict[str, ConversionCounts] = {}
    for number, spec in enumerate(MATCHES):
        possessions, counts[spec.path] = convert_events(match_events[spec.path], spec.path, number, spec.excluded_ids)
        per_split[spec.split].extend(possessions)
    splits = {
        split: EventSequences([p.times for p in ps], [p.marks for p in ps], len(MARKS), None, split,
                              [p.seq_idx for p in ps])
        for split, ps in per_split.items()
    }
    return splits, counts


def split_summary(seqs: EventSequences) -> dict[str, Any]:
    """Sizes, mark frequencies and inter-event gaps (seconds; the first event of a sequence has none)."""
    lengths = seqs.lengths
    marks = np.concatenate(seqs.marks)
    gaps = np.concatenate([np.diff(t) for t in seqs.times])
    frequency = np.bincount(marks, minlength=seqs.num_marks)
    return {
        "sequences": len(seqs),
        "events": int(lengths.sum()),
        "mean_length": round(float(lengths.mean()), 4),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "mark_counts": {name: int(c) for name, c in zip(MARKS, frequency, strict=True)},
        "mark_frequencies": {name: round(float(c) / len(marks), 4) for name, c in zip(MARKS, frequency, strict=True)},
        "gap_median_s": round(float(np.median(gaps)), 4),
        "gap_mean_s": round(float(np.mean(gaps)), 4),
        "gap_min_s": round(float(np.min(gaps)), 4),
        "gap_max_s": round(float(np.max(gaps)), 4),
        "duration_mean_s": round(float(np.mean([t[-1] for t in seqs.times])), 4),
    }


def summary(splits: dict[str, EventSequences], counts: dict[str, ConversionCounts]) -> dict[str, Any]:
    """The contents of ``summary.json``."""
    total = ConversionCounts()
    for c in counts.values():
        total.add(c)
    return {
        "source": {"package": "kloppy", "version": KLOPPY_VERSION, "wheel": WHEEL_NAME,
                   "files": [{"path": s.path, "sha256": s.sha256, "match": s.match, "split": s.split}
                             for s in MATCHES]},
        "marks": list(MARKS),
        "type_to_mark": {name: (None if m is None else MARKS[m]) for name, m in TYPE_TO_MARK.items()},
        "tie_rule": "keep the last event (StatsBomb index order) of events of a possession with equal timestamps",
        "min_events": MIN_EVENTS,
        "conversion": {path: {k: v for k, v in vars(c).items() if k != "types"} for path, c in counts.items()},
        "conversion_total": {k: v for k, v in vars(total).items() if k != "types"},
        "statsbomb_type_counts": dict(sorted(total.types.items(), key=lambda kv: (-kv[1], kv[0]))),
        "splits": {split: split_summary(seqs) for split, seqs in splits.items()},
    }


def download_wheel(folder: Path) -> Path:
    """``pip download kloppy==3.19.1 --no-deps -d folder``; returns the wheel's path."""
    subprocess.run([sys.executable, "-m", "pip", "download", f"kloppy=={KLOPPY_VERSION}", "--no-deps",
                    "--only-binary=:all:", "-d", str(folder)], check=True)
    wheel = folder / WHEEL_NAME
    if not wheel.is_file():
        raise FootballDataError(f"pip download did not produce {wheel}")
    return wheel


def make(wheel: Path, out: Path) -> dict[str, Any]:
    """Read the wheel, write the splits and ``summary.json`` into ``out``, read them back; return the summary."""
    splits, counts = build_splits(read_wheel(wheel))
    out.mkdir(parents=True, exist_ok=True)
    for split, seqs in splits.items():
        write_easytpp_json(seqs, out / f"{split}.json")
    info = summary(splits, counts)
    atomic_write_text(out / "summary.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    back = read_easytpp_dir(out)  # the EasyTPP validation: gaps, marks in range, equal dim_process
    for split, seqs in back.items():
        if any(np.any(np.diff(t) <= 0) for t in seqs.times):
            raise FootballDataError(f"{out / split}.json: a gap is not strictly positive")
    return info


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, default=None,
                        help=f"the kloppy wheel ({WHEEL_NAME}); default: pip download it into a temporary folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the folder of this script)")
    args = parser.parse_args(argv)
    if args.wheel is None:
        with tempfile.TemporaryDirectory() as tmp:
            info = make(download_wheel(Path(tmp)), args.out)
    else:
        info = make(args.wheel, args.out)
    for split, s in info["splits"].items():
        print(f"{split}: {s['sequences']} sequences, {s['events']} events, mean length {s['mean_length']}, "
              f"gap median {s['gap_median_s']} s, mean {s['gap_mean_s']} s")
    print(f"wrote {', '.join(f'{s}.json' for s in SPLITS)} and summary.json to {args.out}")


if __name__ == "__main__":
    main()
