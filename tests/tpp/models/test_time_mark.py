"""Time–mark dependent TPPs (tpp.models.time_mark) against independent truths.

Truths: IntensityFree (LNM with every mark's mixture equal is IntensityFree, weight for weight), a scipy marked
renewal log-likelihood (history weights zeroed: i.i.d. (mark, gap) pairs with mark-specific log-normal mixtures),
the exact Poisson log-likelihood of tpp.data.simulators and a numpy log-likelihood with mark-specific Gompertz
gaps (RMTPP variant), log-time Gauss–Legendre quadrature of the model's own public intensity (compensator
-log S, convention identity), Kolmogorov–Smirnov tests of the draws against each mark's closed-form CDF and of
the time-rescaled gaps against U(0, 1), the no-event probability of defective laws, a brute-force argmax of the
joint density for the paper's mark rule, and a fit to a simulated Hawkes process against the Poisson MLE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from scipy.special import logsumexp

from tpp.data import EventSequences, HawkesProcess, PoissonProcess, make_batch
from tpp.data.batch import EventBatch
from tpp.models.intensity_free import IntensityFree
from tpp.models.time_mark import (
    LogNormMixTimeMark,
    RMTPPTimeMark,
    THPTimeMark,
    TimeMarkTPP,
    joint_density_mark_predictions,
)
from tpp.train import evaluate_log_likelihood, fit_model

from .likelihood_checks import check_compensator_and_convention_identity, intervals

K, M = 3, 4
HAWKES = HawkesProcess([0.4, 0.3, 0.2], [[0.3, 0.1, 0.0], [0.1, 0.2, 0.1], [0.0, 0.2, 0.3]], 1.5)
RECURRENT = [LogNormMixTimeMark, RMTPPTimeMark]
CLASSES = [*RECURRENT, THPTimeMark]


@pytest.fixture(scope="module")
def seqs() -> EventSequences:
    # the window starts away from 0 and before the first event, so every piece of the full convention is non-trivial
    return HAWKES.simulate(5, (2.0, 22.0), seed=1)


def small(cls: type[TimeMarkTPP], **kwargs: object) -> TimeMarkTPP:
    """A small float32 model (THP's with 64 Gauss–Legendre nodes, so that its H_k is exact to ~1e-12)."""
    if cls is THPTimeMark:
        return THPTimeMark(K, d_model=8, num_heads=2, num_layers=1, n_nodes=64, **kwargs)  # type: ignore[arg-type]
    extra = {"num_components": M} if cls is LogNormMixTimeMark else {}
    return cls(K, hidden_size=8, embedding_size=4, **extra, **kwargs)  # type: ignore[call-arg]


def random_model(cls: type[TimeMarkTPP], seed: int, seqs: EventSequences | None = None,
                 **kwargs: object) -> TimeMarkTPP:
    torch.manual_seed(seed)
    model = small(cls, **kwargs).double()
    if seqs is not None and hasattr(model, "set_gap_statistics"):
        model.set_gap_statistics(seqs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.4 * torch.randn_like(p))
    return model




def log_time_quadrature(model: TimeMarkTPP, batch: EventBatch, starts: torch.Tensor, ends: torch.Tensor,
                        panels: int = 24, n_nodes: int = 16, depth: float = 40.0) -> torch.Tensor:
    """``∫_{starts}^{ends} Σ_k λ_k`` (``[B, I]``, 0 where ``ends <= starts``) by composite Gauss–Legendre in
    ``y = log(t - start)`` over ``[log(end - start) - depth, log(end - start)]``, on the public intensity (the
    part below, ``e^{-40}`` long, holds a bounded intensity or a log-normal hazard that vanishes there)."""
    x, wts = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(n_nodes))
    ok = ends > starts
    hi = torch.log(torch.where(ok, ends - starts, 1.0))
    edges = hi.unsqueeze(-1) - depth + depth * torch.arange(panels + 1, dtype=torch.float64) / panels
    half = (edges[..., 1:] - edges[..., :-1]).unsqueeze(-1) / 2
    y = edges[..., :-1].unsqueeze(-1) + half * (x + 1)
    ds = torch.exp(y)
    query = torch.where(ok[..., None, None], starts[..., None, None] + ds, starts[..., None, None])
    lam = model.intensity(batch, query.reshape(batch.batch_size, -1)).sum(-1).reshape(query.shape)
    return torch.where(ok, (lam * ds * wts * half).sum((-1, -2)), 0.0)


