"""Checks shared by the NHP and THP tests (both are SoftplusIntensityTPP models); each test file runs them.

Truths used: the exact Poisson log-likelihood of tpp.data.simulators (a model with its history weights zeroed
is a homogeneous Poisson process), scipy quadrature of the model's own intensity, Gauss–Legendre with many
nodes, the time-rescaling theorem (KS test of 1 - exp(-Λ) against U(0, 1)) and the mark probabilities
λ_k / Σ λ at the drawn times.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from tpp.data import EventSequences
from tpp.data.batch import EventBatch, make_batch
from tpp.data.simulators import HawkesProcess, PoissonProcess
from tpp.models.base import CONVENTIONS
from tpp.models.nhp import SoftplusIntensityTPP

Factory = Callable[..., SoftplusIntensityTPP]

MU = [0.5, 0.3, 0.4]
HAWKES = HawkesProcess(MU, [[0.3, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.2, 0.4]], 1.5)


def seqs(n: int = 5, window: tuple[float, float] = (1.0, 16.0), seed: int = 0) -> EventSequences:
    return HAWKES.simulate(n, window, seed=seed)


def model64(factory: Factory, seed: int = 0, **kw: object) -> SoftplusIntensityTPP:
    torch.manual_seed(seed)
    return factory(3, **kw).double()


def gl(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def integrate_intensity(model: SoftplusIntensityTPP, batch: EventBatch, a: torch.Tensor, b: torch.Tensor,
                        n: int = 64) -> torch.Tensor:
    """``∫_a^b Σ_k λ_k`` per sequence through ``model.intensity`` (history: events before each node), [B]."""
    x, w = (torch.as_tensor(v, dtype=torch.float64) for v in gl(n))
    half = ((b - a) / 2).unsqueeze(1)
    nodes = a.unsqueeze(1) + half * (x + 1)
    return (model.intensity(batch, nodes).sum(-1) * w * half).sum(1)


# ----------------------------------------------------------------------------------------------- checks


def check_poisson_truth(factory: Factory, zero_history: Callable[[SoftplusIntensityTPP], None]) -> None:
    """With every history weight zero and softplus(b_k) = μ_k the model is Poisson(μ): exact log-likelihood."""
    model = model64(factory)
    with torch.no_grad():
        zero_history(model)
        model.head.bias.copy_(torch.log(torch.expm1(torch.tensor(MU, dtype=torch.float64))))
    data = seqs(6)
    batch = make_batch(data, dtype=torch.float64)
    poisson = PoissonProcess(MU)
    for conv in CONVENTIONS:
        ll = model.log_likelihood(batch, conv)
        np.testing.assert_allclose(ll.total.detach().numpy(), poisson.log_likelihood(data, conv), rtol=1e-10,
                                   atol=1e-10)
        assert ll.num_scored.tolist() == (data.lengths - (conv == "easytpp")).tolist()


def check_compensator_quadrature(factory: Factory, perturb: Callable[[SoftplusIntensityTPP], None]) -> None:
    """The n_nodes rule against scipy quad of ``intensity`` (independent path), and 8 nodes against 64."""
    data = seqs(3, window=(1.0, 9.0))
    batch = make_batch(data, dtype=torch.float64)
    model = model64(factory, n_nodes=64)
    with torch.no_grad():
        perturb(model)
        fine = model.log_likelihood(batch, "full").compensator.numpy()
        one = make_batch(data, [0], dtype=torch.float64)
        t = data.times[0]
        start, end = data.windows[0]

        def total(s: float) -> float:
            return float(model.intensity(one, torch.tensor([[s]], dtype=torch.float64)).sum())

        points = np.concatenate([[start], t, [end]])
        ref = sum(integrate.quad(total, lo, hi, epsabs=1e-11, epsrel=1e-11)[0]
                  for lo, hi in itertools.pairwise(points) if hi > lo)
        assert fine[0] == pytest.approx(ref, rel=1e-9)
        model.n_nodes = 8
        coarse = model.log_likelihood(batch, "full").compensator.numpy()
    np.testing.assert_allclose(coarse, fine, rtol=1e-4)


def check_event_term(factory: Factory) -> None:
    """Event term = Σ log λ_{m_j}(t_j) with λ from ``intensity`` at the event times (history strictly before)."""
    data = seqs(4)
    batch = make_batch(data, dtype=torch.float64)
    model = model64(factory)
    lam = model.intensity(batch, batch.times)
    log_lam = lam.gather(-1, batch.marks.unsqueeze(-1)).squeeze(-1).log()
    expected = torch.where(batch.mask, log_lam, 0).sum(1)
    got = model.log_likelihood(batch, "full").event_term
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def check_convention_identity(factory: Factory) -> None:
    """full - easytpp = log λ_{m_1}(t_1) - Λ[window_start, t_1] - Λ[t_n, window_end]."""
    data = seqs(4)
    batch = make_batch(data, dtype=torch.float64)
    model = model64(factory, n_nodes=64)
    full = model.log_likelihood(batch, "full").total
    easy = model.log_likelihood(batch, "easytpp").total
    rows = torch.arange(4)
    first = batch.times[:, :1]
    log_first = model.intensity(batch, first)[rows, 0, batch.marks[:, 0]].log()
    last = batch.times[rows, batch.lengths - 1]
    before = integrate_intensity(model, batch, batch.window_start, batch.times[:, 0])
    after = integrate_intensity(model, batch, last, batch.window_end)
    torch.testing.assert_close(full - easy, log_first - before - after, rtol=1e-9, atol=1e-9)


def check_padding_invariance(factory: Factory) -> None:
    """A sequence's log-likelihood and intensities are the same alone and batched with a longer one."""
    data = seqs(6)
    order = np.argsort(data.lengths)
    short, long_ = int(order[0]), int(order[-1])
    assert data.lengths[short] < data.lengths[long_]
    model = model64(factory)
    alone = make_batch(data, [short], dtype=torch.float64)
    both = make_batch(data, [short, long_], dtype=torch.float64)
    q = torch.linspace(1.0, 16.0, 50, dtype=torch.float64)
    for conv in CONVENTIONS:
        a, b = model.log_likelihood(alone, conv), model.log_likelihood(both, conv)
        for part in ("event_term", "compensator", "num_scored"):
            torch.testing.assert_close(getattr(b, part)[:1], getattr(a, part), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.intensity(both, torch.stack([q, q]))[:1], model.intensity(alone, q[None]),
                               rtol=1e-12, atol=1e-12)


