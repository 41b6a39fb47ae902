"""Gaussian data, whose noised marginals, score and optimal denoiser are known in closed form.

For data ``x0 ~ N(m, S)`` in ``R^d`` and any noising process ``x_t = alpha x0 + sigma eps`` (a discrete
schedule or an SDE, see :class:`~nde.diffusion.schedules.NoiseProcess`)::

    x_t ~ N(alpha m, C_t),   C_t = alpha² S + sigma² I,
    score(x, t) = -C_t⁻¹ (x - alpha m),
    eps*(x, t) = E[eps | x_t = x] = -sigma score(x, t) = sigma C_t⁻¹ (x - alpha m).

``eps*`` is the minimiser of the denoising loss, so it is what a perfectly trained epsilon model returns:
with it, every sampler's error is its own discretisation error. This makes it the reference for testing
samplers and likelihoods (:mod:`tests.nde.diffusion`) and an oracle to compare trained denoisers with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nde.diffusion.schedules import DiffusionInputError, NoiseProcess

__all__ = ["GaussianData", "GaussianEpsilonModel"]


class GaussianData:
    """Data ``N(mean, covariance)`` in ``R^d``; samples and noised states are ``[B, d]``.

    Args:
        mean: ``[d]``.
        covariance: ``[d, d]``, symmetric positive definite.
    """

    def __init__(self, mean: Tensor, covariance: Tensor) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float64)
        covariance = torch.as_tensor(covariance, dtype=torch.float64)
        if mean.ndim != 1 or covariance.shape != (mean.numel(), mean.numel()):
            raise DiffusionInputError(
                f"mean must be [d] and covariance [d, d], got {list(mean.shape)} and {list(covariance.shape)}"
            )
        if not torch.allclose(covariance, covariance.T) or torch.linalg.cholesky_ex(covariance).info != 0:
            raise DiffusionInputError("covariance must be symmetric positive definite")
        self.mean, self.covariance = mean, covariance
        self.dim = mean.numel()
        self._eigen = torch.linalg.eigh(covariance)

    def marginal_covariance(self, process: NoiseProcess, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha m [B, d], C_t [B, d, d])`` at times ``t [B]`` (float64)."""
        alpha, sigma = (c.to(torch.float64) for c in process.marginal(t))
        eye = torch.eye(self.dim, dtype=torch.float64, device=t.device)
        mean = alpha[:, None] * self.mean.to(t.device)
        cov = alpha[:, None, None] ** 2 * self.covariance.to(t.device) + sigma[:, None, None] ** 2 * eye
        return mean, cov

    def score(self, process: NoiseProcess, x: Tensor, t: Tensor) -> Tensor:
        """``∇_x log p_t(x) = -C_t⁻¹ (x - alpha m)`` for ``x [B, d]``, ``t [B]``; in ``x``'s dtype.

        With ``S = Q diag(λ) Qᵀ``, ``C_t⁻¹ = Q diag(1 / (alpha² λ + sigma²)) Qᵀ``: no solve per sample.
        """
        alpha, sigma = (c.to(dtype=torch.float64, device=x.device)[:, None] for c in process.marginal(t))
        eigenvalues, eigenvectors = (v.to(x.device) for v in self._eigen)
        centred = x.to(torch.float64) - alpha * self.mean.to(x.device)
        rotated = (centred @ eigenvectors) / (alpha**2 * eigenvalues + sigma**2)
        return -(rotated @ eigenvectors.T).to(x.dtype)

    def epsilon(self, process: NoiseProcess, x: Tensor, t: Tensor) -> Tensor:
        """The optimal epsilon prediction ``-sigma(t) score(x, t)``, ``[B, d]``."""
        sigma = process.marginal(t)[1].to(x.dtype)
        return -sigma[:, None] * self.score(process, x, t)

    def epsilon_model(self, process: NoiseProcess) -> GaussianEpsilonModel:
        """The epsilon model ``model(x [B, d], t [B]) -> eps [B, d]`` of this data under ``process``."""
        return GaussianEpsilonModel(self, process)

    def log_prob(self, x: Tensor) -> Tensor:
        """``[B]``: ``log N(x; m, S)`` in nats (float64)."""
        diff = x.to(torch.float64) - self.mean.to(x.device)
        chol = torch.linalg.cholesky(self.covariance.to(x.device))
        z = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)[..., 0]
        return (-0.5 * z.square().sum(-1) - chol.diagonal().log().sum()
                - 0.5 * self.dim * math.log(2 * math.pi))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``[n, d]`` float64 draws."""
        chol = torch.linalg.cholesky(self.covariance)
        return self.mean + torch.randn(n, self.dim, generator=generator, dtype=torch.float64) @ chol.T


class GaussianEpsilonModel:
    """``eps*(x, t)`` of :class:`GaussianData` under one noising process, as an epsilon model."""

    def __init__(self, data: GaussianData, process: NoiseProcess) -> None:
        self.data, self.process = data, process

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.data.dim:
            raise DiffusionInputError(f"the Gaussian model takes x [B, {self.data.dim}], got {list(x.shape)}")
        return self.data.epsilon(self.process, x, t)