# --------------------------------------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize("cls", RECURRENT)
@pytest.mark.parametrize(("kwargs", "name"), [
    ({"hidden_size": 0}, "hidden_size"), ({"hidden_size": 1.5}, "hidden_size"), ({"hidden_size": True}, "hidden_size"),
    ({"embedding_size": -2}, "embedding_size"),
])
def test_bad_hyperparameters_name_the_parameter(cls: type[TimeMarkTPP], kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        cls(K, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_marks"):
        cls(0)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"d_model": 7}, "d_model"), ({"d_model": 8, "num_heads": 3}, "num_heads"), ({"num_layers": 0}, "num_layers"),
    ({"dropout": 1.5}, "dropout"), ({"baseline": "yes"}, "baseline"), ({"n_nodes": 0}, "n_nodes"),
    ({"max_thinning_rounds": 0}, "max_thinning_rounds"),
])
def test_bad_thp_hyperparameters_name_the_parameter(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        THPTimeMark(K, **kwargs)  # type: ignore[arg-type]


def test_bad_components_and_bad_calls(seqs: EventSequences) -> None:
    for bad in (0, False, 2.0):
        with pytest.raises(ValueError, match="num_components"):
            LogNormMixTimeMark(K, num_components=bad)  # type: ignore[arg-type]
    assert (LogNormMixTimeMark.name, RMTPPTimeMark.name, THPTimeMark.name) == ("lnm_tm", "rmtpp_tm", "thp_tm")
    assert LogNormMixTimeMark.exact_compensator and RMTPPTimeMark.exact_compensator
    assert not THPTimeMark.exact_compensator
    batch = make_batch(seqs)
    for cls in CLASSES:
        model = cls(K)
        with pytest.raises(ValueError, match="n_samples"):
            model.sample_next(batch, 0)
        with pytest.raises(ValueError, match="convention"):
            model.log_likelihood(batch, "bogus")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="window"):
            model.log_likelihood(make_batch(EventSequences(seqs.times, seqs.marks, K)), "full")
        with pytest.raises(ValueError, match="marks"):
            cls(K + 1).log_likelihood(batch)
        with pytest.raises(ValueError, match="query_times"):
            model.intensity(batch, batch.times[0])


# --------------------------------------------------------------------------------------------- closed forms


def test_lnm_with_equal_mixtures_is_intensity_free(seqs: EventSequences) -> None:
    # the same encoder and one mixture repeated for every mark: f(τ | k) = f(τ), so f(τ, k) = p_k f(τ)
    ifm = IntensityFree(K, hidden_size=8, embedding_size=4, num_components=M).double().set_gap_statistics(seqs)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ifm.parameters():
            p.add_(0.4 * torch.randn_like(p))
    tm = LogNormMixTimeMark(K, hidden_size=8, embedding_size=4, num_components=M).double()
    state = {k: v for k, v in ifm.state_dict().items() if not k.startswith("mixture.")}
    state["mixture.weight"] = ifm.mixture.weight.detach().repeat(K, 1)
    state["mixture.bias"] = ifm.mixture.bias.detach().repeat(K)
    tm.load_state_dict(state)
    batch = make_batch(seqs, dtype=torch.float64)
    for conv in ("easytpp", "full"):
        a, b = ifm.log_likelihood(batch, conv), tm.log_likelihood(batch, conv)
        torch.testing.assert_close(b.event_term, a.event_term, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.compensator, a.compensator, rtol=1e-12, atol=1e-12)
    q = torch.linspace(2.5, 21.5, 40, dtype=torch.float64).expand(batch.batch_size, -1)
    torch.testing.assert_close(tm.intensity(batch, q), ifm.intensity(batch, q), rtol=1e-10, atol=1e-14)
    # and a different mixture for one mark changes the likelihood: the mark-specific part is live
    with torch.no_grad():
        tm.mixture.bias[4 * M:5 * M] += 1.0          # mark 1's component means (a shift of its logits is void)
    assert not torch.allclose(tm.log_likelihood(batch, "full").total, ifm.log_likelihood(batch, "full").total)


