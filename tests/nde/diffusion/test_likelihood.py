"""Log-likelihood through the probability-flow ODE, on Gaussian data.

With the exact Gaussian epsilon model the probability-flow ODE is linear and its flow known: in the
eigenbasis of ``S = Q diag(λ) Qᵀ`` it maps ``x`` at ``t_eps`` to ``x_T`` with
``(x_T - alpha_T m)_k = sqrt(v_T,k / v_eps,k) (x - alpha_eps m)_k``, ``v_t = alpha_t² λ + sigma_t²``. The
model's density, the prior carried back by that flow, is therefore

    log p_model(x) = log prior(x_T) + Σ_k log(v_T,k / v_eps,k) / 2,

which the ODE estimate must reproduce up to the solver's tolerance. It differs from the data's
``log N(x; m, S)`` only by the prior's mismatch at ``T`` (``alpha_T ≈ 0.007``: a few hundredths of a nat).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from nde.diffusion import (
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiffusionInputError,
    DiffusionSDE,
    SubVPSDE,
    linear_schedule,
    log_likelihood,
)
from tests.nde.diffusion.helpers import COVARIANCE, DATA, MEAN

F64 = torch.float64
T_EPS = 1e-5


def model_log_density(sde: DiffusionSDE, x: Tensor) -> Tensor:
    """``[B]``: the closed-form density of the prior carried back to ``t_eps`` by the exact flow."""
    lam, q = torch.linalg.eigh(COVARIANCE)
    a0, s0 = (c.item() for c in sde.marginal(torch.tensor(T_EPS, dtype=F64)))
    a1, s1 = (c.item() for c in sde.marginal(torch.tensor(sde.T, dtype=F64)))
    stretch = (a1**2 * lam + s1**2) / (a0**2 * lam + s0**2)
    x_end = a1 * MEAN + (((x - a0 * MEAN) @ q) * stretch.sqrt()) @ q.T
    return sde.prior_log_prob(x_end) + 0.5 * stretch.log().sum()


@pytest.mark.parametrize("sde", [VPSDE(), CosineVPSDE(), SubVPSDE(), VESDE(0.01, 100.0)],
                         ids=lambda s: type(s).__name__)
def test_exact_divergence_reproduces_the_density(sde: DiffusionSDE) -> None:
    x = DATA.sample(32, generator=torch.Generator().manual_seed(0))
    x[0] = MEAN + 3.0  # and a point far in the tail
    got = log_likelihood(DATA.epsilon_model(sde), sde, x, divergence="exact", t_eps=T_EPS, rtol=1e-7, atol=1e-7)
    assert got.shape == (32,) and got.dtype == F64
    torch.testing.assert_close(got, model_log_density(sde, x), rtol=0, atol=1e-4)  # measured ≤ 1e-5
    assert float((got - DATA.log_prob(x))[1:].abs().max()) < 0.1  # measured 0.04-0.06: the prior's mismatch


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe: str) -> None:
    """Per sample the error is ``Σ_ij (v_i v_j - δ_ij) ∫ J_ij dt`` (one probe held over the solve): mean zero,
    standard deviation about 1 nat here. Over 300 samples the mean error is within 4 standard errors."""
    sde = VPSDE()
    x = DATA.sample(300, generator=torch.Generator().manual_seed(1))
    errors = log_likelihood(DATA.epsilon_model(sde), sde, x, probe=probe, t_eps=T_EPS,  # type: ignore[arg-type]
                            generator=torch.Generator().manual_seed(2)) - model_log_density(sde, x)
    standard_error = float(errors.std()) / 300**0.5
    assert 0.5 < float(errors.std()) < 2.0  # really an estimate (measured 1.07 and 1.09)
    assert abs(float(errors.mean())) < 4 * standard_error


def test_more_probes_and_rademacher_probes_reduce_the_variance() -> None:
    """``K`` probes divide the standard deviation by ``sqrt(K)``. Gaussian probes add the diagonal terms
    ``(v_i² - 1) ∫ J_ii dt``, which Rademacher probes (``v_i² = 1``) do not have; under the VE-SDE the flow
    stretches every coordinate by ``σ_max / sqrt(λ)``, so these dominate (measured std 11.3 against 1.07)."""
    sde = VESDE(0.01, 100.0)
    x = DATA.sample(300, generator=torch.Generator().manual_seed(1))
    exact = model_log_density(sde, x)

    def spread(probe: str, num_probes: int) -> float:
        got = log_likelihood(DATA.epsilon_model(sde), sde, x, probe=probe, num_probes=num_probes,  # type: ignore[arg-type]
                             t_eps=T_EPS, generator=torch.Generator().manual_seed(3))
        return float((got - exact).std())

    one, sixteen = spread("rademacher", 1), spread("rademacher", 16)
    assert one / sixteen == pytest.approx(4.0, rel=0.25)
    assert spread("gaussian", 1) > 4 * one


def test_bad_likelihood_inputs_raise() -> None:
    sde = VPSDE()
    model = DATA.epsilon_model(sde)
    x = DATA.sample(4)
    with pytest.raises(DiffusionInputError, match="needs a DiffusionSDE, got DiscreteSchedule"):
        log_likelihood(model, linear_schedule(10), x)  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match=r"x must be a floating-point tensor \[B, ...\]"):
        log_likelihood(model, sde, x[0])
    with pytest.raises(DiffusionInputError, match="NaN or infinite"):
        log_likelihood(model, sde, torch.full((2, 3), float("nan"), dtype=F64))
    with pytest.raises(DiffusionInputError, match="unknown divergence 'trace'"):
        log_likelihood(model, sde, x, divergence="trace")  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match="unknown probe 'sphere'"):
        log_likelihood(model, sde, x, probe="sphere")  # type: ignore[arg-type]
    with pytest.raises(DiffusionInputError, match="num_probes must be a positive int"):
        log_likelihood(model, sde, x, num_probes=0)
    with pytest.raises(DiffusionInputError, match=r"t_eps must lie in \(0, T=1.0\)"):
        log_likelihood(model, sde, x, t_eps=1.0)
    with pytest.raises(DiffusionInputError, match="unknown ODE method 'rk45'"):
        log_likelihood(model, sde, x, method="rk45")
    with pytest.raises(DiffusionInputError, match=r"the model must return eps shaped like x \[4, 3\]"):
        log_likelihood(lambda x, t: x[:, :2], sde, x)
