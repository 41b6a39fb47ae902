"""FullyNN (tpp.models.fullynn) against independent truths.

Truths: torch.autograd.grad of the cumulative hazard (the intensity is its derivative), a numpy renewal-process
log-likelihood (history weights zeroed: Φ in closed form), Gauss–Legendre quadrature of the model's public
intensity (compensator, convention identity, time rescaling of the draws), the exact total mass ``M`` (the
probability exp(-M) of no next event), scipy's brentq for the inversion tolerance, and a fit to a simulated
Hawkes process against the Poisson MLE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from tests.tpp.models import softplus_checks as checks
from tpp.data import EventSequences, make_batch
from tpp.models.fullynn import FullyNN

from .likelihood_checks import check_bad_inputs, check_compensator_and_convention_identity, intervals, quadrature

K = 3


def random_model(seed: int = 0, **kwargs: object) -> FullyNN:
    torch.manual_seed(seed)
    kw: dict[str, object] = {"hidden_size": 8}
    kw.update(kwargs)
    model = FullyNN(K, **kw).double()  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model






# --------------------------------------------------------------------------------------------- hyperparameters


def test_attributes_and_bad_hyperparameters() -> None:
    assert FullyNN.name == "fullynn" and FullyNN.exact_compensator is True
    for kwargs, field in [({"hidden_size": 0}, "hidden_size"), ({"hidden_size": 2.5}, "hidden_size"),
                          ({"embedding_size": 0}, "embedding_size"), ({"num_mlp_layers": 0}, "num_mlp_layers"),
                          ({"num_mlp_layers": True}, "num_mlp_layers"), ({"cell": "relu"}, "cell"),
                          ({"sample_rtol": 0.0}, "sample_rtol"), ({"sample_rtol": 1.5}, "sample_rtol"),
                          ({"max_sample_rounds": 0}, "max_sample_rounds")]:
        with pytest.raises(ValueError, match=field):
            FullyNN(K, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_marks"):
        FullyNN(0)


def test_bad_inputs() -> None:
    check_bad_inputs(lambda k: FullyNN(k, hidden_size=4), make_batch(checks.seqs(2)))


# --------------------------------------------------------------------------------------------- the hazard network


@pytest.mark.parametrize("layers", [1, 3])
def test_intensity_is_the_derivative_of_the_cumulative_hazard(layers: int) -> None:
    model = random_model(1, num_mlp_layers=layers)
    base = model.hazard.first_layer(3 * torch.randn(50, 8, dtype=torch.float64))
    tau = (5 * torch.rand(50, dtype=torch.float64)).requires_grad_()
    phi, log_lam = model.hazard(base, tau)
    grads = torch.stack([torch.autograd.grad(phi[:, k].sum(), tau, retain_graph=True)[0] for k in range(K)], -1)
    torch.testing.assert_close(log_lam.exp(), grads, rtol=1e-10, atol=1e-14)
    # Φ(0) = 0 exactly and Φ is increasing in τ
    zero, _ = model.hazard(base, torch.zeros(50, dtype=torch.float64))
    assert (zero == 0).all()
    grid = torch.linspace(0, 20, 200, dtype=torch.float64)
    path, _ = model.hazard(base[:1], grid)
    assert (path.diff(dim=0) > 0).all()


def test_cumulative_hazard_keeps_its_precision_at_small_gaps() -> None:
    # Φ(τ) / τ -> Σ λ(0) as τ -> 0; F(τ) - F(0) computed naively loses all digits at τ = 1e-12 (1e-4 rel. in float64)
    model = random_model(2)
    base = model.hazard.first_layer(torch.randn(20, 8, dtype=torch.float64))
    with torch.no_grad():
        _, log_lam0 = model.hazard(base, torch.zeros(20, dtype=torch.float64))
        for tau in (1e-12, 1e-8):
            phi, _ = model.hazard(base, torch.full((20,), tau, dtype=torch.float64))
            torch.testing.assert_close(phi / tau, log_lam0.exp(), rtol=1e-6, atol=0)
        # float32 too
        m32 = random_model(2).float()
        phi32, _ = m32.hazard(base.float(), torch.full((20,), 1e-6))
        torch.testing.assert_close(phi32.double() / 1e-6, log_lam0.exp(), rtol=1e-3, atol=0)


def test_saturated_units_give_finite_log_intensity() -> None:
    model = random_model(3)
    base = torch.full((4, 8), 60.0, dtype=torch.float64)          # every tanh saturated: 1 - tanh² underflows
    _, log_lam = model.hazard(base, torch.tensor([0.0, 1.0, 10.0, 100.0], dtype=torch.float64))
    assert torch.isfinite(log_lam).all() and (log_lam < -100).all()


# ------------------------------------------------------------------------------------- time unit, initialisation


def scaled(data: EventSequences, c: float) -> EventSequences:
    assert data.windows is not None
    return EventSequences([c * t for t in data.times], data.marks, data.num_marks, c * data.windows)


def test_prepare_sets_the_mean_gap_as_a_saved_time_unit() -> None:
    data = checks.seqs(4)
    model = random_model(13)
    model.prepare(data)
    gaps = np.concatenate([np.diff(t) for t in data.times])
    assert float(model.time_unit) == pytest.approx(float(gaps[gaps > 0].mean()), rel=1e-15)
    assert float(model.time_unit) != 1.0
    copy = random_model(14)
    copy.load_state_dict(model.state_dict())
    batch = make_batch(data, dtype=torch.float64)
    torch.testing.assert_close(copy.log_likelihood(batch, "full").total, model.log_likelihood(batch, "full").total,
                               rtol=0, atol=0)
    # no positive gap: the unit stays 1
    single = FullyNN(K, hidden_size=4)
    single.prepare(EventSequences([np.array([1.0])], [np.array([0])], K))
    assert float(single.time_unit) == 1.0


@pytest.mark.parametrize("c", [1e-3, 7.3, 250.0])
def test_log_likelihood_is_invariant_to_the_time_scale_up_to_log_c(c: float) -> None:
    # times × c with time_unit × c: Φ is unchanged and λ(c t) = λ(t) / c (change of variable), so the event term
    # loses log c per scored event and the compensator is the same
    data = checks.seqs(4)
    model = random_model(15)
    model.prepare(data)
    big = random_model(15)
    big.prepare(scaled(data, c))
    torch.testing.assert_close(big.time_unit, c * model.time_unit, rtol=1e-14, atol=0)
    batch, big_batch = make_batch(data, dtype=torch.float64), make_batch(scaled(data, c), dtype=torch.float64)
    for conv in ("easytpp", "full"):
        ll, ll_c = model.log_likelihood(batch, conv), big.log_likelihood(big_batch, conv)
        torch.testing.assert_close(ll_c.compensator, ll.compensator, rtol=1e-11, atol=0)
        shift = ll.num_scored.double() * math.log(c)
        torch.testing.assert_close(ll_c.event_term, ll.event_term - shift, rtol=1e-11, atol=1e-9)
    q = batch.times[:, :3] + 0.37
    torch.testing.assert_close(big.intensity(big_batch, c * q), model.intensity(batch, q) / c, rtol=1e-11, atol=0)
    # the draws scale with c (same uniforms): each is within sample_rtol / 2 of its root, relative to the
    # bracket's end, and the roots scale exactly
    torch.manual_seed(4)
    gaps, marks = model.sample_next(batch, 20)
    torch.manual_seed(4)
    gaps_c, marks_c = big.sample_next(big_batch, 20)
    torch.testing.assert_close(gaps_c, c * gaps, rtol=2 * model.sample_rtol, atol=0)
    assert (marks_c == marks).all()


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_initial_intensity_is_one_per_time_unit_and_the_mass_is_large(layers: int) -> None:
    """At initialisation: Σ_k λ_k(0) ∈ [0.95, 1] / unit at h = 0, Φ close to linear over 4 units, M >= 20."""
    data = checks.seqs(8)
    torch.manual_seed(16)
    model = FullyNN(K, num_mlp_layers=layers).double()
    model.prepare(data)
    unit = float(model.time_unit)
    with torch.no_grad():
        base0 = model.hazard.first_layer(torch.zeros(1, 32, dtype=torch.float64))
        lam0 = model.intensity(make_batch(data, [0], dtype=torch.float64), torch.tensor([[data.windows[0][0]]]))
        _, log_lam = model._hazard(base0, torch.zeros(1, dtype=torch.float64))
        assert 0.95 <= float(log_lam.exp().sum()) * unit <= 1 + 1e-6                # float32 initialisation
        torch.testing.assert_close(lam0.sum(), log_lam.exp().sum())          # h_init = 0: the first interval
        # the states the untrained model reaches on data, and h = 0
        batch = make_batch(data, dtype=torch.float64)
        base = torch.cat([model.hazard.first_layer(model._states(batch)[:, 1:])[batch.mask], base0])
        n = base.shape[0]

        def phi(units: float) -> torch.Tensor:
            return model._hazard(base, torch.full((n,), units * unit, dtype=torch.float64),
                                 with_log_intensity=False)[0].sum(-1)

        rate = model._hazard(base, torch.zeros(n, dtype=torch.float64))[1].exp().sum(-1) * unit  # type: ignore[union-attr]
        assert 0.8 < float(rate.min()) and float(rate.max()) < 1.05, rate      # states other than 0: near 1
        assert float(phi(4.0).min()) > 3.0 and float(phi(4.0).max()) < 4.0           # nearly linear over 4 units
        assert float(phi(math.inf).min()) >= 20.0                                      # P(no next event) < 2e-9


# --------------------------------------------------------------------------------------------- closed forms


def test_history_free_model_matches_a_numpy_renewal_log_likelihood() -> None:
    # U = 0: every interval has the same Φ_k(τ) = softplus(r_k⁺·tanh(b + u⁺ τ) + d_k) - softplus(r_k⁺·tanh(b) + d_k)
    data = checks.seqs(4)
    model = random_model(4, num_mlp_layers=1)
    with torch.no_grad():
        model.hazard.state_proj.weight.zero_()
    hz = model.hazard
    b = hz.state_proj.bias.detach().numpy()
    u = np.log1p(np.exp(hz.raw_time.detach().numpy()))
    r = np.log1p(np.exp(hz.raw_out.detach().numpy()))
    d = hz.out_bias.detach().numpy()

    def softplus(x: np.ndarray) -> np.ndarray:
        return np.logaddexp(0, x)

    def phi(tau: np.ndarray) -> np.ndarray:
        return (softplus(np.tanh(b + np.outer(tau, u)) @ r.T + d) - softplus(np.tanh(b) @ r.T + d)).sum(1)

    def lam(tau: np.ndarray) -> np.ndarray:                        # [n, K]
        o = np.tanh(b + np.outer(tau, u)) @ r.T + d
        return 1 / (1 + np.exp(-o)) * (((1 - np.tanh(b + np.outer(tau, u)) ** 2) * u) @ r.T)

    batch = make_batch(data, dtype=torch.float64)
    for conv in ("easytpp", "full"):
        ll = model.log_likelihood(batch, conv)
        for i, (t, m) in enumerate(zip(data.times, data.marks, strict=True)):
            ws, we = data.windows[i]
            taus = np.diff(np.concatenate([[ws], t]))
            if conv == "easytpp":
                taus, m = taus[1:], m[1:]
            event = np.log(lam(taus)[np.arange(len(m)), m]).sum()
            comp = phi(taus).sum() + (phi(np.array([we - t[-1]]))[0] if conv == "full" else 0.0)
            np.testing.assert_allclose(ll.event_term[i].item(), event, rtol=1e-12)
            np.testing.assert_allclose(ll.compensator[i].item(), comp, rtol=1e-12)


@pytest.mark.parametrize(("layers", "cell"), [(2, "lstm"), (1, "gru"), (3, "rnn")])
def test_compensator_and_convention_identity_against_quadrature(layers: int, cell: str) -> None:
    data = checks.seqs(4)
    model = random_model(5, num_mlp_layers=layers, cell=cell)
    batch = make_batch(data, dtype=torch.float64)
    starts, ends = intervals(batch)
    quad = quadrature(model, batch, starts, ends, n_nodes=256)            # tanh kinks: many nodes
    check_compensator_and_convention_identity(model, batch, quad, rtol=1e-9)


def test_padding_and_causality() -> None:
    checks.check_padding_invariance(lambda k, **kw: FullyNN(k, hidden_size=8, **kw))
    checks.check_causality(lambda k, **kw: FullyNN(k, hidden_size=8, **kw))


# --------------------------------------------------------------------------------------------- sampling


def test_inversion_meets_its_tolerance() -> None:
    model = random_model(6, sample_rtol=1e-3)
    base = model.hazard.first_layer(torch.randn(40, 8, dtype=torch.float64)).detach()
    with torch.no_grad():
        mass = model.hazard(base, torch.full((40,), math.inf, dtype=torch.float64))[0].sum(-1)
        e = mass * torch.rand(40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        for rtol in (1e-3, 1e-6):
            model.sample_rtol = rtol
            tau, m = model.invert_cumulative_hazard(base, e)
            torch.testing.assert_close(m, mass, rtol=0, atol=0)
            errors = []
            for i in range(40):
                def gap(s: float, i: int = i) -> float:
                    return float(model.hazard(base[i], torch.tensor(s, dtype=torch.float64))[0].sum() - e[i])
                hi = 1.0
                while gap(hi) < 0:
                    hi *= 2
                root = optimize.brentq(gap, 0.0, hi, xtol=1e-15, rtol=1e-15)
                errors.append(abs(float(tau[i]) - root) / root)
            assert max(errors) <= rtol / 2 * (1 + 1e-6)
            assert max(errors) > rtol / 1e4                          # the tolerance is used, not far exceeded
        # levels at or above the mass: no next event
        tau, _ = model.invert_cumulative_hazard(base[:3], torch.stack([mass[0], 2 * mass[1], mass[2] + 1]))
        assert torch.isinf(tau).all()


def test_sample_next_follows_the_model_law_and_may_end() -> None:
    """Time rescaling (quadrature of the public intensity), the no-event probability exp(-M), and the marks."""
    full = checks.seqs(4)
    data = EventSequences([t[:6] for t in full.times], [m[:6] for m in full.marks], K, full.windows)
    batch = make_batch(data, dtype=torch.float64)
    model = random_model(7)
    with torch.no_grad():
        # output weights / 15: a total mass of order 1 (about 20 at initialisation), so "no next event" is frequent
        r = torch.nn.functional.softplus(model.hazard.raw_out) / 15
        model.hazard.raw_out.copy_(r + torch.log(-torch.expm1(-r)))
    S = 1500
    torch.manual_seed(1)
    gaps, marks = model.sample_next(batch, S)
    assert gaps.shape == marks.shape == (S, 4, batch.max_len)
    assert (gaps[:, ~batch.mask] == 0).all() and (gaps[:, batch.mask] > 0).all()
    rows = torch.arange(4)
    last = batch.lengths - 1
    tau, mk = gaps[:, rows, last], marks[:, rows, last]                               # [S, B]
    never = torch.isinf(tau)
    assert ((mk == -1) == never).all()
    inf = torch.full((S, 4, batch.max_len), math.inf, dtype=torch.float64)
    mass = model.cumulative_hazard(batch, inf)[0, rows, last]                          # [B]
    p_never = torch.exp(-mass)
    assert 0.05 < float(p_never.min()) and float(p_never.max()) < 0.95
    z = (never.sum(0) - S * p_never) / torch.sqrt(S * p_never * (1 - p_never))
    assert z.abs().max() < 3.5, z
    t_last = batch.times[rows, last]
    finite = torch.where(never, 0.0, tau)
    comp = quadrature(model, batch, t_last.expand(S, -1).T, (t_last + finite).T).T     # [S, B]
    u = (-torch.expm1(-comp) / -torch.expm1(-mass))[~never]                           # truncated Exp(1) -> U(0, 1)
    assert stats.kstest(u.numpy(), "uniform").pvalue > 0.01
    # the exact Φ at the draws agrees with the quadrature
    torch.testing.assert_close(model.cumulative_hazard(batch, torch.where(torch.isinf(gaps), 0, gaps))[:, rows, last],
                               comp, rtol=1e-9, atol=1e-12)
    # marks: k with probability λ_k / Σλ at the drawn time
    with torch.no_grad():
        probs = torch.zeros(S, 4, K, dtype=torch.float64)
        for b in range(4):
            one = make_batch(data, [b], dtype=torch.float64)
            lam = model.intensity(one, (t_last[b] + finite[:, b])[None])[0]
            probs[:, b] = lam / lam.sum(-1, keepdim=True)
    keep = ~never
    onehot = torch.nn.functional.one_hot(mk.clamp_min(0), K).double()[keep]
    p = probs[keep]
    zm = (onehot - p).sum(0) / (p * (1 - p)).sum(0).sqrt()
    assert zm.abs().max() < 3.5, zm


def test_sample_next_all_positions_time_rescaling() -> None:
    batch = make_batch(checks.seqs(3), dtype=torch.float64)
    model = random_model(8)
    torch.manual_seed(2)
    gaps, _ = model.sample_next(batch, 40)
    inf = torch.full_like(gaps, math.inf)
    mass = model.cumulative_hazard(batch, inf)[:, batch.mask]
    g = gaps[:, batch.mask]
    comp = model.cumulative_hazard(batch, torch.where(torch.isinf(gaps), 0, gaps))[:, batch.mask]
    finite = torch.isfinite(g)
    u = (-torch.expm1(-comp) / -torch.expm1(-mass))[finite]
    assert stats.kstest(u.numpy(), "uniform").pvalue > 0.01


def test_bracketing_cap_raises() -> None:
    model = random_model(9, max_sample_rounds=1)
    base = model.hazard.first_layer(torch.randn(5, 8, dtype=torch.float64)).detach()
    with pytest.raises(RuntimeError, match="max_sample_rounds"):
        model.invert_cumulative_hazard(base, torch.full((5,), 1e-9, dtype=torch.float64))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_incremental_generation_matches_the_batch_encoding_and_law(cell: str) -> None:
    data = checks.seqs(3)
    prefix = EventSequences([t[:-1] for t in data.times], [m[:-1] for m in data.marks], K, data.windows)
    model = random_model(12, cell=cell)
    gaps = torch.tensor([t[-1] - t[-2] for t in data.times], dtype=torch.float64)
    marks = torch.tensor([int(m[-1]) for m in data.marks])
    stepped = model.advance(model.encode(make_batch(prefix, dtype=torch.float64)), gaps, marks)
    whole = model.encode(make_batch(data, dtype=torch.float64))
    for got, want in zip(stepped, whole, strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # draws from the state: Φ(τ) is Exp(1) truncated at the mass
    torch.manual_seed(3)
    state = model.repeat_state(whole, 600)
    tau, mk = model.sample_from_state(state)
    base = model.hazard.first_layer(state[0])
    with torch.no_grad():
        mass = model.hazard(base, torch.full_like(tau, math.inf), with_log_intensity=False)[0].sum(-1)
        finite = torch.isfinite(tau)
        comp = model.hazard(base, torch.where(finite, tau, 0), with_log_intensity=False)[0].sum(-1)
    assert ((mk == -1) == ~finite).all() and (mk < K).all()
    u = (-torch.expm1(-comp) / -torch.expm1(-mass))[finite]
    assert stats.kstest(u.numpy(), "uniform").pvalue > 0.01


# --------------------------------------------------------------------------------------------- training, devices


def test_gradients_and_dtypes() -> None:
    checks.check_gradients(lambda k, **kw: FullyNN(k, hidden_size=8, **kw))
    data = checks.seqs(3)
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = FullyNN(K, hidden_size=8).to(dtype)
        batch = make_batch(data, dtype=dtype)
        ll = model.log_likelihood(batch, "full")
        assert ll.total.dtype == dtype and torch.isfinite(ll.total).all()
        lam = model.intensity(batch, batch.times[:, :2] + 0.1)
        assert lam.shape == (3, 2, K) and lam.dtype == dtype and (lam > 0).all()
        gaps, marks = model.sample_next(batch, 5)
        assert gaps.dtype == dtype and marks.dtype == torch.int64
    assert FullyNN(K).double().log_likelihood(make_batch(data), "easytpp").total.dtype == torch.float64


def test_fit_beats_poisson() -> None:
    checks.check_fit_beats_poisson(lambda k, **kw: FullyNN(k, hidden_size=16, **kw))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = random_model(10)
    batch = make_batch(checks.seqs(3), dtype=torch.float64)
    cpu = model.log_likelihood(batch, "full").total
    cuda = model.to("cuda").log_likelihood(batch.to("cuda"), "full").total
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-9)
    gaps, marks = model.sample_next(batch, 4)
    assert gaps.device.type == marks.device.type == "cuda"
    lam = model.intensity(batch, batch.times.to("cuda") + 0.1)
    assert lam.device.type == "cuda"