def test_lnm_fixed_mixtures_match_a_scipy_marked_renewal_log_likelihood(seqs: EventSequences) -> None:
    model = random_model(LogNormMixTimeMark, 0, seqs)
    with torch.no_grad():
        model.mixture.weight.zero_()
        model.mark_logits.weight.zero_()
    raw = model.mixture.bias.detach().numpy().reshape(K, 3 * M)
    log_w = raw[:, :M] - logsumexp(raw[:, :M], axis=1, keepdims=True)
    gm, gs = float(model.gap_mean), float(model.gap_std)
    loc, scale = gm + gs * raw[:, M:2 * M], gs * np.exp(np.clip(raw[:, 2 * M:], -5, 3))
    mark_bias = model.mark_logits.bias.detach().numpy()
    log_p = mark_bias - logsumexp(mark_bias)

    def log_f(tau: float, k: int) -> float:
        y = math.log(tau)
        return float(logsumexp(log_w[k] + stats.norm.logpdf(y, loc[k], scale[k]))) - y

    def log_surv(tau: float) -> float:   # the mixture over marks of each mark's survival
        y = math.log(tau)
        return float(logsumexp(log_p[:, None] + log_w + stats.norm.logsf(y, loc, scale)))

    batch = make_batch(seqs, dtype=torch.float64)
    for conv in ("easytpp", "full"):
        ll = model.log_likelihood(batch, conv)
        for i, (t, m) in enumerate(zip(seqs.times, seqs.marks, strict=True)):
            ws, we = seqs.windows[i]
            taus = np.diff(np.concatenate([[ws], t]))
            if conv == "easytpp":
                taus, m = taus[1:], m[1:]
            want = sum(log_p[k] + log_f(tau, k) for tau, k in zip(taus, m, strict=True))
            want += log_surv(we - t[-1]) if conv == "full" else 0.0
            np.testing.assert_allclose(ll.total[i].item(), want, rtol=1e-10)
            np.testing.assert_allclose(ll.compensator[i].item(), -sum(log_surv(tau) for tau in taus)
                                       - (log_surv(we - t[-1]) if conv == "full" else 0.0), rtol=1e-10)


def test_rmtpp_with_zero_weights_is_the_poisson_process(seqs: EventSequences) -> None:
    # every mark's gap law Exp(Σμ) and p = μ / Σμ: the marked Poisson process with rates μ
    mu = np.array([0.5, 0.2, 0.8])
    model = random_model(RMTPPTimeMark, 0)
    with torch.no_grad():
        model.ground.weight.zero_()
        model.ground.bias.fill_(math.log(mu.sum()))
        model.w.zero_()
        model.mark_logits.weight.zero_()
        model.mark_logits.bias.copy_(torch.as_tensor(np.log(mu / mu.sum())))
    batch = make_batch(seqs, dtype=torch.float64)
    for conv in ("easytpp", "full"):
        ll = model.log_likelihood(batch, conv)
        np.testing.assert_allclose(ll.total.detach().numpy(), PoissonProcess(mu).log_likelihood(seqs, conv),
                                   rtol=1e-12)
        assert ll.num_scored.tolist() == (seqs.lengths - (conv == "easytpp")).tolist()
    lam = model.intensity(batch, batch.times + 0.3)
    torch.testing.assert_close(lam, torch.as_tensor(mu).expand_as(lam), rtol=1e-12, atol=0)


def test_rmtpp_mark_specific_gompertz_log_likelihood(seqs: EventSequences) -> None:
    # history weights 0: i.i.d. (k, τ), k ~ p, τ | k with hazard exp(b_k + w_k τ) (w_k of both signs, one near 0)
    b, w, logits = np.array([-0.4, 0.3, -1.0]), np.array([0.5, -0.8, 3e-4]), np.array([0.3, -0.2, 0.5])
    log_p = logits - logsumexp(logits)
    model = random_model(RMTPPTimeMark, 1)
    with torch.no_grad():
        model.ground.weight.zero_()
        model.ground.bias.copy_(torch.as_tensor(b))
        model.w.copy_(torch.as_tensor(w))
        model.mark_logits.weight.zero_()
        model.mark_logits.bias.copy_(torch.as_tensor(logits))

    def cum(tau: float) -> np.ndarray:
        return np.exp(b) * np.expm1(w * tau) / w

    batch = make_batch(seqs, dtype=torch.float64)
    for conv in ("easytpp", "full"):
        ll = model.log_likelihood(batch, conv)
        for i, (t, m) in enumerate(zip(seqs.times, seqs.marks, strict=True)):
            ws, we = seqs.windows[i]
            taus = np.diff(np.concatenate([[ws], t]))
            if conv == "easytpp":
                taus, m = taus[1:], m[1:]
            want = sum(log_p[k] + b[k] + w[k] * tau - cum(tau)[k] for tau, k in zip(taus, m, strict=True))
            if conv == "full":
                want += logsumexp(log_p - cum(we - t[-1]))
            np.testing.assert_allclose(ll.total[i].item(), want, rtol=1e-11)


