"""Readers and writers of event data: EasyTPP's JSON records, the NHP/EasyTPP pickles, a pandas long format.

Every reader returns an :class:`~tpp.data.sequences.EventSequences` and checks more than
:meth:`EventSequences.validate` does: the redundant fields of the EasyTPP formats (``seq_len``,
``time_since_last_event``, ``dim_process``) must agree with the events. Every error is a
:class:`~tpp.data.sequences.TPPDataError` (a ``ValueError``) that names the file, the sequence (its position
in the file and its ``seq_idx``) and the event, e.g.::

    train.json: sequence 3 (seq_idx 17), event 5: time_since_last_event 0.31 != 0.29 = time_since_start[5] -
    time_since_start[4]

**EasyTPP JSON** (:func:`read_easytpp_json`, :func:`write_easytpp_json`). One file per split (``train.json``,
``dev.json``, ``test.json``) holding a JSON list with one record per sequence (JSON lines, one record per
line, are read too)::

    [{"dim_process": 3, "seq_idx": 0, "seq_len": 40,
      "time_since_start": [0.0, 0.42, ...], "time_since_last_event": [0.0, 0.42, ...], "type_event": [0, 2, ...]},
     ...]

``dim_process`` is the number of marks ``K`` (the same in every record), ``type_event`` the marks in
``[0, K)``, ``time_since_start`` the event times (non-decreasing) and ``time_since_last_event`` their gaps.
The gaps are redundant, and the reader checks them: for event ``k >= 1``,
``|gap[k] - (t[k] - t[k-1])| <= 1e-9 + 1e-6 * max(|t[k]|, |t[k-1]|)`` (the relative part is relative to the
times, not to the gap, because files stored in float32, like the NHP pickles, carry a rounding error of the
times' magnitude in each gap); the first event's gap may be ``0`` (EasyTPP) or ``t[0]`` (NHP, where the
process starts at time 0), within the same tolerance. ``gaps="recompute"`` reads a file whose gaps disagree
by trusting ``time_since_start``: the disagreements are counted and reported in a :class:`GapMismatchWarning`
(attributes ``count``, ``sequences``, ``events``), never silently. The format has no observation window, so
readers return ``windows=None``.

**NHP/EasyTPP pickles** (:func:`read_easytpp_pickle`, :func:`write_easytpp_pickle`):
``{'dim_process': K, '<split>': [[{'time_since_start', 'time_since_last_event', 'type_event', ...}, ...], ...]}``
with one file per split. Pickles can run arbitrary code when loaded, so they are read only with an explicit
``allow_pickle=True``, and then through a restricted unpickler (:func:`safe_pickle_load`) that builds only
dicts, lists, tuples, numbers, strings and numpy scalars and refuses every other global. Keys other than the
three above (NHP's ``log_intensity`` per event and ``log_lik`` per file) are not read into the
``EventSequences``; :func:`safe_pickle_load` returns the whole dict for them.

**Long table** (:func:`from_frame`, :func:`to_frame`, :func:`read_csv`, :func:`write_csv`): one row per event
with columns ``seq_id`` (integer), ``time`` and ``mark``, plus ``window_start`` and ``window_end`` when the
windows are known. Errors name the row (CSV: the line of the file).

Writers are atomic (a temporary file renamed into place) and write floats with ``repr``, so that
``EventSequences -> file -> EventSequences`` gives back the same float64 times bit for bit.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from nde.train.checkpoint import atomic_write_bytes, atomic_write_text
from tpp.data.sequences import EventSequences, TPPDataError

__all__ = [
    "SPLITS",
    "GapMismatchWarning",
    "UnsafePickleError",
    "from_frame",
    "read_csv",
    "read_easytpp_dir",
    "read_easytpp_json",
    "read_easytpp_pickle",
    "safe_pickle_load",
    "to_frame",
    "write_csv",
    "write_easytpp_dir",
    "write_easytpp_json",
    "write_easytpp_pickle",
]

SPLITS: tuple[str, str, str] = ("train", "dev", "test")
"""EasyTPP's split names, each stored in ``<split>.json`` (or ``<split>.pkl``)."""

GAP_RTOL = 1e-6
GAP_ATOL = 1e-9

GapsMode = Literal["check", "recompute"]
FirstGap = Literal["zero", "start"]


