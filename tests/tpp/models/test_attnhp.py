"""The attentive neural Hawkes process (tpp.models.attnhp.AttNHP) against truths.

Truths: the exact Poisson log-likelihood (read-out weights zeroed), the recurrence of the module docstring run
with explicit loops on each history prefix alone (checks the masks and the vectorisation), scipy quadrature of
the intensity and Gauss–Legendre with 64 nodes (the 8-node compensator's accuracy), the time-rescaling theorem
for sample_next, and the proven thinning bound at many random points and histories.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from tests.tpp.models import softplus_checks as checks
from tests.tpp.models.likelihood_checks import check_bad_inputs
from tpp.data import EventSequences
from tpp.data.batch import make_batch
from tpp.models import attnhp as attnhp_module
from tpp.models.attnhp import AttNHP
from tpp.models.nhp import scaled_softplus, thinning_next_event


def zero_history(model: AttNHP) -> None:
    model.head.weight.zero_()


def perturb(model: AttNHP) -> None:
    """A stronger read-out and sharper attention: intensities that move visibly between and at events."""
    model.head.weight.mul_(4.0)
    model.query_weight.mul_(2.0)


def with_layer_norm(num_marks: int, **kwargs: object) -> AttNHP:
    return AttNHP(num_marks, layer_norm=True, **kwargs)


FACTORIES = [AttNHP, with_layer_norm]


def test_attributes_and_sizes() -> None:
    assert AttNHP.name == "attnhp" and AttNHP.exact_compensator is False
    # EasyTPP's sizes at hidden size D, time embedding T: per layer and head three maps (D + T) -> D with biases;
    # the mark embedding K D; the read-out from the concatenated heads; K softplus scales.
    K, D, T, Hh, Ly = 3, 8, 4, 2, 3
    model = AttNHP(K, d_model=D, time_dim=T, num_heads=Hh, num_layers=Ly)
    expected = Ly * Hh * 3 * ((D + T) * D + D) + K * D + (Hh * D + 1) * K + K
    assert sum(p.numel() for p in model.parameters()) == expected
    ln = AttNHP(K, d_model=D, time_dim=T, num_heads=Hh, num_layers=Ly, layer_norm=True)
    assert sum(p.numel() for p in ln.parameters()) == expected + 2 * Ly * Hh * D


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"d_model": 0}, "d_model"), ({"time_dim": 3}, "time_dim"), ({"time_dim": 0}, "time_dim"),
    ({"num_heads": 0}, "num_heads"), ({"num_layers": 0}, "num_layers"), ({"layer_norm": "yes"}, "layer_norm"),
    ({"dropout": 1.0}, "dropout"), ({"dropout": -0.5}, "dropout"), ({"n_nodes": 0}, "n_nodes"),
    ({"max_thinning_rounds": 0}, "max_thinning_rounds"), ({"d_model": 2.5}, "d_model"),
])
def test_bad_hyperparameters(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AttNHP(3, **kwargs)


def test_bad_inputs() -> None:
    check_bad_inputs(AttNHP, make_batch(checks.seqs(2)))


def test_poisson_truth() -> None:
    checks.check_poisson_truth(AttNHP, zero_history)


def reference_arguments(model: AttNHP, times: torch.Tensor, marks: torch.Tensor, t: float) -> torch.Tensor:
    """``a_k(t)`` from the module docstring's recurrence with loops: the history alone, no masks, ``[K]``."""
    history = [i for i in range(len(times)) if times[i] < t]
    D = model.d_model
    heads = []
    for h in range(model.num_heads):
        # event representations: event j attends to events 0..j (its history and itself)
        r_ev = [torch.tanh(model.embedding.weight[int(marks[i])]) for i in history]
        r_q = torch.zeros(D, dtype=times.dtype)
        z_q = model.time_embedding(torch.tensor(t, dtype=times.dtype))
        for layer in range(model.num_layers):
            Wq, Wk, Wv = (w[layer, h] for w in (model.query_weight, model.key_weight, model.value_weight))
            bq, bk, bv = (b[layer, h] for b in (model.query_bias, model.key_bias, model.value_bias))
            ys = [torch.cat([r_ev[i], model.time_embedding(times[history[i]])]) for i in range(len(history))]
            ks = [y @ Wk + bk for y in ys]
            vs = [y @ Wv + bv for y in ys]

            def attend(y: torch.Tensor, upto: int, Wq=Wq, Wk=Wk, Wv=Wv, bq=bq, bk=bk, bv=bv,
                       ks=ks, vs=vs) -> torch.Tensor:
                q = y @ Wq + bq
                keys = [*ks[:upto], y @ Wk + bk]
                vals = [*vs[:upto], y @ Wv + bv]
                w = torch.softmax(torch.stack([q @ k for k in keys]) / math.sqrt(D), 0)
                return sum(wi * vi for wi, vi in zip(w, vals, strict=True))

            def update(r: torch.Tensor, o: torch.Tensor, layer: int = layer, h: int = h) -> torch.Tensor:
                r = r + torch.tanh(o)
                if model.norm_weight is None:
                    return r
                return F.layer_norm(r, (D,)) * model.norm_weight[layer, h] + model.norm_bias[layer, h]

            y_q = torch.cat([r_q, z_q])
            r_q = update(r_q, attend(y_q, len(history)))
            r_ev = [update(r_ev[j], attend(ys[j], j)) for j in range(len(history))]
        heads.append(r_q)
    return model.head(torch.cat(heads))