# --------------------------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("cls", CLASSES)
def test_compensator_and_convention_identity_against_quadrature(seqs: EventSequences, cls: type[TimeMarkTPP]) -> None:
    # the compensator -log S(τ) of the mixture over marks is the integral of Σ_k p_k f_k / S
    model = random_model(cls, 2, seqs)
    if cls is LogNormMixTimeMark:
        # Gaps are floored at 1e-10 (as in IntensityFree), so on (0, 1e-10) the intensity is read at 1e-10; the
        # random log-scales are kept below log 1.5 so that a component's mass below 1e-10 is negligible (< 1e-20).
        with torch.no_grad():
            rows = model.mixture.weight.view(K, 3, M, -1)[:, 2]
            rows.mul_(0.1)
            model.mixture.bias.view(K, 3, M)[:, 2].clamp_(-1.0, 0.2)
    batch = make_batch(seqs, dtype=torch.float64)
    starts, ends = intervals(batch, padding_end=-1.0)
    with torch.no_grad():
        quad = log_time_quadrature(model, batch, starts, ends)
    check_compensator_and_convention_identity(model, batch, quad, rtol=1e-8)


# --------------------------------------------------------------------------------------------- sampling


def _states_after(model: TimeMarkTPP, batch: EventBatch) -> torch.Tensor:
    return model._states(model._prepare(batch))[:, 1:]


@pytest.mark.parametrize(("cls", "kwargs", "slopes"), [
    (LogNormMixTimeMark, {}, None),
    (RMTPPTimeMark, {}, [0.4, 0.1, 0.7]),                      # w_k > 0: proper laws, every draw finite
    (THPTimeMark, {}, [0.4, 0.1, 0.7]),                        # α_k > 0: rising hazards, growing thinning horizons
    (THPTimeMark, {"baseline": True}, [-0.6, 0.3, -1.5]),      # α_k < 0 with μ_k > 0: falling hazards, bound at start
])
def test_sample_next_follows_each_marks_law_and_time_rescaling(seqs: EventSequences, cls: type[TimeMarkTPP],
                                                               kwargs: dict[str, object],
                                                               slopes: list[float] | None) -> None:
    model = random_model(cls, 3, seqs, **kwargs)
    if slopes is not None:
        with torch.no_grad():
            (model.w if cls is RMTPPTimeMark else model.thp.alpha).copy_(torch.tensor(slopes, dtype=torch.float64))
    batch = make_batch(seqs, dtype=torch.float64)
    torch.manual_seed(0)
    n_samples = 60
    gaps, marks = model.sample_next(batch, n_samples)
    assert gaps.shape == marks.shape == (n_samples, batch.batch_size, batch.max_len) and marks.dtype == torch.int64
    valid = batch.mask.expand(n_samples, -1, -1)
    assert torch.isfinite(gaps[valid]).all() and (gaps[valid] > 0).all()
    with torch.no_grad():
        h = _states_after(model, batch).expand(n_samples, -1, -1, -1)
        _, log_s_k = model._log_density_survival_by_mark(h, gaps)                    # [S, B, L, K]
        _, log_s = model._joint(h, gaps)
    # given its mark, each gap's CDF value 1 - S_k(τ) is U(0, 1); marginally 1 - S(τ) = 1 - exp(-Λ) is too
    u_mark = -torch.expm1(log_s_k.gather(-1, marks.unsqueeze(-1)).squeeze(-1))
    assert stats.kstest(u_mark[valid].numpy(), "uniform").pvalue > 0.01
    assert stats.kstest(-torch.expm1(log_s)[valid].numpy(), "uniform").pvalue > 0.01
    # marks: counts after each sequence's last event against p(k | h)
    torch.manual_seed(1)
    n_samples = 800
    _, marks = model.sample_next(batch, n_samples)
    last = (batch.lengths - 1).expand(n_samples, -1).unsqueeze(-1)
    marks = marks.gather(2, last).squeeze(-1).T.numpy()
    with torch.no_grad():
        h_last = _states_after(model, batch)[torch.arange(batch.batch_size), batch.lengths - 1]
        probs = model.log_mark_probabilities(h_last).exp().numpy()
    counts = np.stack([np.bincount(m, minlength=K) for m in marks])
    assert stats.chisquare(counts.ravel(), (probs * n_samples).ravel(), ddof=len(counts) - 1).pvalue > 0.01


