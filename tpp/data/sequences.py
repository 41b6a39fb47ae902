"""The in-memory form of marked event sequences that every reader, writer and simulator of ``tpp`` shares.

A data set of ``N`` sequences over ``K`` marks: per sequence, event times (float64, non-decreasing, in the
data's time unit) and marks (int64 in ``[0, K)``), and optionally the observation window ``[start, end]``
in which the sequence was recorded (needed for the full log-likelihood, whose compensator runs over the
whole window; without it only EasyTPP's convention, from the first to the last event, is defined).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EventSequences", "TPPDataError"]


class TPPDataError(ValueError):
    """Malformed event data; the message names the file (or source), the sequence and the position."""


@dataclass
class EventSequences:
    """``N`` marked event sequences.

    Attributes:
        times: ``N`` float64 arrays of event times, non-decreasing within each sequence.
        marks: ``N`` int64 arrays of the same lengths, each mark in ``[0, num_marks)``.
        num_marks: ``K``, the number of mark types (EasyTPP's ``dim_process``).
        windows: ``[N, 2]`` float64 observation windows ``[start, end]`` with ``start <= t_1`` and
            ``t_n <= end``, or None when unknown.
        source: name used in error messages (a file path).
        ids: optional identifiers of the sequences (EasyTPP's ``seq_idx``), else ``0 .. N-1``.
    """

    times: list[np.ndarray]
    marks: list[np.ndarray]
    num_marks: int
    windows: np.ndarray | None = None
    source: str = "<memory>"
    ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = [np.asarray(t, dtype=np.float64) for t in self.times]
        self.marks = [np.asarray(m, dtype=np.int64) for m in self.marks]
        if not self.ids:
            self.ids = list(range(len(self.times)))
        if self.windows is not None:
            self.windows = np.asarray(self.windows, dtype=np.float64).reshape(len(self.times), 2)
        self.validate()

    def __len__(self) -> int:
        return len(self.times)

    @property
    def lengths(self) -> np.ndarray:
        """``[N]`` number of events per sequence."""
        return np.array([len(t) for t in self.times], dtype=np.int64)

    @property
    def num_events(self) -> int:
        return int(self.lengths.sum())

    def validate(self) -> None:
        """Raise :class:`TPPDataError` naming the source, sequence and position of the first problem."""
        src = self.source
        if not isinstance(self.num_marks, int | np.integer) or self.num_marks < 1:
            raise TPPDataError(f"{src}: num_marks must be a positive int, got {self.num_marks!r}")
        if len(self.marks) != len(self.times) or len(self.ids) != len(self.times):
            raise TPPDataError(f"{src}: {len(self.times)} time arrays, {len(self.marks)} mark arrays and "
                               f"{len(self.ids)} ids")
        for i, (t, m) in enumerate(zip(self.times, self.marks, strict=True)):
            where = f"{src}: sequence {self.ids[i]}"
            if t.ndim != 1 or m.shape != t.shape:
                raise TPPDataError(f"{where}: times {t.shape} and marks {m.shape} must be 1-D of equal length")
            if len(t) == 0:
                raise TPPDataError(f"{where}: empty sequence")
            bad = np.flatnonzero(~np.isfinite(t))
            if bad.size:
                raise TPPDataError(f"{where}, event {int(bad[0])}: time {float(t[bad[0]])!r} is not finite")
            back = np.flatnonzero(np.diff(t) < 0)
            if back.size:
                k = int(back[0]) + 1
                raise TPPDataError(f"{where}, event {k}: time {float(t[k])!r} is before the previous event's "
                                   f"{float(t[k - 1])!r}")
            out = np.flatnonzero((m < 0) | (m >= self.num_marks))
            if out.size:
                k = int(out[0])
                raise TPPDataError(f"{where}, event {k}: mark {int(m[k])} is outside [0, {self.num_marks})")
            if self.windows is not None:
                start, end = self.windows[i]
                if not (np.isfinite(start) and np.isfinite(end) and start <= t[0] and t[-1] <= end):
                    raise TPPDataError(f"{where}: window [{float(start)!r}, {float(end)!r}] does not contain its "
                                       f"events [{float(t[0])!r}, {float(t[-1])!r}]")

    def subset(self, indices: Sequence[int]) -> EventSequences:
        """The sequences at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        return EventSequences([self.times[i] for i in idx], [self.marks[i] for i in idx], self.num_marks,
                              None if self.windows is None else self.windows[idx], self.source,
                              [self.ids[i] for i in idx])