class UnsafePickleError(TPPDataError):
    """A pickle was refused: ``allow_pickle`` was not given, or the file refers to a disallowed global."""


class GapMismatchWarning(UserWarning):
    """``gaps="recompute"`` read a file whose ``time_since_last_event`` disagreed with ``time_since_start``.

    Attributes:
        source: the file.
        count: number of events whose gap disagreed (and was replaced by the difference of the times).
        sequences: number of sequences with at least one such event.
        events: total number of events read.
    """

    def __init__(self, message: str, *, source: str, count: int, sequences: int, events: int) -> None:
        super().__init__(message)
        self.source = source
        self.count = count
        self.sequences = sequences
        self.events = events


# ----------------------------------------------------------------------------------------------------------
# Shared parsing and checking of EasyTPP records
# ----------------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _show(value: Any) -> str:
    """``repr`` of a value, numpy scalars shown as Python ones (``nan``, not ``np.float64(nan)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _numbers(values: Any, where: str, field: str) -> np.ndarray:
    """``values`` (a list of reals) as float64; the error names the first entry that is not a real number."""
    if not isinstance(values, list | tuple | np.ndarray):
        raise TPPDataError(f"{where}: {field} must be a list of numbers, got {type(values).__name__}")
    for k, v in enumerate(values):
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
            raise TPPDataError(f"{where}, event {k}: {field} {_show(v)} is not a number")
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        k = int(bad[0])
        raise TPPDataError(f"{where}, event {k}: {field} {float(arr[k])!r} is not finite")
    return arr


def _marks(values: Any, where: str, num_marks: int) -> np.ndarray:
    """Marks as int64 in ``[0, num_marks)``; integral floats (``2.0``) are accepted, nothing else."""
    arr = _numbers(values, where, "type_event")
    frac = np.flatnonzero(arr != np.round(arr))
    if frac.size:
        k = int(frac[0])
        raise TPPDataError(f"{where}, event {k}: type_event {_show(values[k])} is not an integer")
    out = np.flatnonzero((arr < 0) | (arr >= num_marks))
    if out.size:
        k = int(out[0])
        raise TPPDataError(f"{where}, event {k}: type_event {int(arr[k])} is outside [0, {num_marks}) "
                           f"(dim_process {num_marks})")
    return arr.astype(np.int64)


def _check_sorted(times: np.ndarray, where: str) -> None:
    back = np.flatnonzero(np.diff(times) < 0)
    if back.size:
        k = int(back[0]) + 1
        raise TPPDataError(f"{where}, event {k}: time_since_start {float(times[k])!r} is before the previous "
                           f"event's {float(times[k - 1])!r} (times must be non-decreasing)")


def _gap_mismatches(times: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Boolean ``[n]``: event ``k``'s gap disagrees with ``t[k] - t[k-1]`` (``k = 0``: with both 0 and ``t[0]``)."""
    bad = np.zeros(len(times), dtype=bool)
    tol0 = GAP_ATOL + GAP_RTOL * abs(times[0])
    bad[0] = abs(gaps[0]) > tol0 and abs(gaps[0] - times[0]) > tol0
    if len(times) > 1:
        diff = np.diff(times)
        scale = np.maximum(np.abs(times[1:]), np.abs(times[:-1]))
        bad[1:] = np.abs(gaps[1:] - diff) > GAP_ATOL + GAP_RTOL * scale
    return bad


def _gap_message(times: np.ndarray, gaps: np.ndarray, k: int) -> str:
    if k == 0:
        return (f"time_since_last_event {float(gaps[0])!r} is neither 0 nor time_since_start[0] = "
                f"{float(times[0])!r}")
    return (f"time_since_last_event {float(gaps[k])!r} != {float(times[k] - times[k - 1])!r} = "
            f"time_since_start[{k}] - time_since_start[{k - 1}]")