@pytest.mark.parametrize("cls", CLASSES)
def test_generation_draws_at_the_last_event_only(seqs: EventSequences, cls: type[TimeMarkTPP]) -> None:
    """sample_from_state draws only after each history's last event: with one-event histories that is every
    position, so it gives sample_next's draws (same RNG stream; equal up to rounding); on the full histories its
    marks follow p(k | h) at the last event (chi-square) and each gap, given its mark, that mark's time law there
    (KS)."""
    model = random_model(cls, 3, seqs)
    if cls is not LogNormMixTimeMark:                                # proper laws (w_k, α_k > 0): every draw finite
        with torch.no_grad():
            (model.w if cls is RMTPPTimeMark else model.thp.alpha).copy_(torch.tensor([0.4, 0.1, 0.7]))
    single = make_batch(EventSequences([t[:1] for t in seqs.times], [m[:1] for m in seqs.marks], K, seqs.windows),
                        dtype=torch.float64)
    torch.manual_seed(2)
    gaps, marks = model.sample_next(single, 1)
    torch.manual_seed(2)
    g, k = model.sample_from_state(model.encode(single))
    torch.testing.assert_close(g, gaps[0, :, 0], rtol=1e-12, atol=0)                    # [N, 1] vs [N, L] products
    assert (k == marks[0, :, 0]).all()
    batch = make_batch(seqs, dtype=torch.float64)
    S = 800
    torch.manual_seed(3)
    g, k = model.sample_from_state(model.repeat_state(model.encode(batch), S))             # [B S], sequence-major
    g, k = g.view(batch.batch_size, S).T, k.view(batch.batch_size, S).T                      # [S, B]
    assert torch.isfinite(g).all() and (g > 0).all()
    with torch.no_grad():
        h_last = _states_after(model, batch)[torch.arange(batch.batch_size), batch.lengths - 1]      # [B, D]
        probs = model.log_mark_probabilities(h_last).exp().numpy()
        _, log_s_k = model._log_density_survival_by_mark(h_last.expand(S, -1, -1), g)
    counts = np.stack([np.bincount(m, minlength=K) for m in k.T.numpy()])
    assert stats.chisquare(counts.ravel(), (probs * S).ravel(), ddof=len(counts) - 1).pvalue > 0.01
    u = -torch.expm1(log_s_k.gather(-1, k.unsqueeze(-1)).squeeze(-1))
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 0.01


def test_rmtpp_defective_laws_give_no_event_with_the_right_probability(seqs: EventSequences) -> None:
    model = random_model(RMTPPTimeMark, 4)
    with torch.no_grad():
        model.w.copy_(torch.tensor([-0.8, -2.0, 0.3], dtype=torch.float64))
    batch = make_batch(seqs, [0], dtype=torch.float64)
    torch.manual_seed(2)
    n_samples = 4000
    gaps, marks = model.sample_next(batch, n_samples)
    never = torch.isinf(gaps[:, 0, 0])
    assert (marks[:, 0, 0][never] == -1).all() and (marks[:, 0, 0][~never] >= 0).all()
    with torch.no_grad():
        h = _states_after(model, batch)[0, 0]
        c, p = model.ground(h), model.log_mark_probabilities(h).exp()
    w = model.w.detach()
    want = float((p * torch.where(w < 0, torch.exp(-c.exp() / w.abs()), torch.zeros_like(c))).sum())
    assert 0.05 < want < 0.95
    got = float(never.double().mean())
    assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / n_samples), (got, want)


