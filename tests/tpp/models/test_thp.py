"""The Transformer Hawkes process (tpp.models.thp.THP) against truths.

Truths: the exact Poisson log-likelihood (history weights zeroed), the encoder run on each history prefix
alone (no masks: checks the causal and padding masks), scipy quadrature of the intensity, the
time-rescaling theorem for sample_next, and the proven thinning bound at random points.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special, stats

from tests.tpp.models import softplus_checks as checks
from tpp.data.batch import make_batch
from tpp.data.simulators import PoissonProcess
from tpp.models.nhp import scaled_softplus
from tpp.models.registry import get_model_class
from tpp.models.thp import THP, THPWithBaseline


def zero_history(model: THP) -> None:
    model.head.weight.zero_()
    model.alpha.zero_()


def perturb(model: THP) -> None:
    """α of both signs and a stronger read-out: intensities that rise and fall between events."""
    model.alpha.copy_(torch.tensor([0.4, -0.5, 0.1], dtype=model.alpha.dtype))
    model.head.weight.mul_(3.0)


def test_registry_and_attributes() -> None:
    assert get_model_class("thp") is THP
    assert THP.name == "thp" and THP.exact_compensator is False


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"d_model": 7}, "d_model"), ({"d_model": 0}, "d_model"), ({"num_heads": 3}, "num_heads"),
    ({"num_heads": 0}, "num_heads"), ({"num_layers": 0}, "num_layers"), ({"dim_feedforward": 0}, "dim_feedforward"),
    ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"), ({"n_nodes": 0}, "n_nodes"),
    ({"max_thinning_rounds": 0}, "max_thinning_rounds"), ({"baseline": 1}, "baseline"),
])
def test_bad_hyperparameters(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        THP(3, **kwargs)


def test_matches_encoder_on_each_prefix() -> None:
    """h_j from the masked batch run equals a mask-free causal run: each layer's output at position i is the
    layer applied to the previous layer's outputs at positions 0..i alone."""
    data = checks.seqs(3)
    model = checks.model64(THP)
    with torch.no_grad():
        perturb(model)
    batch = make_batch(data, dtype=torch.float64)
    q = np.linspace(1.0, 16.0, 61)
    got = model.intensity(batch, torch.tensor(np.stack([q] * 3))).detach()
    with torch.no_grad():
        for b in range(3):
            t = torch.tensor(data.times[b])
            m = torch.tensor(data.marks[b])
            origin = torch.tensor(data.windows[b, 0], dtype=torch.float64)
            x = torch.cat([(model.start_token + model.temporal_encoding(origin))[None],
                           model.embedding(m) + model.temporal_encoding(t)])[None]
            for layer in model.encoder.layers:      # causal by construction: position i sees only 0..i
                x = torch.stack([layer(x[:, :i + 1])[:, -1] for i in range(x.shape[1])], dim=1)
            for i, s in enumerate(q):
                j = int((t < s).sum())                                   # events before s
                h = x[0, j]
                last = t[j - 1] if j else origin
                arg = model.head(h) + model.alpha * (s - last)
                torch.testing.assert_close(got[b, i], scaled_softplus(arg, model.scale), rtol=1e-10, atol=1e-12)


def test_temporal_encoding() -> None:
    model = THP(2, d_model=8).double()
    z = model.temporal_encoding(torch.tensor([0.0, 2.5], dtype=torch.float64))
    p = torch.arange(4, dtype=torch.float64)
    omega = 10000.0 ** (-2 * p / 8)
    torch.testing.assert_close(z[1, 0::2], torch.sin(2.5 * omega))
    torch.testing.assert_close(z[1, 1::2], torch.cos(2.5 * omega))
    torch.testing.assert_close(z[0], torch.tensor([0.0, 1.0] * 4, dtype=torch.float64))


def test_poisson_truth() -> None:
    checks.check_poisson_truth(THP, zero_history)


def test_compensator_quadrature() -> None:
    checks.check_compensator_quadrature(THP, perturb)


def test_event_term() -> None:
    checks.check_event_term(THP)


def test_convention_identity() -> None:
    checks.check_convention_identity(THP)


def test_padding_invariance() -> None:
    checks.check_padding_invariance(THP)


def test_causality() -> None:
    checks.check_causality(THP)


def test_gradients() -> None:
    checks.check_gradients(THP)