class _Collector:
    """Accumulates parsed sequences of one file and the disagreeing gaps, then builds the EventSequences."""

    def __init__(self, source: str, gaps: str) -> None:
        if gaps not in ("check", "recompute"):
            raise ValueError(f"gaps must be 'check' or 'recompute', got {gaps!r}")
        self.source = source
        self.mode = gaps
        self.times: list[np.ndarray] = []
        self.marks: list[np.ndarray] = []
        self.ids: list[int] = []
        self.bad_events = 0
        self.bad_sequences = 0
        self.first_bad: str | None = None

    def add(self, where: str, seq_idx: int, raw_times: Any, raw_gaps: Any, raw_marks: Any, num_marks: int) -> None:
        n = len(raw_times)
        if len(raw_gaps) != n or len(raw_marks) != n:
            raise TPPDataError(f"{where}: time_since_start, time_since_last_event and type_event have lengths "
                               f"{n}, {len(raw_gaps)} and {len(raw_marks)}; they must be equal")
        if n == 0:
            raise TPPDataError(f"{where}: empty sequence (no events)")
        times = _numbers(raw_times, where, "time_since_start")
        gaps = _numbers(raw_gaps, where, "time_since_last_event")
        marks = _marks(raw_marks, where, num_marks)
        _check_sorted(times, where)
        bad = np.flatnonzero(_gap_mismatches(times, gaps))
        if bad.size:
            self.bad_events += int(bad.size)
            self.bad_sequences += 1
            if self.first_bad is None:
                self.first_bad = f"{where}, event {int(bad[0])}: {_gap_message(times, gaps, int(bad[0]))}"
        self.times.append(times)
        self.marks.append(marks)
        self.ids.append(int(seq_idx))

    def build(self, num_marks: int | None) -> EventSequences:
        """The sequences; in ``"check"`` mode, first raise on the first disagreeing gap, with the totals."""
        if not self.times or num_marks is None:
            raise TPPDataError(f"{self.source}: no sequences")
        events = sum(len(t) for t in self.times)
        if self.bad_events and self.mode == "check":
            raise TPPDataError(f"{self.first_bad} ({self.bad_events} of {events} events in {self.bad_sequences} of "
                               f"{len(self.times)} sequences disagree); pass gaps='recompute' to trust "
                               "time_since_start and count the disagreeing gaps")
        if self.bad_events:
            warnings.warn(
                GapMismatchWarning(
                    f"{self.source}: time_since_last_event disagreed with the differences of time_since_start in "
                    f"{self.bad_events} of {events} events ({self.bad_sequences} of {len(self.times)} sequences); "
                    f"the gaps were recomputed from time_since_start. First: {self.first_bad[len(self.source) + 2:]}",
                    source=self.source, count=self.bad_events, sequences=self.bad_sequences, events=events),
                stacklevel=3)
        return EventSequences(self.times, self.marks, int(num_marks), None, self.source, self.ids)


def _dim_process(value: Any, where: str) -> int:
    if not _is_int(value) or int(value) < 1:
        raise TPPDataError(f"{where}: dim_process must be a positive integer, got {value!r}")
    return int(value)


def _first_gaps(seqs: EventSequences, first_gap: str) -> list[np.ndarray]:
    """Per sequence, ``time_since_last_event`` as written: differences of the times, first 0 or ``t[0]``."""
    if first_gap not in ("zero", "start"):
        raise ValueError(f"first_gap must be 'zero' or 'start', got {first_gap!r}")
    out = []
    for t in seqs.times:
        g = np.empty_like(t)
        g[0] = 0.0 if first_gap == "zero" else t[0]
        g[1:] = np.diff(t)
        out.append(g)
    return out


# ----------------------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------------------

_JSON_KEYS = ("dim_process", "seq_idx", "seq_len", "time_since_start", "time_since_last_event", "type_event")


