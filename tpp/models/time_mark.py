"""Time–mark dependent TPPs after Waghmare, Debnath, Asthana and Malhotra (CIKM 2022).

The next event's mark and time are not independent given the history: the model gives the mark first, then
the time given the mark (``h`` the history summary after event ``j``, ``τ = t - t_j``)::

    f(τ, k | h) = p(k | h) f(τ | k, h),        p(k | h) = softmax(W h + d)_k

Intensity for all marks. Let ``g_k(τ) = p_k f_k(τ)`` (``f_k = f(· | k, h)``, ``S_k`` its survival function).
The next event comes after ``τ`` with probability ``S(τ) = Σ_k p_k S_k(τ)`` (the mixture over marks), and it
is at ``τ`` with mark ``k`` with density ``g_k(τ)``; so the mark-``k`` intensity, the rate of a mark-``k`` event at
``τ`` given none before, is::

    λ_k(τ) = lim_{dτ→0} P(T ∈ [τ, τ + dτ), K = k | T >= τ) / dτ = p_k f_k(τ) / S(τ)

and ``Σ_k λ_k(τ) = Σ_k p_k f_k(τ) / S(τ) = -S'(τ) / S(τ)`` (since ``S_k' = -f_k``), hence the compensator over
``[t_j, t_j + τ]`` is ``∫_0^τ Σ_k λ_k = -log S(τ) + log S(0) = -log S(τ)``. :meth:`TimeMarkTPP.log_likelihood`
reports the standard decomposition, so that ``event_term - compensator`` is the exact log-likelihood
``Σ log p_{m_i} f_{m_i}(τ_i) + log S(τ_tail)``::

    event_term  = Σ_scored log λ_{m_i}(t_i) = Σ_scored [log p_{m_i} + log f_{m_i}(τ_i) - log S(τ_i)]
    compensator = Σ_scored -log S(τ_i)  (+ -log S(window_end - t_N) in the "full" convention)

(The authors' code scores the open interval after the last event with ``log S_{m_N}(τ_tail)``, the survival given
the *previous* event's mark; the right term is the mixture ``log Σ_k p_k S_k(τ_tail)``, used here.)

Sampling is exact: the mark ``k ~ p``, then the gap ``τ ~ f(· | k)``, directly from the closed form (LNM, RMTPP)
or by thinning with a proven bound (THP).

Mark prediction (:meth:`TimeMarkTPP.predict_marks`): the authors' code predicts the mark of event ``j + 1`` as
``argmax_k log p_k + log f_k(τ_{j+1})`` at the *observed* gap, i.e. the mark that maximises the joint density
there (``mark_class_joint`` in their ``recurrent_tpp.py``; it is what their micro-F1 scores). Since
``λ_k(τ) = g_k(τ) / S(τ)`` with ``S`` free of ``k``, this is also ``argmax_k λ_k(t_{j+1})``, which
:func:`joint_density_mark_predictions` applies to any model through its public intensity (for a model with
time-independent mark probabilities, such as :class:`~tpp.models.intensity_free.IntensityFree`, it is
``argmax_k p_k``). It differs from :func:`tpp.evaluation.evaluate_model`, whose mark is the most frequent one
among draws of the next event: that is ``argmax_k P(next mark = k | h) = argmax_k p_k``, not conditioned on the
observed time.

Models:

- :class:`LogNormMixTimeMark` (``"lnm_tm"``): ``f(τ | k)`` a log-normal mixture with mark-specific parameters
  (the authors' conditionally dependent LogNormMix, ``code/dpp/models/log_norm_mix.py`` of their repository);
- :class:`RMTPPTimeMark` (``"rmtpp_tm"``): ``f(τ | k)`` with RMTPP's exponential-of-linear hazard with
  mark-specific parameters, ``exp(c_k + w_k τ)``, ``c_k = v_k · h + b_k``: closed-form density, survival, inverse;
- :class:`THPTimeMark` (``"thp_tm"``): ``f(τ | k)`` with THP's softplus hazard with mark-specific parameters,
  ``μ_k + s_k softplus((a_k + α_k τ) / s_k)``, over THP's attention encoder; ``H_k`` by Gauss–Legendre, draws by
  thinning with a proven bound.

The first two use the history encoder of :class:`~tpp.models.intensity_free.IntensityFree` (a GRU over
standardised log gaps and mark embeddings), as the authors' code builds its variants on one recurrent network.
The plain THP of :mod:`tpp.models.thp` is already time–mark dependent in another way: its ``λ_k`` are
mark-specific, so ``p(k | τ, h) = λ_k(τ) / Σ_l λ_l(τ)`` varies with ``τ``; :class:`THPTimeMark` instead factorises
the next event as mark first, then time given the mark, like the other two.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from tpp.data.batch import EventBatch, batches
from tpp.data.sequences import EventSequences
from tpp.models.base import (
    Convention,
    HistoryState,
    LogLikelihood,
    TPPModel,
    check_convention,
    scored_events,
    start_times,
)
from tpp.models.intensity_free import _HALF_LOG_2PI, GAP_FLOOR, LOG_SCALE_RANGE, IntensityFree
from tpp.models.nhp import constant_bound_proposal, log_scaled_softplus, scaled_softplus, thinning_next_event
from tpp.models.rmtpp import _integrated_intensity, _invert_compensator
from tpp.models.thp import THP, TransformerCache

__all__ = ["LogNormMixTimeMark", "RMTPPTimeMark", "RecurrentTimeMarkTPP", "THPTimeMark", "TimeMarkTPP",
           "joint_density_mark_predictions"]


def _check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class TimeMarkTPP(TPPModel):
    """``f(τ, k | h) = p(k | h) f(τ | k, h)`` (see the module docstring): likelihood, intensity, draws, mark rule.

    Subclasses give the history encoder (:meth:`_prepare`, :meth:`_states`), the mark probabilities
    (:meth:`log_mark_probabilities`) and the mark-conditional law of the gap (:meth:`_log_density_survival_by_mark`,
    :meth:`_sample_gap_given_mark`).
    """

    exact_compensator: ClassVar[bool] = True

    # ------------------------------------------------------------------------------------------- subclasses

    @abstractmethod
    def _prepare(self, batch: EventBatch) -> EventBatch:
        """The batch on the parameters' device and dtype (after checking its number of marks)."""

    @abstractmethod
    def _states(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, D]``: the state before the first event, then the state after each event ``j`` (causal)."""

    @abstractmethod
    def log_mark_probabilities(self, h: Tensor) -> Tensor:
        """``log p(k | h)``: ``[..., D]`` -> ``[..., K]``."""

    @abstractmethod
    def _log_density_survival_by_mark(self, h: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """``(log f(τ | k), log S(τ | k))`` for every mark: ``h [..., D]``, gaps ``tau [...]`` -> ``[..., K]`` each."""

    @abstractmethod
    def _sample_gap_given_mark(self, h: Tensor, marks: Tensor, batch: EventBatch | None) -> Tensor:
        """Exact draws ``τ ~ f(· | k, h)``: ``h [B, L, D]``, ``marks [S, B, L]`` -> ``[S, B, L]`` (``inf``: none).
        ``batch``: the histories, where the sampler tunes itself on them (THP-TM's first thinning horizon);
        ``None`` is accepted by the models that do not."""

    # ------------------------------------------------------------------------------------------- pieces

    def _joint(self, h: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """``(log g_k(τ) = log p_k + log f_k(τ) [..., K], log S(τ) = log Σ_k p_k S_k(τ) [...])``."""
        log_p = self.log_mark_probabilities(h)
        log_f, log_s = self._log_density_survival_by_mark(h, tau)
        return log_p + log_f, torch.logsumexp(log_p + log_s, dim=-1)

    # ------------------------------------------------------------------------------------------- API

    def log_likelihood(self, batch: EventBatch, convention: Convention = "easytpp") -> LogLikelihood:
        """``event_term = Σ [log p_m + log f_m - log S]``, ``compensator = Σ -log S`` (see the module docstring)."""
        convention = check_convention(convention, batch)
        batch = self._prepare(batch)
        states = self._states(batch)
        scored = scored_events(batch, convention)
        gaps = torch.where(scored, batch.gaps, torch.ones_like(batch.gaps))   # gaps[:, 0]: t_1 - window_start
        log_g, log_s = self._joint(states[:, :-1], gaps)
        log_g = log_g.gather(-1, batch.marks.unsqueeze(-1)).squeeze(-1)
        zero = torch.zeros_like(log_s)
        event_term = torch.where(scored, log_g - log_s, zero).sum(1)
        compensator = torch.where(scored, -log_s, zero).sum(1)
        if convention == "full":
            rows = torch.arange(batch.batch_size, device=batch.mask.device)
            last = batch.lengths - 1
            tail = batch.window_end - batch.times[rows, last]
            open_ = tail > 0
            _, log_s_tail = self._joint(states[rows, last + 1], torch.where(open_, tail, torch.ones_like(tail)))
            compensator = compensator - torch.where(open_, log_s_tail, torch.zeros_like(log_s_tail))
        return LogLikelihood(event_term, compensator, scored.sum(1))

    def intensity(self, batch: EventBatch, query_times: Tensor) -> Tensor:
        """``λ_k(t) = p_k f_k(τ) / S(τ)`` at ``query_times [B, Q]`` -> ``[B, Q, K]`` (history strictly before ``t``).

        ``τ`` is measured from the last event before ``t`` (from the window start before the first event, or from
        ``t_1`` when the window is unknown, clamped at 0).
        """
        batch = self._prepare(batch)
        q = query_times.to(device=batch.times.device, dtype=batch.times.dtype)
        if q.dim() != 2 or q.shape[0] != batch.batch_size:
            raise ValueError(f"query_times must be [B, Q] with B = {batch.batch_size}, got {tuple(q.shape)}")
        states = self._states(batch)
        ref = torch.cat([start_times(batch).unsqueeze(1), batch.times], dim=1)
        padded = torch.where(batch.mask, batch.times, torch.full_like(batch.times, math.inf))
        idx = torch.searchsorted(padded.contiguous(), q.contiguous(), side="left")
        h = states.gather(1, idx.unsqueeze(-1).expand(-1, -1, states.shape[-1]))          # [B, Q, D]
        tau = (q - ref.gather(1, idx)).clamp_min(0)
        log_g, log_s = self._joint(h, tau)
        return torch.exp(log_g - log_s.unsqueeze(-1))

    @torch.no_grad()
    def sample_next(self, batch: EventBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        """Exact draws: the mark ``k ~ p``, then the gap ``τ ~ f(· | k)``. ``(gaps, marks)``, ``[S, B, L]`` each.

        A gap is ``inf`` (mark ``-1``) where the drawn mark's time law is defective and the draw has no next event
        (RMTPP with ``w_k < 0``; THP without baseline with ``α_k < 0``). Uses torch's global RNG of the model's
        device.
        """
        _check_positive_int("n_samples", n_samples)
        batch = self._prepare(batch)
        h = self._states(batch)[:, 1:]
        marks = torch.distributions.Categorical(logits=self.log_mark_probabilities(h)).sample((n_samples,))
        gaps = self._sample_gap_given_mark(h, marks, batch)
        return gaps, torch.where(torch.isinf(gaps), torch.full_like(marks, -1), marks)

    @torch.no_grad()
    def sample_from_state(self, state: HistoryState) -> tuple[Tensor, Tensor]:
        """Exact draws of the next event after the last event of each history of the generic state, as
        :meth:`sample_next` draws them but at that position only: ``(gaps [N], marks [N])``, so each generation
        step draws ``N`` events, not one per event of the histories."""
        batch = self._prepare(state.batch)
        rows = torch.arange(batch.batch_size, device=batch.times.device)
        h = self._states(batch)[rows, batch.lengths.to(rows.device)].unsqueeze(1)           # [N, 1, D]
        return self._draw_after(h, lambda marks: self._sample_gap_given_mark(h, marks, batch))

    def _draw_after(self, h: Tensor, gap_given_mark: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """One draw ``(gaps [N], marks [N])`` per state ``h [N, 1, D]``: the mark from ``p(k | h)``, then the gap
        by ``gap_given_mark(marks [1, N, 1]) -> [1, N, 1]``."""
        marks = torch.distributions.Categorical(logits=self.log_mark_probabilities(h)).sample((1,))
        gaps = gap_given_mark(marks)[0, :, 0]
        marks = marks[0, :, 0]
        return gaps, torch.where(torch.isinf(gaps), torch.full_like(marks, -1), marks)

    @torch.no_grad()
    def predict_marks(self, batch: EventBatch) -> Tensor:
        """The authors' mark rule: ``[B, L]`` entry ``j`` is ``argmax_k p(k | H) f(τ_j | k, H)``, the mark of event
        ``j`` that maximises the joint density at its observed gap ``τ_j`` given the events before it.

        Entry 0 uses the initial state and the gap from the window start (from ``t_1`` itself, ``τ = 0``, when the
        window is unknown). Padded entries hold arbitrary marks.
        """
        batch = self._prepare(batch)
        states = self._states(batch)
        log_g, _ = self._joint(states[:, :-1], batch.gaps)
        return log_g.argmax(-1)


@torch.no_grad()
def joint_density_mark_predictions(model: TPPModel, seqs: EventSequences, *, batch_size: int = 64,
                                   dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    """Waghmare et al.'s mark rule for any model: event ``j + 1``'s mark predicted as ``argmax_k λ_k(t_{j+1})``
    given the events up to ``j`` (= the argmax of the joint density ``f(τ, k | h)`` at the observed gap).

    Events 2..N of each sequence are predicted, as in :func:`tpp.evaluation.next_event_predictions`. Returns
    ``{"predicted_mark", "true_mark"}``, each ``[Σ (N_i - 1)]``; their agreement is the micro-F1 (accuracy) of
    the paper's tables.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predicted, true = [], []
    for batch in batches(seqs, batch_size, dtype=dtype, device=device):
        lam = model.intensity(batch, batch.times)                                   # [B, L, K], history before
        target = batch.mask.clone()
        target[:, 0] = False
        predicted.append(lam.argmax(-1)[target].cpu().numpy())
        true.append(batch.marks[target].cpu().numpy())
    model.train(was_training)
    return {"predicted_mark": np.concatenate(predicted), "true_mark": np.concatenate(true)}


class RecurrentTimeMarkTPP(TimeMarkTPP):
    """:class:`TimeMarkTPP` over IntensityFree's encoder: a GRU over standardised log gaps and mark embeddings, a
    learned initial state ``h_init``, the gap statistics ``(μ̄, s)`` set by :meth:`set_gap_statistics` (called by
    :meth:`prepare`), and ``p(k | h) = softmax(W h + d)``.

    Args:
        num_marks: ``K``.
        hidden_size: GRU state size ``H`` (default 32).
        embedding_size: mark embedding size (default 16).
    """

    def __init__(self, num_marks: int, *, hidden_size: int = 32, embedding_size: int = 16) -> None:
        super().__init__(num_marks)
        self.hidden_size = _check_positive_int("hidden_size", hidden_size)
        self.embedding_size = _check_positive_int("embedding_size", embedding_size)
        self.embedding = nn.Embedding(num_marks, embedding_size)
        self.rnn = nn.GRU(embedding_size + 1, hidden_size, batch_first=True)
        self.h_init = nn.Parameter(torch.zeros(hidden_size))
        self.mark_logits = nn.Linear(hidden_size, num_marks)
        self.register_buffer("gap_mean", torch.zeros(()))
        self.register_buffer("gap_std", torch.ones(()))

    # IntensityFree's encoder, gap standardisation and O(1) generation state (the GRU state after the last event),
    # shared as functions (they use the same attributes).
    prepare = IntensityFree.prepare
    set_gap_statistics = IntensityFree.set_gap_statistics
    _prepare = IntensityFree._prepare
    _states = IntensityFree._states
    encode = IntensityFree.encode
    advance = IntensityFree.advance

    @torch.no_grad()
    def sample_from_state(self, state: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """Exact draws, as :meth:`sample_next` draws them, from GRU states ``h [N, H]``: ``(gaps [N], marks [N])``."""
        h = state.unsqueeze(1)                                                               # [N, 1, H]
        return self._draw_after(h, lambda marks: self._sample_gap_given_mark(h, marks, None))

    def log_mark_probabilities(self, h: Tensor) -> Tensor:
        return torch.log_softmax(self.mark_logits(h), dim=-1)


# ----------------------------------------------------------------------------------------------- LogNormMix


class LogNormMixTimeMark(RecurrentTimeMarkTPP):
    """The time–mark dependent LogNormMix: ``f(τ | k, h)`` a log-normal mixture whose parameters depend on ``k``.

    With ``(π_{k,m}, μ_{k,m}, log σ_{k,m}) = Linear(h)`` (``K × M`` of each, ``log σ`` clamped to [-5, 3]) and the gap
    statistics ``(μ̄, s)`` of :class:`~tpp.models.intensity_free.IntensityFree`, ``y = log τ``::

        log f_k(τ) = logsumexp_m [log π_{k,m} + log N(y; μ̄ + s μ_{k,m}, s σ_{k,m})] - y
        log S_k(τ) = logsumexp_m [log π_{k,m} + log Φ((μ̄ + s μ_{k,m} - y) / (s σ_{k,m}))]

    Gaps are floored at ``1e-10`` before the log. Sampling: ``k ~ p``, the component ``m ~ π_k``, then
    ``log τ ~ N(μ̄ + s μ_{k,m}, s σ_{k,m})``. With every mark's mixture equal, this is IntensityFree.

    Args:
        num_marks: ``K``.
        hidden_size: GRU state size (default 32).
        embedding_size: mark embedding size (default 16).
        num_components: ``M`` log-normal components per mark (default 16).
    """

    name: ClassVar[str] = "lnm_tm"

    def __init__(self, num_marks: int, *, hidden_size: int = 32, embedding_size: int = 16,
                 num_components: int = 16) -> None:
        super().__init__(num_marks, hidden_size=hidden_size, embedding_size=embedding_size)
        self.num_components = _check_positive_int("num_components", num_components)
        self.mixture = nn.Linear(hidden_size, num_marks * 3 * num_components)   # per mark: logits, means, log-scales

    def mixture_parameters(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Law of ``log τ`` given the mark: ``(log π, loc, scale)``, each ``[..., K, M]``, in log-time of the batch's
        unit (``loc = μ̄ + s μ_{k,m}``, ``scale = s σ_{k,m}``)."""
        raw = self.mixture(h).unflatten(-1, (self.num_marks, 3 * self.num_components))
        logits, mean, log_scale = raw.chunk(3, dim=-1)
        return (torch.log_softmax(logits, dim=-1), self.gap_mean + self.gap_std * mean,
                self.gap_std * torch.exp(log_scale.clamp(*LOG_SCALE_RANGE)))

    def _log_density_survival_by_mark(self, h: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        log_w, loc, scale = self.mixture_parameters(h)                                  # [..., K, M]
        y = torch.log(tau.clamp_min(GAP_FLOOR))[..., None, None]
        z = (y - loc) / scale
        log_f = torch.logsumexp(log_w - 0.5 * z**2 - torch.log(scale) - _HALF_LOG_2PI, dim=-1) - y[..., 0]
        log_s = torch.logsumexp(log_w + torch.special.log_ndtr(-z), dim=-1)
        return log_f, log_s

    def _sample_gap_given_mark(self, h: Tensor, marks: Tensor, batch: EventBatch | None) -> Tensor:
        log_w, loc, scale = self.mixture_parameters(h)                                  # [B, L, K, M]
        n = marks.shape[0]
        index = marks[..., None, None].expand(-1, -1, -1, 1, self.num_components)        # [S, B, L, 1, M]

        def at_mark(x: Tensor) -> Tensor:
            return x.expand(n, *x.shape).gather(-2, index).squeeze(-2)                  # [S, B, L, M]

        log_w, loc, scale = at_mark(log_w), at_mark(loc), at_mark(scale)
        comp = torch.distributions.Categorical(logits=log_w).sample().unsqueeze(-1)
        loc, scale = loc.gather(-1, comp).squeeze(-1), scale.gather(-1, comp).squeeze(-1)
        return torch.exp(loc + scale * torch.randn_like(loc))


# ----------------------------------------------------------------------------------------------- RMTPP


class RMTPPTimeMark(RecurrentTimeMarkTPP):
    """The time–mark dependent RMTPP: given the mark ``k``, the gap has the hazard ``exp(c_k + w_k τ)``.

    ``c_k = v_k · h + b_k`` (one linear map ``h -> c``) and ``w_k`` are mark-specific. In closed form
    (:mod:`tpp.models.rmtpp`, whose stable helpers are reused)::

        Λ_k(τ) = exp(c_k) (e^{w_k τ} - 1) / w_k,   log S_k(τ) = -Λ_k(τ),   log f_k(τ) = c_k + w_k τ - Λ_k(τ)

    Sampling ``τ | k`` inverts ``Λ_k`` at ``E ~ Exp(1)``. For ``w_k < 0`` the law is defective: with probability
    ``exp(-exp(c_k) / |w_k|)`` a mark-``k`` draw has no event (gap ``inf``, mark ``-1``).

    Args:
        num_marks: ``K``.
        hidden_size: GRU state size (default 32).
        embedding_size: mark embedding size (default 16).
    """

    name: ClassVar[str] = "rmtpp_tm"

    def __init__(self, num_marks: int, *, hidden_size: int = 32, embedding_size: int = 16) -> None:
        super().__init__(num_marks, hidden_size=hidden_size, embedding_size=embedding_size)
        self.ground = nn.Linear(hidden_size, num_marks)              # c_k = v_k · h + b_k
        self.w = nn.Parameter(torch.zeros(num_marks))                 # w_k

    def _log_density_survival_by_mark(self, h: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        c = self.ground(h)                                                                # [..., K]
        tau = tau.unsqueeze(-1)
        compensator = _integrated_intensity(c, self.w, tau.expand_as(c))
        return c + self.w * tau - compensator, -compensator

    def _sample_gap_given_mark(self, h: Tensor, marks: Tensor, batch: EventBatch | None) -> Tensor:
        c = self.ground(h)                                                                # [B, L, K]
        c = c.expand(marks.shape[0], *c.shape).gather(-1, marks.unsqueeze(-1)).squeeze(-1)
        e = torch.empty_like(c).exponential_()
        return _invert_compensator(c, self.w[marks], e)


# ----------------------------------------------------------------------------------------------- THP


class THPTimeMark(TimeMarkTPP):
    """The time–mark dependent THP: given the mark ``k``, the gap has THP's softplus hazard with mark-specific
    parameters, and the mark comes first from ``p(k | h)``.

    The history encoder is THP's (:class:`~tpp.models.thp.THP`: mark embedding plus sinusoidal temporal encoding,
    a learned start token at the origin, causal self-attention), whose output head gives ``2K`` numbers per
    position: ``a_k = w_k · h + b_k`` and the mark logits. With THP's ``α_k`` and ``s_k > 0`` (and, with
    ``baseline=True``, its ``μ_k > 0``; else ``μ_k = 0``)::

        η_k(τ) = μ_k + s_k log(1 + exp((a_k + α_k τ) / s_k))         (hazard of the gap given the mark)
        H_k(τ) = ∫_0^τ η_k,   log S_k(τ) = -H_k(τ),   log f_k(τ) = log η_k(τ) - H_k(τ)

    ``H_k`` has no elementary closed form (a dilogarithm), so it is computed by Gauss–Legendre with ``n_nodes``
    per gap (``exact_compensator = False``; the model's compensator ``-log Σ_k p_k e^{-H_k}`` is exact given the
    ``H_k``). With ``μ_k = 0`` and ``α_k < 0`` the law of the gap given ``k`` is defective: no event with
    probability ``exp(-H_k(∞))``, ``H_k(∞) = s_k² / |α_k| · (-Li₂(-e^{a_k / s_k}))``.

    Sampling ``τ | k`` is exact, by thinning (:func:`tpp.models.nhp.thinning_next_event`) with a proven bound:
    ``η_k`` is a constant plus an increasing function (softplus) of an argument linear in ``τ``, so it is monotone
    in ``τ``. For ``α_k > 0`` it increases, and on ``[u, u + Δ]`` it is at most ``η_k(u + Δ)`` (the horizon ``Δ``
    starts at three mean gaps of the batch and doubles whenever no point falls in it). For ``α_k <= 0`` it does not
    increase, and ``η_k(u)`` bounds it on all of ``[u, ∞)``. Where moreover ``μ_k = 0``, ``α_k < 0`` and the
    argument is ``x = (a_k + α_k u) / s_k <= 0``, the draw uses the envelope ``s_k e^{x}`` instead (``e^x >= log(1 +
    e^x)``, so it dominates; the acceptance is at least ``log 2``): its mass on ``[u, ∞)`` is
    ``G = s_k² e^{x(u)} / |α_k|``, finite, and its next point is drawn by inverting ``G (1 - e^{α_k v / s_k})``;
    when it has none, the draw is "no event" (gap ``inf``, mark ``-1``). Each bound is multiplied by
    ``1 + 1000 ε`` to cover rounding; the thinning raises if an intensity ever exceeds its bound.

    Args:
        num_marks: ``K``.
        d_model, num_heads, num_layers, dim_feedforward, dropout: THP's encoder (see :class:`~tpp.models.thp.THP`).
        baseline: add THP's learned constant ``μ_k > 0`` to each mark's hazard.
        n_nodes: Gauss–Legendre nodes per gap for ``H_k`` (default 8).
        max_thinning_rounds: cap on the thinning rounds of :meth:`sample_next` (hitting it raises).
    """

    name: ClassVar[str] = "thp_tm"
    exact_compensator: ClassVar[bool] = False

    def __init__(self, num_marks: int, *, d_model: int = 32, num_heads: int = 2, num_layers: int = 2,
                 dim_feedforward: int | None = None, dropout: float = 0.0, baseline: bool = False, n_nodes: int = 8,
                 max_thinning_rounds: int = 10_000) -> None:
        super().__init__(num_marks)
        self.thp = THP(num_marks, d_model=d_model, num_heads=num_heads, num_layers=num_layers,
                       dim_feedforward=dim_feedforward, dropout=dropout, baseline=baseline, n_nodes=n_nodes,
                       max_thinning_rounds=max_thinning_rounds)
        self.thp.head = nn.Linear(d_model, 2 * num_marks)            # a_k, then the mark logits

    @property
    def n_nodes(self) -> int:
        return self.thp.n_nodes

    def _prepare(self, batch: EventBatch) -> EventBatch:
        return self.thp._prepare(batch)[0]

    def _states(self, batch: EventBatch) -> Tensor:
        return self.thp._states(batch, start_times(batch))

    def log_mark_probabilities(self, h: Tensor) -> Tensor:
        return torch.log_softmax(h[..., self.num_marks:], dim=-1)

    def _hazard(self, a: Tensor, alpha: Tensor, scale: Tensor, base: Tensor | None, tau: Tensor) -> Tensor:
        """``η(τ) = μ + s softplus((a + α τ) / s)`` elementwise (broadcast)."""
        value = scaled_softplus(a + alpha * tau, scale)
        return value if base is None else value + base

    def _log_density_survival_by_mark(self, h: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        a = h[..., :self.num_marks]                                                       # [..., K]
        alpha, scale, base = self.thp.alpha, self.thp.scale, self.thp._baseline()
        tau = tau.unsqueeze(-1)
        x, w = np.polynomial.legendre.leggauss(self.n_nodes)
        x, w = (torch.as_tensor(v, dtype=tau.dtype, device=tau.device) for v in (x, w))
        nodes = (tau / 2).unsqueeze(-1) * (x + 1)                                          # [..., 1, n]
        cum = (self._hazard(a.unsqueeze(-1), alpha.unsqueeze(-1), scale.unsqueeze(-1),
                            None if base is None else base.unsqueeze(-1), nodes) * w).sum(-1) * tau / 2
        args = a + alpha * tau
        log_eta = (log_scaled_softplus(args, scale) if base is None
                   else torch.log(scaled_softplus(args, scale) + base))
        return log_eta - cum, -cum

    # generation with THP's key-value cache (:class:`~tpp.models.thp.TransformerCache`): O(L) per event

    def encode(self, batch: EventBatch) -> TransformerCache:
        """THP's :class:`~tpp.models.thp.TransformerCache` after the last event of each sequence."""
        return self.thp.encode(batch)

    def advance(self, state: TransformerCache, gaps: Tensor, marks: Tensor) -> TransformerCache:
        """The cache after appending the event ``(gaps [N], marks [N])`` (one new column per layer)."""
        return self.thp.advance(state, gaps, marks)

    @torch.no_grad()
    def sample_from_state(self, state: TransformerCache) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """Exact draws, as :meth:`sample_next` draws them, after the last event of each entry of the cache:
        ``(gaps [N], marks [N])``."""
        h = state.state.unsqueeze(1)                                                         # [N, 1, 2K]
        return self._draw_after(h, lambda marks: self._sample_gap_from(h, marks, state.horizon))

    def _sample_gap_given_mark(self, h: Tensor, marks: Tensor, batch: EventBatch | None) -> Tensor:
        if batch is None:
            raise ValueError("THPTimeMark draws need the histories (batch) for their first thinning horizon")
        return self._sample_gap_from(h, marks, self.thp._initial_horizon(batch, marks.numel()))

    def _sample_gap_from(self, h: Tensor, marks: Tensor, first_horizon: Tensor) -> Tensor:
        """Gaps ``[S, B, L]`` given ``marks [S, B, L]`` and states ``h [B, L, 2K]``; ``first_horizon [S B L]``
        the thinning's first horizon where ``α_k > 0``."""
        n_samples = marks.shape[0]
        a = h[..., :self.num_marks].expand(n_samples, *h.shape[:-1], self.num_marks)
        a = a.gather(-1, marks.unsqueeze(-1)).reshape(-1)                                  # [N]
        k = marks.reshape(-1)
        alpha, scale = self.thp.alpha[k], self.thp.scale[k]
        base = self.thp._baseline()
        base = None if base is None else base[k]

        def pick(x: Tensor | None, idx: Tensor) -> Tensor | None:
            return None if x is None else x[idx]

        horizon = torch.where(alpha > 0, first_horizon, math.inf)
        elapsed, _ = thinning_next_event(
            lambda idx, u: self._hazard(a[idx], alpha[idx], scale[idx], pick(base, idx), u).unsqueeze(-1),
            lambda idx, u, span: self._propose(a[idx], alpha[idx], scale[idx], pick(base, idx), u, span),
            horizon, max_rounds=self.thp.max_thinning_rounds)
        return elapsed.view(marks.shape)

    def _hazard_bound(self, a: Tensor, alpha: Tensor, scale: Tensor, base: Tensor | None, start: Tensor,
                      span: Tensor) -> Tensor:
        """``[n]`` a bound of ``η(u) = μ + s softplus((a + α u) / s)`` on ``[start, start + span]`` (``span`` must be
        ``inf`` only where ``α <= 0``): ``η`` at the end where the linear argument is largest, plus rounding room."""
        end = a + alpha * (start + torch.where(alpha > 0, span, torch.zeros_like(span)))
        bound = self._hazard(torch.maximum(a + alpha * start, end), torch.zeros_like(a), scale, base,
                             torch.zeros_like(a))
        return bound * (1 + 1000 * torch.finfo(bound.dtype).eps)

    def _propose(self, a: Tensor, alpha: Tensor, scale: Tensor, base: Tensor | None, start: Tensor,
                 span: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The dominating process of the thinning for hazards ``η = μ + s softplus((a + α u) / s)``, all ``[n]``,
        from ``start`` (see the class docstring): the envelope ``s e^{(a + α u) / s}`` where ``μ = 0``, ``α < 0``
        and the argument is ``<= 0``; elsewhere the constant bound ``η`` at the larger end of ``[start, start +
        span]`` (``span = inf`` for ``α <= 0``)."""
        x = a + alpha * start
        envelope = (alpha < 0) & (x <= 0) if base is None else torch.zeros_like(x, dtype=torch.bool)
        t, g, new_span = start.clone(), torch.zeros_like(start), span.clone()
        rest = ~envelope
        if bool(rest.any()):
            bound = self._hazard_bound(a[rest], alpha[rest], scale[rest], None if base is None else base[rest],
                                       start[rest], span[rest])
            t[rest], g[rest], new_span[rest] = constant_bound_proposal(bound, start[rest], span[rest])
        if bool(envelope.any()):
            s, c = scale[envelope], alpha[envelope].abs() / scale[envelope]    # envelope s e^{x(u)/s}, decay c
            xs = x[envelope] / s
            mass = s * torch.exp(xs) / c                                        # G = s² e^{x/s} / |α|
            e = torch.empty_like(mass).exponential_()
            has = e < mass
            v = torch.where(has, -torch.log1p(-(e / mass).clamp_max(1)) / c, math.inf)
            t_env = start[envelope] + v
            g_env = torch.where(has, s * torch.exp(xs - c * torch.where(has, v, 0.0)), 0.0)
            t[envelope], g[envelope] = t_env, g_env * (1 + 1000 * torch.finfo(g_env.dtype).eps)
        return t, g, new_span