def test_thp_defective_laws_give_no_event_with_the_dilogarithm_probability(seqs: EventSequences) -> None:
    # μ_k = 0 and α_k < 0: P(no event | k) = exp(-H_k(∞)), H_k(∞) = s_k² / |α_k| · (-Li₂(-e^{a_k / s_k})) (scipy's
    # spence(z) = Li₂(1 - z)); the draws go through the exponential envelope once the argument is <= 0.
    model = random_model(THPTimeMark, 4)
    with torch.no_grad():
        model.thp.alpha.copy_(torch.tensor([0.3, -4.0, -3.0], dtype=torch.float64))
    batch = make_batch(seqs, [0], dtype=torch.float64)
    torch.manual_seed(2)
    n_samples = 4000
    gaps, marks = model.sample_next(batch, n_samples)
    never = torch.isinf(gaps[:, 0, 0])
    assert (marks[:, 0, 0][never] == -1).all() and (marks[:, 0, 0][~never] >= 0).all()
    with torch.no_grad():
        h = _states_after(model, batch)[0, 0]
        a, p = h[:K].numpy(), model.log_mark_probabilities(h).exp().numpy()
    alpha, scale = model.thp.alpha.detach().numpy(), model.thp.scale.detach().numpy()
    mass = scale**2 / np.abs(alpha) * -special.spence(1 + np.exp(a / scale))
    want = float(np.sum(np.where(alpha < 0, p * np.exp(-mass), 0.0)))
    assert 0.05 < want < 0.95
    got = float(never.double().mean())
    assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / n_samples), (got, want)
    # the model's own H_k (64 Gauss–Legendre nodes) reaches the same mass far out
    with torch.no_grad():
        _, log_s_k = model._log_density_survival_by_mark(h, torch.tensor(60.0, dtype=torch.float64))
    np.testing.assert_allclose(-log_s_k.numpy()[alpha < 0], mass[alpha < 0], rtol=1e-6)


def test_thp_thinning_bounds_hold_at_random_points() -> None:
    # the constant bound over [u, u + Δ] (Δ = inf for α <= 0) and the exponential envelope (μ = 0, α < 0, argument
    # <= 0), each checked against the hazard at 200 points per case, 4,000 random cases
    gen = torch.Generator().manual_seed(0)
    n = 4000
    model = THPTimeMark(K).double()

    def rand(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)

    a, alpha, scale, start = rand(-8, 8), rand(-3, 3), torch.exp(rand(-2, 1)), rand(0, 5)
    base = torch.exp(rand(-4, 0))
    span = torch.where(alpha > 0, rand(0.01, 10), math.inf)
    grid = torch.linspace(0, 1, 200, dtype=torch.float64)
    for mu in (None, base):
        bound = model._hazard_bound(a, alpha, scale, mu, start, span)
        reach = torch.where(alpha > 0, span, 30.0)
        u = start[:, None] + reach[:, None] * grid
        eta = model._hazard(a[:, None], alpha[:, None], scale[:, None], None if mu is None else mu[:, None], u)
        assert (eta <= bound[:, None]).all()
    t, g, _ = model._propose(a, alpha, scale, None, start, span)           # μ = 0: envelope where it applies
    envelope = (alpha < 0) & (a + alpha * start <= 0)
    assert envelope.sum() > 500
    point = g > 0
    # no point: beyond a finite horizon (α > 0: moved to its end), or never (only an envelope's finite mass)
    beyond = ~point & (alpha > 0)
    assert (t[beyond] == start[beyond] + span[beyond]).all()
    assert (torch.isinf(t[~point & ~beyond]) & envelope[~point & ~beyond]).all() and (~point & ~beyond).sum() > 100
    eta = model._hazard(a[point], alpha[point], scale[point], None, t[point])
    assert (eta <= g[point]).all() and (t[point] >= start[point]).all()
    # the envelope itself dominates on a grid beyond the start
    u = start[envelope, None] + 30.0 * grid
    env = scale[envelope, None] * torch.exp((a[envelope, None] + alpha[envelope, None] * u) / scale[envelope, None])
    eta = model._hazard(a[envelope, None], alpha[envelope, None], scale[envelope, None], None, u)
    assert (eta <= env * (1 + 1e-12)).all()                            # equal to rounding where e^x is tiny