@pytest.mark.parametrize("factory", FACTORIES)
def test_matches_loops_on_each_prefix(factory: checks.Factory) -> None:
    data = checks.seqs(2, window=(1.0, 8.0))
    model = checks.model64(factory, d_model=6, time_dim=4, num_heads=2, num_layers=2)
    with torch.no_grad():
        perturb(model)
        if model.norm_weight is not None:
            model.norm_weight.uniform_(0.5, 1.5)
            model.norm_bias.uniform_(-0.3, 0.3)
    batch = make_batch(data, dtype=torch.float64)
    q = np.linspace(1.0, 8.0, 13)
    got = model.intensity(batch, torch.tensor(np.stack([q] * 2))).detach()
    with torch.no_grad():
        for b in range(2):
            t, m = torch.tensor(data.times[b]), torch.tensor(data.marks[b])
            assert len(t) >= 3
            for i, s in enumerate(q):
                want = scaled_softplus(reference_arguments(model, t, m, float(s)), model.scale)
                torch.testing.assert_close(got[b, i], want, rtol=1e-10, atol=1e-12)


def test_time_embedding() -> None:
    model = AttNHP(2, time_dim=8).double()
    z = model.time_embedding(torch.tensor([0.0, 2.5], dtype=torch.float64))
    omega = 10000.0 ** (-2 * torch.arange(4, dtype=torch.float64) / 8)
    torch.testing.assert_close(z[1, 0::2], torch.sin(2.5 * omega))
    torch.testing.assert_close(z[1, 1::2], torch.cos(2.5 * omega))
    torch.testing.assert_close(z[0], torch.tensor([0.0, 1.0] * 4, dtype=torch.float64))


@pytest.mark.parametrize("factory", FACTORIES)
def test_compensator_quadrature(factory: checks.Factory) -> None:
    """64 nodes against scipy's adaptive quadrature of ``intensity`` to 1e-9; the default 8 nodes to 1e-4."""
    checks.check_compensator_quadrature(factory, perturb)


def test_event_term() -> None:
    checks.check_event_term(AttNHP)


@pytest.mark.parametrize("factory", FACTORIES)
def test_convention_identity(factory: checks.Factory) -> None:
    checks.check_convention_identity(factory)


def test_padding_invariance() -> None:
    checks.check_padding_invariance(AttNHP)


def test_causality() -> None:
    checks.check_causality(AttNHP)


@pytest.mark.parametrize("factory", FACTORIES)
def test_gradients(factory: checks.Factory) -> None:
    checks.check_gradients(factory)


def test_dtypes_cpu() -> None:
    checks.check_dtypes(AttNHP)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dtypes_cuda() -> None:
    for factory in FACTORIES:
        checks.check_dtypes(factory, "cuda")