def test_dtypes_cpu() -> None:
    checks.check_dtypes(THP)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dtypes_cuda() -> None:
    checks.check_dtypes(THP, "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_thinning_bound_holds_at_random_points(dtype: torch.dtype) -> None:
    """λ(t') <= bound(s, Δ) for t' in [s, s + Δ]; the bound is Σ_k max(λ_k(s), λ_k(s + Δ)) (tight)."""
    model = checks.model64(THP).to(dtype)
    with torch.no_grad():
        perturb(model)
    batch = make_batch(checks.seqs(4), dtype=dtype)
    with torch.no_grad():
        states, *_ = model._after_events(batch)
        P = states.shape[0]
        gen = torch.Generator().manual_seed(3)
        start = torch.rand(P, generator=gen, dtype=dtype) * 3
        horizon = torch.rand(P, generator=gen, dtype=dtype) * 10
        bound = model._bound(states, start, horizon)
        inside = start[:, None] + torch.rand(P, 200, generator=gen, dtype=dtype) * horizon[:, None]
        lam = model._lambda(states, inside).sum(-1)
        assert (lam <= bound[:, None]).all()
        ends = model._lambda(states, torch.stack([start, start + horizon], -1))            # [P, 2, K]
        torch.testing.assert_close(bound, ends.amax(1).sum(-1), rtol=2e-4, atol=0)   # margin 1000 eps


def test_sample_next_law() -> None:
    checks.check_sample_next_law(THP, perturb)


def test_sample_next_all_positions() -> None:
    checks.check_sample_next_all_positions(THP, perturb)


def closed_form_compensator(model: THP, state: torch.Tensor, elapsed: torch.Tensor) -> np.ndarray:
    """``∫_0^elapsed Σ_k β_k softplus((a_k + α_k u) / β_k) du`` by the dilogarithm (``elapsed`` may be inf).

    ``∫ softplus(x) dx = -Li₂(-e^x)``, and ``Li₂(-e^x) = spence(1 + e^x)`` in scipy's convention.
    """
    a = state.detach().numpy()                                                  # [..., K]
    el = elapsed.detach().numpy()[..., None]
    alpha, beta = model.alpha.detach().numpy(), model.scale.detach().numpy()

    def F(x: np.ndarray) -> np.ndarray:
        return -special.spence(1 + np.exp(x))

    x0 = a / beta
    with np.errstate(invalid="ignore", over="ignore"):
        x1 = np.where(np.isinf(el), -np.inf, (a + alpha * np.where(np.isinf(el), 0, el)) / beta)
        moving = beta**2 / np.where(alpha == 0, 1, alpha) * (F(x1) - F(x0))
    still = beta * np.logaddexp(0, x0) * el
    return np.where(alpha == 0, still, moving).sum(-1)


def test_compensator_closed_form() -> None:
    """The Gauss–Legendre compensator against the closed form (dilogarithm): 64 nodes to 1e-10, 8 to 1e-4."""
    data = checks.seqs(4)
    batch = make_batch(data, dtype=torch.float64)
    model = checks.model64(THP, n_nodes=64)
    with torch.no_grad():
        perturb(model)
        model.alpha[2] = 0.0                                                    # the α = 0 branch too
    with torch.no_grad():
        prepared, origin = model._prepare(batch)
        states = model._states(prepared, origin)
        rows = torch.arange(4)
        last = batch.times[rows, batch.lengths - 1]
        inner = closed_form_compensator(model, states[:, :-1], batch.gaps)
        inner = np.where(batch.mask.numpy(), inner, 0).sum(1)
        tail = closed_form_compensator(model, states[rows, batch.lengths], batch.window_end - last)
        exact = inner + tail
        fine = model.log_likelihood(batch, "full").compensator.numpy()
        model.n_nodes = 8
        coarse = model.log_likelihood(batch, "full").compensator.numpy()
    np.testing.assert_allclose(fine, exact, rtol=1e-10)
    np.testing.assert_allclose(coarse, exact, rtol=1e-4)


def test_sample_next_no_next_event() -> None:
    """Every α_k < 0: the intensity decays to 0 and Λ(∞) is finite, so with probability exp(-Λ(∞)) there is no
    next event (gap inf, mark -1). Randomised PIT against the closed-form compensator: U(0, 1)."""
    data = checks.seqs(3)
    batch = make_batch(data, dtype=torch.float64)
    model = checks.model64(THP)
    with torch.no_grad():
        model.alpha.copy_(torch.tensor([-1.0, -1.5, -0.8], dtype=torch.float64))
        model.head.bias.sub_(0.5)
    torch.manual_seed(4)
    S = 300
    gaps, marks = model.sample_next(batch, S)
    with torch.no_grad():
        states, rows, cols, _ = model._after_events(batch)
    tau = gaps[:, rows, cols].numpy()                                            # [S, P]
    mk = marks[:, rows, cols].numpy()
    none = np.isinf(tau)
    assert (mk[none] == -1).all() and (mk[~none] >= 0).all()
    lam_inf = closed_form_compensator(model, states, torch.full((states.shape[0],), float("inf")))   # [P]
    p_none = np.exp(-lam_inf)
    assert 0.01 < p_none.mean() < 0.5
    comp = closed_form_compensator(model, states.expand(S, -1, -1), torch.as_tensor(np.where(none, 0, tau)))
    u = 1 - np.exp(-comp)
    rng = np.random.default_rng(0)
    u = np.where(none, 1 - p_none * rng.random(tau.shape), u)                     # U(1 - e^{-Λ(∞)}, 1)
    assert stats.kstest(u.ravel(), "uniform").pvalue > 0.01
    # the share of "no next event" draws matches exp(-Λ(∞))
    z = (none.sum() - S * p_none.sum()) / np.sqrt(S * (p_none * (1 - p_none)).sum())
    assert abs(z) < 3.5


def test_thinning_cap_raises() -> None:
    checks.check_thinning_cap(THP)


def test_fit_beats_poisson() -> None:
    checks.check_fit_beats_poisson(lambda k: THP(k, d_model=16, num_layers=1), epochs=20)


# ----------------------------------------------------------------------------------------------- baseline


def decaying(model: THP) -> None:
    """Every α_k < 0: without a baseline the intensity would decay to 0; with it, to μ_k."""
    model.alpha.copy_(torch.tensor([-1.0, -1.5, -0.8], dtype=model.alpha.dtype))
    model.head.weight.mul_(3.0)
    model.log_baseline.copy_(torch.log(torch.tensor([0.1, 0.2, 0.05], dtype=model.alpha.dtype)))


def test_baseline_registry_and_poisson_truth() -> None:
    """Zero history, μ_k + softplus(b_k) = MU_k: the model is Poisson(MU), exact log-likelihood."""
    assert get_model_class("thp_baseline") is THPWithBaseline and THPWithBaseline(3).baseline is True
    assert THP(3).log_baseline is None

    model = checks.model64(THPWithBaseline)
    mu = torch.tensor(checks.MU, dtype=torch.float64)
    with torch.no_grad():
        zero_history(model)
        model.log_baseline.copy_(torch.log(0.25 * mu))
        model.head.bias.copy_(torch.log(torch.expm1(0.75 * mu)))
    data = checks.seqs(6)
    batch = make_batch(data, dtype=torch.float64)
    for conv in ("easytpp", "full"):
        np.testing.assert_allclose(model.log_likelihood(batch, conv).total.detach().numpy(),
                                   PoissonProcess(checks.MU).log_likelihood(data, conv), rtol=1e-10)


def test_baseline_compensator_closed_form() -> None:
    """Gauss–Legendre against the dilogarithm closed form plus μ times the elapsed time."""
    data = checks.seqs(4)
    batch = make_batch(data, dtype=torch.float64)
    model = checks.model64(THPWithBaseline, n_nodes=64)
    with torch.no_grad():
        decaying(model)
        prepared, origin = model._prepare(batch)
        states = model._states(prepared, origin)
        rows = torch.arange(4)
        mu = float(model.log_baseline.exp().sum())
        inner = closed_form_compensator(model, states[:, :-1], batch.gaps) + mu * batch.gaps.numpy()
        inner = np.where(batch.mask.numpy(), inner, 0).sum(1)
        tail_len = batch.window_end - batch.times[rows, batch.lengths - 1]
        tail = closed_form_compensator(model, states[rows, batch.lengths], tail_len) + mu * tail_len.numpy()
        got = model.log_likelihood(batch, "full").compensator.numpy()
    np.testing.assert_allclose(got, inner + tail, rtol=1e-10)


def test_baseline_thinning_bound_and_law() -> None:
    """The bound covers μ; with every α_k < 0 there is always a next event, drawn from the model's law."""
    model = checks.model64(THPWithBaseline)
    with torch.no_grad():
        decaying(model)
    batch = make_batch(checks.seqs(4), dtype=torch.float64)
    with torch.no_grad():
        states, *_ = model._after_events(batch)
        P = states.shape[0]
        gen = torch.Generator().manual_seed(5)
        start = torch.rand(P, generator=gen, dtype=torch.float64) * 3
        horizon = torch.rand(P, generator=gen, dtype=torch.float64) * 10
        bound = model._bound(states, start, horizon)
        inside = start[:, None] + torch.rand(P, 200, generator=gen, dtype=torch.float64) * horizon[:, None]
        assert (model._lambda(states, inside).sum(-1) <= bound[:, None]).all()
    checks.check_sample_next_law(THPWithBaseline, decaying)
    torch.manual_seed(6)
    gaps, marks = model.sample_next(batch, 50)
    assert torch.isfinite(gaps).all() and (marks[:, batch.mask] >= 0).all()
