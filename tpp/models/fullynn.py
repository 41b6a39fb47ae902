"""FullyNN: the fully neural network TPP of Omi, Ueda and Aihara (NeurIPS 2019).

A recurrent network reads the events one by one; its state ``h_j`` after event ``j`` sets, through a
feed-forward *cumulative hazard network*, the compensator of every mark from ``t_j`` to ``t_j + τ``. The
network is monotone increasing in ``τ`` by construction, and the intensity is its derivative.

Cumulative hazard network (``K`` marks, ``L`` tanh layers of width ``H``; ``W⁺ = softplus(W)`` elementwise
are the weights on every path from ``τ``, so they are positive; ``U`` and the biases are free)::

    a_1(τ) = U h_j + b_1 + u⁺ τ,                 z_1 = tanh(a_1)
    a_{l+1}(τ) = V_l⁺ z_l + b_{l+1},             z_{l+1} = tanh(a_{l+1})          (l = 1 .. L - 1)
    o_k(τ) = r_k⁺ · z_L + d_k,                   F_k(τ) = softplus(o_k(τ))
    Φ_k(τ) = F_k(τ) - F_k(0)                     (compensator of mark k; Φ_k(0) = 0 exactly)
    λ_k(t_j + τ) = dΦ_k / dτ = σ(o_k) r_k⁺ · t_L,   t_1 = (1 - z_1²) ⊙ u⁺,   t_{l+1} = (1 - z_{l+1}²) ⊙ V_l⁺ t_l

Every factor of ``λ_k`` is positive, so each ``Φ_k`` is strictly increasing (``exact_compensator = True``:
the compensator *is* ``Φ``). The derivative is propagated forward with the activations (forward-mode
differentiation written out, one pass for all ``K`` marks, twice differentiable for training); the tests
check it against ``torch.autograd.grad`` of ``Φ``. It is computed in the log domain (``log(1 - tanh² a) =
log 4 - 2|a| - 2 softplus(-2|a|)``, positive matrix products shifted by their largest term), so ``log λ`` stays finite
where the tanh units saturate. ``Φ_k`` is computed without the cancellation of ``F_k(τ) - F_k(0)``: the
differences ``Δz = tanh(a + Δa) - tanh(a) = tanh(Δa) (1 - tanh(a) tanh(a + Δa))`` are propagated from
``Δa_1 = u⁺ τ`` (``1 - z z'`` from ``1 - |tanh(a)| = 2σ(-2|a|)``, as a sum of positive terms), and
``softplus(o + Δo) - softplus(o) = log1p(σ(o) expm1(Δo))``; so ``Φ`` keeps its relative precision at small ``τ``.

Time unit: the network reads time in units of ``c = time_unit``, a buffer (saved with the model) that
:meth:`FullyNN.prepare` sets to the training data's mean inter-event gap (1 until then). With ``Φ̃`` the network
above at ``τ / c``, the model is ``Φ_k(τ) = Φ̃_k(τ / c)`` and, by the change of variable, ``λ_k(t_j + τ) = dΦ_k/dτ
= c⁻¹ dΦ̃_k/dτ̃ (τ / c)``; the recurrent inputs are ``τ_j / c`` too. So rescaling the data's time and ``c`` by the
same factor changes the log-likelihood by exactly ``-log`` of the factor per scored event (tested). The
initialisation (:meth:`CumulativeHazardNetwork.initial_scales`) then holds whatever the data's time scale: the
first-layer time scales ``1 / u⁺_i`` are log-spaced over 8 to 256 units and the output weights are scaled so
that ``Σ_k λ_k ≈ 1 / c`` at the start of an interval; ``Φ`` grows nearly linearly for several units (``Φ(4 c)``
between 3 and 4) and its total mass is ``M >= 20`` at the states of the untrained model (tested; measured
``>= 20`` for ``H >= 32`` over states uniform in ``[-1, 1]^H``, about 11 at the worst for ``H = 8``). Without
the unit, ``τ`` entered the first layer raw: on data whose gaps are not of order 1 the tanh units saturated
within a few gaps (or barely moved), and training started from a badly scaled ``Φ`` (many "no next event" draws).

Saturation: as ``τ → ∞`` every unit of the first layer tends to 1 (``u⁺ > 0``), so ``Φ_k`` is bounded and the
total mass ``M = Σ_k Φ_k(∞)`` is finite: with probability ``exp(-M)`` there is no next event. :meth:`sample_next`
returns gap ``inf`` and mark ``-1`` for those draws, and the "full" log-likelihood's tail term ``Φ(T - t_n)``
stays below ``M`` (this is the paper's model; it is a proper TPP whose sequences may end).

Sampling is exact by inversion (no thinning): with ``E ~ Exp(1)``, the gap solves ``Σ_k Φ_k(τ) = E`` (none when
``E >= M``, ``M`` computed by the same network at ``τ = ∞``). The root is bracketed by doubling from ``E / Σ_k
λ_k(0)`` and refined by Newton's method safeguarded by bisection (:func:`tpp.models.inversion.invert_increasing`,
the slope being ``Σ_k λ_k``), vectorised over all draws, until the bracket ``[lo, hi]`` satisfies ``hi - lo
<= sample_rtol · hi``; the midpoint is returned, so its relative error is at most ``sample_rtol / 2`` (tested).
The mark is then drawn with probabilities ``λ_k(τ) / Σ_k λ_k(τ)`` at that ``τ``.

Recurrent network: input at event ``j`` is the mark's embedding with the gap features ``(τ_j, log(1 + τ_j))``;
the first event's gap counts as 0 (so EasyTPP's convention never depends on the window). Before the first
event (the "full" convention, queries before ``t_1``) the state is a learned ``h_init``, time measured from
``window_start`` (or from ``t_1`` when the window is unknown, elapsed time clamped at 0).

Differences from EasyTPP 0.3.0's ``FullyNN`` (``easy_tpp/model/fullynn.py``):

- it does not subtract ``F(0)``: its compensator is ``F(τ)``, not ``F(τ) - F(0)``, so the log-likelihood is
  not that of its intensity (the compensator is too large by ``F(0)`` per interval);
- it clamps *every* parameter of the hazard network to ``>= eps`` in place at each forward, including the
  weights of ``h`` and the biases, which monotonicity does not need (here only the paths from ``τ`` are
  positive, through ``softplus``);
- with ``model_specs["proper_marked_intensities"] = False`` the mark intensities are ``λ / K``: the marks
  are uniform and not learned. Here the marks are per-mark outputs ``Φ_k``, as EasyTPP's
  ``proper_marked_intensities=True``, computed in one pass instead of ``K`` backward passes;
- its thinning sampler crashes under ``torch.no_grad()`` (which EasyTPP's own evaluation loop uses):
  ``λ`` is ``torch.autograd.grad`` of ``Φ`` with respect to the sampled times, and under ``no_grad`` ``Φ`` has
  no graph ("element 0 of tensors does not require grad"). Its thinning bound is also not a bound (the
  maximum of the intensity at a few points times ``over_sample_rate``). Here there is no thinning.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.data.batch import EventBatch
from tpp.data.sequences import EventSequences
from tpp.models.base import Convention, LogLikelihood, TPPModel, check_convention, scored_events, start_times
from tpp.models.inversion import invert_increasing

__all__ = ["CumulativeHazardNetwork", "FullyNN"]

_LOG4 = math.log(4.0)


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _log_softplus(x: Tensor) -> Tensor:
    """``log(softplus(x))``, equal to ``x`` (to 1e-9) below -20, where softplus would underflow first."""
    return torch.where(x < -20, x, torch.log(F.softplus(x.clamp_min(-20))))


def _inverse_softplus(w: Tensor) -> Tensor:
    """``raw`` with ``softplus(raw) = w`` for ``w > 0``."""
    return w + torch.log(-torch.expm1(-w))


def _log_sech2(a: Tensor) -> Tensor:
    """``log(1 - tanh(a)²) = log 4 - 2|a| - 2 softplus(-2|a|)``, finite for every finite ``a``."""
    m = 2 * a.abs()
    return _LOG4 - m - 2 * F.softplus(-m)


def _one_minus_tanh_product(a0: Tensor, a1: Tensor) -> Tensor:
    """``1 - tanh(a0) tanh(a1)`` without cancellation.

    With ``e = 1 - |tanh(a)| = 2σ(-2|a|)`` (accurate where ``|tanh a|`` is near 1): for arguments of one sign
    ``1 - (1 - e0)(1 - e1) = e0 + e1 - e0 e1`` (a sum of positives), for opposite signs ``1 + (1 - e0)(1 - e1)``.
    """
    e0, e1 = 2 * torch.sigmoid(-2 * a0.abs()), 2 * torch.sigmoid(-2 * a1.abs())
    prod = e0 * e1
    return torch.where((a0 >= 0) == (a1 >= 0), e0 + e1 - prod, 2 - e0 - e1 + prod)


def _log_positive_matmul(log_x: Tensor, weight: Tensor) -> Tensor:
    """``log(W exp(log_x))`` for a positive matrix ``weight [out, in]`` and ``log_x [..., in]`` -> ``[..., out]``.

    Shifted by the row maximum ``c`` (``log(W exp(log_x - c)) + c``): the largest term is ``W_ij · 1``, so the
    product never underflows to 0, and it costs one matrix product instead of a ``logsumexp`` over ``[..., out,
    in]``. The shift cancels in value and gradient.
    """
    c = log_x.amax(dim=-1, keepdim=True).detach()
    return torch.log(F.linear(torch.exp(log_x - c), weight)) + c


class CumulativeHazardNetwork(nn.Module):
    """``(Φ_k(τ), log λ_k(τ))`` from a first-layer pre-activation and ``τ`` (see the module docstring), with ``τ``
    and ``λ`` in the network's time unit (:class:`FullyNN` converts).

    Args:
        state_size: size of the recurrent state ``h``.
        hidden_size: width ``H`` of the tanh layers.
        num_layers: number ``L >= 1`` of tanh layers.
        num_marks: ``K``.
    """

    def __init__(self, state_size: int, hidden_size: int, num_layers: int, num_marks: int) -> None:
        super().__init__()
        self.state_proj = nn.Linear(state_size, hidden_size)                       # U h + b_1 (free signs)
        bound = 1 / math.sqrt(hidden_size)
        # first-layer time scales 1 / u⁺ log-spaced over [8, 256] time units (see `initial_scales`)
        self.raw_time = nn.Parameter(_inverse_softplus(torch.logspace(math.log10(1 / 256), math.log10(1 / 8),
                                                                       hidden_size)))
        # deeper layers: row sums of V⁺ about 1/2, so Δa_{l+1} <= 1 and those units stay near their linear range
        self.raw_hidden = nn.ParameterList([nn.Parameter(self._raw_init((hidden_size, hidden_size), 0.5 / hidden_size))
                                            for _ in range(num_layers - 1)])
        self.hidden_bias = nn.ParameterList([nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))
                                             for _ in range(num_layers - 1)])
        self.raw_out = nn.Parameter(self._raw_init((num_marks, hidden_size), bound))
        self.out_bias = nn.Parameter(torch.empty(num_marks).uniform_(-bound, bound))
        self.initial_scales()

    @torch.no_grad()
    def initial_scales(self) -> None:
        """Scale the output weights so that, at initialisation, ``Φ`` grows about linearly at rate 1 per time unit.

        ``r_k`` is rescaled so that ``Σ_k r_k⁺ · t_L(0) = 1`` at the state ``h = 0`` (``a_1 = b_1``), and ``d_k =
        3 + ‖r_k⁺‖₁`` puts ``o_k >= 3`` for every state (``|z_L| < 1``): ``σ(o_k) ∈ [0.95, 1)``, so ``softplus`` is
        in its linear range and ``Σ_k λ_k(0) ∈ [0.95, 1]`` per unit at ``h = 0``. The first-layer units saturate
        after ``1 / u⁺_i`` units (8 to 256), so ``Φ`` is close to linear for several units and its total mass ``M``
        is large (more than 20 at initialisation; tested), making "no next event" (probability ``exp(-M)``)
        negligible at initialisation.
        """
        base = self.state_proj.bias.detach()
        u = F.softplus(self.raw_time)
        t = (1 - torch.tanh(base) ** 2) * u
        z = torch.tanh(base)
        for raw, bias in zip(self.raw_hidden, self.hidden_bias, strict=True):
            v = F.softplus(raw)
            a = F.linear(z, v, bias)
            z = torch.tanh(a)
            t = (1 - z ** 2) * F.linear(t, v)
        r = F.softplus(self.raw_out)
        r = r / (r @ t).sum()
        self.raw_out.copy_(_inverse_softplus(r))
        self.out_bias.copy_(3 + r.sum(-1))

    @staticmethod
    def _raw_init(shape: int | tuple[int, ...], scale: float) -> Tensor:
        w = torch.empty(shape).uniform_(0.05 * scale, 2 * scale)
        return _inverse_softplus(w)

    def first_layer(self, h: Tensor) -> Tensor:
        """``U h + b_1``: ``[..., state_size]`` -> ``[..., H]`` (computed once per interval)."""
        return self.state_proj(h)

    def forward(self, base: Tensor, tau: Tensor, *, with_log_intensity: bool = True) -> tuple[Tensor, Tensor | None]:
        """``Φ [..., K]`` and ``log λ [..., K]`` (or ``None``) at ``tau [...]`` (``>= 0``, may be ``inf``).

        Args:
            base: ``[..., H]`` first-layer pre-activations ``U h + b_1`` (broadcast against ``tau``).
            tau: ``[...]`` elapsed times since the interval's start.
        """
        u = F.softplus(self.raw_time)
        # Δa_1 = u⁺ τ; a unit whose weight underflowed to 0 has Δa = 0 (not 0 · inf = nan at τ = inf)
        delta = torch.where(u > 0, u * tau.unsqueeze(-1), torch.zeros_like(u))
        a0 = base.expand(delta.shape)
        a1 = a0 + delta
        dz = torch.tanh(delta) * _one_minus_tanh_product(a0, a1)
        z1 = torch.tanh(a1)
        log_t = _log_sech2(a1) + _log_softplus(self.raw_time) if with_log_intensity else None
        z0 = torch.tanh(a0)
        for raw, bias in zip(self.raw_hidden, self.hidden_bias, strict=True):
            v = F.softplus(raw)
            a0 = F.linear(z0, v, bias)
            da = F.linear(dz, v)
            a1 = a0 + da
            dz = torch.tanh(da) * _one_minus_tanh_product(a0, a1)
            z0, z1 = torch.tanh(a0), torch.tanh(a1)
            if log_t is not None:
                log_t = _log_sech2(a1) + _log_positive_matmul(log_t, v)
        r = F.softplus(self.raw_out)
        o0 = F.linear(z0, r, self.out_bias)
        do = F.linear(dz, r)
        # softplus(o0 + Δo) - softplus(o0) = log1p(σ(o0) expm1(Δo)); the plain difference once Δo is large
        small = do < 1
        phi_small = torch.log1p(torch.sigmoid(o0) * torch.expm1(torch.where(small, do, torch.zeros_like(do))))
        phi = torch.where(small, phi_small, F.softplus(o0 + do) - F.softplus(o0))
        if log_t is None:
            return phi, None
        o1 = F.linear(z1, r, self.out_bias)
        log_lam = F.logsigmoid(o1) + _log_positive_matmul(log_t, r)
        return phi, log_lam


class FullyNN(TPPModel):
    """FullyNN (Omi et al., 2019): a recurrent encoder and a monotone cumulative hazard network per mark.

    See the module docstring for the equations, the time unit (set by :meth:`prepare`), the exact compensator
    and the inversion sampler.

    Args:
        num_marks: ``K``.
        hidden_size: ``H``, the recurrent state's size and the hazard network's width (default 32).
        embedding_size: size of the mark embedding (default: ``hidden_size``, as EasyTPP).
        num_mlp_layers: number of tanh layers of the hazard network (default 2; EasyTPP counts them the same way).
        cell: ``"lstm"`` (default, as EasyTPP), ``"gru"`` or ``"rnn"``.
        sample_rtol: relative tolerance of the inverted gap in :meth:`sample_next` (default 1e-6).
        max_sample_rounds: cap on the doubling and on the bisection rounds of :meth:`sample_next` (hitting
            it raises ``RuntimeError``).
    """

    name: ClassVar[str] = "fullynn"
    exact_compensator: ClassVar[bool] = True

    def __init__(self, num_marks: int, *, hidden_size: int = 32, embedding_size: int | None = None,
                 num_mlp_layers: int = 2, cell: str = "lstm", sample_rtol: float = 1e-6,
                 max_sample_rounds: int = 2000) -> None:
        super().__init__(num_marks)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.embedding_size = _check_int("embedding_size", hidden_size if embedding_size is None else embedding_size,
                                         1)
        self.num_mlp_layers = _check_int("num_mlp_layers", num_mlp_layers, 1)
        if cell not in ("lstm", "gru", "rnn"):
            raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {cell!r}")
        if isinstance(sample_rtol, bool) or not isinstance(sample_rtol, int | float) or not 0 < sample_rtol < 1:
            raise ValueError(f"sample_rtol must be a number in (0, 1), got {sample_rtol!r}")
        self.max_sample_rounds = _check_int("max_sample_rounds", max_sample_rounds, 1)
        self.cell, self.sample_rtol = cell, float(sample_rtol)
        self.embedding = nn.Embedding(num_marks, self.embedding_size)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = rnn(self.embedding_size + 2, hidden_size, batch_first=True)
        self.h_init = nn.Parameter(torch.zeros(hidden_size))
        self.c_init = nn.Parameter(torch.zeros(hidden_size)) if cell == "lstm" else None
        self.hazard = CumulativeHazardNetwork(hidden_size, hidden_size, num_mlp_layers, num_marks)
        self.register_buffer("time_unit", torch.ones(()))

    def prepare(self, train_seqs: EventSequences) -> None:
        """Set ``time_unit`` to the mean positive inter-event gap of ``train_seqs`` (kept at 1 if there is none)."""
        gaps = np.concatenate([np.diff(t) for t in train_seqs.times])
        gaps = gaps[gaps > 0]
        if gaps.size:
            self.time_unit.fill_(float(gaps.mean()))

    # ------------------------------------------------------------------------------------------- pieces

    def _prepare(self, batch: EventBatch) -> EventBatch:
        self._check_batch(batch)
        p = self.h_init
        return batch.to(device=p.device, dtype=p.dtype)

    def _hazard(self, base: Tensor, tau: Tensor, *, with_log_intensity: bool = True) -> tuple[Tensor, Tensor | None]:
        """The hazard network in the data's time: ``Φ(τ) = Φ̃(τ / c)`` and ``log λ(τ) = log λ̃(τ / c) - log c``.

        ``Φ̃, λ̃`` are the network's outputs in units of ``c = time_unit``; ``λ = dΦ/dτ = (dΦ̃/dτ̃) / c``.
        """
        unit = self.time_unit
        phi, log_lam = self.hazard(base, tau / unit, with_log_intensity=with_log_intensity)
        return phi, None if log_lam is None else log_lam - torch.log(unit)

    def _inputs(self, marks: Tensor, gaps: Tensor) -> Tensor:
        """Recurrent inputs ``[..., E + 2]``: the mark embedding, ``g`` and ``log(1 + g)``, ``g = gap / time_unit``."""
        g = (gaps / self.time_unit).unsqueeze(-1)
        return torch.cat([self.embedding(marks), g, torch.log1p(g)], dim=-1)

    def _states(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, H]``: the learned initial state, then ``h_j`` after each event ``j`` (causal)."""
        gaps = torch.where(batch.mask, batch.gaps, torch.zeros_like(batch.gaps)).clone()
        gaps[:, 0] = 0.0
        x = self._inputs(batch.marks, gaps)
        b = batch.batch_size
        h0 = self.h_init.expand(1, b, -1).contiguous()
        if self.c_init is not None:
            out, _ = self.rnn(x, (h0, self.c_init.expand(1, b, -1).contiguous()))
        else:
            out, _ = self.rnn(x, h0)
        return torch.cat([self.h_init.expand(b, 1, -1), out], dim=1)

    def cumulative_hazard(self, batch: EventBatch, gaps: Tensor) -> Tensor:
        """``Σ_k Φ_k(gaps[s, b, j])`` after event ``j`` of sequence ``b`` -> ``[S, B, L]`` (no gradient).

        By the time-rescaling theorem these are Exp(1) for exact draws of :meth:`sample_next` (``inf`` gaps give
        the total mass ``M``).
        """
        with torch.no_grad():
            batch = self._prepare(batch)
            base = self.hazard.first_layer(self._states(batch)[:, 1:])
            g = gaps.to(device=base.device, dtype=base.dtype)
            phi, _ = self._hazard(base.unsqueeze(0), g, with_log_intensity=False)
        return phi.sum(-1)

    # ------------------------------------------------------------------------------------------- API

    def log_likelihood(self, batch: EventBatch, convention: Convention = "easytpp") -> LogLikelihood:
        """Event term ``Σ log λ_{m_i}(t_i)`` and the exact compensator ``Σ Φ(τ_i)``, per sequence ``[B]``."""
        convention = check_convention(convention, batch)
        batch = self._prepare(batch)
        base = self.hazard.first_layer(self._states(batch))                  # [B, L + 1, H]
        mask = batch.mask
        scored = scored_events(batch, convention)
        # interval i ends at event i and starts at event i - 1, or at the window start for i = 0 ("full")
        elapsed = torch.where(scored, batch.gaps, torch.zeros_like(batch.gaps))
        phi, log_lam = self._hazard(base[:, :-1], elapsed)
        assert log_lam is not None
        log_lam = log_lam.gather(-1, batch.marks.unsqueeze(-1)).squeeze(-1)
        event_term = torch.where(scored, log_lam, torch.zeros_like(log_lam)).sum(1)
        comp = phi.sum(-1)
        compensator = torch.where(scored, comp, torch.zeros_like(comp)).sum(1)
        if convention == "full":
            rows = torch.arange(batch.batch_size, device=mask.device)
            last = batch.lengths - 1
            tail = (batch.window_end - batch.times[rows, last]).clamp_min(0)
            tail_phi, _ = self._hazard(base[rows, last + 1], tail, with_log_intensity=False)
            compensator = compensator + tail_phi.sum(-1)
        return LogLikelihood(event_term, compensator, scored.sum(1))

    def intensity(self, batch: EventBatch, query_times: Tensor) -> Tensor:
        """``λ_k(t)`` at ``query_times [B, Q]`` -> ``[B, Q, K]``, history = events strictly before each query."""
        batch = self._prepare(batch)
        q = query_times.to(device=batch.times.device, dtype=batch.times.dtype)
        if q.dim() != 2 or q.shape[0] != batch.batch_size:
            raise ValueError(f"query_times must be [B, Q] with B = {batch.batch_size}, got {tuple(q.shape)}")
        base = self.hazard.first_layer(self._states(batch))
        ref = torch.cat([start_times(batch).unsqueeze(1), batch.times], dim=1)          # [B, L + 1]
        padded = torch.where(batch.mask, batch.times, torch.full_like(batch.times, math.inf))
        idx = torch.searchsorted(padded.contiguous(), q.contiguous(), side="left")       # events before q
        elapsed = (q - ref.gather(1, idx)).clamp_min(0)
        b = base.gather(1, idx.unsqueeze(-1).expand(-1, -1, base.shape[-1]))
        _, log_lam = self._hazard(b, elapsed)
        assert log_lam is not None
        return torch.exp(log_lam)

    def invert_cumulative_hazard(self, base: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """The ``τ`` with ``Σ_k Φ_k(τ) = e`` for each entry, and the total mass ``M = Σ_k Φ_k(∞)``; no gradient.

        Args:
            base: ``[N, H]`` first-layer pre-activations of the states.
            e: ``[N]`` positive levels.

        Returns:
            ``(tau [N], mass [N])``; ``tau = inf`` where ``e >= mass``. Elsewhere ``|tau - τ*| <= sample_rtol / 2 ·
            hi`` with ``τ* <= hi`` the exact root's bracket end (relative error ``<= sample_rtol / 2`` up to rounding).

        Raises:
            RuntimeError: the doubling or the root finding hits ``max_sample_rounds``.
        """
        with torch.no_grad():
            inf = torch.full_like(e, math.inf)
            mass = self._hazard(base, inf, with_log_intensity=False)[0].sum(-1)
            reach = e < mass
            _, log_lam0 = self._hazard(base, torch.zeros_like(e))
            assert log_lam0 is not None
            rate0 = torch.exp(torch.logsumexp(log_lam0, dim=-1))
            info = torch.finfo(e.dtype)
            lo = torch.zeros_like(e)
            hi = torch.where(reach, e / rate0.clamp_min(info.tiny), torch.ones_like(e))
            hi = hi.clamp(min=info.tiny, max=info.max / 4)
            below = reach.clone()                                       # entries whose hi is still below the root
            for _ in range(self.max_sample_rounds):
                phi = self._hazard(base, hi, with_log_intensity=False)[0].sum(-1)
                below = reach & (phi < e)
                if not bool(below.any()):
                    break
                lo = torch.where(below, hi, lo)
                hi = torch.where(below, 2 * hi, hi)
            if bool(below.any()):
                raise RuntimeError(f"FullyNN.sample_next: no bracket after {self.max_sample_rounds} doublings "
                                   f"(raise max_sample_rounds)")
            rows = reach.nonzero(as_tuple=True)[0]
            base_r = base[rows]

            def level_and_slope(idx: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
                phi, log_lam = self._hazard(base_r[idx], x)
                assert log_lam is not None
                return phi.sum(-1), torch.exp(torch.logsumexp(log_lam, dim=-1))

            root = invert_increasing(level_and_slope, e[rows], lo[rows], hi[rows], rtol=self.sample_rtol,
                                     max_rounds=self.max_sample_rounds, name="FullyNN.sample_next")
            tau = inf.index_put((rows,), root)
        return tau, mass

    def _draw(self, base: Tensor) -> tuple[Tensor, Tensor]:
        """One draw of ``(gap, mark)`` per row of first-layer pre-activations ``base [N, H]`` (no gradient)."""
        e = torch.empty(base.shape[0], dtype=base.dtype, device=base.device).exponential_()
        tau, _ = self.invert_cumulative_hazard(base, e)
        finite = torch.isfinite(tau)
        _, log_lam = self._hazard(base, torch.where(finite, tau, torch.zeros_like(tau)))
        assert log_lam is not None
        marks = torch.distributions.Categorical(logits=log_lam).sample()
        return tau, torch.where(finite, marks, torch.full_like(marks, -1))

    # ------------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def encode(self, batch: EventBatch) -> tuple[Tensor, Tensor | None]:
        """The recurrent state after the last event of each sequence: ``(h [B, H], c [B, H] or None)``."""
        batch = self._prepare(batch)
        rows = torch.arange(batch.batch_size, device=batch.times.device)
        if self.c_init is None:
            return self._states(batch)[rows, batch.lengths], None
        gaps = torch.where(batch.mask, batch.gaps, torch.zeros_like(batch.gaps)).clone()
        gaps[:, 0] = 0.0
        x = self._inputs(batch.marks, gaps)
        packed = nn.utils.rnn.pack_padded_sequence(x, batch.lengths.cpu(), batch_first=True, enforce_sorted=False)
        b = batch.batch_size
        init = (self.h_init.expand(1, b, -1).contiguous(), self.c_init.expand(1, b, -1).contiguous())
        _, (h, c) = self.rnn(packed, init)
        return h[0], c[0]

    @torch.no_grad()
    def sample_from_state(self, state: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor]:
        """Exact draws (inversion, as :meth:`sample_next`) from states ``(h [N, H], c)``: ``(gaps [N], marks [N])``,
        ``inf`` and ``-1`` where there is no next event."""
        return self._draw(self.hazard.first_layer(state[0]))

    @torch.no_grad()
    def advance(self, state: tuple[Tensor, Tensor | None], gaps: Tensor, marks: Tensor) -> tuple[Tensor, Tensor | None]:
        """One recurrent step with the event ``(gaps [N], marks [N])``: the inputs :meth:`_states` gives it."""
        h, c = state
        gaps = gaps.to(device=h.device, dtype=h.dtype)
        x = self._inputs(marks.to(h.device), gaps).unsqueeze(1)
        if c is not None:
            _, (h_new, c_new) = self.rnn(x, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
            return h_new[0], c_new[0]
        _, h_new = self.rnn(x, h.unsqueeze(0).contiguous())
        return h_new[0], None

    def sample_next(self, batch: EventBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        """Exact draws by inverting ``Σ_k Φ_k`` (to ``sample_rtol``): ``(gaps [S, B, L], marks [S, B, L])``.

        ``gaps`` is ``inf`` and ``marks`` ``-1`` where the draw has no next event (probability ``exp(-M)``).
        Padded positions hold gap 0 and mark 0. Uses torch's global RNG of the model's device.
        """
        n_samples = _check_int("n_samples", n_samples, 1)
        with torch.no_grad():
            batch = self._prepare(batch)
            base = self.hazard.first_layer(self._states(batch)[:, 1:])                  # [B, L, H]
            rows, cols = batch.mask.nonzero(as_tuple=True)
            P = rows.shape[0]
            tau, marks = self._draw(base[rows, cols].repeat(n_samples, 1))             # [S P] each
            gaps = torch.zeros(n_samples, *batch.times.shape, dtype=base.dtype, device=base.device)
            out_marks = torch.zeros(n_samples, *batch.times.shape, dtype=torch.int64, device=base.device)
            gaps[:, rows, cols] = tau.view(n_samples, P)
            out_marks[:, rows, cols] = marks.view(n_samples, P)
        return gaps, out_marks
