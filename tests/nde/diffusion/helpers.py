"""The reference case of the diffusion tests: Gaussian data in three dimensions.

Data ``x0 ~ N(m, S)`` with a non-diagonal ``S`` (eigenvalues 0.17, 1.09, 1.84; correlations about ±0.4). Under
any noising process ``x_t = alpha x0 + sigma eps`` the marginal is ``N(alpha m, alpha² S + sigma² I)`` and the
optimal epsilon model is known in closed form (:class:`nde.diffusion.GaussianData`), so a sampler given it
is wrong only by its discretisation (and by the Monte Carlo error of a finite sample).

Moments are compared *whitened*: with ``S = L Lᵀ``, ``z = L⁻¹ (x - m)`` is standard normal under the target,
so the errors of every mean and covariance entry are on one scale, and for ``n`` independent samples the
standard error is ``1/sqrt(n)`` for each mean and off-diagonal covariance entry and ``sqrt(2/n)`` for each
diagonal one (Gaussian fourth moments).

Deterministic samplers given the Gaussian model are affine maps ``x0 = A x_T + b`` of their start, so their
output law is exactly ``N(A μ_T + b, A C_T Aᵀ)`` for a start ``x_T ~ N(μ_T, C_T)``: :func:`exact_moments` reads
``A`` and ``b`` off four runs (from 0 and the unit vectors) and the comparison has no Monte Carlo error.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nde.diffusion import GaussianData, NoiseProcess, Sampler

MEAN = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
COVARIANCE = torch.tensor([[1.0, 0.5, -0.3], [0.5, 1.5, 0.4], [-0.3, 0.4, 0.6]], dtype=torch.float64)
DATA = GaussianData(MEAN, COVARIANCE)
_CHOL = torch.linalg.cholesky(COVARIANCE)


def whiten(x: Tensor) -> Tensor:
    """``L⁻¹ (x - m)`` for ``x [n, 3]``."""
    return torch.linalg.solve_triangular(_CHOL, (x.to(torch.float64) - MEAN).T, upper=False).T


def whitened_errors(mean: Tensor, cov: Tensor) -> tuple[float, float]:
    """``(max |L⁻¹ (mean - m)|, max |L⁻¹ cov L⁻ᵀ - I|)``: 0 for the target."""
    z_mean = torch.linalg.solve_triangular(_CHOL, (mean - MEAN)[:, None], upper=False)[:, 0]
    inv = torch.linalg.inv(_CHOL)
    z_cov = inv @ cov @ inv.T - torch.eye(3, dtype=torch.float64)
    return float(z_mean.abs().max()), float(z_cov.abs().max())


def sample_errors(x: Tensor) -> tuple[float, float]:
    """Whitened errors of the sample mean and covariance of ``x [n, 3]``."""
    x = x.to(torch.float64)
    return whitened_errors(x.mean(0), torch.cov(x.T))


def mc_bounds(n: int, z: float = 4.0) -> tuple[float, float]:
    """``z`` standard errors of a whitened mean entry and of a diagonal covariance entry, for ``n`` samples."""
    return z / n**0.5, z * (2 / n) ** 0.5


def marginal_at(process: NoiseProcess, t: float) -> tuple[Tensor, Tensor]:
    """``(μ_t [3], C_t [3, 3])``: the law of the noised data at time ``t``."""
    mean, cov = DATA.marginal_covariance(process, torch.tensor([t], dtype=torch.float64))
    return mean[0], cov[0]


def draw_marginal(process: NoiseProcess, t: float, n: int, generator: torch.Generator) -> Tensor:
    """``[n, 3]`` float64 draws of the noised data at time ``t``: a start without prior mismatch."""
    mean, cov = marginal_at(process, t)
    return mean + torch.randn(n, 3, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(cov).T


def exact_moments(sampler: Sampler, process: NoiseProcess, steps: int, start_mean: Tensor,
                  start_cov: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance of a deterministic sampler's output for a start ``N(start_mean, start_cov)``."""
    starts = torch.cat([torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)])
    out = sampler.sample(DATA.epsilon_model(process), (4, 3), steps, x_T=starts)
    offset, linear = out[0], (out[1:] - out[0]).T
    return linear @ start_mean + offset, linear @ start_cov @ linear.T