def _load_json_records(path: Path, source: str) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TPPDataError(f"{source}: not UTF-8 text ({err})") from err
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(text)
        else:  # JSON lines: one record per non-empty line
            records = []
            for line_no, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise TPPDataError(f"{source}: line {line_no}: not valid JSON ({err.msg}, column "
                                           f"{err.colno})") from err
    except json.JSONDecodeError as err:
        raise TPPDataError(f"{source}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err
    if not isinstance(records, list):
        raise TPPDataError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    return records


def read_easytpp_json(path: str | os.PathLike[str], *, gaps: GapsMode = "check") -> EventSequences:
    """Read one split in EasyTPP's JSON record format (a JSON list, or JSON lines, of records).

    Args:
        path: the file, e.g. ``train.json``.
        gaps: ``"check"`` (default) raises when ``time_since_last_event`` disagrees with the differences of
            ``time_since_start``; ``"recompute"`` trusts ``time_since_start`` and reports the number of
            disagreeing events in a :class:`GapMismatchWarning`.

    Returns:
        ``EventSequences`` with ``times`` = ``time_since_start`` (float64, in the file's time unit),
        ``marks`` = ``type_event``, ``num_marks`` = ``dim_process``, ``ids`` = ``seq_idx``, ``windows=None``
        and ``source`` = ``str(path)``.

    Raises:
        TPPDataError: a record is malformed (missing key, ``seq_len`` different from the lists' length,
            empty, non-finite or unsorted times, mark outside ``[0, dim_process)``, ``dim_process`` differing
            between records, disagreeing gaps in ``"check"`` mode); the message names the file, the sequence
            and the event.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    source = str(path)
    records = _load_json_records(path, source)
    collector = _Collector(source, gaps)
    num_marks: int | None = None
    for i, rec in enumerate(records):
        where = f"{source}: sequence {i}"
        if not isinstance(rec, dict):
            raise TPPDataError(f"{where}: expected a JSON object (record), got {type(rec).__name__}")
        missing = [k for k in _JSON_KEYS if k not in rec]
        if "seq_idx" in rec:
            if not _is_int(rec["seq_idx"]):
                raise TPPDataError(f"{where}: seq_idx must be an integer, got {rec['seq_idx']!r}")
            where = f"{source}: sequence {i} (seq_idx {rec['seq_idx']})"
        if missing:
            raise TPPDataError(f"{where}: missing key(s) {', '.join(missing)} (an EasyTPP record has "
                               f"{', '.join(_JSON_KEYS)})")
        dim = _dim_process(rec["dim_process"], where)
        if num_marks is None:
            num_marks = dim
        elif dim != num_marks:
            raise TPPDataError(f"{where}: dim_process {dim} differs from {num_marks} in sequence 0 (dim_process "
                               "must be the same in every record)")
        seq_len = rec["seq_len"]
        lists = [rec[k] for k in ("time_since_start", "time_since_last_event", "type_event")]
        for key, value in zip(("time_since_start", "time_since_last_event", "type_event"), lists, strict=True):
            if not isinstance(value, list):
                raise TPPDataError(f"{where}: {key} must be a list, got {type(value).__name__}")
        if not _is_int(seq_len) or seq_len != len(lists[0]):
            raise TPPDataError(f"{where}: seq_len {seq_len!r} != {len(lists[0])} = len(time_since_start)")
        collector.add(where, rec["seq_idx"], *lists, num_marks)
    return collector.build(num_marks)


def _json_records(seqs: EventSequences, first_gap: str) -> list[dict[str, Any]]:
    gaps = _first_gaps(seqs, first_gap)
    return [
        {"dim_process": int(seqs.num_marks), "seq_idx": int(seqs.ids[i]), "seq_len": len(t),
         "time_since_start": t.tolist(), "time_since_last_event": gaps[i].tolist(),
         "type_event": seqs.marks[i].tolist()}
        for i, t in enumerate(seqs.times)
    ]


def write_easytpp_json(seqs: EventSequences, path: str | os.PathLike[str], *,
                       first_gap: FirstGap = "zero") -> None:
    """Atomically write ``seqs`` as a JSON list of EasyTPP records, one record per line.

    ``time_since_last_event`` is computed from the times: the differences, and for the first event ``0``
    (``first_gap="zero"``, EasyTPP) or ``t[0]`` (``first_gap="start"``, NHP). ``seq_idx`` is ``seqs.ids``.
    The windows, if any, are not written (the format has none). Floats are written with ``repr``, so
    reading the file back gives the same float64 times.
    """
    records = _json_records(seqs, first_gap)
    text = "[\n" + ",\n".join(json.dumps(r, allow_nan=False) for r in records) + "\n]\n"
    atomic_write_text(path, text)


# ----------------------------------------------------------------------------------------------------------
# Pickle
# ----------------------------------------------------------------------------------------------------------


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as used by protocol-2 pickles for bytes, restricted to latin-1."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"pickle asks for _codecs.encode with encoding {encoding!r}; only latin1 is allowed")
    return obj.encode("latin1", errors)


def _numpy_scalar() -> Callable[..., Any]:
    core = getattr(np, "_core", None)
    if core is None:  # numpy < 2
        core = np.core  # type: ignore[attr-defined]
    return core.multiarray.scalar


_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "float": float, "int": int, "str": str, "bool": bool,
             "set": set, "frozenset": frozenset, "bytes": bytes, "complex": complex}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds plain containers, numbers, strings and numpy scalars; any other global is refused."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles (NHP's original files)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar()
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise UnsafePickleError(
            f"{self.source}: refusing to unpickle global {module}.{name}: only dicts, lists, tuples, numbers, "
            "strings and numpy scalars are allowed (a pickle that refers to other objects can run arbitrary code)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing a pickle with persistent ids")


def safe_pickle_load(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Any:
    """Unpickle ``path`` with a restricted unpickler, and only when ``allow_pickle=True``.

    Only dicts, lists, tuples, sets, numbers, strings, bytes and numpy scalars are built; a reference to any
    other global (``os.system``, ``builtins.eval``, a class) raises :class:`UnsafePickleError` before it is
    called. Use it to read what the EasyTPP readers skip, e.g. NHP's ``log_lik``.

    Raises:
        UnsafePickleError: ``allow_pickle`` is not True, or the pickle refers to a disallowed global.
        TPPDataError: the file is not a readable pickle (truncated, corrupt).
    """
    path = Path(path)
    source = str(path)
    if allow_pickle is not True:
        raise UnsafePickleError(
            f"{source}: refusing to unpickle by default (a pickle file can run arbitrary code when loaded); "
            "pass allow_pickle=True if you trust the file (it is then read with a restricted unpickler), or "
            "convert it to JSON")
    with path.open("rb") as file:
        try:
            return _RestrictedUnpickler(file, source).load()  # type: ignore[arg-type]
        except UnsafePickleError:
            raise
        except Exception as err:
            raise TPPDataError(f"{source}: cannot unpickle ({type(err).__name__}: {err})") from err


_EVENT_KEYS = ("time_since_start", "time_since_last_event", "type_event")


def read_easytpp_pickle(path: str | os.PathLike[str], split: str, *, allow_pickle: bool = False,
                        gaps: GapsMode = "check") -> EventSequences:
    """Read split ``split`` of an NHP/EasyTPP pickle; only with ``allow_pickle=True`` (see :func:`safe_pickle_load`).

    Layout: ``{'dim_process': K, split: [[{'time_since_start', 'time_since_last_event', 'type_event', ...},
    ...], ...]}``; other keys are ignored. ``gaps`` as in :func:`read_easytpp_json`. The sequences' ``ids``
    are their positions ``0 .. N-1`` (the format has no ``seq_idx``) and ``windows`` is None.

    Raises:
        UnsafePickleError: ``allow_pickle`` is not True, or the file refers to a disallowed global.
        TPPDataError: wrong layout or invalid events; the message names the file, split, sequence and event.
    """
    path = Path(path)
    source = str(path)
    data = safe_pickle_load(path, allow_pickle=allow_pickle)
    if not isinstance(data, dict):
        raise TPPDataError(f"{source}: expected a dict with keys 'dim_process' and {split!r}, got "
                           f"{type(data).__name__}")
    if split not in data:
        raise TPPDataError(f"{source}: no split {split!r} (keys: {', '.join(map(repr, data))})")
    if "dim_process" not in data:
        raise TPPDataError(f"{source}: missing key 'dim_process' (keys: {', '.join(map(repr, data))})")
    num_marks = _dim_process(data["dim_process"], f"{source}")
    sequences = data[split]
    if not isinstance(sequences, list | tuple):
        raise TPPDataError(f"{source}: {split!r} must be a list of sequences, got {type(sequences).__name__}")
    collector = _Collector(source, gaps)
    for i, seq in enumerate(sequences):
        where = f"{source}: split {split!r}, sequence {i}"
        if not isinstance(seq, list | tuple):
            raise TPPDataError(f"{where}: expected a list of event dicts, got {type(seq).__name__}")
        cols: dict[str, list[Any]] = {k: [] for k in _EVENT_KEYS}
        for k, event in enumerate(seq):
            if not isinstance(event, dict):
                raise TPPDataError(f"{where}, event {k}: expected a dict, got {type(event).__name__}")
            for key in _EVENT_KEYS:
                if key not in event:
                    raise TPPDataError(f"{where}, event {k}: missing key {key!r}")
                cols[key].append(event[key])
        collector.add(where, i, cols["time_since_start"], cols["time_since_last_event"], cols["type_event"],
                      num_marks)
    return collector.build(num_marks)


def write_easytpp_pickle(seqs: EventSequences, path: str | os.PathLike[str], split: str, *,
                         first_gap: FirstGap = "start") -> None:
    """Atomically write ``seqs`` as ``{'dim_process': K, split: [[{time_since_start, time_since_last_event,
    type_event}, ...], ...]}`` (pickle protocol 4, plain floats and ints only).

    ``first_gap`` as in :func:`write_easytpp_json`; the default ``"start"`` is NHP's convention (the first
    gap equals the first time). ``ids`` and windows are not written (the format has neither).
    """
    gaps = _first_gaps(seqs, first_gap)
    data = {
        "dim_process": int(seqs.num_marks),
        split: [
            [{"time_since_start": t, "time_since_last_event": g, "type_event": m}
             for t, g, m in zip(times.tolist(), gap.tolist(), marks.tolist(), strict=True)]
            for times, gap, marks in zip(seqs.times, gaps, seqs.marks, strict=True)
        ],
    }
    atomic_write_bytes(path, pickle.dumps(data, protocol=4))


# ----------------------------------------------------------------------------------------------------------
# A directory of splits
# ----------------------------------------------------------------------------------------------------------


def read_easytpp_dir(directory: str | os.PathLike[str], *, allow_pickle: bool = False, gaps: GapsMode = "check",
                     splits: Sequence[str] = SPLITS) -> dict[str, EventSequences]:
    """Read ``<split>.json`` for each split in ``splits`` (default train, dev, test) from ``directory``.

    A split without JSON is read from ``<split>.pkl`` (NHP/EasyTPP pickle) only with ``allow_pickle=True``;
    JSON is preferred when both exist. All splits must have the same ``dim_process``.

    Returns:
        ``{split: EventSequences}`` in the order of ``splits``.

    Raises:
        UnsafePickleError: a split exists only as a pickle and ``allow_pickle`` is not True.
        TPPDataError: a split is missing, invalid, or its ``dim_process`` differs from the others'.
    """
    directory = Path(directory)
    out: dict[str, EventSequences] = {}
    for split in splits:
        json_path, pkl_path = directory / f"{split}.json", directory / f"{split}.pkl"
        if json_path.is_file():
            out[split] = read_easytpp_json(json_path, gaps=gaps)
        elif pkl_path.is_file():
            if allow_pickle is not True:
                raise UnsafePickleError(
                    f"{pkl_path}: split {split!r} exists only as a pickle, which is not read by default (a pickle "
                    "can run arbitrary code when loaded); pass allow_pickle=True if you trust it, or convert it "
                    "to JSON")
            out[split] = read_easytpp_pickle(pkl_path, split, allow_pickle=True, gaps=gaps)
        else:
            raise TPPDataError(f"{directory}: split {split!r} not found (expected {json_path.name} or "
                               f"{pkl_path.name})")
    marks = {split: s.num_marks for split, s in out.items()}
    if len(set(marks.values())) > 1:
        raise TPPDataError(f"{directory}: dim_process differs between splits: {marks}")
    return out


def write_easytpp_dir(splits: Mapping[str, EventSequences], directory: str | os.PathLike[str], *,
                      first_gap: FirstGap = "zero") -> None:
    """Write each ``{split: seqs}`` to ``directory/<split>.json`` (see :func:`write_easytpp_json`)."""
    for split, seqs in splits.items():
        write_easytpp_json(seqs, Path(directory) / f"{split}.json", first_gap=first_gap)


# ----------------------------------------------------------------------------------------------------------
# Long table (pandas, CSV)
# ----------------------------------------------------------------------------------------------------------


def _row_namer(df: pd.DataFrame, csv: bool) -> Callable[[int], str]:
    """A function from a row's position to its name in messages: CSV line, or row position (and index label)."""
    if csv:
        return lambda pos: f"line {pos + 2}"  # line 1 is the header
    if isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1:
        return lambda pos: f"row {pos}"
    return lambda pos: f"row {pos} (index {df.index[pos]!r})"


