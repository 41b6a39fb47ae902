"""Every sampler against Gaussian data, whose optimal epsilon model is exact (see ``helpers``).

Deterministic samplers (DDIM at ``eta = 0``, DPM-Solver++(2M), the probability-flow ODE) are affine maps of
their start, so their output moments are computed exactly and compared tightly, and their order of
convergence is checked. Started from the true marginal at ``T`` their output mean is exact (the mean
path has ``eps = 0``), and what is left is the covariance's discretisation error.

Stochastic samplers are checked on ``n`` samples started from the true marginal at ``T`` (so that the
prior's mismatch, ``alpha(T) ≈ 0.007``, does not enter): each whitened mean and covariance entry must lie
within 4 standard errors (``4/sqrt(n)``, ``4 sqrt(2/n)`` on the diagonal, see ``helpers``) plus an allowance
for the discretisation bias. The allowances are upper bounds of the biases measured once with 10⁵ samples
(standard error 0.003): DDPM (posterior variance, 1000 steps) covariance -0.020 (its kernel ignores the
uncertainty of ``x0`` given ``x_t``), DDPM (variance β) below 0.004; Euler–Maruyama on the reverse SDE, 500
steps: below 0.01; torchsde's midpoint method, 200 steps: below 0.006; predictor–corrector (200 steps,
snr 0.05): mean 0.013, covariance 0.008.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from nde.diffusion import (
    VESDE,
    CosineVPSDE,
    DDIMSampler,
    DDPMSampler,
    DiffusionInputError,
    DiffusionSDE,
    DPMSolverPlusPlus2M,
    GaussianData,
    PredictorCorrectorSampler,
    ProbabilityFlowSampler,
    ReverseSDESampler,
    Sampler,
    SubVPSDE,
    cosine_schedule,
    linear_schedule,
    make_sampler,
)
from tests.nde.diffusion.helpers import (
    COVARIANCE,
    DATA,
    MEAN,
    draw_marginal,
    exact_moments,
    marginal_at,
    mc_bounds,
    sample_errors,
    whitened_errors,
)

F64 = torch.float64
LINEAR = linear_schedule(1000)
COSINE = cosine_schedule(1000)
VP = LINEAR.to_sde()
VE = VESDE(0.01, 100.0)
SUB_VP = SubVPSDE(0.1, 20.0)


def _end(process: object) -> float:
    return process.T if isinstance(process, DiffusionSDE) else 1.0


# --------------------------------------------------------------------------------- deterministic: exact moments


@pytest.mark.parametrize(
    ("sampler", "process", "steps", "cov_tol"),
    [
        (DDIMSampler(LINEAR), LINEAR, 1000, 0.009),  # first order: 0.0068 at 1000 steps
        (DDIMSampler(COSINE), COSINE, 1000, 0.005),  # 0.0036
        (DPMSolverPlusPlus2M(LINEAR), LINEAR, 50, 0.006),  # second order: 0.0047 at 50 steps
        (DPMSolverPlusPlus2M(COSINE), COSINE, 100, 0.004),  # 0.0029
        (ProbabilityFlowSampler(VP), VP, 50, 1e-3),  # RK4 converged; left: sigma(t_eps)²/λ_min ≈ 6e-4
        (ProbabilityFlowSampler(CosineVPSDE()), CosineVPSDE(), 50, 5e-4),
        (ProbabilityFlowSampler(SUB_VP), SUB_VP, 50, 1e-4),
        (ProbabilityFlowSampler(VE), VE, 50, 2e-4),
        (ProbabilityFlowSampler(VP, method="dopri5"), VP, 1, 1e-3),
    ],
    ids=["ddim-linear", "ddim-cosine", "dpm++-linear", "dpm++-cosine", "pf-vp", "pf-cosine-vp", "pf-subvp",
         "pf-ve", "pf-vp-dopri5"],
)
def test_deterministic_samplers_reach_the_target_exactly(sampler: Sampler, process: object, steps: int,
                                                         cov_tol: float) -> None:
    start_mean, start_cov = marginal_at(process, _end(process))  # type: ignore[arg-type]
    mean, cov = exact_moments(sampler, process, steps, start_mean, start_cov)  # type: ignore[arg-type]
    mean_err, cov_err = whitened_errors(mean, cov)
    assert mean_err < 1e-4
    assert cov_err < cov_tol


@pytest.mark.parametrize(("sampler", "steps", "order"), [(DDIMSampler(LINEAR), 100, 1),
                                                         (DPMSolverPlusPlus2M(LINEAR), 20, 2)],
                         ids=["ddim", "dpm++"])
def test_order_of_convergence(sampler: Sampler, steps: int, order: int) -> None:
    """Doubling the steps divides the covariance error by ``2^order``."""
    start = marginal_at(LINEAR, 1.0)
    errors = [whitened_errors(*exact_moments(sampler, LINEAR, n, *start))[1] for n in (steps, 2 * steps)]
    assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.15)


def test_the_default_prior_costs_what_its_mismatch_predicts() -> None:
    """From the prior ``N(0, I)`` instead of ``N(alpha_T m, C_T)``, the exact flow (in the eigenbasis of
    ``S = Q diag(λ) Qᵀ``: ``x0 - m = sqrt(λ / v_T) (x_T - alpha_T m)``, ``v_T = alpha_T² λ + sigma_T²``) shifts
    the output mean by ``-Q diag(sqrt(λ / v_T)) Qᵀ alpha_T m`` and scales the covariance by ``1 / v_T``."""
    alpha_t, sigma_t = (c.item() for c in VP.marginal(torch.tensor(1.0, dtype=F64)))
    lam, q = torch.linalg.eigh(COVARIANCE)
    v_t = alpha_t**2 * lam + sigma_t**2
    want_mean = MEAN - q @ torch.diag((lam / v_t).sqrt()) @ q.T @ (alpha_t * MEAN)
    want_cov = q @ torch.diag(lam / v_t) @ q.T
    mean, cov = exact_moments(ProbabilityFlowSampler(VP), VP, 50, torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    assert float((mean - MEAN).abs().max()) > 0.005  # the shift is visible ...
    torch.testing.assert_close(mean, want_mean, rtol=0, atol=2e-4)  # ... and is the predicted one
    torch.testing.assert_close(cov, want_cov, rtol=0, atol=3e-4)


# ------------------------------------------------------------------------------------- stochastic: Monte Carlo


@pytest.mark.parametrize(
    ("sampler", "process", "steps", "n", "bias"),
    [
        (DDPMSampler(LINEAR), LINEAR, 1000, 8000, (0.005, 0.03)),
        (DDPMSampler(LINEAR, variance="beta"), LINEAR, 1000, 8000, (0.005, 0.008)),
        (ReverseSDESampler(VP), VP, 500, 8000, (0.012, 0.012)),
        (ReverseSDESampler(SUB_VP), SUB_VP, 500, 6000, (0.012, 0.012)),
        (ReverseSDESampler(VE), VE, 500, 6000, (0.012, 0.012)),
        (ReverseSDESampler(VP, backend="torchsde", method="midpoint"), VP, 200, 3000, (0.012, 0.012)),
        (PredictorCorrectorSampler(VP, snr=0.05), VP, 200, 8000, (0.02, 0.012)),
        (PredictorCorrectorSampler(VE, snr=0.05), VE, 200, 8000, (0.02, 0.012)),
    ],
    ids=["ddpm-posterior", "ddpm-beta", "reverse-sde-vp", "reverse-sde-subvp", "reverse-sde-ve",
         "reverse-sde-torchsde", "pc-vp", "pc-ve"],
)
def test_stochastic_samplers_match_the_target_moments(sampler: Sampler, process: object, steps: int, n: int,
                                                      bias: tuple[float, float]) -> None:
    generator = torch.Generator().manual_seed(0)
    start = draw_marginal(process, _end(process), n, generator)  # type: ignore[arg-type]
    x = sampler.sample(DATA.epsilon_model(process), (n, 3), steps, generator=generator, x_T=start)  # type: ignore[arg-type]
    assert x.shape == (n, 3) and x.dtype == F64
    mean_err, cov_err = sample_errors(x)
    mean_mc, cov_mc = mc_bounds(n)
    assert mean_err < mean_mc + bias[0]
    assert cov_err < cov_mc + bias[1]


def test_ddim_with_eta_one_is_ddpm() -> None:
    """DDIM's ``eta = 1`` is DDPM's posterior variance, step for step; with the same noise, the same path."""
    model = DATA.epsilon_model(LINEAR)
    runs = [s.sample(model, (64, 3), 50, generator=torch.Generator().manual_seed(3), dtype=F64)
            for s in (DDIMSampler(LINEAR, eta=1.0), DDPMSampler(LINEAR))]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-10)
    assert float((runs[0] - MEAN).abs().max()) > 0.1  # not collapsed: the noise is there


def test_default_start_and_reproducibility() -> None:
    """Without ``x_T`` the start is drawn from the prior; one seed gives one result, another seed another."""
    model = DATA.epsilon_model(LINEAR)
    sampler = DDPMSampler(LINEAR)
    a, b, c = (sampler.sample(model, (3000, 3), 100, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    # 100 respaced DDPM steps: bias about 0.07 on the covariance, plus the prior's 0.015 on the mean.
    mean_err, cov_err = sample_errors(a)
    mean_mc, cov_mc = mc_bounds(3000)
    assert mean_err < mean_mc + 0.02 and cov_err < cov_mc + 0.1


def test_grids() -> None:
    time_grid = DDIMSampler(LINEAR).grid(7)
    assert time_grid == [1000, 834, 667, 500, 334, 168, 1, 0]  # linspace(1000, 1, 7), rounded half to even
    assert DDIMSampler(LINEAR).grid(1000) == list(range(1000, -1, -1))
    assert DDIMSampler(LINEAR).grid(1) == [1000, 0]
    a_bar = LINEAR.alpha_bars
    log_snr = 0.5 * (a_bar.log() - (1 - a_bar).log())
    for schedule, steps in ((LINEAR, 20), (COSINE, 20), (LINEAR, 1000)):
        grid = DPMSolverPlusPlus2M(schedule).grid(steps)
        assert len(grid) == steps + 1 and grid[0] == 1000 and grid[-2:] == [1, 0]
        assert all(i > j for i, j in itertools.pairwise(grid))
    # Evenly spaced in log-SNR: each visited step is the nearest to its target (steps of λ are < 0.4 here).
    visited = log_snr[torch.tensor(DPMSolverPlusPlus2M(LINEAR).grid(20)[:-1]) - 1].flip(0)
    targets = torch.linspace(float(log_snr[0]), float(log_snr[-1]), 20, dtype=F64)
    assert float((visited - targets).abs().max()) < 0.2


def test_make_sampler() -> None:
    assert isinstance(make_sampler("ddim", LINEAR, eta=0.5), DDIMSampler)
    assert isinstance(make_sampler("probability_flow", VP, method="heun2"), ProbabilityFlowSampler)
    with pytest.raises(DiffusionInputError, match="unknown sampler 'euler'"):
        make_sampler("euler", LINEAR)


# -------------------------------------------------------------------------------------------------- bad input


def test_bad_steps_and_shapes_raise() -> None:
    model = DATA.epsilon_model(LINEAR)
    sampler = DDPMSampler(LINEAR)
    for steps in (0, -3, 2.5, True):
        with pytest.raises(DiffusionInputError, match="steps must be a positive int"):
            sampler.sample(model, (4, 3), steps)  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match="exceeds the 1000 steps"):
        sampler.sample(model, (4, 3), 1001)
    with pytest.raises(DiffusionInputError, match="steps must be a positive int"):
        ReverseSDESampler(VP).sample(DATA.epsilon_model(VP), (4, 3), 0)
    for shape in ((4,), (4, 0), (4, 3.0), "43"):
        with pytest.raises(DiffusionInputError, match=r"shape must be \[B, ...\]"):
            sampler.sample(model, shape, 10)  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match=r"x_T must be a floating-point tensor of shape \[4, 3\]"):
        sampler.sample(model, (4, 3), 10, x_T=torch.zeros(4, 2))
    with pytest.raises(DiffusionInputError, match=r"the model must return eps shaped like x \[4, 3\], got \[4\]"):
        sampler.sample(lambda x, t: x.sum(1), (4, 3), 10)


def test_wrong_process_and_options_raise() -> None:
    with pytest.raises(DiffusionInputError, match="needs a DiscreteSchedule, got VPSDE"):
        DDIMSampler(VP)  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match=r"needs a DiffusionSDE, got DiscreteSchedule \(.*to_sde"):
        ProbabilityFlowSampler(LINEAR)  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match="unknown variance 'large'"):
        DDPMSampler(LINEAR, variance="large")  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match="unknown spacing 'quadratic'"):
        DDIMSampler(LINEAR, spacing="quadratic")  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match="eta must be finite and >= 0"):
        DDIMSampler(LINEAR, eta=-0.1)
    with pytest.raises(DiffusionInputError, match="unknown ODE method 'rk45'"):
        ProbabilityFlowSampler(VP, method="rk45")
    with pytest.raises(DiffusionInputError, match="unknown SDE method 'rk4'"):
        ReverseSDESampler(VP, method="rk4")
    with pytest.raises(DiffusionInputError, match="native backend solves the reverse SDE with 'euler' or 'heun'"):
        ReverseSDESampler(VP, method="milstein")
    with pytest.raises(DiffusionInputError, match="unknown backend 'jax'"):
        ReverseSDESampler(VP, backend="jax")  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match=r"t_eps must lie in \(0, T=1.0\)"):
        ReverseSDESampler(VP, t_eps=0.0)
    with pytest.raises(DiffusionInputError, match="snr must be finite and > 0"):
        PredictorCorrectorSampler(VP, snr=0.0)
    with pytest.raises(DiffusionInputError, match="corrector_steps must be an int >= 0"):
        PredictorCorrectorSampler(VP, corrector_steps=-1)


def test_gaussian_reference() -> None:
    """The reference itself: its density is torch's, its score solves ``C_t s = -(x - alpha m)``."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    reference = torch.distributions.MultivariateNormal(MEAN, COVARIANCE)
    torch.testing.assert_close(DATA.log_prob(x), reference.log_prob(x))
    t = torch.full((6,), 0.3, dtype=F64)
    mean, cov = DATA.marginal_covariance(VP, t)
    want = -torch.linalg.solve(cov, (x - mean)[..., None])[..., 0]
    torch.testing.assert_close(DATA.score(VP, x, t), want)
    with pytest.raises(DiffusionInputError, match="symmetric positive definite"):
        GaussianData(MEAN, torch.diag(torch.tensor([1.0, -1.0, 1.0])))
    with pytest.raises(DiffusionInputError, match=r"mean must be \[d\] and covariance \[d, d\]"):
        GaussianData(MEAN, torch.eye(2))
    with pytest.raises(DiffusionInputError, match=r"takes x \[B, 3\], got \[6, 2\]"):
        DATA.epsilon_model(VP)(x[:, :2], t)