def test_thp_with_zero_weights_is_the_poisson_process(seqs: EventSequences) -> None:
    mu = np.array([0.5, 0.2, 0.8])
    model = random_model(THPTimeMark, 5)
    with torch.no_grad():
        model.thp.head.weight.zero_()
        model.thp.log_scale.zero_()
        model.thp.alpha.zero_()
        model.thp.head.bias.copy_(torch.as_tensor(np.concatenate([np.full(K, np.log(np.expm1(mu.sum()))),
                                                                   np.log(mu / mu.sum())])))
    batch = make_batch(seqs, dtype=torch.float64)
    for conv in ("easytpp", "full"):
        ll = model.log_likelihood(batch, conv)
        np.testing.assert_allclose(ll.total.detach().numpy(), PoissonProcess(mu).log_likelihood(seqs, conv),
                                   rtol=1e-12)


# --------------------------------------------------------------------------------------------- mark rule


def test_predicted_mark_maximises_the_joint_density_brute_force() -> None:
    # one state, two marks: mark 0 likely but slow (hazard decays), mark 1 rarer but fast. The joint density
    # p_k f_k(τ) is maximised by mark 1 for small τ, by mark 0 past a crossing that numpy finds on a fine grid.
    model = RMTPPTimeMark(2, hidden_size=4, embedding_size=2).double()
    b, w, logits = np.array([-2.0, 0.5]), np.array([0.0, 0.3]), np.array([1.0, 0.0])
    with torch.no_grad():
        model.ground.weight.zero_()
        model.ground.bias.copy_(torch.as_tensor(b))
        model.w.copy_(torch.as_tensor(w))
        model.mark_logits.weight.zero_()
        model.mark_logits.bias.copy_(torch.as_tensor(logits))
    grid = np.linspace(1e-3, 6.0, 6000)
    cum = np.stack([np.exp(b[0]) * grid, np.exp(b[1]) * np.expm1(w[1] * grid) / w[1]], axis=1)
    joint = logits - logsumexp(logits) + b + w * grid[:, None] - cum                      # [G, 2]
    want = joint.argmax(1)
    assert want[0] == 1 and want[-1] == 0                                                # the rule does switch
    times = np.cumsum(grid)                                                              # gaps = the grid
    data = EventSequences([times], [np.zeros(len(times), dtype=np.int64)], 2, np.array([[0.0, times[-1] + 1]]))
    batch = make_batch(data, dtype=torch.float64)
    got = model.predict_marks(batch)[0].numpy()
    np.testing.assert_array_equal(got, want)
    pred = joint_density_mark_predictions(model, data, dtype=torch.float64)
    np.testing.assert_array_equal(pred["predicted_mark"], want[1:])                      # events 2..N
    np.testing.assert_array_equal(pred["true_mark"], np.zeros(len(times) - 1))


def test_joint_rule_is_argmax_of_the_intensity_and_of_p_for_intensity_free(seqs: EventSequences) -> None:
    model = random_model(LogNormMixTimeMark, 5, seqs)
    batch = make_batch(seqs, dtype=torch.float64)
    with torch.no_grad():
        lam = model.intensity(batch, batch.times)
    pred = model.predict_marks(batch)
    target = batch.mask.clone()
    target[:, 0] = False
    torch.testing.assert_close(pred[target], lam.argmax(-1)[target], rtol=0, atol=0)
    got = joint_density_mark_predictions(model, seqs, dtype=torch.float64)["predicted_mark"]
    np.testing.assert_array_equal(got, pred[target].numpy())
    ifm = IntensityFree(K, hidden_size=8, embedding_size=4).double().set_gap_statistics(seqs)
    with torch.no_grad():
        p_arg = ifm.mark_logits(ifm._states(batch)[:, :-1]).argmax(-1)
    np.testing.assert_array_equal(joint_density_mark_predictions(ifm, seqs, dtype=torch.float64)["predicted_mark"],
                                  p_arg[target].numpy())


# --------------------------------------------------------------------------------------------- batching, grads