def _column_numbers(df: pd.DataFrame, col: str, where: str, row: Callable[[int], str]) -> np.ndarray:
    """Column ``col`` as finite float64; the error names the first row that is missing or not a number."""
    raw = df[col]
    if pd.api.types.is_bool_dtype(raw):
        raise TPPDataError(f"{where}: column {col!r} holds booleans, expected numbers")
    values = pd.to_numeric(raw, errors="coerce")
    arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        k = int(bad[0])
        raise TPPDataError(f"{where}, {row(k)}: {col} {_show(raw.iloc[k])} is not a finite number")
    return arr


def _column_ints(df: pd.DataFrame, col: str, where: str, row: Callable[[int], str]) -> np.ndarray:
    arr = _column_numbers(df, col, where, row)
    frac = np.flatnonzero(arr != np.round(arr))
    if frac.size:
        k = int(frac[0])
        raise TPPDataError(f"{where}, {row(k)}: {col} {_show(df[col].iloc[k])} is not an integer")
    return arr.astype(np.int64)


def _from_frame(df: pd.DataFrame, seq_col: str, time_col: str, mark_col: str, num_marks: int | None, sort: bool,
                window_cols: tuple[str, str] | None, source: str, row: Callable[[int], str]) -> EventSequences:
    where = source
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in (seq_col, time_col, mark_col) if c not in df.columns]
    if missing:
        raise TPPDataError(f"{where}: missing column(s) {missing}; columns are {list(df.columns)}")
    if len(df) == 0:
        raise TPPDataError(f"{where}: no rows")
    if num_marks is None:
        num_marks = df.attrs.get("num_marks")
    seq = df[seq_col]
    if seq.isna().any():
        k = int(np.flatnonzero(seq.isna().to_numpy())[0])
        raise TPPDataError(f"{where}, {row(k)}: {seq_col} is missing")
    if not (pd.api.types.is_integer_dtype(seq) or pd.api.types.is_float_dtype(seq)) or pd.api.types.is_bool_dtype(seq):
        raise TPPDataError(f"{where}: column {seq_col!r} must hold integer sequence ids, got dtype {seq.dtype} "
                           f"(e.g. {_show(seq.iloc[0])}); map them to integers first, e.g. "
                           f"df[{seq_col!r}] = pd.factorize(df[{seq_col!r}])[0]")
    seq_ids = _column_ints(df, seq_col, where, row)
    times = _column_numbers(df, time_col, where, row)
    marks = _column_ints(df, mark_col, where, row)
    if num_marks is None:
        num_marks = int(marks.max()) + 1
    if not _is_int(num_marks) or num_marks < 1:
        raise TPPDataError(f"{where}: num_marks must be a positive integer, got {num_marks!r}")
    out = np.flatnonzero((marks < 0) | (marks >= num_marks))
    if out.size:
        k = int(out[0])
        raise TPPDataError(f"{where}, {row(k)}: {mark_col} {int(marks[k])} is outside [0, {num_marks})")
    windows_cols = None
    if window_cols is not None and all(c in df.columns for c in window_cols):
        windows_cols = [_column_numbers(df, c, where, row) for c in window_cols]

    codes, uniques = pd.factorize(seq_ids)  # sequences in order of first appearance
    order = np.lexsort((times, codes)) if sort else np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1]
    groups = np.split(order, bounds)
    seq_times, seq_marks, windows = [], [], []
    for ident, rows in zip(uniques, groups, strict=True):
        t = times[rows]
        back = np.flatnonzero(np.diff(t) < 0)
        if back.size:
            k = int(back[0]) + 1
            raise TPPDataError(f"{where}, {row(int(rows[k]))}: {time_col} {float(t[k])!r} of sequence {int(ident)} is "
                               f"before the previous event's {float(t[k - 1])!r} ({row(int(rows[k - 1]))}); rows of a "
                               "sequence must be in time order (or pass sort=True)")
        seq_times.append(t)
        seq_marks.append(marks[rows])
        if windows_cols is not None:
            w = []
            for c, col in zip(window_cols, windows_cols, strict=True):  # type: ignore[arg-type]
                vals = col[rows]
                diff = np.flatnonzero(vals != vals[0])
                if diff.size:
                    raise TPPDataError(f"{where}, {row(int(rows[diff[0]]))}: {c} {float(vals[diff[0]])!r} differs from "
                                       f"{float(vals[0])!r} in {row(int(rows[0]))} of the same sequence {int(ident)}")
                w.append(vals[0])
            windows.append(w)
    return EventSequences(seq_times, seq_marks, int(num_marks), np.array(windows) if windows_cols else None,
                          source, [int(i) for i in uniques])