def check_causality(factory: Factory) -> None:
    """The intensity before t_k does not depend on events at or after t_k."""
    data = seqs(1, window=(0.0, 20.0))
    n = len(data.times[0])
    k = n // 2
    times2 = data.times[0].copy()
    times2[k:] = times2[k:] + 0.5 * np.arange(1, n - k + 1)
    marks2 = data.marks[0].copy()
    marks2[k:] = (marks2[k:] + 1) % 3
    other = EventSequences([times2], [marks2], 3, np.array([[0.0, times2[-1] + 1]]))
    model = model64(factory)
    q = torch.linspace(0.0, float(data.times[0][k]), 40, dtype=torch.float64)[None]
    lam1 = model.intensity(make_batch(data, dtype=torch.float64), q)
    lam2 = model.intensity(make_batch(other, dtype=torch.float64), q)
    torch.testing.assert_close(lam1, lam2, rtol=1e-12, atol=1e-12)


def check_gradients(factory: Factory) -> None:
    """Every parameter gets a finite, non-zero gradient, in both conventions (float32)."""
    data = seqs(4)
    batch = make_batch(data)
    for conv in CONVENTIONS:
        torch.manual_seed(0)
        model = factory(3)
        model.loss(batch, conv).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{conv}: no gradient for {name}"
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{conv}: zero gradient for {name}"


def check_dtypes(factory: Factory, device: str = "cpu") -> None:
    data = seqs(3)
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = factory(3).to(device=device, dtype=dtype)
        batch = make_batch(data, dtype=dtype, device=device)
        ll = model.log_likelihood(batch, "full")
        assert ll.total.dtype == dtype and ll.total.shape == (3,) and torch.isfinite(ll.total).all()
        lam = model.intensity(batch, batch.times[:, :2] + 0.1)
        assert lam.shape == (3, 2, 3) and lam.dtype == dtype and (lam > 0).all()
        gaps, marks = model.sample_next(batch, 7)
        assert gaps.shape == marks.shape == (7, 3, batch.max_len)
        assert gaps.dtype == dtype and marks.dtype == torch.int64
        assert (gaps[:, batch.mask] > 0).all() and (gaps[:, ~batch.mask] == 0).all()
        assert marks.min() >= 0 and marks.max() < 3
    # a float32 batch given to a float64 model is converted
    model = factory(3).double()
    assert model.log_likelihood(make_batch(data), "easytpp").total.dtype == torch.float64


