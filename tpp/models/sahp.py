"""The self-attentive Hawkes process (Zhang, Lipani, Kirnap & Yilmaz, ICML 2020): attention over the history
sets, per mark, an intensity that relaxes exponentially between events.

Model (``K`` marks, model width ``D``, ``num_heads`` heads). A start token (a learned vector) sits at position
``0`` of the sequence and event ``j = 1..L`` at position ``j``. Each enters with the time-shifted positional
encoding of its position and of the time since the previous event, ``Δ_j = t_j - t_{j-1}`` (the first event's
gap: the time since the window start when known, else 0; the start token's: 0)::

    x_0 = u_start + PE(0, 0),    x_j = U e_{m_j} + PE(j, Δ_j),
    PE(j, Δ) = [sin(j ω + w Δ), cos(j ω + w Δ)]       (halves of D/2 each, ω_p = 10000^{-2p/D}, w ∈ R^{D/2} learned)

A stack of ``num_layers`` causal multi-head attention layers (position ``j`` attends to positions ``<= j``;
query, key and value maps with biases, no output map, no residual, no feed-forward block; optionally a layer
norm after each layer: EasyTPP's ``SAHP`` with ``use_ln``) gives ``h_j``. Per mark, from ``h_j`` (GELU and
softplus applied elementwise)::

    μ_j = GELU(W_μ h_j),   η_j = GELU(W_η h_j),   γ_j = softplus(W_γ h_j)          (each [K], maps without bias)
    λ_k(t) = s_k log(1 + exp(a_k(t) / s_k)),   a_k(t) = μ_jk + (η_jk - μ_jk) exp(-γ_jk (t - t_j))

on the interval after event ``j`` (after the window start, or the first event when the window is unknown, for
``j = 0``); ``s_k = exp(log_scale_k) > 0``. The intensity starts at ``softplus_s(η)`` just after the event and
relaxes monotonically to ``softplus_s(μ)`` (the paper's "base" level, which depends on the history).

Differences from the paper, as in EasyTPP 0.3.0 (``easy_tpp/model/sahp.py``), whose sizes the options match
(``hidden_size`` -> ``d_model``, ``num_heads``, ``num_layers``, ``use_ln`` -> ``layer_norm``): the time shift of
the positional encoding uses the gap ``Δ_j`` (the paper uses the absolute time ``t_j``, which makes the model
depend on where time 0 is), sin and cos halves are concatenated rather than interleaved, the softplus is the
scaled one, and the layers have no residual connection or feed-forward block. Unlike EasyTPP this module has a
start token, so the first event gets an intensity (the full likelihood convention), one layer norm per layer
(EasyTPP shares one across layers), and no unused layers (EasyTPP's ``layer_intensity_hidden`` is never used): at
``K = 5``, ``D = 32``, two heads and two layers it has 7029 parameters, EasyTPP 7194 (165 of them unused).

Compensator: no closed form, so Gauss–Legendre with ``n_nodes`` (default 8) nodes per inter-event interval
(:func:`~tpp.models.base.gauss_legendre_compensator`); the integrand is smooth (analytic) on each interval.
EasyTPP instead averages the intensity at equally spaced points including both ends.

Sampling: Ogata thinning (:func:`tpp.models.nhp.thinning_next_event`) with a proven bound. Proof: on the
interval after event ``j`` take elapsed times ``0 <= τ <= τ'``. As ``γ_k >= 0``, ``exp(-γ_k τ') ∈ [0, exp(-γ_k τ)]``,
so ``a_k(τ') = μ_k + (η_k - μ_k) exp(-γ_k τ')`` lies between ``μ_k`` and ``a_k(τ)`` (both included), hence
``a_k(τ') <= max(a_k(τ), μ_k)``. The scaled softplus ``x ↦ s log(1 + e^{x/s})`` is increasing for ``s > 0``, so

    Σ_k λ_k(τ') <= Σ_k s_k softplus(max(a_k(τ), μ_k) / s_k)       for all τ' >= τ,

a bound on all of ``[τ, ∞)`` (the horizon is infinite); it is recomputed at every rejected proposal, so it tightens
as the intensity relaxes. A small slack covers rounding. The intensity is at least
``Σ_k s_k softplus(min(μ_k, η_k) / s_k) > 0``, so a next event always exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpp.data.batch import EventBatch
from tpp.models.base import eval_mode
from tpp.models.nhp import SoftplusIntensityTPP, _check_float, _check_int, scaled_softplus

__all__ = ["SAHP", "SAHPCache", "cached_attention", "causal_attention"]


@dataclass
class SAHPCache:
    """SAHP's generation state: each layer's keys and values at every position, so that appending an event
    computes its own column only (causal attention: earlier positions do not see it). ``O(L)`` per generated
    event instead of re-encoding the history, ``O(L²)``.

    Attributes:
        keys, values: per layer, ``[N, W, D]`` at every position (start token first).
        padding: ``[N, W]`` True at padded positions (masked as keys).
        lengths: ``[N]`` events so far (the next event's position in the positional encoding).
        state: ``[N, 3, K]`` ``(μ, η, γ)`` after the last event.
    """

    keys: list[Tensor]
    values: list[Tensor]
    padding: Tensor
    lengths: Tensor
    state: Tensor


def causal_attention(x: Tensor, query: nn.Linear, key: nn.Linear, value: nn.Linear, num_heads: int,
                     dropout: float = 0.0) -> Tensor:
    """Causal multi-head scaled dot-product attention without an output map.

    ``x [B, N, D]`` -> ``[B, N, D]``: position ``i`` of head ``h`` is ``Σ_{j <= i} softmax_j(q_i · k_j / √d) v_j`` with
    ``q, k, v`` the maps of ``x`` split into ``num_heads`` heads of width ``d = D / num_heads``; the heads are
    concatenated. ``dropout`` applies to the attention weights (pass 0 outside training).
    """
    B, N, D = x.shape
    d = D // num_heads

    def split(t: Tensor) -> Tensor:
        return t.view(B, N, num_heads, d).transpose(1, 2)                                    # [B, heads, N, d]

    q, k, v = split(query(x)), split(key(x)), split(value(x))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    future = torch.triu(torch.ones(N, N, dtype=torch.bool, device=x.device), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    if dropout > 0:
        weights = F.dropout(weights, dropout)
    return (weights @ v).transpose(1, 2).reshape(B, N, D)


def cached_attention(q: Tensor, keys: Tensor, values: Tensor, padding: Tensor, num_heads: int) -> Tensor:
    """Multi-head scaled dot-product attention of one new query per row over cached keys and values, without an
    output map: ``q [N, D]``, ``keys, values [N, W, D]`` (the new position's included), ``padding [N, W]`` (True:
    masked) -> ``[N, D]``, the last row of :func:`causal_attention` for that position."""
    N, W, D = keys.shape
    d = D // num_heads
    heads_k = keys.view(N, W, num_heads, d).transpose(1, 2)                                  # [N, heads, W, d]
    heads_v = values.view(N, W, num_heads, d).transpose(1, 2)
    scores = (q.view(N, num_heads, 1, d) @ heads_k.transpose(-1, -2) / math.sqrt(d)).masked_fill(
        padding[:, None, None], float("-inf"))
    return (torch.softmax(scores, dim=-1) @ heads_v).reshape(N, D)


class _AttentionLayer(nn.Module):
    """One SAHP layer: causal multi-head attention (query, key and value maps), optionally a layer norm."""

    def __init__(self, d_model: int, num_heads: int, layer_norm: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.norm = nn.LayerNorm(d_model) if layer_norm else None

    def forward(self, x: Tensor, dropout: float) -> Tensor:
        out = causal_attention(x, self.query, self.key, self.value, self.num_heads, dropout)
        return out if self.norm is None else self.norm(out)


class SAHP(SoftplusIntensityTPP):
    """Self-attentive Hawkes process: causal attention, per-mark exponentially relaxing softplus intensities.

    See the module docstring for the equations, the compensator quadrature and the thinning bound.

    Args:
        num_marks: ``K``.
        d_model: ``D``, the width of the embeddings and the attention layers (EasyTPP's ``hidden_size``; even).
        num_heads: attention heads (must divide ``d_model``).
        num_layers: attention layers.
        layer_norm: a layer norm after each attention layer (EasyTPP's ``use_ln``).
        dropout: dropout on the attention weights (active in training mode only).
        n_nodes: Gauss–Legendre nodes per inter-event interval of the compensator (default 8).
        max_thinning_rounds: cap on the thinning rounds of :meth:`sample_next` (hitting it raises).
    """

    name = "sahp"
    exact_compensator = False

    def __init__(self, num_marks: int, *, d_model: int = 32, num_heads: int = 2, num_layers: int = 2,
                 layer_norm: bool = False, dropout: float = 0.0, n_nodes: int = 8,
                 max_thinning_rounds: int = 10_000) -> None:
        super().__init__(num_marks, n_nodes=n_nodes, max_thinning_rounds=max_thinning_rounds)
        self.d_model = _check_int("d_model", d_model, 2)
        if d_model % 2:
            raise ValueError(f"d_model must be even (sin/cos halves of the positional encoding), got {d_model}")
        self.num_heads = _check_int("num_heads", num_heads, 1)
        if d_model % num_heads:
            raise ValueError(f"num_heads must divide d_model = {d_model}, got {num_heads}")
        self.num_layers = _check_int("num_layers", num_layers, 1)
        if not isinstance(layer_norm, bool):
            raise ValueError(f"layer_norm must be True or False, got {layer_norm!r}")
        self.layer_norm = layer_norm
        self.dropout = _check_float("dropout", dropout, 0.0, 1.0)
        self.embedding = nn.Embedding(num_marks, d_model)
        self.start_token = nn.Parameter(torch.randn(d_model) * 0.1)
        self.time_shift = nn.Parameter(torch.randn(d_model // 2) / math.sqrt(d_model))     # w of PE(j, Δ)
        self.layers = nn.ModuleList(_AttentionLayer(d_model, num_heads, layer_norm) for _ in range(num_layers))
        self.to_mu = nn.Linear(d_model, num_marks, bias=False)
        self.to_eta = nn.Linear(d_model, num_marks, bias=False)
        self.to_gamma = nn.Linear(d_model, num_marks, bias=False)
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        self.register_buffer("frequencies", freq.float(), persistent=False)

    def positional_encoding(self, positions: Tensor, gaps: Tensor) -> Tensor:
        """``PE(j, Δ)``: ``positions, gaps [...]`` -> ``[..., D]`` (sin half, then cos half)."""
        dtype = gaps.dtype
        angle = positions.to(dtype).unsqueeze(-1) * self.frequencies.to(dtype) \
            + gaps.unsqueeze(-1) * self.time_shift.to(dtype)
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)

    def hidden(self, batch: EventBatch) -> Tensor:
        """``[B, L + 1, D]`` the attention output at the start token (index 0) and at each event."""
        B, L = batch.times.shape
        positions = torch.arange(L + 1, device=batch.times.device).expand(B, L + 1)
        gaps = torch.cat([batch.gaps.new_zeros(B, 1), batch.gaps], dim=1)
        tokens = torch.cat([self.start_token.expand(B, 1, self.d_model), self.embedding(batch.marks)], dim=1)
        x = tokens + self.positional_encoding(positions, gaps)
        dropout = self.dropout if self.training else 0.0
        for layer in self.layers:
            x = layer(x, dropout)
        return x

    def _states(self, batch: EventBatch, origin: Tensor) -> Tensor:
        # Padded events come after the real ones, so under the causal mask they never reach a real position.
        return self._intensity_parameters(self.hidden(batch))

    def _intensity_parameters(self, h: Tensor) -> Tensor:
        """``(μ, η, γ)`` from hidden states ``[..., D]`` -> ``[..., 3, K]``."""
        mu, eta, gamma = F.gelu(self.to_mu(h)), F.gelu(self.to_eta(h)), F.softplus(self.to_gamma(h))
        return torch.stack([mu, eta, gamma], dim=-2)

    # ------------------------------------------------------------------ generation with a key-value cache

    @torch.no_grad()
    def encode(self, batch: EventBatch) -> SAHPCache:
        """The :class:`SAHPCache` after the last event of each sequence."""
        with eval_mode(self):
            batch, _ = self._prepare(batch)
            B, L = batch.times.shape
            positions = torch.arange(L + 1, device=batch.times.device).expand(B, L + 1)
            gaps = torch.cat([batch.gaps.new_zeros(B, 1), batch.gaps], dim=1)
            tokens = torch.cat([self.start_token.expand(B, 1, self.d_model), self.embedding(batch.marks)], dim=1)
            x = tokens + self.positional_encoding(positions, gaps)
            keys, values = [], []
            for layer in self.layers:
                keys.append(layer.key(x))
                values.append(layer.value(x))
                x = layer(x, 0.0)
            padding = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=x.device), ~batch.mask], dim=1)
            lengths = batch.lengths.to(x.device)
            last = x[torch.arange(B, device=x.device), lengths]
            return SAHPCache(keys, values, padding, lengths, self._intensity_parameters(last))

    @torch.no_grad()
    def advance(self, state: SAHPCache, gaps: Tensor, marks: Tensor) -> SAHPCache:
        """Append the event ``(gaps [N], marks [N])`` after each last event: one new key and value per layer."""
        with eval_mode(self):
            lengths = state.lengths + 1
            x = self.embedding(marks.to(lengths.device)) + self.positional_encoding(
                lengths, gaps.to(device=lengths.device, dtype=state.state.dtype))                    # [N, D]
            padding = torch.cat([state.padding, state.padding.new_zeros(state.padding.shape[0], 1)], dim=1)
            keys, values = [], []
            for layer, k_cached, v_cached in zip(self.layers, state.keys, state.values, strict=True):
                keys.append(torch.cat([k_cached, layer.key(x).unsqueeze(1)], dim=1))                # [N, W, D]
                values.append(torch.cat([v_cached, layer.value(x).unsqueeze(1)], dim=1))
                x = cached_attention(layer.query(x), keys[-1], values[-1], padding, self.num_heads)
                if layer.norm is not None:
                    x = layer.norm(x)
            return SAHPCache(keys, values, padding, lengths, self._intensity_parameters(x))

    @torch.no_grad()
    def sample_from_state(self, state: SAHPCache) -> tuple[Tensor, Tensor]:
        """Exact draws of the next event after each last event, by the thinning of :meth:`sample_next`:
        ``(gaps [N], marks [N])``."""
        n = state.state.shape[0]
        return self._thin_after(state.state, state.state.new_full((n,), float("inf")))

    def _arguments(self, state: Tensor, elapsed: Tensor) -> Tensor:
        mu, eta, gamma = (p.unsqueeze(-2) for p in state.unbind(-2))                          # [*lead, 1, K]
        return mu + (eta - mu) * torch.exp(-gamma * elapsed.unsqueeze(-1))

    def _bound(self, state: Tensor, start: Tensor, horizon: Tensor) -> Tensor:
        # a_k(τ') lies between a_k(start) and μ_k for every τ' >= start (see the module docstring).
        mu, eta = state[:, 0], state[:, 1]
        a_start = self._arguments(state, start.unsqueeze(-1)).squeeze(-2)                    # [n, K]
        eps = torch.finfo(a_start.dtype).eps
        upper = torch.maximum(a_start, mu) + 16 * eps * (mu.abs() + eta.abs() + 1)           # rounding of a_k
        bound = scaled_softplus(upper, self.scale).sum(-1)
        return bound * (1 + 1000 * eps)                                                      # rounding of the sum

    def _initial_horizon(self, batch: EventBatch, num: int) -> Tensor:
        return torch.full((num,), float("inf"), dtype=batch.times.dtype, device=batch.times.device)
