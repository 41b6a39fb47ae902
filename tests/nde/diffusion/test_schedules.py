"""Discrete schedules and continuous SDEs against their closed forms and against each other."""

from __future__ import annotations

import math

import pytest
import torch

from nde.diffusion import (
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiffusionInputError,
    DiscreteSchedule,
    SubVPSDE,
    cosine_schedule,
    linear_schedule,
    make_schedule,
    make_sde,
)

F64 = torch.float64


def test_linear_schedule_is_ddpm() -> None:
    schedule = linear_schedule(1000, 1e-4, 0.02)
    assert schedule.num_steps == 1000
    assert schedule.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert schedule.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert schedule.betas[1].item() - schedule.betas[0].item() == pytest.approx((0.02 - 1e-4) / 999, rel=1e-9)
    for i in (0, 9, 499, 999):  # alpha_bar_i = prod_{j <= i} (1 - beta_j), in plain Python
        product = math.prod(1 - b for b in schedule.betas[: i + 1].tolist())
        assert schedule.alpha_bars[i].item() == pytest.approx(product, rel=1e-12)
    torch.testing.assert_close(schedule.alphas, 1 - schedule.betas)
    torch.testing.assert_close(schedule.times, torch.arange(1, 1001, dtype=F64) / 1000)


def test_cosine_schedule_follows_the_squared_cosine() -> None:
    s = 0.008
    schedule = cosine_schedule(1000, s=s, max_beta=0.999)

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    clipped = schedule.betas >= 0.999
    assert 0 < int(clipped.sum()) <= 2 and bool(clipped[-1])  # only the last step(s) reach the cap
    for i in (0, 99, 499, 899, 990):  # unclipped steps: alpha_bar_i = f(i/N) / f(0), with i 1-based
        assert schedule.alpha_bars[i].item() == pytest.approx(f((i + 1) / 1000) / f(0), rel=1e-10)


def test_discrete_marginal_on_the_grid_and_at_the_data() -> None:
    schedule = linear_schedule(100, 1e-4, 0.1)  # TSDiff's schedule
    t = torch.tensor([0.0, 0.01, 0.5, 1.0], dtype=F64)
    alpha, sigma = schedule.marginal(t)
    a_bar = schedule.alpha_bars
    torch.testing.assert_close(alpha, torch.stack([torch.tensor(1.0, dtype=F64), *a_bar[[0, 49, 99]].sqrt()]))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(4, dtype=F64))
    assert schedule.index(torch.tensor([0.37], dtype=torch.float32)).item() == 37  # float32 times round back
    with pytest.raises(DiffusionInputError, match="not on the grid"):
        schedule.marginal(torch.tensor([0.005], dtype=F64))


def test_linear_schedule_converges_to_its_vp_sde() -> None:
    """The VP-SDE with β(t) = N β_i (Song et al.) is the N -> ∞ limit: at fixed β_min, β_max the gap in
    log alpha_bar at the grid times shrinks like 1/N (both the Riemann sum and log(1 - β) ≈ -β err by O(1/N))."""
    gaps = []
    for n in (100, 1000):
        schedule = linear_schedule(n, 0.1 / n, 20.0 / n)
        sde = schedule.to_sde()
        assert (sde.beta_min, sde.beta_max) == pytest.approx((0.1, 20.0))
        alpha, _ = sde.marginal(schedule.times)
        log_a_bar = schedule.alpha_bars.log()
        gaps.append(float((log_a_bar - 2 * alpha.log()).abs().max() / log_a_bar.abs().max()))
    assert gaps[1] < 0.15 * gaps[0]  # 1/N: a ratio of 0.1
    assert gaps[1] < 0.01  # DDPM's 1000 steps: within 1% of the range of log alpha_bar (0 to -10)


def test_cosine_schedule_equals_its_sde_on_the_grid() -> None:
    schedule = cosine_schedule(1000)
    sde = schedule.to_sde()
    assert isinstance(sde, CosineVPSDE)
    alpha, sigma = sde.marginal(schedule.times[:990])
    torch.testing.assert_close(alpha**2, schedule.alpha_bars[:990], rtol=1e-10, atol=0)
    torch.testing.assert_close(sigma**2, 1 - schedule.alpha_bars[:990], rtol=1e-10, atol=0)


