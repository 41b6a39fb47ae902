"""Exact simulators of temporal point processes with known parameters and their exact log-likelihoods.

Three processes, each a small class with validated parameters:

- :class:`PoissonProcess`: homogeneous marked Poisson process, ``λ_k(t) = μ_k``.
- :class:`HawkesProcess`: multivariate Hawkes process with exponential kernels,
  ``λ_k(t) = μ_k + Σ_{t_i < t} α[k, m_i] β[k, m_i] exp(-β[k, m_i] (t - t_i))``.
- :class:`SelfCorrectingProcess`: Isham & Westcott's self-correcting process,
  ``λ_k(t) = p_k exp(μ t - α N(t))``.

Each has ``intensity(t, history)``, ``simulate(n_seqs, window, seed)`` (returning
:class:`~tpp.data.sequences.EventSequences` with ``windows`` set), ``log_likelihood(seqs, convention)``,
``log_likelihood_per_event(seqs, convention)`` and ``compensator(seqs)``. All computations are float64 numpy;
times are in the data's time unit and intensities in events per time unit.

Log-likelihood conventions (``convention=``):

- ``"full"``: every event is scored given its history and the compensator runs over the whole observation
  window ``[start, end]`` of the sequence (``EventSequences.windows``; an error if it is None)::

      log L = Σ_{i=1..n} log λ_{m_i}(t_i) - ∫_start^end Σ_k λ_k(s) ds

  ``log_likelihood_per_event`` divides the sum over sequences by ``Σ n_i``.
- ``"easytpp"``: EasyTPP's convention: events ``2..n`` of each sequence are scored given their full history,
  and the compensator runs from the first to the last event only::

      log L = Σ_{i=2..n} log λ_{m_i}(t_i) - ∫_{t_1}^{t_n} Σ_k λ_k(s) ds

  ``log_likelihood_per_event`` divides the sum over sequences by ``Σ (n_i - 1)``. This drops the survival
  term after the last event (and the one before the first), so it is not the likelihood of the observed
  window; the two differ by exactly ``log λ_{m_1}(t_1) - ∫_start^{t_1} Σ_k λ_k - ∫_{t_n}^end Σ_k λ_k``.

History: the events listed before event ``i`` in its sequence (for distinct times, ``t_j < t_i``; tied times
count in list order). Simulated processes start empty at the window's ``start`` (no events before it).

The Hawkes simulator is Ogata's thinning with an *exact* bound (with exponential kernels the total intensity
never increases between events, so its right limit at the current time bounds it until the next event), not a
heuristic one; the self-correcting and Poisson simulators invert their closed-form compensators and need no
thinning. Sequences are simulated side by side (vectorised over sequences), with an ``O(K²)`` state per
sequence updated by the exponential recursion: no ``O(n²)`` sums over the history.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from nde._rng import as_generator as _rng
from tpp.data.sequences import EventSequences, TPPDataError

__all__ = ["HawkesProcess", "PoissonProcess", "SelfCorrectingProcess"]

CONVENTIONS = ("full", "easytpp")


# ----------------------------------------------------------------------------------------------- helpers


def _window(window: tuple[float, float] | Sequence[float] | float) -> tuple[float, float]:
    if np.ndim(window) == 0:
        start, end = 0.0, float(window)  # type: ignore[arg-type]
    else:
        w = np.asarray(window, dtype=np.float64).ravel()
        if w.size != 2:
            raise ValueError(f"window must be (start, end) or a single end time, got {window!r}")
        start, end = float(w[0]), float(w[1])
    if not (np.isfinite(start) and np.isfinite(end) and end > start):
        raise ValueError(f"window must be finite with end > start, got ({start!r}, {end!r})")
    return start, end


def _n_seqs(n_seqs: int) -> int:
    if not isinstance(n_seqs, int | np.integer) or isinstance(n_seqs, bool) or n_seqs < 1:
        raise ValueError(f"n_seqs must be a positive int, got {n_seqs!r}")
    return int(n_seqs)


def _max_events(max_events: int) -> int:
    if not isinstance(max_events, int | np.integer) or isinstance(max_events, bool) or max_events < 1:
        raise ValueError(f"max_events must be a positive int, got {max_events!r}")
    return int(max_events)


def _history(history: Any, num_marks: int) -> tuple[np.ndarray, np.ndarray]:
    """``(times [n], marks [n])`` from None, a times array (only for one mark) or a ``(times, marks)`` pair."""
    if history is None:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    if isinstance(history, tuple) and len(history) == 2:
        times = np.asarray(history[0], dtype=np.float64).ravel()
        marks = np.asarray(history[1], dtype=np.int64).ravel()
    else:
        times = np.asarray(history, dtype=np.float64).ravel()
        if num_marks != 1:
            raise ValueError(f"history must be a (times, marks) pair for a process with {num_marks} marks")
        marks = np.zeros(times.shape, dtype=np.int64)
    if times.shape != marks.shape:
        raise ValueError(f"history times {times.shape} and marks {marks.shape} differ in length")
    if marks.size and (marks.min() < 0 or marks.max() >= num_marks):
        raise ValueError(f"history marks must lie in [0, {num_marks})")
    return times, marks


def _finish(times: list[np.ndarray], marks: list[np.ndarray], num_marks: int, start: float, end: float,
            drop_empty: bool, source: str) -> EventSequences:
    """Wrap simulated sequences; empty ones (which EventSequences cannot hold) raise, or are dropped on request."""
    empty = [i for i, t in enumerate(times) if len(t) == 0]
    ids = list(range(len(times)))
    if empty:
        if not drop_empty:
            raise TPPDataError(f"{source}: {len(empty)} of {len(times)} simulated sequences have no event in the "
                               f"window [{start}, {end}] (first: sequence {empty[0]}); use a longer window or "
                               f"simulate(..., drop_empty=True)")
        warnings.warn(f"{source}: dropped {len(empty)} of {len(times)} empty sequences (their ids are missing "
                      f"from .ids)", stacklevel=3)
        keep = [i for i in ids if len(times[i]) > 0]
        if not keep:
            raise TPPDataError(f"{source}: every simulated sequence is empty in the window [{start}, {end}]")
        times, marks, ids = [times[i] for i in keep], [marks[i] for i in keep], keep
    windows = np.tile(np.array([start, end], dtype=np.float64), (len(times), 1))
    return EventSequences(times, marks, num_marks, windows, source, ids)


class _Process:
    """Shared log-likelihood plumbing; subclasses implement ``_scan``."""

    num_marks: int

    # Subclasses: per-event log-intensities [N, L] (0 at padding), compensator increments [N, L, K] over
    # (t_{i-1}, t_i] with t_0 = start (0 at padding), and the tail [N, K] over (t_n, end].
    def _scan(self, times: np.ndarray, marks: np.ndarray, valid: np.ndarray, start: np.ndarray,
              end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _run_scan(self, seqs: EventSequences, need_window: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(seqs, EventSequences):
            raise ValueError(f"seqs must be EventSequences, got {type(seqs).__name__}")
        if seqs.num_marks != self.num_marks:
            raise TPPDataError(f"{seqs.source}: data have {seqs.num_marks} marks, the "
                               f"{type(self).__name__} has {self.num_marks}")
        if seqs.windows is None and need_window:
            raise TPPDataError(f"{seqs.source}: the 'full' log-likelihood needs the observation windows "
                               f"(EventSequences.windows is None); pass windows or use convention='easytpp'")
        lengths = seqs.lengths
        n, width = len(seqs), int(lengths.max())
        valid = np.arange(width)[None, :] < lengths[:, None]
        times = np.zeros((n, width))
        marks = np.zeros((n, width), dtype=np.int64)
        for i, (t, m) in enumerate(zip(seqs.times, seqs.marks, strict=True)):
            times[i, : len(t)], times[i, len(t):] = t, t[-1]
            marks[i, : len(m)] = m
        if seqs.windows is not None:
            start, end = seqs.windows[:, 0].copy(), seqs.windows[:, 1].copy()
        else:
            start, end = times[:, 0].copy(), times[np.arange(n), lengths - 1].copy()
        log_lam, dcomp, tail = self._scan(times, marks, valid, start, end)
        return log_lam, dcomp, tail, lengths

    def log_likelihood(self, seqs: EventSequences, convention: str = "full") -> np.ndarray:
        """``[N]`` exact log-likelihood of each sequence under this process (see the module docstring).

        Args:
            seqs: ``N`` sequences with ``num_marks == self.num_marks``; ``windows`` needed for ``"full"``.
            convention: ``"full"`` (events 1..n, compensator over the window) or ``"easytpp"`` (events 2..n,
                compensator from the first to the last event).
        """
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        log_lam, dcomp, tail, _ = self._run_scan(seqs, need_window=convention == "full")
        body = dcomp[:, 1:].sum(axis=(1, 2))
        later = log_lam[:, 1:].sum(axis=1)
        if convention == "easytpp":
            return later - body
        return log_lam[:, 0] + later - dcomp[:, 0].sum(axis=1) - body - tail.sum(axis=1)

    def log_likelihood_per_event(self, seqs: EventSequences, convention: str = "full") -> float:
        """Sum of :meth:`log_likelihood` over sequences divided by the number of scored events.

        ``Σ n_i`` for ``"full"``, ``Σ (n_i - 1)`` for ``"easytpp"`` (EasyTPP's per-event log-likelihood).
        """
        total = float(self.log_likelihood(seqs, convention).sum())
        count = seqs.num_events - (len(seqs) if convention == "easytpp" else 0)
        if count == 0:
            raise TPPDataError(f"{seqs.source}: no events are scored under convention {convention!r} (every "
                               f"sequence has a single event)")
        return total / count

    def compensator(self, seqs: EventSequences, include_end: bool = False) -> list[np.ndarray]:
        """Per-mark compensator at each event: ``N`` arrays ``[n_i, K]`` of ``Λ_k(t_i) = ∫_start^{t_i} λ_k``.

        ``start`` is the window's start, or the first event when ``seqs.windows`` is None. With
        ``include_end`` a last row ``Λ_k(end)`` is appended (``[n_i + 1, K]``).

        Time-rescaling theorem: ``Λ_k`` maps the mark-``k`` events of a sequence drawn from this process to a
        unit-rate Poisson process (independent over ``k``; likewise ``Σ_k Λ_k`` for all events), so the
        increments of ``Λ_k`` between consecutive mark-``k`` events are i.i.d. Exp(1). In a finite window the
        horizon ``Λ_k(end)`` is random and the last increment is censored: the complete increments pooled over
        many *short* sequences are measurably biased towards small values (by O(1 / events per sequence));
        goodness-of-fit checks should use long sequences.
        """
        _, dcomp, tail, lengths = self._run_scan(seqs, need_window=False)
        cum = np.cumsum(dcomp, axis=1)
        out = [cum[i, : lengths[i]].copy() for i in range(len(lengths))]
        if include_end:
            out = [np.concatenate([c, c[-1:] + tail[i]]) for i, c in enumerate(out)]
        return out


# ----------------------------------------------------------------------------------------------- Poisson


class PoissonProcess(_Process):
    """Homogeneous marked Poisson process: ``λ_k(t) = μ_k`` events per time unit, independent of the history.

    Args:
        mu: ``[K]`` non-negative rates (a scalar for one mark), not all zero.
    """

    def __init__(self, mu: Sequence[float] | np.ndarray | float) -> None:
        mu_arr = np.atleast_1d(np.asarray(mu, dtype=np.float64))
        if mu_arr.ndim != 1 or not np.all(np.isfinite(mu_arr)) or np.any(mu_arr < 0) or mu_arr.sum() <= 0:
            raise ValueError(f"mu must be a [K] vector of finite non-negative rates, not all zero, got {mu!r}")
        self.mu = mu_arr
        self.num_marks = int(mu_arr.size)

    def __repr__(self) -> str:
        return f"PoissonProcess(mu={self.mu.tolist()})"

    def intensity(self, t: float | np.ndarray, history: Any = None) -> np.ndarray:
        """``λ(t)``: ``[K]`` for a scalar ``t``, ``[T, K]`` for ``t [T]``; ``history`` is ignored."""
        t_arr = np.asarray(t, dtype=np.float64)
        return np.broadcast_to(self.mu, (*t_arr.shape, self.num_marks)).copy()

    def simulate(self, n_seqs: int, window: tuple[float, float] | float, seed: int | np.random.Generator, *,
                 drop_empty: bool = False) -> EventSequences:
        """``n_seqs`` independent sequences on ``window = (start, end)`` (or ``end`` with ``start = 0``).

        Exact: ``N ~ Poisson(Σμ (end - start))`` uniform times, marks drawn with probabilities ``μ / Σμ``.
        A sequence without events raises :class:`TPPDataError` unless ``drop_empty`` (then dropped, counted in a
        warning, and missing from ``ids``). The same ``seed`` and arguments give the same sequences.
        """
        n, (start, end), rng = _n_seqs(n_seqs), _window(window), _rng(seed)
        total = self.mu.sum()
        counts = rng.poisson(total * (end - start), size=n)
        u = rng.random(int(counts.sum()))
        marks_all = rng.choice(self.num_marks, size=int(counts.sum()), p=self.mu / total)
        splits = np.cumsum(counts)[:-1]
        times = [np.sort(start + (end - start) * x) for x in np.split(u, splits)]
        marks = list(np.split(marks_all, splits))
        return _finish(times, marks, self.num_marks, start, end, drop_empty, f"{self!r}.simulate(seed={seed})")

    def _scan(self, times, marks, valid, start, end):  # type: ignore[no-untyped-def]
        with np.errstate(divide="ignore"):
            log_lam = np.where(valid, np.log(self.mu)[marks], 0.0)
        prev = np.concatenate([start[:, None], times[:, :-1]], axis=1)
        dt = np.where(valid, times - prev, 0.0)
        last = times[:, -1]
        return log_lam, dt[:, :, None] * self.mu, (end - last)[:, None] * self.mu


# ----------------------------------------------------------------------------------------------- Hawkes


class HawkesProcess(_Process):
    """Multivariate Hawkes process with exponential kernels.

    Intensity of mark ``k`` (events per time unit)::

        λ_k(t) = μ_k + Σ_{t_i < t} α[k, m_i] β[k, m_i] exp(-β[k, m_i] (t - t_i))

    Parameterisation (that of tick's ``HawkesKernelExp(intensity, decay)``): ``α[k, j]`` is the *integral* of the
    kernel from mark ``j`` to mark ``k``, i.e. the expected number of mark-``k`` events directly triggered by one
    mark-``j`` event (the branching matrix), and ``β[k, j]`` its decay rate (per time unit; mean delay
    ``1 / β``). The process is stationary iff the spectral radius of ``α`` is below 1; then the mean rates are
    ``(I - α)^{-1} μ`` (:attr:`stationary_rates`). Simulators that add ``α`` itself to the intensity at each
    event (kernel ``α e^{-β t}``, branching ratio ``α / β``) use the other convention: build those with
    :meth:`from_jump_sizes`.

    Args:
        mu: ``[K]`` non-negative base rates, not all zero (a scalar for one mark).
        alpha: ``[K, K]`` non-negative branching ratios, row = triggered mark, column = triggering mark
            (a scalar for one mark).
        beta: decay rate(s): a scalar shared by all pairs or ``[K, K]``; positive wherever ``alpha > 0``
            (a ``0`` where ``alpha == 0`` marks an unused pair and is stored as ``1``).
        allow_nonstationary: by default a spectral radius ``≥ 1`` raises ``ValueError``; with True it only
            warns (simulation on a finite window is still exact, but the event count may explode).
    """

    def __init__(self, mu: Sequence[float] | np.ndarray | float, alpha: Any, beta: Any, *,
                 allow_nonstationary: bool = False) -> None:
        mu_arr = np.atleast_1d(np.asarray(mu, dtype=np.float64))
        if mu_arr.ndim != 1 or not np.all(np.isfinite(mu_arr)) or np.any(mu_arr < 0) or mu_arr.sum() <= 0:
            raise ValueError(f"mu must be a [K] vector of finite non-negative rates, not all zero, got {mu!r}")
        k = int(mu_arr.size)
        alpha_arr = np.asarray(alpha, dtype=np.float64)
        if alpha_arr.ndim == 0 and k == 1:
            alpha_arr = alpha_arr.reshape(1, 1)
        if alpha_arr.shape != (k, k):
            raise ValueError(f"alpha must be [K, K] = [{k}, {k}] (mu has K = {k}), got shape {alpha_arr.shape}")
        if not np.all(np.isfinite(alpha_arr)) or np.any(alpha_arr < 0):
            raise ValueError(f"alpha must be finite and non-negative, got {alpha_arr.tolist()}")
        beta_arr = np.asarray(beta, dtype=np.float64)
        if beta_arr.ndim == 0:
            beta_arr = np.full((k, k), float(beta_arr))
        if beta_arr.shape != (k, k):
            raise ValueError(f"beta must be a scalar or [K, K] = [{k}, {k}], got shape {beta_arr.shape}")
        if not np.all(np.isfinite(beta_arr)) or np.any(beta_arr < 0) or np.any((beta_arr == 0) & (alpha_arr > 0)):
            raise ValueError(f"beta must be finite and positive (0 only where alpha is 0), got {beta_arr.tolist()}")
        beta_arr = np.where(beta_arr == 0, 1.0, beta_arr)               # unused pairs: any rate will do
        self.mu, self.alpha, self.beta = mu_arr, alpha_arr, beta_arr
        self.num_marks = k
        self.spectral_radius = float(np.max(np.abs(np.linalg.eigvals(alpha_arr))))
        if self.spectral_radius >= 1:
            msg = (f"alpha has spectral radius {self.spectral_radius:.4g} >= 1: the Hawkes process is not stationary "
                   f"(each event triggers on average at least one more, so counts may explode)")
            if not allow_nonstationary:
                raise ValueError(msg + "; pass allow_nonstationary=True to simulate it on a finite window anyway")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)

    @classmethod
    def from_jump_sizes(cls, mu: Sequence[float] | np.ndarray | float, jump: Any, beta: Any, *,
                        allow_nonstationary: bool = False) -> HawkesProcess:
        """The process whose mark-``k`` intensity jumps by ``jump[k, j]`` at each mark-``j`` event.

        That is, kernel ``jump[k, j] e^{-β[k, j] t}`` (the convention of generators that add ``alpha`` at each
        event), i.e. ``alpha = jump / beta`` in this class's parameterisation.
        """
        k = np.atleast_1d(np.asarray(mu, dtype=np.float64)).size
        jump_arr = np.asarray(jump, dtype=np.float64)
        beta_arr = np.broadcast_to(np.asarray(beta, dtype=np.float64), jump_arr.shape if jump_arr.ndim else (k, k))
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(jump_arr == 0, 0.0, jump_arr / beta_arr)
        return cls(mu, alpha, beta, allow_nonstationary=allow_nonstationary)

    def __repr__(self) -> str:
        beta = float(self.beta[0, 0]) if np.all(self.beta == self.beta[0, 0]) else self.beta.tolist()
        return f"HawkesProcess(mu={self.mu.tolist()}, alpha={self.alpha.tolist()}, beta={beta})"

    @property
    def stationary_rates(self) -> np.ndarray:
        """``[K]`` mean events per time unit of the stationary process, ``(I - α)^{-1} μ``."""
        if self.spectral_radius >= 1:
            raise ValueError(f"no stationary rates: spectral radius of alpha is {self.spectral_radius:.4g} >= 1")
        return np.linalg.solve(np.eye(self.num_marks) - self.alpha, self.mu)

    def intensity(self, t: float | np.ndarray, history: Any = None) -> np.ndarray:
        """``λ(t)`` given the events ``t_i < t`` of ``history = (times [n], marks [n])``.

        Returns ``[K]`` for a scalar ``t`` and ``[T, K]`` for ``t [T]``. Direct sum over the history
        (``O(T n K)``); for reference and plots, the likelihood uses the recursion.
        """
        h_t, h_m = _history(history, self.num_marks)
        t_arr = np.asarray(t, dtype=np.float64)
        q = t_arr.reshape(-1, 1)
        lag = q - h_t[None, :]                                       # [T, n]
        past = lag > 0
        a, b = self.alpha[:, h_m], self.beta[:, h_m]                  # [K, n]
        contrib = a[None] * b[None] * np.exp(-b[None] * np.where(past, lag, 0.0)[:, None, :])
        lam = self.mu + np.where(past[:, None, :], contrib, 0.0).sum(-1)
        return lam.reshape(*t_arr.shape, self.num_marks)

    def intensity_upper_bound(self, t: float, history: Any = None) -> float:
        """The thinning bound at ``t``: the total intensity just after ``t`` (events ``t_i <= t`` counted).

        Between events every kernel term decays, so ``Σ_k λ_k(s) <= intensity_upper_bound(t)`` for all ``s``
        from ``t`` up to the next event after ``t``: an exact bound, not a heuristic.
        """
        h_t, h_m = _history(history, self.num_marks)
        lag = float(t) - h_t
        past = lag >= 0
        a, b = self.alpha[:, h_m[past]], self.beta[:, h_m[past]]
        return float(self.mu.sum() + (a * b * np.exp(-b * lag[past])).sum())

    def simulate(self, n_seqs: int, window: tuple[float, float] | float, seed: int | np.random.Generator, *,
                 max_events: int = 1_000_000, drop_empty: bool = False, check_bound: bool = False
                 ) -> EventSequences:
        """``n_seqs`` independent sequences on ``window = (start, end)`` (or ``end`` with ``start = 0``).

        Ogata's thinning with an exact bound, all sequences advancing together. With state
        ``S[k, j] = Σ_{mark-j events} α[k, j] β[k, j] exp(-β[k, j] (s - t_i))`` (``[K, K]`` per sequence) at the
        current time ``s``, the bound is ``λ̄ = Σ μ + Σ S`` (the total intensity's right limit, which only decays
        until the next event). Propose ``s' = s + Exp(1) / λ̄``; decay ``S`` to ``s'``; accept with probability
        ``Σ_k λ_k(s') / λ̄`` with mark ``k`` drawn with probability ``λ_k(s') / Σ λ(s')``; move to ``s'`` either
        way and recompute the bound. The process starts empty at ``start``.

        Args:
            max_events: per-sequence cap; exceeding it raises ``RuntimeError`` (guards against explosion).
            drop_empty: drop sequences without events (warns with the count) instead of raising
                :class:`TPPDataError`.
            check_bound: assert at every candidate that the intensity does not exceed the bound (debugging).

        The same ``seed`` and arguments give the same sequences.
        """
        n, (start, end), rng = _n_seqs(n_seqs), _window(window), _rng(seed)
        max_events = _max_events(max_events)
        k, mu, beta = self.num_marks, self.mu, self.beta
        jump = self.alpha * self.beta                                  # [K, K] jump of S[:, j] at a mark-j event
        mu_total = float(mu.sum())
        owner = np.arange(n)                                           # which sequence each active row is
        now = np.full(n, start)
        state = np.zeros((n, k, k))
        bound = np.full(n, mu_total)
        cap = min(64, max_events)
        buf_t, buf_m = np.empty((n, cap)), np.empty((n, cap), dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        while owner.size:
            cand = now + rng.standard_exponential(owner.size) / bound
            inside = cand <= end
            if not inside.all():
                owner, now, state, bound, cand = owner[inside], now[inside], state[inside], bound[inside], cand[inside]
                if not owner.size:
                    break
            state *= np.exp(-beta * (cand - now)[:, None, None])
            cum = np.cumsum(mu + state.sum(axis=2), axis=1)            # [R, K] cumulative λ_k(cand)
            if check_bound and np.any(cum[:, -1] > bound * (1 + 1e-12)):
                bad = int(np.argmax(cum[:, -1] - bound))
                raise AssertionError(f"thinning bound exceeded in sequence {owner[bad]}: intensity "
                                     f"{cum[bad, -1]!r} > bound {bound[bad]!r}")
            u = rng.random(owner.size) * bound
            mark = (cum <= u[:, None]).sum(axis=1)                      # == K: rejected
            acc = np.flatnonzero(mark < k)
            if acc.size:
                m, o = mark[acc], owner[acc]
                slot = count[o]
                if slot.max() >= cap:
                    if cap >= max_events:
                        raise RuntimeError(f"{self!r}: sequence {int(o[np.argmax(slot)])} exceeded max_events="
                                           f"{max_events} in the window [{start}, {end}]")
                    new = min(2 * cap, max_events)
                    buf_t = np.concatenate([buf_t, np.empty((n, new - cap))], axis=1)
                    buf_m = np.concatenate([buf_m, np.empty((n, new - cap), dtype=np.int64)], axis=1)
                    cap = new
                buf_t[o, slot], buf_m[o, slot] = cand[acc], m
                count[o] += 1
                state[acc, :, m] += jump[:, m].T
            now = cand
            bound = mu_total + state.sum(axis=(1, 2))
        times = [buf_t[i, : count[i]].copy() for i in range(n)]
        marks = [buf_m[i, : count[i]].copy() for i in range(n)]
        return _finish(times, marks, k, start, end, drop_empty, f"{self!r}.simulate(seed={seed})")

    def _scan(self, times, marks, valid, start, end):  # type: ignore[no-untyped-def]
        n, width = times.shape
        k, mu, beta = self.num_marks, self.mu, self.beta
        jump = self.alpha * self.beta
        rows = np.arange(n)
        state = np.zeros((n, k, k))
        prev = start.copy()
        log_lam = np.zeros((n, width))
        dcomp = np.zeros((n, width, k))

        def advance(dt: np.ndarray) -> np.ndarray:
            """Decay the state by ``dt [N]``; return the per-mark compensator ``[N, K]`` over that stretch."""
            x = np.expm1(-beta * dt[:, None, None])                    # decay - 1, accurate for small dt
            comp = mu * dt[:, None] - (state * x / beta).sum(axis=2)
            np.add(state, state * x, out=state)
            return comp

        for i in range(width):
            v = valid[:, i]
            dcomp[:, i] = advance(np.where(v, times[:, i] - prev, 0.0))
            m = marks[:, i]
            lam = mu[m] + state[rows, m].sum(axis=1)                  # λ_{m_i}(t_i) given the history
            with np.errstate(divide="ignore"):
                log_lam[:, i] = np.where(v, np.log(lam), 0.0)
            r = rows[v]
            state[r, :, m[v]] += jump[:, m[v]].T
            prev = np.where(v, times[:, i], prev)
        tail = advance(end - prev)
        return log_lam, dcomp, tail


# ----------------------------------------------------------------------------------------------- self-correcting


class SelfCorrectingProcess(_Process):
    """Isham & Westcott's self-correcting process: ``λ_k(t) = p_k exp(μ t - α N(t))``.

    ``t`` is absolute time (the process is usually run on ``[0, T]``) and ``N(t)`` counts the sequence's events
    before ``t`` (since the window's start, before which there are none). The ground intensity grows at rate
    ``μ`` and each event divides it by ``e^α``, so events are more regular than Poisson ones; the long-run rate
    is ``μ / α`` events per time unit. Marks are i.i.d. with probabilities ``p`` (one mark by default).

    Args:
        mu: growth rate ``> 0`` (per time unit).
        alpha: correction per event ``>= 0`` (``0`` gives a Poisson process with rate ``e^{μ t}``).
        mark_probs: ``[K]`` mark probabilities (non-negative, summing to 1), default ``[1.0]``.
    """

    def __init__(self, mu: float = 1.0, alpha: float = 1.0, mark_probs: Sequence[float] | np.ndarray | None = None
                 ) -> None:
        if not (np.ndim(mu) == 0 and np.isfinite(mu) and float(mu) > 0):
            raise ValueError(f"mu must be a finite positive number, got {mu!r}")
        if not (np.ndim(alpha) == 0 and np.isfinite(alpha) and float(alpha) >= 0):
            raise ValueError(f"alpha must be a finite non-negative number, got {alpha!r}")
        probs = np.ones(1) if mark_probs is None else np.asarray(mark_probs, dtype=np.float64)
        if probs.ndim != 1 or probs.size < 1 or np.any(~np.isfinite(probs)) or np.any(probs < 0) \
                or abs(probs.sum() - 1) > 1e-9:
            raise ValueError(f"mark_probs must be a [K] vector of non-negative probabilities summing to 1, "
                             f"got {mark_probs!r}")
        self.mu, self.alpha, self.mark_probs = float(mu), float(alpha), probs / probs.sum()
        self.num_marks = int(probs.size)

    def __repr__(self) -> str:
        probs = "" if self.num_marks == 1 else f", mark_probs={self.mark_probs.tolist()}"
        return f"SelfCorrectingProcess(mu={self.mu}, alpha={self.alpha}{probs})"

    def intensity(self, t: float | np.ndarray, history: Any = None) -> np.ndarray:
        """``λ(t)``: ``[K]`` for a scalar ``t``, ``[T, K]`` for ``t [T]``; ``history`` = event times (or
        ``(times, marks)``), of which those before ``t`` count."""
        if history is not None and not isinstance(history, tuple):
            history = (history, np.zeros(np.shape(history), dtype=np.int64))  # marks do not matter here
        h_t, _ = _history(history, self.num_marks)
        t_arr = np.asarray(t, dtype=np.float64)
        n_before = (h_t[None, :] < t_arr.reshape(-1, 1)).sum(axis=1)
        ground = np.exp(self.mu * t_arr.reshape(-1) - self.alpha * n_before)
        return (ground[:, None] * self.mark_probs).reshape(*t_arr.shape, self.num_marks)

    def simulate(self, n_seqs: int, window: tuple[float, float] | float, seed: int | np.random.Generator, *,
                 max_events: int = 1_000_000, drop_empty: bool = False) -> EventSequences:
        """``n_seqs`` independent sequences on ``window = (start, end)`` (or ``end`` with ``start = 0``).

        Exact inversion of the compensator, no thinning: after ``N`` events at time ``s`` the next event is at
        ``s'`` with ``∫_s^{s'} e^{μ u - α N} du = E ~ Exp(1)``, i.e.
        ``s' = log(e^{μ s} + μ E e^{α N}) / μ`` (computed with ``logaddexp``). Marks are drawn i.i.d. from
        ``mark_probs``. Empty sequences raise unless ``drop_empty``; the same seed gives the same sequences.
        """
        n, (start, end), rng = _n_seqs(n_seqs), _window(window), _rng(seed)
        max_events = _max_events(max_events)
        owner = np.arange(n)
        now = np.full(n, start)
        done: list[list[float]] = [[] for _ in range(n)]
        count = np.zeros(n)
        while owner.size:
            e = rng.standard_exponential(owner.size)
            with np.errstate(divide="ignore"):
                cand = np.logaddexp(self.mu * now, np.log(self.mu * e) + self.alpha * count[owner]) / self.mu
            inside = cand <= end
            owner, cand = owner[inside], cand[inside]
            for o, c in zip(owner.tolist(), cand.tolist(), strict=True):
                done[o].append(c)
            count[owner] += 1
            now = cand
            if owner.size and count[owner].max() > max_events:
                raise RuntimeError(f"{self!r}: a sequence exceeded max_events={max_events}")
        times = [np.asarray(d, dtype=np.float64) for d in done]
        if self.num_marks == 1:
            marks = [np.zeros(len(t), dtype=np.int64) for t in times]
        else:
            lengths = [len(t) for t in times]
            marks = list(np.split(rng.choice(self.num_marks, size=sum(lengths), p=self.mark_probs),
                                  np.cumsum(lengths)[:-1]))
        return _finish(times, marks, self.num_marks, start, end, drop_empty, f"{self!r}.simulate(seed={seed})")

    def _scan(self, times, marks, valid, start, end):  # type: ignore[no-untyped-def]
        mu, alpha = self.mu, self.alpha
        width = times.shape[1]
        before = np.arange(width, dtype=np.float64)[None, :]           # events before event i (0-based)
        with np.errstate(divide="ignore"):
            log_p = np.log(self.mark_probs)
        log_lam = np.where(valid, mu * times - alpha * before + log_p[marks], 0.0)
        prev = np.concatenate([start[:, None], times[:, :-1]], axis=1)
        dt = np.where(valid, times - prev, 0.0)
        # ∫_{prev}^{t} e^{μ s - α i} ds = e^{μ t - α i} (1 - e^{-μ dt}) / μ
        ground = np.where(valid, np.exp(mu * times - alpha * before) * -np.expm1(-mu * dt) / mu, 0.0)
        lengths = valid.sum(axis=1)
        last = times[np.arange(len(times)), lengths - 1]
        tail = np.exp(mu * end - alpha * lengths) * -np.expm1(-mu * (end - last)) / mu
        return log_lam, ground[:, :, None] * self.mark_probs, tail[:, None] * self.mark_probs
