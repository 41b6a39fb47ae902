"""ODE-TPP (tpp.models.ode_tpp) against independent truths.

Truths: the exact Poisson log-likelihood (intensity weights zeroed), a numpy model with the linear flow of
``A = 0`` in closed form (``h(t) = c + (h_0 - c) e^{-t}``), a hand-written GRU update and scipy quadrature of
its intensity, Gauss–Legendre quadrature of the model's public intensity (compensator, convention identity),
the proven box and intensity bounds at random points, the time-rescaling theorem and the mark probabilities for
sample_next, the inversion tolerance, and a fit to a simulated Hawkes process against the Poisson MLE.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats

from nde.solvers import solve_ode
from tests.tpp.models import softplus_checks as checks
from tpp.data import EventSequences, make_batch
from tpp.models.ode_tpp import ODETPP

from .likelihood_checks import check_bad_inputs, check_compensator_and_convention_identity, intervals, quadrature

K = 3


def random_model(seed: int = 0, scale: float = 0.3, **kwargs: object) -> ODETPP:
    """Weights perturbed away from initialisation, and a dynamics matrix doubled: a clearly non-linear flow."""
    torch.manual_seed(seed)
    kw: dict[str, object] = {"hidden_size": 8}
    kw.update(kwargs)
    model = ODETPP(K, **kw).double()  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
        model.dynamics.weight.mul_(2.0)
    return model


def short_seqs(n: int = 3, length: int = 8) -> EventSequences:
    full = checks.seqs(n)
    return EventSequences([t[:length] for t in full.times], [m[:length] for m in full.marks], K,
                          np.stack([full.windows[:, 0], [t[length - 1] + 1.5 for t in full.times]], axis=1))






# --------------------------------------------------------------------------------------------- hyperparameters


def test_attributes_and_bad_hyperparameters() -> None:
    assert ODETPP.name == "ode_tpp" and ODETPP.exact_compensator is False
    for kwargs, field in [({"hidden_size": 0}, "hidden_size"), ({"embedding_size": 1.5}, "embedding_size"),
                          ({"method": "rk45"}, "method"), ({"method": "explicit_adams"}, "method"),
                          ({"steps_per_interval": 0}, "steps_per_interval"), ({"max_step": 0.0}, "max_step"),
                          ({"rtol": -1.0}, "rtol"), ({"atol": 0}, "atol"), ({"sample_rtol": 1.0}, "sample_rtol"),
                          ({"sample_max_chunk": -2.0}, "sample_max_chunk"),
                          ({"max_sample_rounds": 0}, "max_sample_rounds")]:
        with pytest.raises(ValueError, match=field):
            ODETPP(K, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_marks"):
        ODETPP(0)


def test_bad_inputs() -> None:
    check_bad_inputs(lambda k: ODETPP(k, hidden_size=4), make_batch(checks.seqs(2)))


# --------------------------------------------------------------------------------------------- closed forms


def test_zero_intensity_weights_give_the_exact_poisson_log_likelihood() -> None:
    # λ_k = softplus(b_k) constant: the default 4-step RK4 integrates it exactly
    checks.check_poisson_truth(lambda k, **kw: ODETPP(k, hidden_size=8, **kw), lambda m: m.head.weight.zero_())


def test_linear_flow_matches_a_numpy_model() -> None:
    """A = 0: h(t) = c + (h_0 - c) e^{-t} with c = tanh(a); GRU jumps by hand; scipy quad of the intensity."""
    data = short_seqs(3, 8)
    model = random_model(1, steps_per_interval=64)
    with torch.no_grad():
        model.dynamics.weight.zero_()
    P = {k: v.detach().numpy() for k, v in model.named_parameters()}
    c = np.tanh(P["dynamics.bias"])
    H = 8

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    def gru(x: np.ndarray, h: np.ndarray) -> np.ndarray:
        gi = P["jump.weight_ih"] @ x + P["jump.bias_ih"]
        gh = P["jump.weight_hh"] @ h + P["jump.bias_hh"]
        r, z = sigmoid(gi[:H] + gh[:H]), sigmoid(gi[H:2 * H] + gh[H:2 * H])
        n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
        return (1 - z) * n + z * h

    def lam(h: np.ndarray) -> np.ndarray:
        return np.logaddexp(0, P["head.weight"] @ h + P["head.bias"])

    def flow(h: np.ndarray, t: float) -> np.ndarray:
        return c + (h - c) * np.exp(-t)

    batch = make_batch(data, dtype=torch.float64)
    ll = model.log_likelihood(batch, "full")
    for i, (t, m) in enumerate(zip(data.times, data.marks, strict=True)):
        ws, we = data.windows[i]
        h = np.tanh(P["raw_h0"])
        event, comp = 0.0, 0.0
        for tj, mj, start in zip(t, m, np.concatenate([[ws], t[:-1]]), strict=True):
            comp += integrate.quad(lambda s, h=h: lam(flow(h, s)).sum(), 0, tj - start, epsabs=1e-13, epsrel=1e-13)[0]
            h_minus = flow(h, tj - start)
            event += np.log(lam(h_minus)[mj])
            h = gru(P["embedding.weight"][mj], h_minus)
        comp += integrate.quad(lambda s, h=h: lam(flow(h, s)).sum(), 0, we - t[-1], epsabs=1e-13, epsrel=1e-13)[0]
        np.testing.assert_allclose(ll.event_term[i].item(), event, rtol=1e-8)
        np.testing.assert_allclose(ll.compensator[i].item(), comp, rtol=1e-8)


def test_compensator_and_convention_identity_against_quadrature() -> None:
    # fine RK4 steps: the augmented ODE's compensator is the integral of the public intensity (RK4 error ~1e-9)
    batch = make_batch(short_seqs(2, 6), dtype=torch.float64)
    model = random_model(2, steps_per_interval=128)
    starts, ends = intervals(batch)
    quad = quadrature(model, batch, starts, ends, n_nodes=32)
    check_compensator_and_convention_identity(model, batch, quad, rtol=1e-8)


def test_adaptive_solver_matches_fine_fixed_steps() -> None:
    batch = make_batch(short_seqs(2, 5), dtype=torch.float64)
    with torch.no_grad():
        fine = random_model(2, steps_per_interval=128).log_likelihood(batch, "full")
        adaptive = random_model(2, method="dopri5", rtol=1e-8, atol=1e-10).log_likelihood(batch, "full")
    torch.testing.assert_close(adaptive.compensator, fine.compensator, rtol=1e-7, atol=0)
    torch.testing.assert_close(adaptive.event_term, fine.event_term, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_step_flow_equals_the_augmented_native_solve(method: str) -> None:
    """The stage-weight compensator (no augmented state) is the native solver's augmented RK solve, to rounding."""
    model = random_model(21, method=method, steps_per_interval=3, max_step=None)
    gen = torch.Generator().manual_seed(0)
    h0 = torch.tanh(torch.randn(7, 8, dtype=torch.float64, generator=gen))
    delta = 2 * torch.rand(7, dtype=torch.float64, generator=gen)
    delta[0] = 0.0
    weight = torch.cat([model.dynamics.weight, model.head.weight])
    bias = torch.cat([model.dynamics.bias, model.head.bias])

    def field(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pre = F.linear(y[:, :8], weight, bias)
        return torch.cat([torch.tanh(pre[:, :8]) - y[:, :8], F.softplus(pre[:, 8:]).sum(-1, keepdim=True)],
                         dim=-1) * delta.unsqueeze(-1)

    y0 = torch.cat([h0, torch.zeros(7, 1, dtype=torch.float64)], dim=-1)
    end = solve_ode(field, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method=method, step_size=1 / 3,
                    backend="native").ys[:, -1]
    h, comp = model._flow(h0, delta)
    torch.testing.assert_close(h, end[:, :8], rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(comp, end[:, 8], rtol=1e-13, atol=1e-15)
    assert float(comp[0].detach()) == 0.0 and (h[0] == h0[0]).all()
    # and the gradients of the parameters agree
    grads = torch.autograd.grad(h.sum() + comp.sum(), list(model.parameters()), allow_unused=True)
    grads_aug = torch.autograd.grad(end.sum(), list(model.parameters()), allow_unused=True)
    for g, g_aug in zip(grads, grads_aug, strict=True):
        if g is None or g_aug is None:
            assert g is None and g_aug is None
        else:
            torch.testing.assert_close(g, g_aug, rtol=1e-12, atol=1e-14)


def test_fixed_step_compensator_error() -> None:
    """RK4's error against 256 steps: measured, and decreasing as steps^-4 (about)."""
    batch = make_batch(short_seqs(3, 10), dtype=torch.float64)
    with torch.no_grad():
        ref = random_model(3, steps_per_interval=256).log_likelihood(batch, "full").compensator
        errors = {}
        for steps in (4, 16, 64):
            comp = random_model(3, steps_per_interval=steps).log_likelihood(batch, "full").compensator
            errors[steps] = float(((comp - ref) / ref).abs().max())
    assert errors[4] < 5e-3 and errors[16] < 5e-5 and errors[64] < 1e-7, errors
    assert errors[4] / errors[16] > 30 and errors[16] / errors[64] > 30, errors


def test_max_step_keeps_long_gaps_stable() -> None:
    # a gap of 200 time units in 4 RK4 steps is far outside RK4's stability region; the default max_step (1.0)
    # repairs it, per row: the short sequence keeps its 4 steps, whatever its batch
    data = EventSequences([np.array([1.0, 201.0]), np.array([0.5, 1.2])], [np.array([0, 1]), np.array([1, 2])], K,
                          np.array([[0.0, 202.0], [0.0, 1.5]]))
    batch = make_batch(data, dtype=torch.float64)
    ref = random_model(4, method="dopri5", rtol=1e-9, atol=1e-11).log_likelihood(batch, "full").total
    default = random_model(4)
    assert default.max_step == 1.0
    fixed = default.log_likelihood(batch, "full").total
    torch.testing.assert_close(fixed[0], ref[0], rtol=1e-5, atol=0)
    alone = default.log_likelihood(make_batch(data, [1], dtype=torch.float64), "full").total
    assert fixed[1] == alone[0]                                         # same steps, same arithmetic
    assert default._step_multiples(torch.tensor([0.0, 4.0, 4.01, 200.0], dtype=torch.float64)).tolist() == [
        1, 1, 2, 64]
    with torch.no_grad():
        plain = random_model(4, max_step=None).log_likelihood(batch, "full").total
    assert not torch.isclose(plain[0], ref[0], rtol=1e-2)
    torch.testing.assert_close(plain[1], alone[0], rtol=1e-12, atol=0)


def test_state_box_and_intensity_bounds_at_random_points() -> None:
    """The flow and the GRU keep h in [-1, 1]^H, so softplus(b_k - ‖w_k‖₁) <= λ_k <= softplus(b_k + ‖w_k‖₁)."""
    data = checks.seqs(4)
    batch = make_batch(data, dtype=torch.float64)
    model = random_model(5, scale=1.0, steps_per_interval=8)
    with torch.no_grad():
        model.head.weight.mul_(3.0)
        right, left, _ = model._states(*model._prepare(batch))
        assert right.abs().max() <= 1 and left.abs().max() <= 1
        gen = torch.Generator().manual_seed(0)
        q = torch.sort(1.0 + 15.0 * torch.rand(4, 500, dtype=torch.float64, generator=gen))[0]
        lam = model.intensity(batch, q)
        w1 = model.head.weight.abs().sum(1)
        low, high = F.softplus(model.head.bias - w1), F.softplus(model.head.bias + w1)
    assert (lam >= low).all() and (lam <= high).all()
    assert float((lam / high).max()) > 0.3                  # the upper bound is nearly reached (the lower is loose)


def test_padding_and_causality() -> None:
    checks.check_padding_invariance(lambda k, **kw: ODETPP(k, hidden_size=8, **kw))
    checks.check_causality(lambda k, **kw: ODETPP(k, hidden_size=8, **kw))


# --------------------------------------------------------------------------------------------- sampling


def test_inversion_meets_its_tolerance() -> None:
    model = random_model(6, sample_rtol=1e-3, steps_per_interval=64)
    h = torch.tanh(torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    e = torch.empty(30, dtype=torch.float64).exponential_(generator=torch.Generator().manual_seed(2))
    for rtol in (1e-3, 1e-6):
        model.sample_rtol = rtol
        tau, h_tau = model.invert_compensator(h, e)
        with torch.no_grad():
            band = rtol / 2 * (1 + 1e-6)
            _, below = model._flow(h, tau * (1 - band))
            _, above = model._flow(h, tau * (1 + band))
            h_direct, _ = model._flow(h, tau)
        assert (below < e).all() and (above > e).all()       # the root lies within rtol / 2 of the draw
        torch.testing.assert_close(h_tau, h_direct, rtol=1e-8, atol=1e-8)
    _, at_wide = model._flow(h, tau * (1 + 1e-2))
    assert (at_wide > e).all()


def test_sample_next_follows_the_model_law() -> None:
    """Time rescaling by quadrature of the public intensity, and marks by λ_k / Σλ at the drawn times."""
    data = short_seqs(3, 3)
    batch = make_batch(data, dtype=torch.float64)
    model = random_model(7, steps_per_interval=8)
    S = 1000
    torch.manual_seed(1)
    gaps, marks = model.sample_next(batch, S)
    assert gaps.shape == marks.shape == (S, 3, batch.max_len)
    assert torch.isfinite(gaps).all() and (gaps[:, batch.mask] > 0).all() and (gaps[:, ~batch.mask] == 0).all()
    rows = torch.arange(3)
    last = batch.lengths - 1
    tau, mk = gaps[:, rows, last], marks[:, rows, last]
    t_last = batch.times[rows, last]
    comp = quadrature(model, batch, t_last.expand(S, -1).T, (t_last + tau).T, n_nodes=16).T       # [S, B]
    assert stats.kstest(comp.flatten().numpy(), "expon").pvalue > 0.01
    own = model.next_event_compensator(batch, gaps)[:, rows, last]
    torch.testing.assert_close(own, comp, rtol=2e-3, atol=1e-6)            # two paths of 8 RK4 steps
    with torch.no_grad():
        lam = model.intensity(batch, (t_last + tau).T)                                     # [B, S, K]
    p = (lam / lam.sum(-1, keepdim=True)).transpose(0, 1)                                  # [S, B, K]
    onehot = F.one_hot(mk, K).double()
    z = (onehot - p).sum((0, 1)) / (p * (1 - p)).sum((0, 1)).sqrt()
    assert z.abs().max() < 3.5, z


def test_sample_next_all_positions_time_rescaling() -> None:
    batch = make_batch(short_seqs(3, 12), dtype=torch.float64)
    model = random_model(8)
    torch.manual_seed(2)
    gaps, _ = model.sample_next(batch, 60)
    comp = model.next_event_compensator(batch, gaps)[:, batch.mask]
    assert stats.kstest(comp.flatten().numpy(), "expon").pvalue > 0.01


def test_sampling_cap_raises() -> None:
    model = random_model(9, max_sample_rounds=1, sample_max_chunk=1e-3)
    h = torch.zeros(4, 8, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="max_sample_rounds"):
        model.invert_compensator(h, torch.full((4,), 5.0, dtype=torch.float64))


def test_incremental_generation_matches_the_batch_encoding_and_law() -> None:
    data = short_seqs(3, 8)
    prefix = EventSequences([t[:-1] for t in data.times], [m[:-1] for m in data.marks], K, data.windows)
    model = random_model(12)
    gaps = torch.tensor([t[-1] - t[-2] for t in data.times], dtype=torch.float64)
    marks = torch.tensor([int(m[-1]) for m in data.marks])
    stepped = model.advance(model.encode(make_batch(prefix, dtype=torch.float64)), gaps, marks)
    whole = model.encode(make_batch(data, dtype=torch.float64))
    torch.testing.assert_close(stepped, whole, rtol=1e-12, atol=1e-12)
    torch.manual_seed(3)
    state = model.repeat_state(whole, 400)
    tau, mk = model.sample_from_state(state)
    assert torch.isfinite(tau).all() and (tau > 0).all() and (mk >= 0).all() and (mk < K).all()
    with torch.no_grad():
        _, comp = model._flow(state, tau)
    assert stats.kstest(comp.numpy(), "expon").pvalue > 0.01


# --------------------------------------------------------------------------------------------- training, devices


def test_gradients_and_dtypes() -> None:
    checks.check_gradients(lambda k, **kw: ODETPP(k, hidden_size=8, **kw))
    data = short_seqs(3, 10)
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = ODETPP(K, hidden_size=8).to(dtype)
        batch = make_batch(data, dtype=dtype)
        ll = model.log_likelihood(batch, "full")
        assert ll.total.dtype == dtype and torch.isfinite(ll.total).all()
        lam = model.intensity(batch, batch.times[:, :2] + 0.1)
        assert lam.shape == (3, 2, K) and lam.dtype == dtype and (lam > 0).all()
        gaps, marks = model.sample_next(batch, 5)
        assert gaps.dtype == dtype and marks.dtype == torch.int64 and (gaps[:, batch.mask] > 0).all()
    assert ODETPP(K).double().log_likelihood(make_batch(data), "easytpp").total.dtype == torch.float64


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*dropped")
def test_fit_beats_poisson() -> None:
    """Four epochs on a self-exciting process beat the homogeneous Poisson MLE on held-out data."""
    from tpp.data import HawkesProcess, PoissonProcess
    from tpp.train import evaluate_log_likelihood, fit_model

    hawkes = HawkesProcess([0.3, 0.3], [[0.6, 0.2], [0.2, 0.6]], 2.0)
    window = (0.0, 10.0)
    train = hawkes.simulate(48, window, seed=0, drop_empty=True)
    test = hawkes.simulate(12, window, seed=1, drop_empty=True)
    torch.manual_seed(0)
    model = ODETPP(2, hidden_size=8)
    fit_model(model, train, epochs=4, batch_size=16, lr=2e-2, device="cpu")
    ll = float(evaluate_log_likelihood(model, test, "full").per_event())
    rate = np.bincount(np.concatenate(train.marks), minlength=2) / (window[1] * len(train))
    poisson = PoissonProcess(rate).log_likelihood_per_event(test, "full")
    oracle = hawkes.log_likelihood_per_event(test, "full")
    assert ll > poisson + 0.3 * (oracle - poisson), (ll, poisson, oracle)      # measured: 0.62 of the way


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = random_model(10)
    batch = make_batch(short_seqs(3, 10), dtype=torch.float64)
    cpu = model.log_likelihood(batch, "full").total
    cuda = model.to("cuda").log_likelihood(batch.to("cuda"), "full").total
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=1e-9)
    gaps, marks = model.sample_next(batch, 4)
    assert gaps.device.type == marks.device.type == "cuda"
    assert model.intensity(batch, batch.times.to("cuda") + 0.1).device.type == "cuda"
    model.float().loss(batch.to("cuda", torch.float32), "full").backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_draws_respect_the_intensity_floor() -> None:
    # Λ(τ) >= τ Σ_k softplus(b_k - ‖w_k‖₁), so the gap of level E is at most E / that floor
    model = random_model(11)
    w1 = model.head.weight.abs().sum(1)
    floor_rate = float(F.softplus(model.head.bias - w1).sum().detach())
    assert floor_rate > 0
    h = torch.tanh(torch.randn(10, 8, dtype=torch.float64))
    e = torch.full((10,), 3.0, dtype=torch.float64)
    tau, _ = model.invert_compensator(h, e)
    assert (tau <= 3.0 / floor_rate).all()


def test_tiny_intensity_gaps_take_few_march_rounds() -> None:
    # Intensity weights zeroed: λ_k = softplus(b_k) whatever the flow, so Λ(τ) = τ Σ_k softplus(b_k) for any
    # solver and the gap of level e is e / Σ_k softplus(b_k) in closed form. With b = -6 that gap is about
    # 135 e time units; chunks of sample_max_chunk = 1 would need up to 700 march rounds, doubling chunks 10.
    model = random_model(12, max_sample_rounds=20)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-6.0)
    rate = float(F.softplus(model.head.bias).sum().detach())
    h = torch.tanh(torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    e = torch.tensor([0.001, 0.3, 1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    tau, _ = model.invert_compensator(h, e)
    torch.testing.assert_close(tau, e / rate, rtol=model.sample_rtol, atol=0)       # |error| <= rtol / 2
    # with A = 0 too the flow is linear, h(t) = c + (h_0 - c) e^{-t} with c = tanh(a): the state at the draw
    with torch.no_grad():
        model.dynamics.weight.zero_()
    tau, h_tau = model.invert_compensator(h, e)
    c = torch.tanh(model.dynamics.bias).detach()
    torch.testing.assert_close(h_tau, c + (h - c) * torch.exp(-tau).unsqueeze(-1), rtol=0, atol=1e-7)
    model.max_sample_rounds = 3                      # chunks of 1, 2 and 4 reach 7 time units, not 135
    with pytest.raises(RuntimeError, match="max_sample_rounds"):
        model.invert_compensator(h, torch.ones_like(e))


def test_recorded_pieces_add_up_to_the_whole_solve() -> None:
    model = random_model(13)
    h = torch.tanh(torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    delta = torch.tensor([0.5, 1.0, 3.0, 8.0, 20.0], dtype=torch.float64)
    with torch.no_grad():
        h_end, comp = model._flow_fixed(h, delta, 32)
        bounds, piece_comps = model._flow_fixed(h, delta, 32, 8)
        torch.testing.assert_close(bounds[0], h, rtol=0, atol=0)
        torch.testing.assert_close(bounds[-1], h_end, rtol=0, atol=0)
        torch.testing.assert_close(piece_comps.sum(0), comp, rtol=1e-13, atol=0)
        # each piece equals a solve of its own from the recorded state at its start
        for j in range(8):
            h_j, comp_j = model._flow_fixed(bounds[j], delta / 8, 4)
            torch.testing.assert_close(h_j, bounds[j + 1], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(comp_j, piece_comps[j], rtol=1e-12, atol=1e-14)
