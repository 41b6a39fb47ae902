"""Padded batches of event sequences, and the rescaling of time by the mean inter-event gap.

:func:`make_batch` turns sequences of an :class:`~tpp.data.sequences.EventSequences` into an
:class:`EventBatch` of tensors, batch first and padded to the longest sequence ``L``; ``mask`` is True on
real events and every padded entry must be ignored (its values are chosen harmless, not meaningful).

:class:`TimeScaler` divides all times by a constant ``c`` (by default the mean inter-event gap of the
training set), so that models see gaps of order 1. The rescaling changes densities, and every metric must be
reported in the original units:

- times, gaps, windows and time predictions (RMSE): ``t = c * s`` (:meth:`TimeScaler.inverse_times`);
- a density of event times, or an intensity, in rescaled time ``s = t / c``: ``log f_t(t) = log f_s(t / c) -
  log c`` per event (:meth:`TimeScaler.inverse_log_density`);
- a sequence's log-likelihood ``sum_k log lambda(t_k) - integral of lambda`` with ``n`` events: the
  compensator (the integral) is the same in both units, so ``loglik_t = loglik_s - n log c``
  (:meth:`TimeScaler.inverse_log_likelihood`); per event: ``loglik_s / n - log c``;
- mark probabilities, accuracies and the compensator are unitless and unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np
import torch

from tpp.data.sequences import EventSequences, TPPDataError

__all__ = ["EventBatch", "TimeScaler", "batches", "make_batch"]

ArrayLike = TypeVar("ArrayLike", float, np.ndarray, torch.Tensor)


@dataclass
class EventBatch:
    """``B`` event sequences padded to the longest, ``L`` events.

    Attributes:
        times: ``[B, L]`` float event times, in the data's time unit. Padding repeats the sequence's last
            time, so times stay non-decreasing along each row.
        gaps: ``[B, L]`` float time since the previous event, computed in float64 before the cast. The first
            event's gap is the time since the window start when the window is known, else ``0``. Padding is 0.
        marks: ``[B, L]`` int64 marks in ``[0, num_marks)``; padding is mark ``0`` (masked).
        mask: ``[B, L]`` bool, True on real events.
        lengths: ``[B]`` int64 number of events per sequence (``mask.sum(1)``).
        window_start: ``[B]`` float observation window start, NaN when unknown.
        window_end: ``[B]`` float observation window end, NaN when unknown.
        indices: ``[B]`` int64 positions of the sequences in the ``EventSequences`` they came from.
        num_marks: ``K``, the number of mark types.
    """

    times: torch.Tensor
    gaps: torch.Tensor
    marks: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    window_start: torch.Tensor
    window_end: torch.Tensor
    indices: torch.Tensor
    num_marks: int

    @property
    def batch_size(self) -> int:
        return int(self.times.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.times.shape[1])

    @property
    def num_events(self) -> int:
        """Number of real (unmasked) events."""
        return int(self.lengths.sum())

    @property
    def has_windows(self) -> bool:
        """Whether every sequence's window is known."""
        return bool(torch.isfinite(self.window_start).all() and torch.isfinite(self.window_end).all())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EventBatch:
        """A copy on ``device``; ``dtype`` (if given) applies to the float tensors only."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
            out[f.name] = value
        return EventBatch(**out)


def make_batch(seqs: EventSequences, indices: Sequence[int] | np.ndarray | None = None,
               dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> EventBatch:
    """Pad the sequences at ``indices`` (default: all, in order) into an :class:`EventBatch`.

    Args:
        seqs: the data set.
        indices: positions into ``seqs``; repeats are allowed.
        dtype: float dtype of ``times``, ``gaps`` and the windows (float64 keeps the data's precision).
        device: where the tensors are created.

    Raises:
        ValueError: ``indices`` is empty; IndexError: an index is out of range.
    """
    idx = np.arange(len(seqs)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("make_batch needs at least one sequence")
    n = len(seqs)
    bad = np.flatnonzero((idx < -n) | (idx >= n))
    if bad.size:
        raise IndexError(f"{seqs.source}: index {int(idx[bad[0]])} out of range for {n} sequences")
    idx = idx % n
    lengths = seqs.lengths[idx]
    B, L = len(idx), int(lengths.max())
    times = np.zeros((B, L))
    gaps = np.zeros((B, L))
    marks = np.zeros((B, L), dtype=np.int64)
    mask = np.arange(L)[None, :] < lengths[:, None]
    if seqs.windows is None:
        wins = np.full((B, 2), np.nan)
    else:
        wins = seqs.windows[idx]
    for b, i in enumerate(idx):
        t, n_b = seqs.times[i], lengths[b]
        times[b, :n_b] = t
        times[b, n_b:] = t[-1]
        gaps[b, 1:n_b] = np.diff(t)
        gaps[b, 0] = t[0] - wins[b, 0] if seqs.windows is not None else 0.0
        marks[b, :n_b] = seqs.marks[i]

    def tensor(a: np.ndarray, dt: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(a).to(device=device, dtype=dt)

    return EventBatch(tensor(times, dtype), tensor(gaps, dtype), tensor(marks, torch.int64), tensor(mask, torch.bool),
                      tensor(lengths, torch.int64), tensor(wins[:, 0].copy(), dtype), tensor(wins[:, 1].copy(), dtype),
                      tensor(idx, torch.int64), int(seqs.num_marks))


def batches(seqs: EventSequences, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
            dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Iterator[EventBatch]:
    """Iterate over ``seqs`` in batches of ``batch_size`` sequences.

    With ``shuffle``, the order is a permutation drawn from ``numpy.random.default_rng(seed)`` (pass a
    different seed each epoch, e.g. ``seed + epoch``); the last, smaller batch is dropped with ``drop_last``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(len(seqs)) if shuffle else np.arange(len(seqs))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        yield make_batch(seqs, order[start:start + batch_size], dtype=dtype, device=device)


class TimeScaler:
    """Rescale time by a constant ``c``: ``s = t / c``; see the module docstring for the metric corrections.

    ``TimeScaler()`` is the identity (``c = 1``); :meth:`fit` sets ``c`` to the mean inter-event gap
    (``t[k] - t[k-1]``, ``k >= 1``, pooled over all sequences) of the training set. Only scaling, no shift:
    time 0 stays 0, so windows starting at 0 still do.
    """

    def __init__(self, scale: float = 1.0) -> None:
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.scale = scale

    def __repr__(self) -> str:
        return f"TimeScaler(scale={self.scale!r})"

    def fit(self, seqs: EventSequences) -> TimeScaler:
        """Set ``scale`` to the mean inter-event gap of ``seqs``; returns ``self``.

        Raises:
            TPPDataError: no sequence has two events, or all gaps are 0.
        """
        total = sum(float(t[-1] - t[0]) for t in seqs.times)  # the sum of a sequence's gaps telescopes
        count = int(seqs.num_events - len(seqs))
        if count == 0:
            raise TPPDataError(f"{seqs.source}: cannot fit a time scale: no sequence has two events")
        if not total > 0:
            raise TPPDataError(f"{seqs.source}: cannot fit a time scale: every inter-event gap is 0")
        self.scale = total / count
        return self

    @property
    def log_scale(self) -> float:
        """``log c``, the per-event correction of log-densities."""
        return math.log(self.scale)

    def transform(self, seqs: EventSequences) -> EventSequences:
        """``seqs`` with times and windows divided by ``c`` (marks, ids and source unchanged)."""
        return self._apply(seqs, 1.0 / self.scale)

    def inverse_transform(self, seqs: EventSequences) -> EventSequences:
        """``seqs`` with times and windows multiplied by ``c`` (back to the original units)."""
        return self._apply(seqs, self.scale)

    @staticmethod
    def _apply(seqs: EventSequences, factor: float) -> EventSequences:
        return replace(seqs, times=[t * factor for t in seqs.times], marks=list(seqs.marks),
                       windows=None if seqs.windows is None else seqs.windows * factor, ids=list(seqs.ids))

    def transform_times(self, x: ArrayLike) -> ArrayLike:
        """Times or gaps to rescaled units: ``x / c``."""
        return x / self.scale

    def inverse_times(self, x: ArrayLike) -> ArrayLike:
        """Rescaled times, gaps or time predictions back to the original units: ``x * c``."""
        return x * self.scale

    def inverse_log_density(self, x: ArrayLike) -> ArrayLike:
        """Per-event log-density or log-intensity in rescaled time to original units: ``x - log c``."""
        return x - self.log_scale

    def inverse_log_likelihood(self, loglik: ArrayLike, num_events: ArrayLike | int) -> ArrayLike:
        """A log-likelihood of ``num_events`` events computed in rescaled time, in original units:
        ``loglik - num_events * log c`` (the compensator needs no correction)."""
        return loglik - num_events * self.log_scale

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: ``{"type": "TimeScaler", "scale": c}``."""
        return {"type": "TimeScaler", "scale": self.scale}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TimeScaler:
        if state.get("type", "TimeScaler") != "TimeScaler" or "scale" not in state:
            raise ValueError(f"not a TimeScaler state: {state!r}")
        return cls(state["scale"])
