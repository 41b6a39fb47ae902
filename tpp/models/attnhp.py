"""The attentive neural Hawkes process (Yang, Mei & Eisner, ICLR 2022, "Transformer Embeddings of Irregularly
Spaced Events and Their Participations"): the intensity at any time ``t`` is read from an attention query at
``t`` over the events before ``t``.

Model (``K`` marks, width ``D``, time-embedding width ``T``, ``num_heads`` heads, ``num_layers`` layers). Time
enters through the sinusoidal embedding of absolute time ``z(t)_{2p} = sin(t ω_p)``, ``z(t)_{2p+1} = cos(t ω_p)``,
``ω_p = 10000^{-2p/T}``. Each head ``h`` is its own stack of single-head attention layers (EasyTPP's layout:
the heads' outputs are concatenated only at the end). Layer ``ℓ`` of head ``h`` has query, key and value maps
``Q, K, V: R^{D+T} -> R^D`` (with biases). Every "participation" ``(x, t)`` — an event at its own time, or a
query at any time — has a representation ``r^ℓ(t)`` per layer, computed from the events of its history::

    r^ℓ = r^{ℓ-1} + tanh( Σ_{i ∈ S} softmax_i(Q y · K y_i / √D) V y_i ),
    y = [r^{ℓ-1}, z(t)],   y_i = [r_i^{ℓ-1}, z(t_i)]

where ``S`` is the history (events strictly before ``t``; for event ``j`` the events ``< j`` by index) plus the
participation itself (``y_i = y``). Events start from ``r_j^0 = tanh(U e_{m_j})``, queries from ``r^0(t) = 0``.
With ``layer_norm`` each update is followed by a layer norm (its own gain and bias per layer and head). The
intensity reads the last layer of every head::

    λ_k(t) = s_k log(1 + exp(a_k(t) / s_k)),   a_k(t) = w_k · [r^L_1(t), ..., r^L_H(t)] + b_k      (s_k > 0 learned)

Differences. The paper normalises ``1 + Σ α`` (a null element of value 0) where this module, EasyTPP 0.3.0
(``easy_tpp/model/attnhp.py``) and the authors' fast implementation let the participation attend to itself; the
query is mark-agnostic (one query per time, a linear read-out per mark, as in both implementations). Event
representations follow the same residual ``tanh`` update as queries (the paper's recurrence); EasyTPP passes the
raw attention output of the events to the next layer. The options match EasyTPP's sizes (``hidden_size`` -> ``d_model``,
``time_emb_size`` -> ``time_dim``, ``num_heads``, ``num_layers``, ``use_ln`` -> ``layer_norm``): at equal options
the parameter count is EasyTPP's less its unused ``layer_event_emb`` and padding embedding row (19306 against
20906 at ``K = 5``, ``D = 32``, ``T = 16``, two heads, two layers), plus, with layer norm, a gain and bias per layer
and head (EasyTPP shares one layer norm).

Cost: each query attends to the ``L`` events of its sequence (masked to its history), so intensities at ``Q``
query times of ``B`` sequences cost ``O(B Q L D)`` per layer and head, vectorised over sequences, queries and events
(one Python loop over layers). The log-likelihood queries the ``L`` event times and ``n_nodes`` nodes per
interval: ``O(B L² n_nodes D)``.

Compensator: Gauss–Legendre with ``n_nodes`` (default 8) nodes per inter-event interval
(:func:`~tpp.models.base.gauss_legendre_compensator`); between events the intensity is an analytic function of
``t`` (through ``z(t)``, whose fastest frequency is 1 per time unit), and the tests compare 8 nodes with 64 and
with scipy's adaptive quadrature. EasyTPP averages the intensity at equally spaced points.

Sampling: Ogata thinning (:func:`tpp.models.nhp.thinning_next_event`) with a proven constant bound on each of the
windows ``[(2^k - 1) Δ, (2^{k+1} - 1) Δ]`` after the last event ``t_j`` (``Δ``: three mean gaps; the history is
fixed until the next event); the bound of a window is computed once per position and shared by all samples.

*Without layer norm* (interval arithmetic through the layers). Fix the history (events ``1..j``) and the window.
For ``t`` in the window each component of ``z(t)`` lies in a box (:meth:`AttNHP.time_embedding_box`: ``sin`` and
``cos`` over the window's angles; ``[-1, 1]`` for an unbounded window). Every query has ``r^0(t) = 0``. Suppose
``r^{ℓ-1}(t) ∈ [lo, hi]`` componentwise for all ``t`` in the window. Then ``y = [r^{ℓ-1}, z]`` lies in a box, and
so do the query's own query, key and value ``Q y, K y, V y`` (the tightest box of an affine map of a box:
centre ``W m + c``, radius ``|W| ρ``). The history's keys and values ``K y_i, V y_i`` do not depend on ``t``. Hence
each score lies in an interval: ``Q y · K y_i`` (a box against a point: centre ``± |·|`` radius) and
``Q y · K y`` (a product of boxes: the componentwise extreme corner products, summed); so each unnormalised
weight ``x_i = exp(score_i - c)`` lies in ``[E_lo_i, E_hi_i]``. Component ``d`` of the attention output is
``Σ_i x_i v_id / Σ_i x_i``, the query's own ``v_d`` being at most the end of its box; its largest value over the
weight box is a linear-fractional maximum, attained where ``x_i = E_hi_i`` for the values above the optimum and
``E_lo_i`` below, i.e. at one of the thresholds of the values sorted in decreasing order
(:meth:`AttNHP.weighted_average_max`, proof there); likewise the least value. (It is also at most the hull of the
values, which is kept where the weights underflow.) So ``o ∈ [o_lo, o_hi]`` and, ``tanh`` being increasing,
``r^ℓ ∈ [lo + tanh(o_lo), hi + tanh(o_hi)]``. By induction the last layers lie in boxes ``[LO, HI]``, and then
``a_k(t) <= b_k + Σ_i max(w_ki LO_i, w_ki HI_i)`` on the window; the scaled softplus is increasing. At the
default initialisation the bound on a window of a few mean gaps is within a median factor of about 1.6 of the
largest intensity in it (a factor of about 11 with an unbounded window, as ``z`` then ranges over ``[-1, 1]``);
the test measures it.

*With layer norm*: the last layer of each head is ``g ⊙ n + β`` with ``n = (x - x̄) / √(var(x) + ε)``, so
``Σ_i n_i = 0`` and ``Σ_i n_i² = D var / (var + ε) <= D``. For ``c = w_kh ⊙ g``, ``c · n = (c - c̄ 1) · n <=
√D ||c - c̄ 1||`` (Cauchy–Schwarz), so ``a_k(t) <= b_k + Σ_h (w_kh · β_h + √D ||c_h - c̄_h 1||)`` for every history
and time: a global bound.

In both cases ``Σ_k s_k softplus(bound_k / s_k)``, with a slack for rounding, dominates ``Σ_k λ_k``; and as ``a_k``
is bounded below by the same argument (with ``[-1, 1]`` for ``z``), the intensity is bounded away from 0 after
every event, so a next event always exists.
EasyTPP's thinning instead takes the largest intensity at a few points times an over-sampling factor, which is not
a bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
from tpp.models.nhp import (
    _check_float,
    _check_int,
    log_scaled_softplus,
    scaled_softplus,
    thinning_next_event,
)

__all__ = ["AttNHP"]

# About the most elements of one intermediate tensor when queries or bounds are evaluated in chunks.
_CHUNK_ELEMENTS = 4_000_000


class AttNHP(TPPModel):
    """Attentive neural Hawkes process: continuous-time attention queries at every time, softplus read-out.

    See the module docstring for the equations, the cost, the compensator quadrature and the thinning bound.

    Args:
        num_marks: ``K``.
        d_model: ``D``, the width of the representations (EasyTPP's ``hidden_size``).
        time_dim: ``T``, the width of the sinusoidal time embedding (EasyTPP's ``time_emb_size``; even).
        num_heads: independent attention stacks, concatenated before the read-out.
        num_layers: attention layers per head.
        layer_norm: a layer norm after each layer's update (EasyTPP's ``use_ln``).
        dropout: dropout on the attention weights (active in training mode only).
        n_nodes: Gauss–Legendre nodes per inter-event interval of the compensator (default 8).
        max_thinning_rounds: cap on the thinning rounds of :meth:`sample_next` (hitting it raises).
    """

    name = "attnhp"
    exact_compensator = False

    def __init__(self, num_marks: int, *, d_model: int = 32, time_dim: int = 16, num_heads: int = 2,
                 num_layers: int = 2, layer_norm: bool = False, dropout: float = 0.0, n_nodes: int = 8,
                 max_thinning_rounds: int = 10_000) -> None:
        super().__init__(num_marks)
        self.d_model = _check_int("d_model", d_model, 1)
        self.time_dim = _check_int("time_dim", time_dim, 2)
        if time_dim % 2:
            raise ValueError(f"time_dim must be even (sin/cos pairs of the time embedding), got {time_dim}")
        self.num_heads = _check_int("num_heads", num_heads, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        if not isinstance(layer_norm, bool):
            raise ValueError(f"layer_norm must be True or False, got {layer_norm!r}")
        self.layer_norm = layer_norm
        self.dropout = _check_float("dropout", dropout, 0.0, 1.0)
        self.n_nodes = _check_int("n_nodes", n_nodes, 1)
        self.max_thinning_rounds = _check_int("max_thinning_rounds", max_thinning_rounds, 1)
        D, T, Hh, Ly = d_model, time_dim, num_heads, num_layers
        self.embedding = nn.Embedding(num_marks, D)
        limit = 1 / math.sqrt(D + T)                                        # nn.Linear's initialisation
        # maps [r, z] -> R^D per layer and head, stacked: [layers, heads, D + T, D] and biases [layers, heads, D]
        self.query_weight, self.key_weight, self.value_weight = (
            nn.Parameter(torch.empty(Ly, Hh, D + T, D).uniform_(-limit, limit)) for _ in range(3))
        self.query_bias, self.key_bias, self.value_bias = (
            nn.Parameter(torch.empty(Ly, Hh, D).uniform_(-limit, limit)) for _ in range(3))
        self.norm_weight = nn.Parameter(torch.ones(Ly, Hh, D)) if layer_norm else None
        self.norm_bias = nn.Parameter(torch.zeros(Ly, Hh, D)) if layer_norm else None
        self.head = nn.Linear(Hh * D, num_marks)                            # w_k, b_k
        self.log_scale = nn.Parameter(torch.zeros(num_marks))
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, T, 2, dtype=torch.float64) / T)
        self.register_buffer("frequencies", freq.float(), persistent=False)

    # ------------------------------------------------------------------ pieces

    @property
    def scale(self) -> Tensor:
        """``[K]`` the softplus scales ``s_k``."""
        return self.log_scale.exp()

    def time_embedding(self, times: Tensor) -> Tensor:
        """``z(t)``: ``times [...]`` -> ``[..., T]`` (sin at even, cos at odd indices)."""
        angle = times.unsqueeze(-1) * self.frequencies.to(times.dtype)
        return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2)

    def _maps(self, r: Tensor, z: Tensor, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """Query, key and value of ``y = [r, z]``: ``r [N, Hh, M, D]``, ``z [N, M, T]`` -> three ``[N, Hh, M, D]``."""
        y = torch.cat([r, z.unsqueeze(1).expand(-1, self.num_heads, -1, -1)], dim=-1)
        return tuple(torch.einsum("nhmi,hid->nhmd", y, w[layer]) + b[layer].unsqueeze(1)   # type: ignore[return-value]
                     for w, b in ((self.query_weight, self.query_bias), (self.key_weight, self.key_bias),
                                  (self.value_weight, self.value_bias)))

    def _update(self, r: Tensor, attended: Tensor, layer: int) -> Tensor:
        """``r + tanh(attended)``, then the layer norm of ``layer`` if any (``[N, Hh, M, D]``)."""
        r = r + torch.tanh(attended)
        if self.norm_weight is None or self.norm_bias is None:
            return r
        normed = F.layer_norm(r, (self.d_model,))
        return normed * self.norm_weight[layer].unsqueeze(1) + self.norm_bias[layer].unsqueeze(1)

    def _attention_weights(self, scores: Tensor) -> Tensor:
        weights = torch.softmax(scores, dim=-1)
        return F.dropout(weights, self.dropout) if self.training and self.dropout > 0 else weights

    def _prepare(self, batch: EventBatch) -> tuple[EventBatch, Tensor]:
        """The batch on the parameters' device and dtype, and the origin ``[B]`` of each sequence."""
        self._check_batch(batch)
        p = self.log_scale
        if batch.times.device != p.device or batch.times.dtype != p.dtype:
            batch = batch.to(p.device, p.dtype)
        ws = batch.window_start
        return batch, torch.where(torch.isfinite(ws), ws, batch.times[:, 0])

    def event_keys_values(self, batch: EventBatch) -> tuple[Tensor, Tensor]:
        """Keys and values of every event at every layer: two ``[layers, B, Hh, L, D]``.

        Event ``j`` at layer ``ℓ`` attends to events ``<= j`` (by index; padding comes after the real events, so
        it never reaches them). Cost ``O(B L² D)`` per layer and head.
        """
        L = batch.times.shape[1]
        z = self.time_embedding(batch.times)                                                 # [B, L, T]
        r = torch.tanh(self.embedding(batch.marks)).unsqueeze(1).expand(-1, self.num_heads, -1, -1)
        future = torch.triu(torch.ones(L, L, dtype=torch.bool, device=z.device), diagonal=1)
        keys, values = [], []
        for layer in range(self.num_layers):
            q, k, v = self._maps(r, z, layer)
            keys.append(k)
            values.append(v)
            scores = (q @ k.transpose(-1, -2) / math.sqrt(self.d_model)).masked_fill(future, float("-inf"))
            r = self._update(r, self._attention_weights(scores) @ v, layer)
        return torch.stack(keys), torch.stack(values)

    def query_arguments(self, keys: Tensor, values: Tensor, times: Tensor, num_before: Tensor) -> Tensor:
        """Softplus arguments ``a_k(t)`` of queries: ``[N, Q, K]``.

        Args:
            keys, values: ``[layers, N, Hh, L, D]`` from :meth:`event_keys_values` (rows of the queries' sequences).
            times: ``[N, Q]`` query times.
            num_before: ``[N, Q]`` int, the query's history is events ``0 .. num_before - 1`` of its row.
        """
        N, Q = times.shape
        L = keys.shape[-2]
        z = self.time_embedding(times)                                                       # [N, Q, T]
        hidden = torch.arange(L, device=times.device) >= num_before.unsqueeze(-1)            # [N, Q, L]
        hidden = hidden.unsqueeze(1)                                                         # [N, 1, Q, L]
        r = z.new_zeros(N, self.num_heads, Q, self.d_model)
        root = math.sqrt(self.d_model)
        for layer in range(self.num_layers):
            q, k_self, v_self = self._maps(r, z, layer)
            history = (q @ keys[layer].transpose(-1, -2) / root).masked_fill(hidden, float("-inf"))
            itself = (q * k_self).sum(-1, keepdim=True) / root
            weights = self._attention_weights(torch.cat([history, itself], dim=-1))          # [N, Hh, Q, L + 1]
            attended = weights[..., :L] @ values[layer] + weights[..., L:] * v_self
            r = self._update(r, attended, layer)
        return self.head(r.permute(0, 2, 1, 3).reshape(N, Q, self.num_heads * self.d_model))

    def _lambda_rows(self, keys: Tensor, values: Tensor, rows: Tensor, times: Tensor, num_before: Tensor) -> Tensor:
        """``[n, K]`` intensities of ``n`` queries, query ``i`` in sequence ``rows[i]`` with history events
        ``0 .. num_before[i] - 1``.

        The queries are regrouped as ``[B, Q_max]`` (each sequence's queries side by side, padded with queries of
        empty history) so that the batch's keys and values serve them without copies; the query dimension is
        chunked to keep the attention scores under about ``_CHUNK_ELEMENTS`` elements.
        """
        n, B, L = rows.shape[0], keys.shape[1], keys.shape[3]
        if n == 0:
            return times.new_zeros(0, self.num_marks)
        order = torch.argsort(rows, stable=True)
        sorted_rows = rows[order]
        counts = torch.bincount(sorted_rows, minlength=B)
        offsets = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=rows.device) - offsets[sorted_rows]
        width = int(counts.max())
        grid_times = times.new_zeros(B, width)
        grid_before = torch.zeros(B, width, dtype=torch.int64, device=rows.device)
        grid_times[sorted_rows, slot] = times[order]
        grid_before[sorted_rows, slot] = num_before[order]
        chunk = max(1, _CHUNK_ELEMENTS // (B * self.num_heads * (L + 2 * self.d_model + self.time_dim)))
        args = torch.cat([self.query_arguments(keys, values, grid_times[:, i:i + chunk], grid_before[:, i:i + chunk])
                          for i in range(0, width, chunk)], dim=1)                           # [B, width, K]
        out = torch.empty(n, self.num_marks, dtype=args.dtype, device=args.device)
        out[order] = scaled_softplus(args[sorted_rows, slot], self.scale)
        return out

    # ------------------------------------------------------------------ the TPPModel interface

    def log_likelihood(self, batch: EventBatch, convention: Convention = "easytpp") -> LogLikelihood:
        """Event term, compensator (Gauss–Legendre, ``n_nodes`` per interval) and scored events per sequence.

        Event ``i`` is scored given events ``< i``; the interval that ends at event ``i`` enters the compensator
        exactly when event ``i`` is scored (events ``2..n`` in EasyTPP's convention, all in the full one, which adds
        ``[t_n, window_end]`` given all ``n`` events).
        """
        convention = check_convention(convention, batch)
        batch, origin = self._prepare(batch)
        B, L = batch.times.shape
        keys, values = self.event_keys_values(batch)
        index = torch.arange(L, device=origin.device).expand(B, L)
        args = self.query_arguments(keys, values, batch.times, index)                        # [B, L, K]
        log_lam = log_scaled_softplus(args, self.scale).gather(-1, batch.marks.unsqueeze(-1)).squeeze(-1)
        scored = scored_events(batch, convention)
        event_term = torch.where(scored, log_lam, torch.zeros_like(log_lam)).sum(1)
        # intervals 0..L-1 end at the events; interval L is [t_n, window_end] given all n events (full only)
        rows = torch.arange(B, device=origin.device)
        last = batch.times[rows, batch.lengths - 1]
        tail_end = batch.window_end if convention == "full" else last
        starts = torch.cat([origin.unsqueeze(1), batch.times[:, :-1], last.unsqueeze(1)], dim=1)    # [B, L + 1]
        ends = torch.cat([batch.times, torch.maximum(tail_end, last).unsqueeze(1)], dim=1)
        num_before = torch.cat([index, batch.lengths.unsqueeze(1)], dim=1)                   # [B, L + 1]

        def intensity_at(nodes: Tensor) -> Tensor:                                           # [B, L + 1, n]
            n = nodes.shape[-1]
            nb = num_before.unsqueeze(-1).expand(-1, -1, n).reshape(B, -1)
            a = self.query_arguments(keys, values, nodes.reshape(B, -1), nb)
            return scaled_softplus(a, self.scale).view(B, L + 1, n, self.num_marks)

        comp = gauss_legendre_compensator(intensity_at, starts, ends, self.n_nodes)          # [B, L + 1]
        included = torch.cat([scored, torch.full((B, 1), convention == "full", device=scored.device)], dim=1)
        compensator = torch.where(included, comp, torch.zeros_like(comp)).sum(1)
        return LogLikelihood(event_term, compensator, scored.sum(1))

    def intensity(self, batch: EventBatch, query_times: Tensor) -> Tensor:
        """``λ_k(t | H_t)`` at ``query_times [B, Q]`` -> ``[B, Q, K]``; history: the events strictly before ``t``."""
        batch, _ = self._prepare(batch)
        query = query_times.to(device=batch.times.device, dtype=batch.times.dtype)
        if query.dim() != 2 or query.shape[0] != batch.batch_size:
            raise ValueError(f"query_times must be [B, Q] with B = {batch.batch_size}, got {tuple(query.shape)}")
        keys, values = self.event_keys_values(batch)
        before = (batch.times.unsqueeze(1) < query.unsqueeze(2)) & batch.mask.unsqueeze(1)
        return scaled_softplus(self.query_arguments(keys, values, query, before.sum(-1)), self.scale)

    def time_embedding_box(self, t0: Tensor, t1: Tensor) -> tuple[Tensor, Tensor]:
        """Componentwise bounds ``(lo, hi)``, each ``[n, T]``, of the computed ``z(t)`` for ``t ∈ [t0, t1]`` (``[n]``).

        The computed angle ``fl(t ω_p)`` is non-decreasing in ``t``, so it lies in ``[fl(t0 ω_p), fl(t1 ω_p)]``; on an
        angle interval ``[α, β]`` ``sin`` is bounded by its ends, or by ``±1`` when ``β - α >= 2π`` or when a
        maximum (``π/2 + 2πm``) or minimum (``-π/2 + 2πm``) lies inside; ``cos θ = sin(θ + π/2)``. The ends are
        evaluated in float64 and widened by a few units of the dtype's rounding; ``t1 = inf`` gives ``[-1, 1]``.
        """
        dtype = t0.dtype
        freq = self.frequencies.to(dtype)
        a = (t0.unsqueeze(-1) * freq).double()                                              # [n, T/2]
        b = (torch.where(torch.isfinite(t1), t1, t0).unsqueeze(-1) * freq).double()
        full = ~torch.isfinite(t1).unsqueeze(-1) | (b - a >= 2 * math.pi)
        widen = 1e-12 * (1 + torch.maximum(a.abs(), b.abs()))
        slack = 4 * torch.finfo(dtype).eps

        def value_range(fn: Callable[[Tensor], Tensor], shift: float) -> tuple[Tensor, Tensor]:
            # ends by the model's own function; interior extrema of fn(θ) = sin(θ + shift) detected on shifted angles
            ends = torch.stack([fn(a), fn(b)])
            lo, hi = ends.amin(0) - slack, ends.amax(0) + slack
            lo_angle, hi_angle = a + shift, b + shift
            turn = 2 * math.pi
            has_max = torch.floor((hi_angle + widen - math.pi / 2) / turn) >= torch.ceil(
                (lo_angle - widen - math.pi / 2) / turn)
            has_min = torch.floor((hi_angle + widen + math.pi / 2) / turn) >= torch.ceil(
                (lo_angle - widen + math.pi / 2) / turn)
            hi = torch.where(has_max | full, 1.0, hi.clamp_max(1.0))
            lo = torch.where(has_min | full, -1.0, lo.clamp_min(-1.0))
            return lo, hi

        sin_lo, sin_hi = value_range(torch.sin, 0.0)
        cos_lo, cos_hi = value_range(torch.cos, math.pi / 2)
        lo = torch.stack([sin_lo, cos_lo], dim=-1).flatten(-2).to(dtype)
        hi = torch.stack([sin_hi, cos_hi], dim=-1).flatten(-2).to(dtype)
        return lo, hi

    def _box_map(self, lo: Tensor, hi: Tensor, z_mid: Tensor, z_rad: Tensor, layer: int,
                 which: int) -> tuple[Tensor, Tensor]:
        """The box ``(mid, rad)`` of the query (0), key (1) or value (2) map of ``y = [r, z]`` for ``r ∈ [lo, hi]``
        (``[n, Hh, D]``) and ``z`` in ``z_mid ± z_rad`` (``[n, T]``): the tightest box of an affine map of a box."""
        weight = (self.query_weight, self.key_weight, self.value_weight)[which][layer]        # [Hh, D + T, D]
        bias = (self.query_bias, self.key_bias, self.value_bias)[which][layer]               # [Hh, D]
        w_r, w_z = weight[:, :self.d_model], weight[:, self.d_model:]
        mid = torch.einsum("nhi,hid->nhd", (lo + hi) / 2, w_r) + torch.einsum("ni,hid->nhd", z_mid, w_z) + bias
        rad = torch.einsum("nhi,hid->nhd", (hi - lo) / 2, w_r.abs()) + torch.einsum("ni,hid->nhd", z_rad, w_z.abs())
        return mid, rad

    @staticmethod
    def weighted_average_max(values: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """``max Σ_i x_i v_i / Σ_i x_i`` over ``x_i ∈ [low_i, high_i]`` (last dimension), assuming ``Σ_i low_i > 0``.

        At the optimum ``f*``, ``x`` maximises ``Σ_i x_i (v_i - f*)``, so ``x_i = high_i`` where ``v_i > f*`` and
        ``low_i`` where ``v_i < f*``: a threshold in the order of decreasing ``v``. Every threshold gives a feasible
        ratio (the denominator is at least ``Σ low > 0``), so ``f*`` is the largest of the ``M + 1`` thresholds'
        ratios, computed with prefix sums after one sort: ``O(M log M)``.
        """
        order = values.argsort(dim=-1, descending=True)
        v, lo, hi = (x.gather(-1, order) for x in (values, low, high))
        pad = v.new_zeros(*v.shape[:-1], 1)
        top_num = torch.cat([pad, (hi * v).cumsum(-1)], dim=-1)                             # first m at high
        top_den = torch.cat([pad, hi.cumsum(-1)], dim=-1)
        rest_num = torch.cat([(lo * v).flip(-1).cumsum(-1).flip(-1), pad], dim=-1)         # the others at low
        rest_den = torch.cat([lo.flip(-1).cumsum(-1).flip(-1), pad], dim=-1)
        return ((top_num + rest_num) / (top_den + rest_den)).amax(-1)

    def _attention_box(self, keys: Tensor, values: Tensor, visible: Tensor, lo: Tensor, hi: Tensor, z_mid: Tensor,
                       z_rad: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """Bounds ``(o_lo, o_hi)`` ``[n, Hh, D]`` of a query's attention output at ``layer`` for ``r^{ℓ-1} ∈ [lo, hi]``
        and ``z`` in its box, given the history's ``keys, values [n, Hh, L, D]`` (``visible [n, 1, L]``).

        Each score lies in an interval (``q`` in a box against fixed keys; ``q · k_self`` with both in boxes), so
        each unnormalised weight ``exp(score - c)`` in ``[E_lo, E_hi]``; the query's own value is replaced by the
        end of its box. The output is then at most :meth:`weighted_average_max` (and at least its mirror), and
        never beyond the hull of the values; rows where every ``E_lo`` underflows keep the hull.
        """
        root = math.sqrt(self.d_model)
        q_mid, q_rad = self._box_map(lo, hi, z_mid, z_rad, layer, 0)
        k_mid, k_rad = self._box_map(lo, hi, z_mid, z_rad, layer, 1)
        v_mid, v_rad = self._box_map(lo, hi, z_mid, z_rad, layer, 2)
        centre = torch.einsum("nhd,nhld->nhl", q_mid, keys)
        spread = torch.einsum("nhd,nhld->nhl", q_rad, keys.abs())
        corners = torch.stack([(q_mid + sq * q_rad) * (k_mid + sk * k_rad) for sq in (-1, 1) for sk in (-1, 1)])
        self_lo, self_hi = corners.amin(0).sum(-1, keepdim=True), corners.amax(0).sum(-1, keepdim=True)
        s_lo = torch.cat([(centre - spread) / root, self_lo / root], dim=-1)                  # [n, Hh, L + 1]
        s_hi = torch.cat([(centre + spread) / root, self_hi / root], dim=-1)
        seen = torch.cat([visible.expand_as(centre), torch.ones_like(self_lo, dtype=torch.bool)], dim=-1)
        top = s_hi.masked_fill(~seen, float("-inf")).amax(-1, keepdim=True)
        e_lo = torch.where(seen, torch.exp(s_lo - top), 0.0).unsqueeze(-2)                  # [n, Hh, 1, L + 1]
        e_hi = torch.where(seen, torch.exp(s_hi - top), 0.0).unsqueeze(-2)
        hist = values.transpose(-1, -2)                                                      # [n, Hh, D, L]
        hist_hi = hist.masked_fill(~visible.unsqueeze(-2), float("-inf")).amax(-1)
        hist_lo = hist.masked_fill(~visible.unsqueeze(-2), float("inf")).amin(-1)
        hull_hi, hull_lo = torch.maximum(hist_hi, v_mid + v_rad), torch.minimum(hist_lo, v_mid - v_rad)
        hist = hist.masked_fill(~visible.unsqueeze(-2), 0.0)
        e_lo, e_hi = e_lo.expand(*hist.shape[:-1], -1), e_hi.expand(*hist.shape[:-1], -1)
        upper = self.weighted_average_max(torch.cat([hist, (v_mid + v_rad).unsqueeze(-1)], -1), e_lo, e_hi)
        lower = -self.weighted_average_max(torch.cat([-hist, (v_rad - v_mid).unsqueeze(-1)], -1), e_lo, e_hi)
        usable = e_lo.sum(-1) > 0
        # rounding of the weighted averages: a few units per summed term, relative to the values' size
        slack = 16 * (values.shape[-2] + 2) * torch.finfo(lo.dtype).eps * torch.maximum(hull_hi.abs(), hull_lo.abs())
        o_hi = torch.where(usable, torch.minimum(upper + slack, hull_hi), hull_hi)
        o_lo = torch.where(usable, torch.maximum(lower - slack, hull_lo), hull_lo)
        return o_lo, o_hi

    def intensity_bound(self, keys: Tensor, values: Tensor, rows: Tensor, cols: Tensor, t0: Tensor,
                        t1: Tensor) -> Tensor:
        """``[n]`` proven bound of ``Σ_k λ_k(t)`` for ``t ∈ [t0, t1]`` given events ``0..cols`` of sequence ``rows``.

        ``keys, values [layers, B, Hh, L, D]`` from :meth:`event_keys_values`; ``t0 > t_cols`` and ``t1 >= t0``
        (``inf``: every later time). Without layer norm: the interval arithmetic of the module docstring, with
        ``z(t)`` in :meth:`time_embedding_box` and each layer's attention output in :meth:`_attention_box`
        (chunked over entries); with layer norm, the global bound (independent of the history and the times).
        """
        w, b = self.head.weight, self.head.bias                                              # [K, Hh D], [K]
        eps = torch.finfo(t0.dtype).eps
        n = rows.shape[0]
        if self.norm_weight is not None and self.norm_bias is not None:
            D = self.d_model
            wh = w.view(-1, self.num_heads, D)                                               # [K, Hh, D]
            c = wh * self.norm_weight[-1]
            spread = (c - c.mean(-1, keepdim=True)).norm(dim=-1)                             # [K, Hh]
            shift = (wh * self.norm_bias[-1]).sum((-1, -2))
            upper = b + shift + math.sqrt(D) * spread.sum(-1)                                # [K]
            size = b.abs() + (wh * self.norm_bias[-1]).abs().sum((-1, -2)) + math.sqrt(D) * spread.sum(-1)
            upper = (upper + 1000 * eps * (1 + size)).expand(n, -1)
            return scaled_softplus(upper, self.scale).sum(-1) * (1 + 1000 * eps)
        L = keys.shape[3]
        chunk = max(1, _CHUNK_ELEMENTS // (4 * self.num_heads * self.d_model * (L + 2)))
        out = []
        for i in range(0, n, chunk):
            r, c = rows[i:i + chunk], cols[i:i + chunk]
            m = r.shape[0]
            z_lo, z_hi = self.time_embedding_box(t0[i:i + chunk], t1[i:i + chunk])          # [m, T]
            z_mid, z_rad = (z_lo + z_hi) / 2, (z_hi - z_lo) / 2
            visible = (torch.arange(L, device=r.device) <= c.unsqueeze(-1)).unsqueeze(1)     # [m, 1, L]
            lo = t0.new_zeros(m, self.num_heads, self.d_model)                               # r^0 = 0
            hi = lo.clone()
            for layer in range(self.num_layers):
                o_lo, o_hi = self._attention_box(keys[layer, r], values[layer, r], visible, lo, hi, z_mid, z_rad, layer)
                lo, hi = lo + torch.tanh(o_lo), hi + torch.tanh(o_hi)
            LO, HI = lo.reshape(m, 1, -1), hi.reshape(m, 1, -1)                              # [m, 1, Hh D]
            upper = b + torch.maximum(w * LO, w * HI).sum(-1)                                # [m, K]
            size = b.abs() + (w.abs() * (torch.maximum(LO.abs(), HI.abs()) + self.num_layers)).sum(-1)
            upper = upper + 1000 * eps * (1 + size)                                          # rounding
            out.append(scaled_softplus(upper, self.scale).sum(-1) * (1 + 1000 * eps))
        return torch.cat(out) if out else t0.new_zeros(0)

    def sample_next(self, batch: EventBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        """Exact draws of the next event after each event by thinning with the proven bound (module docstring).

        The time after event ``j`` is cut into windows ``W_k = [(2^k - 1) Δ, (2^{k+1} - 1) Δ]`` (``Δ`` three mean
        gaps of the batch). On ``W_k`` the dominating process is Poisson with the constant rate
        :meth:`intensity_bound` of ``W_k`` (computed once per position and window, shared by all samples); a draw
        proposes points of it from its current time, and moves to the start of ``W_{k+1}`` when the next point
        would fall beyond ``W_k`` (exact: Poisson processes are memoryless). Vectorised over samples, sequences and
        positions (one loop over thinning rounds, capped by ``max_thinning_rounds``; hitting the cap raises
        ``RuntimeError``). Runs in evaluation mode (no dropout). Uses the global torch RNG. Padded positions hold
        gap 0 and mark 0. The intensity is bounded away from 0, so there is always a next event.
        """
        n_samples = _check_int("n_samples", n_samples, 1)
        with eval_mode(self), torch.no_grad():
            return self._sample_next(batch, n_samples)

    def sample_from_state(self, state: HistoryState) -> tuple[Tensor, Tensor]:
        """Exact draws of the next event after the last event of each history of the generic state: the thinning
        of :meth:`sample_next` at that position only (``(gaps [N], marks [N])``), so each generation step thins
        ``N`` draws, not one per event of the histories."""
        with eval_mode(self), torch.no_grad():
            return self._sample_next(state.batch, 1, last_only=True)

    def _sample_next(self, batch: EventBatch, n_samples: int, last_only: bool = False) -> tuple[Tensor, Tensor]:
        batch, _ = self._prepare(batch)
        keys, values = self.event_keys_values(batch)
        if last_only:
            rows = torch.arange(batch.batch_size, device=batch.times.device)
            cols = batch.lengths.to(rows.device) - 1
        else:
            rows, cols = batch.mask.nonzero(as_tuple=True)
        P = rows.shape[0]
        N = n_samples * P
        which = torch.arange(N, device=rows.device) % P
        last_time = batch.times[rows, cols]
        real = batch.mask.clone()
        real[:, 0] = False
        gaps = batch.gaps[real]
        gaps = gaps[gaps > 0]
        delta = 3 * (float(gaps.mean()) if gaps.numel() else 1.0)
        window = torch.zeros(N, dtype=torch.int64, device=rows.device)                      # k of each draw
        cache: dict[int, Tensor] = {}                                                        # k -> bounds [P]

        def window_end(k: Tensor) -> Tensor:
            return delta * (torch.pow(2.0, (k + 1).to(last_time.dtype)) - 1)

        def bounds(p: Tensor, k: Tensor) -> Tensor:
            out = torch.empty(p.shape, dtype=last_time.dtype, device=p.device)
            for kk in k.unique().tolist():
                sel = k == kk
                known = cache.setdefault(kk, torch.full((P,), float("nan"), dtype=last_time.dtype, device=p.device))
                missing = p[sel][torch.isnan(known[p[sel]])].unique()
                if missing.numel():
                    start = delta * (2.0 ** kk - 1)
                    t0 = last_time[missing] + start
                    t1 = last_time[missing] + float(window_end(torch.tensor(kk)))
                    known[missing] = self.intensity_bound(keys, values, rows[missing], cols[missing], t0, t1)
                out[sel] = known[p[sel]]
            return out

        def intensity_at(idx: Tensor, elapsed: Tensor) -> Tensor:
            p = which[idx]
            return self._lambda_rows(keys, values, rows[p], last_time[p] + elapsed, cols[p] + 1)

        def propose(idx: Tensor, start: Tensor, horizon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            k = window[idx] + (start >= window_end(window[idx])).long()                      # arrived at the end
            window[idx] = k
            end = window_end(k)
            bound = bounds(which[idx], k)
            bad = ~(torch.isfinite(bound) & (bound > 0))
            if bool(bad.any()):
                raise RuntimeError(f"thinning: the intensity bound is not positive and finite (overflow): "
                                   f"{bound[bad][:3].tolist()}")
            step = torch.empty_like(start).exponential_() / bound
            beyond = step > end - start
            t = torch.where(beyond, end, start + step)
            return t, torch.where(beyond, torch.zeros_like(bound), bound), horizon

        initial = torch.full((N,), delta, dtype=last_time.dtype, device=rows.device)         # unused by propose
        elapsed, marks = thinning_next_event(intensity_at, propose, initial, max_rounds=self.max_thinning_rounds)
        if last_only:
            return elapsed, marks
        out_gaps = torch.zeros(n_samples, *batch.times.shape, dtype=batch.times.dtype, device=rows.device)
        out_marks = torch.zeros(n_samples, *batch.times.shape, dtype=torch.int64, device=rows.device)
        out_gaps[:, rows, cols] = elapsed.view(n_samples, P)
        out_marks[:, rows, cols] = marks.view(n_samples, P)
        return out_gaps, out_marks

    def next_event_compensator(self, batch: EventBatch, gaps: Tensor, n_nodes: int = 64) -> Tensor:
        """``∫_{t_j}^{t_j + gaps[s, b, j]} Σ_k λ_k dt`` given events ``0..j`` (Gauss–Legendre, ``n_nodes``).

        Args:
            batch: the sequences.
            gaps: ``[S, B, L]`` non-negative times after each event (e.g. draws of :meth:`sample_next`).
            n_nodes: Gauss–Legendre nodes per integral.

        Returns:
            ``[S, B, L]`` (0 at padded positions). By the time-rescaling theorem, for exact draws of the next
            event these values are Exp(1).
        """
        n_nodes = _check_int("n_nodes", n_nodes, 1)
        with eval_mode(self), torch.no_grad():
            return self._next_event_compensator(batch, gaps, n_nodes)

    def _next_event_compensator(self, batch: EventBatch, gaps: Tensor, n_nodes: int) -> Tensor:
        batch, _ = self._prepare(batch)
        B, L = batch.times.shape
        keys, values = self.event_keys_values(batch)
        g = gaps.to(device=batch.times.device, dtype=batch.times.dtype)
        num_before = torch.arange(1, L + 1, device=g.device)
        per_sample = B * self.num_heads * L * n_nodes * (L + 2 * self.d_model + self.time_dim)
        chunk = max(1, _CHUNK_ELEMENTS // per_sample)
        out = []
        for i in range(0, g.shape[0], chunk):
            gi = g[i:i + chunk]                                                          # [S_c, B, L]
            S_c = gi.shape[0]
            starts = batch.times.expand(S_c, B, L)

            def intensity_at(nodes: Tensor, S_c: int = S_c) -> Tensor:                   # [S_c, B, L, n]
                flat = nodes.permute(1, 0, 2, 3).reshape(B, -1)
                nb = num_before.view(1, L, 1).expand(S_c, L, n_nodes).reshape(1, -1).expand(B, -1)
                lam = scaled_softplus(self.query_arguments(keys, values, flat, nb), self.scale)
                return lam.view(B, S_c, L, n_nodes, -1).permute(1, 0, 2, 3, 4)

            out.append(gauss_legendre_compensator(intensity_at, starts, starts + gi, n_nodes))
        comp = torch.cat(out)
        return torch.where(batch.mask, comp, torch.zeros_like(comp))
