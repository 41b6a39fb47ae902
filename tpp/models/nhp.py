"""The neural Hawkes process (Mei & Eisner, NeurIPS 2017): a continuous-time LSTM drives the intensity.

Model (``K`` marks, hidden size ``H``). The history is summarised by a continuous-time LSTM (CT-LSTM). At
each event ``j`` (time ``t_j``, mark ``m_j``), with the mark's embedding ``x_j`` and the hidden state
``h(t_j)`` just before the event, one linear map of ``[x_j, h(t_j)]`` gives the gates (σ the logistic
function)::

    i, f, o, ī, f̄ = σ(·),   z = tanh(·),   δ_{j+1} = softplus(·)
    c_{j+1} = f ⊙ c(t_j) + i ⊙ z              (the cell just after the event)
    c̄_{j+1} = f̄ ⊙ c̄_j + ī ⊙ z                (the level it decays towards)

and between ``t_j`` and the next event the cell decays exponentially, ``δ`` per unit time::

    c(t) = c̄_{j+1} + (c_{j+1} - c̄_{j+1}) exp(-δ_{j+1} (t - t_j)),     h(t) = o_{j+1} ⊙ tanh(c(t))
    λ_k(t) = s_k log(1 + exp((w_k · h(t) + b_k) / s_k))                   (scaled softplus, s_k > 0 learned)

Initial state (the paper's beginning-of-stream event): a "BOS" step of the same cell, with a learned BOS
embedding and ``h = c = c̄ = 0``, at the origin ``window_start``; the first event is then scored given
this state decayed to ``t_1``. When the window is unknown the origin is the first event (EasyTPP's data
give the first event a gap of 0), so the state after event 1 depends on ``t_1 - window_start`` only when
the window is known; both conventions use the same states, so ``full - easytpp`` is exactly the first
event's log-intensity minus the compensator before ``t_1`` and after ``t_n``.

Compensator: Gauss–Legendre quadrature with ``n_nodes`` (default 8) nodes per inter-event interval
(:func:`~tpp.models.base.gauss_legendre_compensator`); the intensity is smooth between events, and the
8-node rule's error against a 64-node one is measured by ``benchmarks/tpp_nhp_thp_quick.py``.

Sampling (:meth:`SoftplusIntensityTPP.sample_next`): Ogata thinning with a proven bound. On the interval
after event ``j`` each component of ``c(t)`` moves monotonically from ``c_{j+1}`` towards ``c̄_{j+1}`` and
never reaches it, ``tanh`` is increasing and ``o ∈ (0, 1)``, so for all ``t' >= t``
``h_i(t')`` lies between ``o_i tanh(c_i(t))`` and ``o_i tanh(c̄_i)``, and

    w_k · h(t') + b_k <= Σ_i max(w_ki o_i tanh(c_i(t)), w_ki o_i tanh(c̄_i)) + b_k =: u_k(t)

hence ``Σ_k λ_k(t') <= Σ_k softplus_{s_k}(u_k(t))`` on all of ``[t, ∞)`` (softplus is increasing). The bound
is recomputed at every rejected proposal (Ogata's adaptive thinning), so it tightens as the cell decays.

The class :class:`SoftplusIntensityTPP` holds what NHP and THP (:mod:`tpp.models.thp`) share: both give,
per inter-event interval, a state from which the pre-activation ``a_k(t)`` of a scaled softplus follows in
closed form; the log-likelihood in both conventions, the intensity at query times, the vectorised thinning
sampler (:func:`thinning_next_event`) and the next-event compensator are written once over that state.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.data.batch import EventBatch
from tpp.models.base import (
    Convention,
    HistoryState,
    LogLikelihood,
    TPPModel,
    check_convention,
    eval_mode,
    gauss_legendre_compensator,
    scored_events,
)

__all__ = ["NHP", "SoftplusIntensityTPP", "constant_bound_proposal", "log_scaled_softplus", "scaled_softplus",
           "thinning_next_event"]


# ----------------------------------------------------------------------------------------------- helpers


def scaled_softplus(x: Tensor, scale: Tensor) -> Tensor:
    """``s log(1 + exp(x / s))`` elementwise, ``scale`` (``s > 0``) broadcast over the last dimension."""
    return scale * F.softplus(x / scale)


def log_scaled_softplus(x: Tensor, scale: Tensor) -> Tensor:
    """``log(s log(1 + exp(x / s)))``, stable for very negative ``x / s`` (where it tends to ``x / s + log s``)."""
    y = x / scale
    # log softplus(y) = y + log1p(-e^y / 2 + ...) = y to 1e-9 for y < -20; clamping keeps the other branch finite.
    log_sp = torch.where(y < -20, y, torch.log(F.softplus(y.clamp_min(-20))))
    return torch.log(scale) + log_sp


def _check_int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (low <= float(value) < high):
        raise ValueError(f"{name} must be a number in [{low}, {high}), got {value!r}")
    return float(value)


def thinning_next_event(intensity_at: Callable[[Tensor, Tensor], Tensor],
                        propose: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]],
                        initial_horizon: Tensor, *, max_rounds: int) -> tuple[Tensor, Tensor]:
    """Ogata thinning of the first event after time 0 for ``N`` independent entries, vectorised over entries.

    Each round, every entry still without an event sits at its current time ``s`` (with a horizon ``Δ`` that
    ``propose`` may use and update) and ``propose(entries, s, Δ) -> (t, g, Δ')`` gives the next point ``t > s``
    of a dominating Poisson process, whose intensity ``g(t) >= Σ_k λ_k(t)`` is returned, chosen given the
    past only; or, where ``g == 0``, a time ``t`` up to which the dominating process has no point (the entry
    moves there without an event; ``t = inf``: it never has one, and the model gives no next event). A point
    is accepted with probability ``Σ_k λ_k(t) / g``, its mark drawn with probabilities ``λ_k / Σ_k λ_k``;
    a rejected entry continues from ``t``. This is exact (thinning of a dominating process; its law may be
    re-chosen at every point since Poisson processes are memoryless).

    Args:
        intensity_at: ``(entries [n] int64, elapsed [n]) -> [n, K]`` intensities.
        propose: ``(entries [n], s [n], horizon [n]) -> (t [n], g [n], new horizon [n])`` as above.
        initial_horizon: ``[N]`` positive first horizons.
        max_rounds: cap on the rounds; entries still undecided then raise ``RuntimeError`` (never a made-up
            value).

    Returns:
        ``(elapsed [N], marks [N])``: the time of each entry's first event after 0 and its mark; ``inf`` and
        ``-1`` where there is no next event.

    Raises:
        RuntimeError: the cap is hit, or an intensity exceeds its dominating intensity.
    """
    n = initial_horizon.shape[0]
    device, dtype = initial_horizon.device, initial_horizon.dtype
    s = torch.zeros(n, dtype=dtype, device=device)
    horizon = initial_horizon.clone()
    out_t = torch.full((n,), float("nan"), dtype=dtype, device=device)
    out_m = torch.full((n,), -1, dtype=torch.int64, device=device)
    active = torch.arange(n, device=device)
    for _ in range(max_rounds):
        if active.numel() == 0:
            break
        t, g, horizon[active] = propose(active, s[active], horizon[active])
        s[active] = t
        point = g > 0
        never = ~point & torch.isinf(t)
        out_t[active[never]] = float("inf")
        p_idx = active[point]
        tp, gp = t[point], g[point]
        lam = intensity_at(p_idx, tp)
        total = lam.sum(-1)
        if bool((total > gp).any()):
            raise RuntimeError("thinning: an intensity exceeded its proven bound (a bug; please report it)")
        accept = torch.rand_like(total) * gp < total
        acc = p_idx[accept]
        out_t[acc] = tp[accept]
        if acc.numel():
            out_m[acc] = torch.multinomial(lam[accept], 1).squeeze(-1)
        active = torch.cat([active[~point & ~never], p_idx[~accept]])
    if active.numel():
        raise RuntimeError(f"thinning: {active.numel()} of {n} draws were still undecided after {max_rounds} "
                           f"rounds (raise max_thinning_rounds, or the intensity is vanishingly small)")
    return out_t, out_m


def constant_bound_proposal(bound: Tensor, s: Tensor, horizon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The proposal of :func:`thinning_next_event` for a constant ``bound [n]`` valid on ``[s, s + horizon]``.

    Draws ``E ~ Exp(bound)``: a point at ``s + E`` if ``E <= horizon``; else no point up to ``s + horizon`` and
    the horizon doubles (``horizon = inf``: the bound holds for all later times).
    """
    bad = ~(torch.isfinite(bound) & (bound > 0))
    if bool(bad.any()):
        raise RuntimeError(f"thinning: the intensity bound is not positive and finite (intensity underflow or "
                           f"overflow): bound {bound[bad][:3].tolist()} at elapsed {s[bad][:3].tolist()}")
    step = torch.empty_like(s).exponential_() / bound
    beyond = step > horizon
    t = torch.where(beyond, s + horizon, s + step)
    return t, torch.where(beyond, torch.zeros_like(bound), bound), torch.where(beyond, 2 * horizon, horizon)


# ----------------------------------------------------------------------------------------------- shared base


class SoftplusIntensityTPP(TPPModel):
    """A model whose intensity on each inter-event interval is a scaled softplus of a closed-form argument.

    Subclasses provide :meth:`_states` (one state per interval: index 0 before the first event, index ``j``
    after event ``j``, so ``[B, L + 1, *S]``), :meth:`_arguments` (the softplus arguments ``a_k`` from a state
    and the time elapsed since the interval's start), :meth:`_bound` (a proven bound of ``Σ_k λ_k`` on a
    sub-interval, for thinning) and :meth:`_initial_horizon`; :meth:`_propose` may replace the constant bound by
    another dominating process. Intensities are ``λ_k = s_k softplus(a_k / s_k)`` with ``s_k = exp(log_scale_k)``,
    plus constant rates ``μ_k`` where a subclass's :meth:`_baseline` gives them.
    """

    def __init__(self, num_marks: int, *, n_nodes: int, max_thinning_rounds: int) -> None:
        super().__init__(num_marks)
        self.n_nodes = _check_int("n_nodes", n_nodes, 1)
        self.max_thinning_rounds = _check_int("max_thinning_rounds", max_thinning_rounds, 1)
        self.log_scale = nn.Parameter(torch.zeros(num_marks))

    # ------------------------------------------------------------------ what subclasses define

    @abstractmethod
    def _states(self, batch: EventBatch, origin: Tensor) -> Tensor:
        """``[B, L + 1, *S]`` interval states: 0 from ``origin`` to ``t_1``, ``j`` after event ``j``."""

    @abstractmethod
    def _arguments(self, state: Tensor, elapsed: Tensor) -> Tensor:
        """Softplus arguments: ``state [*lead, *S]``, ``elapsed [*lead, n]`` -> ``[*lead, n, K]``."""

    @abstractmethod
    def _bound(self, state: Tensor, start: Tensor, horizon: Tensor) -> Tensor:
        """``[n]`` bound of ``Σ_k λ_k`` on ``[start, start + horizon]`` (elapsed time), ``state [n, *S]``."""

    @abstractmethod
    def _initial_horizon(self, batch: EventBatch, num: int) -> Tensor:
        """``[num]`` first thinning horizons (``inf`` when :meth:`_bound` holds for all later times)."""

    def _propose(self, state: Tensor, start: Tensor, horizon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The dominating process of the thinning (see :func:`thinning_next_event`): by default the constant
        :meth:`_bound` on ``[start, start + horizon]`` (:func:`constant_bound_proposal`)."""
        return constant_bound_proposal(self._bound(state, start, horizon), start, horizon)

    # ------------------------------------------------------------------ shared machinery

    @property
    def scale(self) -> Tensor:
        """``[K]`` the softplus scales ``s_k``."""
        return self.log_scale.exp()

    def _baseline(self) -> Tensor | None:
        """``[K]`` constant rates added to the softplus intensities, or ``None`` (the default: none)."""
        return None

    def _lambda(self, state: Tensor, elapsed: Tensor) -> Tensor:
        lam = scaled_softplus(self._arguments(state, elapsed), self.scale)
        base = self._baseline()
        return lam if base is None else lam + base

    def _thin_after(self, states: Tensor, horizon: Tensor) -> tuple[Tensor, Tensor]:
        """Exact draws of ``(gaps [N], marks [N])`` after interval states ``states [N, *S]`` (elapsed time from
        each interval's start) by :func:`thinning_next_event` with first horizons ``horizon [N]``."""

        def intensity_at(idx: Tensor, elapsed: Tensor) -> Tensor:
            return self._lambda(states[idx], elapsed.unsqueeze(-1)).squeeze(-2)

        def propose(idx: Tensor, start: Tensor, span: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return self._propose(states[idx], start, span)

        return thinning_next_event(intensity_at, propose, horizon, max_rounds=self.max_thinning_rounds)

    def _log_lambda(self, args: Tensor) -> Tensor:
        """``log λ_k`` from the softplus arguments ``[..., K]``, stable where the softplus underflows."""
        base = self._baseline()
        if base is None:
            return log_scaled_softplus(args, self.scale)
        return torch.log(scaled_softplus(args, self.scale) + base)     # >= log μ_k: no underflow

    def _prepare(self, batch: EventBatch) -> tuple[EventBatch, Tensor]:
        """The batch on the parameters' device and dtype, and the origin ``[B]`` of each sequence."""
        self._check_batch(batch)
        p = self.log_scale
        if batch.times.device != p.device or batch.times.dtype != p.dtype:
            batch = batch.to(p.device, p.dtype)
        ws = batch.window_start
        origin = torch.where(torch.isfinite(ws), ws, batch.times[:, 0])
        return batch, origin

    def log_likelihood(self, batch: EventBatch, convention: Convention = "easytpp") -> LogLikelihood:
        """Event term, compensator (Gauss–Legendre, ``n_nodes`` per interval) and scored events per sequence.

        The compensator over the interval that ends at event ``j`` enters exactly when event ``j`` is scored
        (events ``2..n`` in EasyTPP's convention, all in the full one, which adds ``[t_n, window_end]``).
        """
        convention = check_convention(convention, batch)
        batch, origin = self._prepare(batch)
        B, L = batch.times.shape
        states = self._states(batch, origin)
        scored = scored_events(batch, convention)
        head = states[:, :L]
        gaps = batch.gaps
        args = self._arguments(head, gaps.unsqueeze(-1)).squeeze(-2)                     # [B, L, K]
        log_lam = self._log_lambda(args).gather(-1, batch.marks.unsqueeze(-1)).squeeze(-1)
        event_term = torch.where(scored, log_lam, torch.zeros_like(log_lam)).sum(1)
        comp = gauss_legendre_compensator(lambda e: self._lambda(head, e), torch.zeros_like(gaps), gaps,
                                          self.n_nodes)
        compensator = torch.where(scored, comp, torch.zeros_like(comp)).sum(1)
        if convention == "full":
            rows = torch.arange(B, device=gaps.device)
            last = batch.times[rows, batch.lengths - 1]
            tail = (batch.window_end - last).clamp_min(0)
            compensator = compensator + gauss_legendre_compensator(
                lambda e: self._lambda(states[rows, batch.lengths], e), torch.zeros_like(tail), tail, self.n_nodes)
        return LogLikelihood(event_term, compensator, scored.sum(1))

    def intensity(self, batch: EventBatch, query_times: Tensor) -> Tensor:
        """``λ_k(t | H_t)`` at ``query_times [B, Q]`` -> ``[B, Q, K]``; history: the events strictly before ``t``.

        Queries before the origin (window start, or the first event when the window is unknown) see the
        initial state at the origin.
        """
        batch, origin = self._prepare(batch)
        query = query_times.to(device=batch.times.device, dtype=batch.times.dtype)
        if query.dim() != 2 or query.shape[0] != batch.batch_size:
            raise ValueError(f"query_times must be [B, Q] with B = {batch.batch_size}, got {tuple(query.shape)}")
        states = self._states(batch, origin)
        before = (batch.times.unsqueeze(1) < query.unsqueeze(2)) & batch.mask.unsqueeze(1)
        count = before.sum(-1)                                                              # [B, Q] in 0..L
        starts = torch.cat([origin.unsqueeze(1), batch.times], dim=1)
        rows = torch.arange(batch.batch_size, device=query.device).unsqueeze(1)
        elapsed = (query - starts.gather(1, count)).clamp_min(0)
        return self._lambda(states[rows, count], elapsed.unsqueeze(-1)).squeeze(-2)

    def _after_events(self, batch: EventBatch) -> tuple[Tensor, Tensor, Tensor, EventBatch]:
        """States after each real event: ``(states [P, *S], rows [P], cols [P])`` and the prepared batch."""
        batch, origin = self._prepare(batch)
        states = self._states(batch, origin)
        rows, cols = batch.mask.nonzero(as_tuple=True)
        return states[rows, cols + 1], rows, cols, batch

    def sample_next(self, batch: EventBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        """Exact draws of the next event after each event by thinning (see :func:`thinning_next_event`).

        Vectorised over samples, sequences and positions (one loop over thinning rounds, capped by
        ``max_thinning_rounds``; hitting the cap raises ``RuntimeError``). Uses the global torch RNG.
        Padded positions hold gap 0 and mark 0. Where the model gives a positive probability to there being no
        next event at all (THP with every ``α_k < 0``: a finite total compensator), such draws are gap ``inf``
        and mark ``-1``; NHP's intensity never decays to 0, so it always has a next event.
        """
        n_samples = _check_int("n_samples", n_samples, 1)
        with eval_mode(self), torch.no_grad():
            states, rows, cols, batch = self._after_events(batch)
            P = states.shape[0]
            N = n_samples * P
            which = torch.arange(N, device=states.device) % P

            def intensity_at(idx: Tensor, elapsed: Tensor) -> Tensor:
                return self._lambda(states[which[idx]], elapsed.unsqueeze(-1)).squeeze(-2)

            def propose(idx: Tensor, start: Tensor, horizon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
                return self._propose(states[which[idx]], start, horizon)

            elapsed, marks = thinning_next_event(intensity_at, propose, self._initial_horizon(batch, N),
                                                 max_rounds=self.max_thinning_rounds)
            gaps = torch.zeros(n_samples, *batch.times.shape, dtype=batch.times.dtype, device=batch.times.device)
            out_marks = torch.zeros(n_samples, *batch.times.shape, dtype=torch.int64, device=gaps.device)
            gaps[:, rows, cols] = elapsed.view(n_samples, P)
            out_marks[:, rows, cols] = marks.view(n_samples, P)
        return gaps, out_marks

    @torch.no_grad()
    def sample_from_state(self, state: HistoryState) -> tuple[Tensor, Tensor]:
        """Exact draws of the next event after the last event of each history of the generic state
        (:class:`~tpp.models.base.HistoryState`): the thinning of :meth:`sample_next` at that position only,
        so each generation step thins ``N`` draws, not one per event of the histories."""
        batch, origin = self._prepare(state.batch)
        states = self._states(batch, origin)
        last = states[torch.arange(batch.batch_size, device=states.device), batch.lengths]
        return self._thin_after(last, self._initial_horizon(batch, batch.batch_size))

    def next_event_compensator(self, batch: EventBatch, gaps: Tensor, n_nodes: int = 64) -> Tensor:
        """``∫_{t_j}^{t_j + gaps[s, b, j]} Σ_k λ_k dt`` given the history up to and including event ``j``.

        Args:
            batch: the sequences.
            gaps: ``[S, B, L]`` non-negative times after each event (e.g. draws of :meth:`sample_next`).
            n_nodes: Gauss–Legendre nodes per integral.

        Returns:
            ``[S, B, L]`` (0 at padded positions). By the time-rescaling theorem, for exact draws of the next
            event these values are Exp(1).
        """
        n_nodes = _check_int("n_nodes", n_nodes, 1)
        with torch.no_grad():
            states, rows, cols, batch = self._after_events(batch)
            g = gaps.to(device=states.device, dtype=states.dtype)[:, rows, cols]               # [S, P]
            out = torch.zeros_like(gaps, dtype=states.dtype, device=states.device)
            per_sample = max(1, states[0].numel() * n_nodes * states.shape[0])
            chunk = max(1, 2_000_000 // per_sample)
            for i in range(0, g.shape[0], chunk):
                gi = g[i:i + chunk]
                out[i:i + chunk, rows, cols] = gauss_legendre_compensator(
                    lambda e: self._lambda(states, e), torch.zeros_like(gi), gi, n_nodes)
        return out


# ----------------------------------------------------------------------------------------------- NHP


class NHP(SoftplusIntensityTPP):
    """Neural Hawkes process: a continuous-time LSTM and per-mark scaled-softplus intensities.

    See the module docstring for the equations, the compensator quadrature and the thinning bound.

    Args:
        num_marks: ``K``.
        hidden_size: ``H``, the CT-LSTM's cell and hidden size (also the mark embedding's size).
        n_nodes: Gauss–Legendre nodes per inter-event interval of the compensator (default 8).
        max_thinning_rounds: cap on the thinning rounds of :meth:`sample_next` (hitting it raises).
    """

    name = "nhp"
    exact_compensator = False

    def __init__(self, num_marks: int, *, hidden_size: int = 32, n_nodes: int = 8,
                 max_thinning_rounds: int = 10_000) -> None:
        super().__init__(num_marks, n_nodes=n_nodes, max_thinning_rounds=max_thinning_rounds)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        H = hidden_size
        self.embedding = nn.Embedding(num_marks + 1, H)        # index K: the beginning-of-stream (BOS) event
        self.cell = nn.Linear(2 * H, 7 * H)                     # i, f, o, ī, f̄, z, δ
        self.head = nn.Linear(H, num_marks)                     # w_k, b_k

    def _step(self, x: Tensor, h: Tensor, c: Tensor, c_bar: Tensor) -> Tensor:
        """One CT-LSTM update at an event -> the interval state ``[..., 4, H]`` = ``(c, c̄, δ, o)``."""
        gates = self.cell(torch.cat([x, h], dim=-1))
        i, f, o, i_bar, f_bar, z, d = gates.chunk(7, dim=-1)
        i, f, o, i_bar, f_bar = (torch.sigmoid(g) for g in (i, f, o, i_bar, f_bar))
        z = torch.tanh(z)
        c_new = f * c + i * z
        c_bar_new = f_bar * c_bar + i_bar * z
        return torch.stack([c_new, c_bar_new, F.softplus(d), o], dim=-2)

    @staticmethod
    def _decay(state: Tensor, elapsed: Tensor) -> tuple[Tensor, Tensor]:
        """``(c(t), h(t))`` from ``state [..., 4, H]`` at ``elapsed [...]`` (broadcast) -> ``[..., H]`` each."""
        c, c_bar, delta, o = state.unbind(-2)
        c_t = c_bar + (c - c_bar) * torch.exp(-delta * elapsed.unsqueeze(-1))
        return c_t, o * torch.tanh(c_t)

    def _states(self, batch: EventBatch, origin: Tensor) -> Tensor:
        B, L = batch.times.shape
        H = self.hidden_size
        zero = batch.times.new_zeros(B, H)
        bos = self.embedding.weight[self.num_marks].expand(B, H)
        state = self._step(bos, zero, zero, zero)
        out = [state]
        x_all = self.embedding(batch.marks)                                                  # [B, L, H]
        for j in range(L):
            c_t, h_t = self._decay(state, batch.gaps[:, j])
            state = self._step(x_all[:, j], h_t, c_t, state[:, 1])
            out.append(state)
        return torch.stack(out, dim=1)                                                       # [B, L + 1, 4, H]

    def _arguments(self, state: Tensor, elapsed: Tensor) -> Tensor:
        _, h = self._decay(state.unsqueeze(-3), elapsed)                                     # [*lead, n, H]
        return self.head(h)

    def _bound(self, state: Tensor, start: Tensor, horizon: Tensor) -> Tensor:
        # For t >= start, h_i(t) lies between o_i tanh(c_i(start)) and o_i tanh(c̄_i) (see the module docstring).
        _, h_start = self._decay(state, start)
        h_end = state[:, 3] * torch.tanh(state[:, 1])
        w = self.head.weight                                                                 # [K, H]
        upper = torch.maximum(h_start.unsqueeze(1) * w, h_end.unsqueeze(1) * w).sum(-1) + self.head.bias
        bound = scaled_softplus(upper, self.scale).sum(-1)
        return bound * (1 + 1000 * torch.finfo(bound.dtype).eps)   # covers rounding in the sums

    def _initial_horizon(self, batch: EventBatch, num: int) -> Tensor:
        return torch.full((num,), float("inf"), dtype=batch.times.dtype, device=batch.times.device)

    # ------------------------------------------------------------------ incremental generation

    @torch.no_grad()
    def encode(self, batch: EventBatch) -> Tensor:
        """The CT-LSTM interval state ``(c, c̄, δ, o)`` after the last event of each sequence: ``[B, 4, H]``."""
        batch, origin = self._prepare(batch)
        states = self._states(batch, origin)
        rows = torch.arange(batch.batch_size, device=states.device)
        return states[rows, batch.lengths]

    @torch.no_grad()
    def sample_from_state(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Exact draws by the thinning of :meth:`sample_next` (same proven bound) from interval states ``[N, 4, H]``."""
        return self._thin_after(state, torch.full((state.shape[0],), float("inf"), dtype=state.dtype,
                                                  device=state.device))

    @torch.no_grad()
    def advance(self, state: Tensor, gaps: Tensor, marks: Tensor) -> Tensor:
        """One CT-LSTM step: decay the state by ``gaps [N]``, then update it with the event of mark ``marks [N]``."""
        gaps = gaps.to(device=state.device, dtype=state.dtype)
        c_t, h_t = self._decay(state, gaps)
        return self._step(self.embedding(marks.to(state.device)), h_t, c_t, state[:, 1])