@pytest.mark.parametrize("cls", CLASSES)
def test_padding_and_causality(seqs: EventSequences, cls: type[TimeMarkTPP]) -> None:
    model = random_model(cls, 6, seqs)
    order = np.argsort(seqs.lengths)
    short, long_ = int(order[0]), int(order[-1])
    alone, mixed = make_batch(seqs, [short], dtype=torch.float64), make_batch(seqs, [short, long_], dtype=torch.float64)
    for conv in ("easytpp", "full"):
        a, m = model.log_likelihood(alone, conv), model.log_likelihood(mixed, conv)
        for part in ("event_term", "compensator", "num_scored"):
            torch.testing.assert_close(getattr(m, part)[:1], getattr(a, part), rtol=1e-12, atol=1e-12)
    q = torch.linspace(2.0, 22.0, 50, dtype=torch.float64)
    torch.testing.assert_close(model.intensity(mixed, torch.stack([q, q]))[:1], model.intensity(alone, q[None]),
                               rtol=1e-12, atol=1e-12)
    # the intensity before t_k ignores events at and after t_k
    t, m = seqs.times[long_], seqs.marks[long_]
    k = len(t) // 2
    t2, m2 = t.copy(), m.copy()
    t2[k:] += 0.5 * np.arange(1, len(t) - k + 1)
    m2[k:] = (m2[k:] + 1) % K
    one = EventSequences([t], [m], K, seqs.windows[[long_]])
    other = EventSequences([t2], [m2], K, np.array([[seqs.windows[long_, 0], t2[-1] + 1]]))
    q = torch.linspace(2.0, float(t[k]), 40, dtype=torch.float64)[None]
    torch.testing.assert_close(model.intensity(make_batch(one, dtype=torch.float64), q),
                               model.intensity(make_batch(other, dtype=torch.float64), q), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", CLASSES)
def test_gradients_reach_every_parameter_and_dtypes(seqs: EventSequences, cls: type[TimeMarkTPP]) -> None:
    model = random_model(cls, 7, seqs)
    loss = model.loss(make_batch(seqs, dtype=torch.float64), "full")
    assert loss.dtype == torch.float64
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    model32 = small(cls)
    batch = make_batch(seqs)
    ll = model32.log_likelihood(batch, "full")
    assert ll.total.dtype == torch.float32 and torch.isfinite(ll.total).all()
    gaps, marks = model32.sample_next(batch, 3)
    assert gaps.dtype == torch.float32 and marks.dtype == torch.int64
    assert model.log_likelihood(batch, "easytpp").total.dtype == torch.float64     # float32 batch converted


def test_lnm_fit_to_a_dependent_hawkes_process_beats_the_poisson_mle() -> None:
    process = HawkesProcess.from_jump_sizes([0.3, 0.15], [[0.6, 0.3], [0.6, 0.9]], 1.5)
    train, dev, test = (process.simulate(n, (0.0, 60.0), seed=s) for n, s in ((60, 20), (15, 21), (40, 22)))
    counts = np.bincount(np.concatenate(train.marks), minlength=2)
    poisson = PoissonProcess(counts / (60.0 * len(train)))                               # the Poisson MLE
    torch.manual_seed(0)
    model = LogNormMixTimeMark(2, hidden_size=16, embedding_size=4, num_components=4)
    fit_model(model, train, dev, convention="full", epochs=10, batch_size=16, lr=1e-2, device="cpu")
    fitted = float(evaluate_log_likelihood(model, test, "full").per_event())
    baseline = poisson.log_likelihood_per_event(test, "full")
    oracle = process.log_likelihood_per_event(test, "full")
    assert baseline + 0.05 < fitted < oracle + 0.05, (baseline, fitted, oracle)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", CLASSES)
def test_cuda_matches_cpu(seqs: EventSequences, cls: type[TimeMarkTPP]) -> None:
    model = random_model(cls, 8, seqs)
    batch = make_batch(seqs, dtype=torch.float64)
    cpu = model.log_likelihood(batch, "full").total
    q = batch.times + 0.2
    lam_cpu = model.intensity(batch, q)
    model = model.to("cuda")
    cuda = model.log_likelihood(batch.to("cuda"), "full").total
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.intensity(batch.to("cuda"), q.cuda()).cpu(), lam_cpu, rtol=1e-9, atol=1e-12)
    gaps, marks = model.sample_next(batch.to("cuda"), 4)
    assert gaps.device.type == marks.device.type == "cuda"
    assert model.predict_marks(batch.to("cuda")).device.type == "cuda"
