"""The Transformer Hawkes process (Zuo et al., ICML 2020): causal self-attention over the event history.

Model (``K`` marks, model width ``D``). Each event ``j`` enters as its mark embedding plus the sinusoidal
temporal encoding of its time, ``x_j = U e_{m_j} + z(t_j)`` with ``z(t)_{2p} = sin(t ω_p)``,
``z(t)_{2p+1} = cos(t ω_p)``, ``ω_p = 10000^{-2p/D}``. A learned start token (a vector plus ``z`` of the origin:
``window_start``, or the first event when the window is unknown) precedes the events. A stack of
``torch.nn.TransformerEncoder`` layers with a causal mask (position ``j`` attends to positions ``<= j``)
and a key padding mask gives ``h_0`` (the start token) and ``h_j`` (event ``j``, its history included).
On the interval after event ``j`` (after the origin for ``j = 0``) the intensity is::

    λ_k(t) = β_k log(1 + exp((α_k (t - t_j) + w_k · h_j + b_k) / β_k))        (β_k > 0, α_k learned)

With ``baseline=True`` (not in the paper, nor in EasyTPP) the intensity gains a learned constant rate,
``λ_k(t) = μ_k + β_k log(1 + exp(...))`` with ``μ_k = exp(log_baseline_k) > 0``. Without it, a softplus of a
straight line in time either grows without bound or decays to 0 between events, so THP cannot follow an
intensity that relaxes to a positive base rate, as a Hawkes process's does (on ``datasets/hawkes_5d`` the
paper's form stays 0.08 nats/event below the true process however long it trains; see
``docs/benchmarks.md``). With the baseline the decaying softplus plays the excitation and ``μ_k`` the base rate.

Variant: the paper writes ``α_k (t - t_j) / t_j``; dividing by the absolute time of the last event makes the
intensity depend on where time 0 is and is undefined at ``t_j = 0`` (EasyTPP's data start at 0), so this
module follows EasyTPP's implementation and uses ``α_k (t - t_j)`` (no division).

Compensator: no closed form (the integral of a softplus of a linear function is a dilogarithm), so
Gauss–Legendre with ``n_nodes`` (default 8) nodes per inter-event interval; the integrand is smooth, and the
8-node rule's error against a 64-node one is measured by ``benchmarks/tpp_nhp_thp_quick.py``.

Sampling: Ogata thinning (:func:`tpp.models.nhp.thinning_next_event`) with a proven bound. On each interval
the softplus argument is linear in ``t`` and softplus is increasing, so over ``[t, t + Δ]`` each ``λ_k`` is at
most its value at ``t + Δ`` when ``α_k >= 0`` and at ``t`` otherwise, i.e. at most
``softplus_{β_k}(max(a_k(t), a_k(t + Δ)))``. The horizon starts at three mean gaps of the batch and doubles
each time a proposal falls beyond it (the draw then restarts at ``t + Δ`` with the new bound: exact).

No next event (only without the baseline): when every ``α_k < 0`` the intensity decays to 0 and its integral
to infinity is finite, so with probability ``exp(-Λ(∞)) > 0`` there is no next event (the constant-bound
scheme would then never stop). Once every argument is ``<= 0``, the sampler dominates ``λ_k`` by ``β_k
exp(a_k(t) / β_k)`` (``e^x >= log(1 + e^x)``; acceptance at least ``log 2``), a Poisson process with finite
total mass whose points are drawn by inverting its closed-form compensator; when it has no further point,
there is no event: the draw is gap ``inf``, mark ``-1``. Exact as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.data.batch import EventBatch
from tpp.models.base import eval_mode
from tpp.models.nhp import SoftplusIntensityTPP, _check_float, _check_int, scaled_softplus
from tpp.models.sahp import cached_attention

__all__ = ["THP", "THPWithBaseline", "TransformerCache"]


@dataclass
class TransformerCache:
    """THP's generation state: what the causal encoder needs to add one event without re-encoding the history.

    Causal attention makes every position's layer outputs independent of later positions, so appending an event
    computes only its own column: at each layer its query attends to the cached keys and values of that layer and
    to its own. ``O(L)`` per generated event instead of ``O(L²)``.

    Attributes:
        keys, values: per encoder layer, ``[N, W, D]`` the attention's projected keys and values at every position
            (start token first).
        padding: ``[N, W]`` True at padded positions (masked as keys).
        state: ``[N, K]`` the head's output at the last event (``w_k · h + b_k``).
        last_time: ``[N]`` time of the last event.
        horizon: ``[N]`` first thinning horizon of each draw (three mean gaps of the encoded batch).
    """

    keys: list[Tensor]
    values: list[Tensor]
    padding: Tensor
    state: Tensor
    last_time: Tensor
    horizon: Tensor


class THP(SoftplusIntensityTPP):
    """Transformer Hawkes process: causal self-attention and per-mark scaled-softplus intensities.

    See the module docstring for the equations, the compensator quadrature and the thinning bound.

    Args:
        num_marks: ``K``.
        d_model: ``D``, the width of the embeddings and the attention layers (even).
        num_heads: attention heads (must divide ``d_model``).
        num_layers: encoder layers.
        dim_feedforward: width of each layer's feed-forward block (default ``2 * d_model``).
        dropout: dropout inside the encoder layers (active in training mode only).
        baseline: add a learned constant rate ``μ_k > 0`` to each mark's intensity (see the module docstring).
        n_nodes: Gauss–Legendre nodes per inter-event interval of the compensator (default 8).
        max_thinning_rounds: cap on the thinning rounds of :meth:`sample_next` (hitting it raises).
    """

    name = "thp"
    exact_compensator = False

    def __init__(self, num_marks: int, *, d_model: int = 32, num_heads: int = 2, num_layers: int = 2,
                 dim_feedforward: int | None = None, dropout: float = 0.0, baseline: bool = False, n_nodes: int = 8,
                 max_thinning_rounds: int = 10_000) -> None:
        super().__init__(num_marks, n_nodes=n_nodes, max_thinning_rounds=max_thinning_rounds)
        self.d_model = _check_int("d_model", d_model, 2)
        if d_model % 2:
            raise ValueError(f"d_model must be even (sin/cos pairs of the temporal encoding), got {d_model}")
        self.num_heads = _check_int("num_heads", num_heads, 1)
        if d_model % num_heads:
            raise ValueError(f"num_heads must divide d_model = {d_model}, got {num_heads}")
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.dim_feedforward = _check_int("dim_feedforward", 2 * d_model if dim_feedforward is None
                                          else dim_feedforward, 1)
        self.dropout = _check_float("dropout", dropout, 0.0, 1.0)
        self.embedding = nn.Embedding(num_marks, d_model)
        self.start_token = nn.Parameter(torch.randn(d_model) * 0.1)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, self.dim_feedforward, self.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_marks)                  # w_k, b_k
        self.alpha = nn.Parameter(torch.zeros(num_marks))          # α_k
        if not isinstance(baseline, bool):
            raise ValueError(f"baseline must be True or False, got {baseline!r}")
        self.baseline = baseline
        # μ_k starts small next to the softplus part (log 2 at a zero argument), which then learns the rest.
        self.log_baseline = nn.Parameter(torch.full((num_marks,), math.log(0.05))) if baseline else None
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        self.register_buffer("frequencies", freq.float(), persistent=False)

    def temporal_encoding(self, times: Tensor) -> Tensor:
        """``z(t)``: ``times [...]`` -> ``[..., D]`` (sin at even, cos at odd indices)."""
        angle = times.unsqueeze(-1) * self.frequencies.to(times.dtype)
        return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2)

    def _states(self, batch: EventBatch, origin: Tensor) -> Tensor:
        B, L = batch.times.shape
        start = self.start_token.expand(B, 1, self.d_model) + self.temporal_encoding(origin).unsqueeze(1)
        events = self.embedding(batch.marks) + self.temporal_encoding(batch.times)
        x = torch.cat([start, events], dim=1)                                               # [B, L + 1, D]
        causal = torch.triu(torch.ones(L + 1, L + 1, dtype=torch.bool, device=x.device), diagonal=1)
        padding = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=x.device), ~batch.mask], dim=1)
        hidden = self.encoder(x, mask=causal, src_key_padding_mask=padding)
        return self.head(hidden)                                                            # [B, L + 1, K]

    def _baseline(self) -> Tensor | None:
        return None if self.log_baseline is None else self.log_baseline.exp()

    # ------------------------------------------------------------------ generation with a key-value cache

    @torch.no_grad()
    def encode(self, batch: EventBatch) -> TransformerCache:
        """The :class:`TransformerCache` after the last event of each sequence (each layer's keys and values)."""
        with eval_mode(self):
            batch, origin = self._prepare(batch)
            B, L = batch.times.shape
            start = self.start_token.expand(B, 1, self.d_model) + self.temporal_encoding(origin).unsqueeze(1)
            x = torch.cat([start, self.embedding(batch.marks) + self.temporal_encoding(batch.times)], dim=1)
            causal = torch.triu(torch.ones(L + 1, L + 1, dtype=torch.bool, device=x.device), diagonal=1)
            padding = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=x.device), ~batch.mask], dim=1)
            keys, values = [], []
            for layer in self.encoder.layers:
                k, v = _project_keys_values(layer, x)
                keys.append(k)
                values.append(v)
                x = layer(x, src_mask=causal, src_key_padding_mask=padding)
            rows = torch.arange(B, device=x.device)
            last = batch.lengths.to(x.device)
            last_time = torch.where(last > 0, batch.times[rows, (last - 1).clamp_min(0)], origin)     # origin: no event
            return TransformerCache(keys, values, padding, self.head(x[rows, last]), last_time,
                                    self._initial_horizon(batch, B))

    @torch.no_grad()
    def advance(self, state: TransformerCache, gaps: Tensor, marks: Tensor) -> TransformerCache:
        """Append the event ``(gaps [N], marks [N])`` after each last event: one new key and value per layer."""
        with eval_mode(self):
            times = state.last_time + gaps.to(device=state.last_time.device, dtype=state.last_time.dtype)
            x = self.embedding(marks.to(times.device)) + self.temporal_encoding(times)                 # [N, D]
            padding = torch.cat([state.padding, state.padding.new_zeros(state.padding.shape[0], 1)], dim=1)
            keys, values = [], []
            for layer, k_cached, v_cached in zip(self.encoder.layers, state.keys, state.values, strict=True):
                k, v = _project_keys_values(layer, x)
                keys.append(torch.cat([k_cached, k.unsqueeze(1)], dim=1))
                values.append(torch.cat([v_cached, v.unsqueeze(1)], dim=1))
                x = _layer_at_last_position(layer, x, keys[-1], values[-1], padding)
            return TransformerCache(keys, values, padding, self.head(x), times, state.horizon)

    @torch.no_grad()
    def sample_from_state(self, state: TransformerCache) -> tuple[Tensor, Tensor]:
        """Exact draws of the next event after each last event, by the thinning of :meth:`sample_next`:
        ``(gaps [N], marks [N])`` (gap ``inf`` and mark ``-1`` where there is no next event)."""
        return self._thin_after(state.state, state.horizon.clone())

    def _arguments(self, state: Tensor, elapsed: Tensor) -> Tensor:
        return state.unsqueeze(-2) + self.alpha * elapsed.unsqueeze(-1)

    def _bound(self, state: Tensor, start: Tensor, horizon: Tensor) -> Tensor:
        # Linear argument, increasing softplus: the maximum over [start, start + horizon] is at an end.
        ends = torch.stack([start, start + horizon], dim=-1)                                # [n, 2]
        upper = self._arguments(state, ends).amax(dim=-2)                                   # [n, K]
        bound = scaled_softplus(upper, self.scale).sum(-1)
        if self.log_baseline is not None:
            bound = bound + self.log_baseline.exp().sum()
        return bound * (1 + 1000 * torch.finfo(bound.dtype).eps)   # covers rounding in the sums

    def _propose(self, state: Tensor, start: Tensor, horizon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Where every α_k < 0 and every argument is already <= 0, dominate by g_k(u) = β_k exp(a_k(u) / β_k)
        # (>= λ_k since e^x >= log(1 + e^x), and >= λ_k log 2 for a_k <= 0): its mass to infinity is finite, so
        # the draw ends with "no next event" exactly when this dominating process has no further point.
        # Elsewhere: the constant bound over the horizon.
        a = self._arguments(state, start.unsqueeze(-1)).squeeze(-2)                          # [n, K]
        envelope = (self.log_baseline is None and bool((self.alpha < 0).all())) & (a <= 0).all(-1)
        t, g, new_horizon = start.clone(), torch.zeros_like(start), horizon.clone()
        rest = ~envelope
        if bool(rest.any()):
            t[rest], g[rest], new_horizon[rest] = super()._propose(state[rest], start[rest], horizon[rest])
        if bool(envelope.any()):
            t[envelope], g[envelope] = self._envelope_proposal(state[envelope], start[envelope], a[envelope])
        return t, g, new_horizon

    def _envelope_proposal(self, state: Tensor, start: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Next point after ``start`` of the Poisson process with intensity ``Σ_k β_k exp(a_k(u) / β_k)``.

        Per mark, the mass from ``start`` to ``start + u`` is ``G_k (1 - exp(α_k u / β_k))`` with
        ``G_k = β_k² exp(a_k / β_k) / |α_k|``; inverting it at ``E_k ~ Exp(1)`` gives the mark's first point
        (none when ``E_k >= G_k``); the superposition's first point is the earliest. ``(t, g)``: ``t = inf``,
        ``g = 0`` where no mark has a point.
        """
        beta, alpha = self.scale, self.alpha
        mass = beta**2 * torch.exp(a / beta) / alpha.abs()                                    # [n, K]
        e = torch.empty_like(mass).exponential_()
        has = e < mass
        u = torch.where(has, beta / alpha.abs() * -torch.log1p(-(e / mass).clamp_max(1)), float("inf"))
        first = u.amin(-1)
        t = start + first
        finite = torch.isfinite(first)
        x = self._arguments(state[finite], t[finite].unsqueeze(-1)).squeeze(-2) / beta
        g = torch.zeros_like(t)
        g[finite] = (beta * torch.exp(x)).sum(-1) * (1 + 1000 * torch.finfo(t.dtype).eps)
        return t, g

    def _initial_horizon(self, batch: EventBatch, num: int) -> Tensor:
        real = batch.mask.clone()
        real[:, 0] = False
        gaps = batch.gaps[real]
        gaps = gaps[gaps > 0]
        mean_gap = float(gaps.mean()) if gaps.numel() else 1.0
        return torch.full((num,), 3 * mean_gap, dtype=batch.times.dtype, device=batch.times.device)


class THPWithBaseline(THP):
    """:class:`THP` with ``baseline=True`` by default: ``λ_k(t) = μ_k + β_k softplus(...)``, registered as
    ``thp_baseline`` so that ``nde tpp bench --models`` can name it beside the paper's form."""

    name = "thp_baseline"

    def __init__(self, num_marks: int, **kwargs: Any) -> None:
        kwargs.setdefault("baseline", True)
        super().__init__(num_marks, **kwargs)


def _project_keys_values(layer: nn.TransformerEncoderLayer, x: Tensor) -> tuple[Tensor, Tensor]:
    """The keys and values ``[..., D]`` that ``layer``'s self-attention makes of its inputs ``x [..., D]``."""
    attn, D = layer.self_attn, x.shape[-1]
    w, b = attn.in_proj_weight, attn.in_proj_bias
    return F.linear(x, w[D:2 * D], b[D:2 * D]), F.linear(x, w[2 * D:], b[2 * D:])


def _layer_at_last_position(layer: nn.TransformerEncoderLayer, x: Tensor, keys: Tensor, values: Tensor,
                            padding: Tensor) -> Tensor:
    """``layer``'s output ``[N, D]`` at one new last position with input ``x [N, D]``, given the projected keys and
    values ``[N, W, D]`` of every position (the new one last) and the key padding ``padding [N, W]``: the arithmetic
    of :class:`torch.nn.TransformerEncoderLayer` (evaluation mode, post-norm as THP builds it) for that row of its
    output."""
    attn, D = layer.self_attn, x.shape[-1]
    q = F.linear(x, attn.in_proj_weight[:D], attn.in_proj_bias[:D])
    x = layer.norm1(x + attn.out_proj(cached_attention(q, keys, values, padding, attn.num_heads)))
    return layer.norm2(x + layer._ff_block(x))