def from_frame(df: pd.DataFrame, seq_col: str = "seq_id", time_col: str = "time", mark_col: str = "mark",
               num_marks: int | None = None, *, sort: bool = False,
               window_cols: tuple[str, str] | None = ("window_start", "window_end"),
               source: str = "<DataFrame>") -> EventSequences:
    """Event sequences from a long table with one row per event.

    Args:
        df: the table; rows of a sequence may be interleaved with other sequences' rows.
        seq_col: integer sequence ids (become ``EventSequences.ids``; sequences in order of first appearance).
        time_col: event times (finite numbers), in time order within each sequence unless ``sort``.
        mark_col: integer marks in ``[0, num_marks)``.
        num_marks: ``K``; default ``df.attrs["num_marks"]`` (set by :func:`to_frame`), else ``max(mark) + 1``.
        sort: sort each sequence's rows by time (stable) instead of raising when they are out of order.
        window_cols: columns holding each sequence's window ``[start, end]`` (constant within a sequence); used
            when both exist, else the windows are None.
        source: name used in error messages.

    Raises:
        TPPDataError: a missing column, a missing or non-numeric value, a mark out of range, rows out of time
            order, windows that vary within a sequence; the message names the row (position, and index label
            when the index is not ``0 .. n-1``).
    """
    return _from_frame(df, seq_col, time_col, mark_col, num_marks, sort, window_cols, source,
                       _row_namer(df, csv=False))


