"""solve_sde and NeuralSDE against the Ornstein–Uhlenbeck process ``dY = θ(μ − Y) dt + σ dW``.

From ``Y(0) = y0`` the law at time ``t`` is normal with

    mean = μ + (y0 − μ) e^{−θt},        var = σ² (1 − e^{−2θt}) / (2θ).

The noise is additive, so the Itô and the Stratonovich equation coincide.

Each check allows 3 standard errors of the Monte Carlo estimate (the mean of ``n`` paths has standard
error ``sqrt(var / n)``; the sample variance of normal values has ``var sqrt(2 / (n − 1))``) plus the
discretisation bias of the scheme. For this linear equation both schemes used are linear recursions
``Y_{k+1} − μ = a (Y_k − μ) + b σ ΔW_k``, whose moments are exact: ``mean_k = μ + a^k (y0 − μ)`` and
``var_k = b² σ² dt (1 − a^{2k}) / (1 − a²)``; their distance to the closed form is the bias, O(dt).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from nde.layers import NeuralSDE
from nde.solvers import solve_sde
from tests.nde.solvers.helpers import DEVICES

THETA, MU, SIGMA, Y0 = 1.5, 0.7, 0.8, -1.0
DT = 0.01
TIMES = [0.0, 0.25, 1.0, 2.0]
BATCH, CHANNELS = 4000, 2  # 8000 independent paths: the channels do not interact
N_PATHS = BATCH * CHANNELS

# Linear-recursion coefficients (a, b) of each scheme on the OU equation (see the module docstring).
# Euler–Maruyama: Y1 = Y0 + θ(μ − Y0) dt + σ ΔW.
# Midpoint (torchsde): Y' = Y0 + f(Y0) dt/2 + σ ΔW / 2, Y1 = Y0 + f(Y') dt + σ ΔW.
SCHEMES = {
    "euler": (1 - THETA * DT, 1.0),
    "midpoint": (1 - THETA * DT + (THETA * DT) ** 2 / 2, 1 - THETA * DT / 2),
}


def closed_form(t: float) -> tuple[float, float]:
    mean = MU + (Y0 - MU) * math.exp(-THETA * t)
    var = SIGMA**2 * (1 - math.exp(-2 * THETA * t)) / (2 * THETA)
    return mean, var


def scheme_moments(scheme: str, t: float) -> tuple[float, float]:
    a, b = SCHEMES[scheme]
    k = round(t / DT)
    mean = MU + a**k * (Y0 - MU)
    var = b**2 * SIGMA**2 * DT * (1 - a ** (2 * k)) / (1 - a**2)
    return mean, var


def check_ou_moments(ys: Tensor, scheme: str) -> None:
    """``ys [B, T, C]`` holds independent OU paths at TIMES."""
    assert ys.shape == (BATCH, len(TIMES), CHANNELS)
    assert torch.isfinite(ys).all()
    assert torch.all(ys[:, 0] == Y0)
    samples = ys.detach().double().cpu().permute(1, 0, 2).reshape(len(TIMES), -1)  # [T, n]
    for i, t in enumerate(TIMES[1:], start=1):
        mean, var = closed_form(t)
        s_mean, s_var = scheme_moments(scheme, t)
        # The bias is O(dt): a few θ² dt t e^{-θt} at most.
        assert abs(s_mean - mean) < 2 * THETA * DT and abs(s_var - var) < 2 * THETA * DT * var
        got_mean = samples[i].mean().item()
        got_var = samples[i].var().item()
        tol_mean = 3 * math.sqrt(var / N_PATHS) + abs(s_mean - mean)
        tol_var = 3 * var * math.sqrt(2 / (N_PATHS - 1)) + abs(s_var - var)
        assert abs(got_mean - mean) < tol_mean, (t, got_mean, mean, tol_mean)
        assert abs(got_var - var) < tol_var, (t, got_var, var, tol_var)


def _y0_times(device: str) -> tuple[Tensor, Tensor]:
    y0 = torch.full((BATCH, CHANNELS), Y0, dtype=torch.float64, device=device)
    times = torch.tensor(TIMES, dtype=torch.float64, device=device)
    return y0, times


def _drift(t: Tensor, y: Tensor) -> Tensor:
    return THETA * (MU - y)


@pytest.mark.parametrize("device", DEVICES)
def test_ou_ito_euler_diagonal(device: str) -> None:
    torch.manual_seed(0)
    y0, times = _y0_times(device)
    sol = solve_sde(_drift, lambda t, y: torch.full_like(y, SIGMA), y0, times, noise_type="diagonal",
                    sde_type="ito", method="euler", dt=DT, seed=1)
    check_ou_moments(sol.ys, "euler")


@pytest.mark.parametrize("device", DEVICES)
def test_ou_stratonovich_midpoint_additive(device: str) -> None:
    torch.manual_seed(0)
    y0, times = _y0_times(device)
    eye = SIGMA * torch.eye(CHANNELS, dtype=torch.float64, device=device)
    sol = solve_sde(_drift, lambda t, y: eye.expand(y.shape[0], -1, -1), y0, times, noise_type="additive",
                    sde_type="stratonovich", method="midpoint", dt=DT, seed=2)
    check_ou_moments(sol.ys, "midpoint")


def test_ou_default_seed_follows_global_generator() -> None:
    """With seed=None the path comes from torch's generator: manual_seed makes runs repeat."""
    y0, times = _y0_times("cpu")
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(solve_sde(_drift, lambda t, y: torch.full_like(y, SIGMA), y0[:8], times, dt=0.05).ys)
    assert torch.equal(runs[0], runs[1])
    other = solve_sde(_drift, lambda t, y: torch.full_like(y, SIGMA), y0[:8], times, dt=0.05, seed=6).ys
    assert not torch.equal(runs[0], other)


class OUDrift(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(THETA, dtype=torch.float64))
        self.mu = nn.Parameter(torch.tensor(MU, dtype=torch.float64))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.theta * (self.mu - y)


class OUDiffusion(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sigma = nn.Parameter(torch.tensor(SIGMA, dtype=torch.float64))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.sigma * torch.ones_like(y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sde_type", "method"), [("ito", "euler"), ("stratonovich", "midpoint")])
def test_ou_neural_sde(device: str, sde_type: str, method: str) -> None:
    torch.manual_seed(0)
    y0, times = _y0_times(device)
    model = NeuralSDE(OUDrift(), OUDiffusion(), noise_type="diagonal", sde_type=sde_type, method=method,
                      dt=DT).to(device)
    with torch.no_grad():
        ys = model(y0, times, seed=3)
    check_ou_moments(ys, method)
    assert model.stats.steps_accepted == 200