def check_sample_next_law(factory: Factory, perturb: Callable[[SoftplusIntensityTPP], None]) -> None:
    """Draws after each sequence's last event against the model's own law, computed through ``intensity``.

    Time: by time rescaling Λ(τ) ~ Exp(1), so 1 - exp(-Λ(τ)) ~ U(0, 1) (KS test; Λ by 64-node quadrature).
    Mark: given τ it is k with probability λ_k(τ) / Σλ(τ): per-mark count minus Σ p_k(τ) as a z-score.
    """
    full = seqs(4)
    data = EventSequences([t[:6] for t in full.times], [m[:6] for m in full.marks], 3, full.windows)  # short
    batch = make_batch(data, dtype=torch.float64)
    model = model64(factory)
    with torch.no_grad():
        perturb(model)
    torch.manual_seed(1)
    S = 1500
    gaps, marks = model.sample_next(batch, S)
    rows = torch.arange(4)
    last_idx = batch.lengths - 1
    tau = gaps[:, rows, last_idx]                                            # [S, B]
    mk = marks[:, rows, last_idx]
    t_last = batch.times[rows, last_idx]
    x, w = (torch.as_tensor(v, dtype=torch.float64) for v in gl(64))
    comp = torch.zeros(S, 4, dtype=torch.float64)
    probs = torch.zeros(S, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        for b in range(4):
            one = make_batch(data, [b], dtype=torch.float64)
            half = tau[:, b:b + 1] / 2
            nodes = t_last[b] + half * (x + 1)                               # [S, 64]
            lam = model.intensity(one, nodes.reshape(1, -1)).reshape(S, 64, 3)
            comp[:, b] = (lam.sum(-1) * w * half).sum(1)
            at = model.intensity(one, (t_last[b] + tau[:, b])[None])[0]      # [S, 3]
            probs[:, b] = at / at.sum(-1, keepdim=True)
    u = 1 - torch.exp(-comp)
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 0.01
    onehot = torch.nn.functional.one_hot(mk, 3).double()
    z = (onehot - probs).sum((0, 1)) / (probs * (1 - probs)).sum((0, 1)).sqrt()
    assert z.abs().max() < 3.5, z
    # the model's own next-event compensator agrees with the independent computation
    own = model.next_event_compensator(batch, gaps)[:, rows, last_idx]
    torch.testing.assert_close(own, comp, rtol=1e-9, atol=1e-9)


def check_sample_next_all_positions(factory: Factory, perturb: Callable[[SoftplusIntensityTPP], None]) -> None:
    """Every position's draws through next_event_compensator: 1 - exp(-Λ) ~ U(0, 1) (KS)."""
    data = seqs(3)
    batch = make_batch(data, dtype=torch.float64)
    model = model64(factory)
    with torch.no_grad():
        perturb(model)
    torch.manual_seed(2)
    gaps, _ = model.sample_next(batch, 40)
    comp = model.next_event_compensator(batch, gaps)
    u = (1 - torch.exp(-comp))[:, batch.mask]
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 0.01


def check_thinning_cap(factory: Factory) -> None:
    """Hitting max_thinning_rounds raises; nothing is made up."""
    torch.manual_seed(0)
    model = factory(3, max_thinning_rounds=1).double()
    batch = make_batch(seqs(3), dtype=torch.float64)
    with pytest.raises(RuntimeError, match="max_thinning_rounds"):
        model.sample_next(batch, 200)


def check_fit_beats_poisson(factory: Factory, lr: float = 1e-2, epochs: int = 6) -> None:
    """A few epochs on a self-exciting process beat the homogeneous Poisson MLE on held-out data."""
    from tpp.train import evaluate_log_likelihood, fit_model

    hawkes = HawkesProcess([0.3, 0.3], [[0.6, 0.2], [0.2, 0.6]], 2.0)
    train, test = hawkes.simulate(40, (0.0, 40.0), seed=0), hawkes.simulate(20, (0.0, 40.0), seed=1)
    torch.manual_seed(0)
    model = factory(2)
    fit_model(model, train, epochs=epochs, batch_size=8, lr=lr, device="cpu")
    ll = float(evaluate_log_likelihood(model, test, "full").per_event())
    rate = np.bincount(np.concatenate(train.marks), minlength=2) / (40.0 * len(train))
    poisson = PoissonProcess(rate).log_likelihood_per_event(test, "full")
    oracle = hawkes.log_likelihood_per_event(test, "full")
    assert ll > poisson + 0.3 * (oracle - poisson), (ll, poisson, oracle)