def to_frame(seqs: EventSequences, seq_col: str = "seq_id", time_col: str = "time",
             mark_col: str = "mark") -> pd.DataFrame:
    """One row per event: ``seq_col`` (``seqs.ids``, int64), ``time_col`` (float64), ``mark_col`` (int64), plus
    ``window_start`` and ``window_end`` when ``seqs.windows`` is known; ``df.attrs["num_marks"]`` is ``K``."""
    lengths = seqs.lengths
    data: dict[str, np.ndarray] = {
        seq_col: np.repeat(np.asarray(seqs.ids, dtype=np.int64), lengths),
        time_col: np.concatenate(seqs.times) if len(seqs) else np.zeros(0),
        mark_col: np.concatenate(seqs.marks) if len(seqs) else np.zeros(0, dtype=np.int64),
    }
    if seqs.windows is not None:
        data["window_start"] = np.repeat(seqs.windows[:, 0], lengths)
        data["window_end"] = np.repeat(seqs.windows[:, 1], lengths)
    df = pd.DataFrame(data)
    df.attrs["num_marks"] = int(seqs.num_marks)
    return df


# pandas < 3 parses floats approximately unless asked; pandas 3 parses them exactly and deprecates the option.
_EXACT_FLOATS: dict[str, str] = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def read_csv(path: str | os.PathLike[str], seq_col: str = "seq_id", time_col: str = "time", mark_col: str = "mark",
             num_marks: int | None = None, *, sort: bool = False,
             window_cols: tuple[str, str] | None = ("window_start", "window_end")) -> EventSequences:
    """Read a long-format CSV (see :func:`from_frame`); errors name the file and its line.

    Floats are parsed exactly (``float_precision="round_trip"`` before pandas 3), so :func:`write_csv` then
    :func:`read_csv` gives back the same float64 times. Without ``num_marks`` it is ``max(mark) + 1``.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, **_EXACT_FLOATS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise TPPDataError(f"{path}: cannot parse CSV ({err})") from err
    return _from_frame(df, seq_col, time_col, mark_col, num_marks, sort, window_cols, str(path),
                       _row_namer(df, csv=True))


def write_csv(seqs: EventSequences, path: str | os.PathLike[str], seq_col: str = "seq_id", time_col: str = "time",
              mark_col: str = "mark") -> None:
    """Atomically write :func:`to_frame` of ``seqs`` as CSV (floats with ``repr``: exact round trip).

    The CSV does not hold ``num_marks``; pass it to :func:`read_csv` when the largest mark may be unused.
    """
    df = to_frame(seqs, seq_col, time_col, mark_col)
    atomic_write_text(path, df.to_csv(index=False, float_format=None))