SDE_CASES = [VPSDE(0.1, 20.0), CosineVPSDE(), SubVPSDE(0.1, 20.0), VESDE(0.01, 100.0)]


@pytest.mark.parametrize("sde", SDE_CASES, ids=lambda s: type(s).__name__)
def test_sde_marginals_solve_the_moment_equations(sde: VPSDE) -> None:
    """For ``dx = a(t) x dt + g(t) dW`` the marginal coefficients obey ``d log alpha/dt = a`` and
    ``d sigma²/dt = 2 a sigma² + g²``, with ``alpha(0) = 1``, ``sigma(0) = 0``. Central differences of step
    ``h`` err by ``O(h²)`` ≈ 1e-10 relative here."""
    h = 1e-5
    t = torch.linspace(0.02, 0.95 * sde.T, 12, dtype=F64)
    a = torch.stack([sde.drift(torch.ones(1, 1, dtype=F64), ti)[0, 0] for ti in t])
    g2 = sde.diffusion(t) ** 2
    (alpha_hi, sigma_hi), (alpha_lo, sigma_lo) = sde.marginal(t + h), sde.marginal(t - h)
    _, sigma = sde.marginal(t)
    torch.testing.assert_close((alpha_hi.log() - alpha_lo.log()) / (2 * h), a, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close((sigma_hi**2 - sigma_lo**2) / (2 * h), 2 * a * sigma**2 + g2, rtol=1e-6, atol=1e-9)
    alpha0, sigma0 = sde.marginal(torch.zeros((), dtype=F64))
    assert (alpha0.item(), sigma0.item()) == (1.0, 0.0)


@pytest.mark.parametrize("sde", SDE_CASES, ids=lambda s: type(s).__name__)
def test_prior_is_close_to_the_marginal_at_T_and_its_density_is_normal(sde: VPSDE) -> None:
    alpha, sigma = sde.marginal(torch.tensor(sde.T, dtype=F64))
    assert alpha.item() / sigma.item() <= 0.02  # the data is forgotten: signal-to-noise ratio at most 1/50
    assert sigma.item() == pytest.approx(sde.prior_std, rel=1e-3)
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    want = torch.distributions.Normal(0.0, sde.prior_std).log_prob(x).sum((1, 2))
    torch.testing.assert_close(sde.prior_log_prob(x), want)
    draws = sde.prior_sample((20000, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    assert draws.std().item() == pytest.approx(sde.prior_std, rel=0.02)  # 2% = 4 standard errors of 40000


def test_make_by_name() -> None:
    assert make_schedule("cosine", 50).num_steps == 50
    assert isinstance(make_sde("subvp", beta_min=0.2, beta_max=10.0), SubVPSDE)


def test_bad_schedules_and_sdes_raise() -> None:
    with pytest.raises(DiffusionInputError, match="unknown schedule 'quadratic'"):
        make_schedule("quadratic")
    with pytest.raises(DiffusionInputError, match="unknown SDE 'vpp'"):
        make_sde("vpp")
    with pytest.raises(DiffusionInputError, match="num_steps must be a positive int"):
        linear_schedule(0)
    with pytest.raises(DiffusionInputError, match="beta_start <= beta_end"):
        linear_schedule(10, 0.1, 0.01)
    with pytest.raises(DiffusionInputError, match=r"every entry in \(0, 1\)"):
        DiscreteSchedule(torch.tensor([0.5, 1.0]))
    with pytest.raises(DiffusionInputError, match="1-D tensor"):
        DiscreteSchedule(torch.full((2, 2), 0.1))
    with pytest.raises(DiffusionInputError, match="no continuous counterpart"):
        DiscreteSchedule(torch.full((10,), 0.1)).to_sde()
    with pytest.raises(DiffusionInputError, match="sigma_min < sigma_max"):
        VESDE(1.0, 0.5)
    with pytest.raises(DiffusionInputError, match="0 < T < 1"):
        CosineVPSDE(T=1.0)
    with pytest.raises(DiffusionInputError, match="beta_min <= beta_max"):
        VPSDE(20.0, 0.1)