def bound_and_intensities(model: AttNHP, data: EventSequences, dtype: torch.dtype, seed: int,
                          unbounded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """After each event, a random window ``[t_j + s, t_j + s + Δ]`` (``Δ = inf`` if ``unbounded``): the bound
    ``[P]`` and the intensity at 200 random times in the window (within 40 time units) ``[P, 200]``."""
    batch = make_batch(data, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        keys, values = model.event_keys_values(batch)
        rows, cols = batch.mask.nonzero(as_tuple=True)
        P = len(rows)
        t0 = batch.times[rows, cols] + torch.rand(P, generator=gen, dtype=dtype) * 3
        width = torch.full((P,), 40.0, dtype=dtype) if unbounded else torch.rand(P, generator=gen, dtype=dtype) * 4
        t1 = t0 + (float("inf") if unbounded else width)
        bound = model.intensity_bound(keys, values, rows, cols, t0, t1)
        u = torch.rand(P, 200, generator=gen, dtype=dtype)
        u[:, :2] = torch.tensor([0.0, 1.0], dtype=dtype)                                  # the window's ends
        later = t0[:, None] + u * width[:, None]
        B, L = batch.times.shape
        times = batch.times.new_zeros(B, L, 200)
        times[rows, cols] = later
        num_before = torch.zeros(B, L, 200, dtype=torch.int64)
        num_before[rows, cols] = (cols + 1)[:, None]
        args = model.query_arguments(keys, values, times.view(B, -1), num_before.view(B, -1))
        lam = scaled_softplus(args, model.scale).sum(-1).view(B, L, 200)[rows, cols]
    return bound, lam


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_thinning_bound_holds_at_random_points(factory: checks.Factory, dtype: torch.dtype) -> None:
    """λ(t) <= bound for t in random windows after each event (and unbounded windows), over random weights of
    several sizes including saturating ones. Without layer norm and at the default initialisation, the bound on
    a window is within a median factor 2.5 of the largest intensity seen in it (measured: 1.5 in float32, 1.7 in
    float64), that of an unbounded window within 15 (measured: 11)."""
    data = checks.seqs(3)
    for seed, gain in ((0, 1.0), (1, 3.0), (2, 8.0)):
        model = checks.model64(factory, seed=seed).to(dtype)
        with torch.no_grad():
            for p in (model.query_weight, model.key_weight, model.value_weight, model.head.weight):
                p.mul_(gain)
            if model.norm_weight is not None:
                model.norm_weight.uniform_(-2, 2)
                model.norm_bias.uniform_(-1, 1)
        for unbounded, factor in ((False, 2.5), (True, 15.0)):
            bound, lam = bound_and_intensities(model, data, dtype, seed, unbounded)
            assert torch.isfinite(bound).all()
            assert (lam <= bound[:, None]).all(), (lam.amax(1) / bound).max()
            if gain == 1.0 and model.norm_weight is None:
                assert (bound / lam.amax(1)).median() < factor


def test_weighted_average_max() -> None:
    """Against brute force over the corners of the weight box (the maximum of a linear-fractional function over a
    box is at a corner), and never below the ratio at random points of the box."""
    gen = torch.Generator().manual_seed(0)
    M = 6
    v = torch.randn(200, M, generator=gen, dtype=torch.float64)
    low = torch.rand(200, M, generator=gen, dtype=torch.float64) * 0.5
    high = low + torch.rand(200, M, generator=gen, dtype=torch.float64) * 2
    low[:20, :3] = 0.0                                                       # zero lower weights are allowed
    got = AttNHP.weighted_average_max(v, low, high)
    corners = torch.tensor(list(itertools.product([0, 1], repeat=M)), dtype=torch.float64)
    x = low[:, None] + corners * (high - low)[:, None]                     # [200, 2^M, M]
    brute = ((x * v[:, None]).sum(-1) / x.sum(-1)).amax(1)
    torch.testing.assert_close(got, brute, rtol=1e-12, atol=1e-12)
    inside = low[:, None] + torch.rand(200, 500, M, generator=gen, dtype=torch.float64) * (high - low)[:, None]
    assert (((inside * v[:, None]).sum(-1) / inside.sum(-1)) <= got[:, None] + 1e-12).all()


def test_attention_box_contains_outputs() -> None:
    """Each layer's attention-output box holds the output for every r in its box and t in the window: r at random
    points and corners of wide boxes, few events in the history (where the query's own value weighs most)."""
    model = checks.model64(AttNHP, seed=4)
    with torch.no_grad():
        for weight in (model.query_weight, model.key_weight, model.value_weight):
            weight.mul_(3.0)
    batch = make_batch(checks.seqs(2), dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        keys, values = model.event_keys_values(batch)
        rows, cols = batch.mask.nonzero(as_tuple=True)
        pick = cols < 3
        rows, cols = rows[pick], cols[pick]
        n, Hh, D, L = len(rows), model.num_heads, model.d_model, batch.max_len
        t0 = batch.times[rows, cols] + torch.rand(n, generator=gen, dtype=torch.float64)
        t1 = t0 + 2 * torch.rand(n, generator=gen, dtype=torch.float64)
        z_lo, z_hi = model.time_embedding_box(t0, t1)
        visible = (torch.arange(L) <= cols[:, None]).unsqueeze(1)
        centre = torch.randn(n, Hh, D, generator=gen, dtype=torch.float64)
        radius = torch.rand(n, Hh, D, generator=gen, dtype=torch.float64) * 2
        for layer in range(model.num_layers):
            o_lo, o_hi = model._attention_box(keys[layer, rows], values[layer, rows], visible, centre - radius,
                                              centre + radius, (z_lo + z_hi) / 2, (z_hi - z_lo) / 2, layer)
            for trial in range(200):
                if trial < 64:                                                      # corners of the r box
                    signs = torch.where(torch.rand(n, Hh, D, generator=gen) < 0.5, -1.0, 1.0).double()
                else:
                    signs = 2 * torch.rand(n, Hh, D, generator=gen, dtype=torch.float64) - 1
                r = (centre + signs * radius).unsqueeze(2)                          # [n, Hh, 1, D]
                t = t0 + torch.rand(n, generator=gen, dtype=torch.float64) * (t1 - t0)
                z = model.time_embedding(t)[:, None]                                # [n, 1, T]
                q, k_self, v_self = model._maps(r, z, layer)
                scores = torch.cat([(q @ keys[layer, rows].transpose(-1, -2)).masked_fill(~visible.unsqueeze(1),
                                                                                           float("-inf")),
                                    (q * k_self).sum(-1, keepdim=True)], dim=-1) / math.sqrt(D)
                weights = torch.softmax(scores, dim=-1)
                out = (weights[..., :L] @ values[layer, rows] + weights[..., L:] * v_self).squeeze(2)
                assert (out >= o_lo - 1e-12).all() and (out <= o_hi + 1e-12).all(), trial


def test_time_embedding_box() -> None:
    """The box holds z at every time of the window, and is tight: its ends are reached up to the sampling."""
    model = AttNHP(2, time_dim=16).double()
    gen = torch.Generator().manual_seed(0)
    t0 = torch.rand(200, generator=gen, dtype=torch.float64) * 100
    t1 = t0 + torch.rand(200, generator=gen, dtype=torch.float64) ** 2 * 10
    t1[:5] = t0[:5]                                                                   # a single time
    t1[5:10] = float("inf")
    lo, hi = model.time_embedding_box(t0, t1)
    assert (lo[5:10] == -1).all() and (hi[5:10] == 1).all()
    u = torch.linspace(0, 1, 20001, dtype=torch.float64)
    finite = torch.isfinite(t1)
    times = t0[finite, None] + u * (t1 - t0)[finite, None]
    z = model.time_embedding(times)                                                   # [n, 20001, T]
    assert (z >= lo[finite, None]).all() and (z <= hi[finite, None]).all()
    torch.testing.assert_close(z.amin(1), lo[finite], rtol=0, atol=1e-6)
    torch.testing.assert_close(z.amax(1), hi[finite], rtol=0, atol=1e-6)


def test_unbounded_bound_tighter_than_global() -> None:
    """Without layer norm, the unbounded-window bound is below the crude global one (|r_i| <= num_layers)."""
    model = checks.model64(AttNHP)
    batch = make_batch(checks.seqs(3), dtype=torch.float64)
    with torch.no_grad():
        keys, values = model.event_keys_values(batch)
        rows, cols = batch.mask.nonzero(as_tuple=True)
        t0 = batch.times[rows, cols]
        bound = model.intensity_bound(keys, values, rows, cols, t0, torch.full_like(t0, float("inf")))
        crude = model.head.bias + model.num_layers * model.head.weight.abs().sum(-1)
        assert (bound < scaled_softplus(crude, model.scale).sum()).all()


def perturb_mildly(model: AttNHP) -> None:
    """Intensities that move visibly, with a bound tight enough for fast tests (thinning costs grow with it)."""
    model.head.weight.mul_(2.0)


@pytest.mark.parametrize("factory", FACTORIES)
def test_sample_next_law(factory: checks.Factory) -> None:
    """Draws after every event against the model's own law (the shared check's truths, fewer draws: AttNHP is
    expensive). Time: by time rescaling Λ(τ) ~ Exp(1), so 1 - exp(-Λ(τ)) ~ U(0, 1) (KS test; Λ by
    next_event_compensator, itself checked against a quadrature of ``intensity``). Mark: given τ it is k with
    probability λ_k(τ) / Σλ(τ), per-mark count minus Σ p_k(τ) as a z-score."""
    full = checks.seqs(4)
    data = EventSequences([t[:6] for t in full.times], [m[:6] for m in full.marks], 3, full.windows)
    batch = make_batch(data, dtype=torch.float64)
    model = checks.model64(factory)
    with torch.no_grad():
        perturb_mildly(model)
    torch.manual_seed(1)
    S = 300
    gaps, marks = model.sample_next(batch, S)
    assert (gaps[:, batch.mask] > 0).all() and torch.isfinite(gaps).all()
    comp = model.next_event_compensator(batch, gaps, n_nodes=24)
    u = (1 - torch.exp(-comp))[:, batch.mask]
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 0.01
    with torch.no_grad():
        keys, values = model.event_keys_values(batch)
        rows, cols = batch.mask.nonzero(as_tuple=True)
        P = len(rows)
        tau = gaps[:, rows, cols]                                                       # [S, P]
        at = model._lambda_rows(keys, values, rows.repeat(S), (batch.times[rows, cols] + tau).flatten(),
                                (cols + 1).repeat(S)).view(S, P, 3)
    probs = at / at.sum(-1, keepdim=True)
    onehot = torch.nn.functional.one_hot(marks[:, rows, cols], 3).double()
    z = (onehot - probs).sum((0, 1)) / (probs * (1 - probs)).sum((0, 1)).sqrt()
    assert z.abs().max() < 3.5, z
    # the compensator used above against 64-node quadrature through the public intensity (last events, 20 draws)
    b = 2
    last = int(batch.lengths[b]) - 1
    one = make_batch(data, [b], dtype=torch.float64)
    x, w = (torch.as_tensor(v, dtype=torch.float64) for v in checks.gl(64))
    half = tau[:20, (rows == b) & (cols == last)] / 2                                  # [20, 1]
    nodes = batch.times[b, last] + half * (x + 1)
    with torch.no_grad():
        lam = model.intensity(one, nodes.reshape(1, -1)).reshape(20, 64, 3)
    torch.testing.assert_close(comp[:20, b, last], (lam.sum(-1) * w * half).sum(1), rtol=1e-7, atol=1e-9)


def test_generation_draws_at_the_last_event_only() -> None:
    """sample_from_state thins only after each history's last event: with one-event histories that is every
    position, so it gives sample_next's draws exactly (same RNG stream); on longer histories the intensity it thins
    is the public intensity after the last event, and its draws follow the model's law there (time rescaling:
    1 - exp(-Λ(τ)) ~ U(0, 1), KS test)."""
    full = checks.seqs(4)
    model = checks.model64(FACTORIES[0])
    with torch.no_grad():
        perturb_mildly(model)
    single = make_batch(EventSequences([t[:1] for t in full.times], [m[:1] for m in full.marks], 3, full.windows),
                        dtype=torch.float64)
    torch.manual_seed(3)
    gaps, marks = model.sample_next(single, 1)
    torch.manual_seed(3)
    g, k = model.sample_from_state(model.encode(single))
    torch.testing.assert_close(g, gaps[0, :, 0], rtol=0, atol=0)
    assert (k == marks[0, :, 0]).all()
    data = EventSequences([t[:6] for t in full.times], [m[:6] for m in full.marks], 3, full.windows)
    batch = make_batch(data, dtype=torch.float64)
    seen = {}

    def spy(intensity_at, propose, initial, max_rounds):
        elapsed = torch.tensor([0.01, 0.3, 2.0], dtype=torch.float64)
        idx = torch.arange(batch.batch_size)
        seen["thinned"] = torch.stack([intensity_at(idx, e.expand(batch.batch_size)) for e in elapsed], 1)
        seen["query"] = batch.times[idx, batch.lengths - 1].unsqueeze(-1) + elapsed
        return thinning_next_event(intensity_at, propose, initial, max_rounds=max_rounds)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attnhp_module, "thinning_next_event", spy)
        model.sample_from_state(model.encode(batch))
    with torch.no_grad():
        public = model.intensity(batch, seen["query"])
    torch.testing.assert_close(seen["thinned"], public, rtol=1e-12, atol=1e-14)
    S = 200
    torch.manual_seed(4)
    g, _ = model.sample_from_state(model.repeat_state(model.encode(batch), S))            # [B S], sequence-major
    assert torch.isfinite(g).all() and (g > 0).all()
    rows = torch.arange(batch.batch_size)
    last = batch.lengths - 1
    at_last = torch.zeros(S, *batch.times.shape, dtype=torch.float64)
    at_last[:, rows, last] = g.view(batch.batch_size, S).t()
    comp = model.next_event_compensator(batch, at_last, n_nodes=24)[:, rows, last]
    assert stats.kstest((1 - torch.exp(-comp)).flatten().numpy(), "uniform").pvalue > 0.01


def test_sample_next_without_dropout() -> None:
    """A model in training mode with dropout samples as in evaluation mode (same draws from the same seed), and is
    left in training mode."""
    batch = make_batch(checks.seqs(2), dtype=torch.float64)
    model = checks.model64(lambda k, **kw: AttNHP(k, dropout=0.5, **kw))
    draws = []
    for training in (False, True):
        model.train(training)
        torch.manual_seed(7)
        draws.append(model.sample_next(batch, 3))
        assert model.training is training
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


def test_next_event_compensator_chunks() -> None:
    """The chunked next-event compensator equals the log-likelihood's compensator of the observed gaps."""
    data = checks.seqs(3)
    batch = make_batch(data, dtype=torch.float64)
    model = checks.model64(AttNHP, n_nodes=64)
    with torch.no_grad():
        following = torch.zeros_like(batch.times)
        following[:, :-1] = batch.gaps[:, 1:]                                      # gap to the next event
        comp = model.next_event_compensator(batch, following.expand(5, -1, -1))
        inner = model.log_likelihood(batch, "easytpp").compensator
        torch.testing.assert_close(comp[0].sum(1), inner, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(comp, comp[:1].expand(5, -1, -1), rtol=0, atol=0)


def test_thinning_cap_raises() -> None:
    checks.check_thinning_cap(AttNHP)


def test_fit_beats_poisson() -> None:
    # 4 quadrature nodes halve the cost; the fit is the same as with 8 (0.48 of the way from Poisson to the oracle)
    checks.check_fit_beats_poisson(lambda k: AttNHP(k, d_model=16, time_dim=8, num_heads=1, num_layers=1, n_nodes=4),
                                   epochs=20)
