"""The Neural SDE layer: learned drift and diffusion, Itô or Stratonovich."""

from __future__ import annotations

from typing import Literal

import torchsde
from torch import Tensor, nn

from nde.layers.vector_fields import AdditiveDiffusion, DiagonalDiffusion, GeneralDiffusion, MLPVectorField
from nde.solvers import AdjointMode, SolveStats, solve_sde
from nde.solvers.sde import NoiseType, SDEType, check_sde_method

__all__ = ["NeuralSDE"]


class NeuralSDE(nn.Module):
    """``dy = f(t, y) dt + g(t, y) dW`` (Itô) or ``∘ dW`` (Stratonovich) with learned ``f`` and ``g``.

    Args:
        drift: ``f(t, y)``, ``[B, C] -> [B, C]``.
        diffusion: ``g(t, y)``; ``[B, C]`` for diagonal noise, ``[B, C, m]`` for general and additive.
        noise_type, sde_type, method, dt, adjoint, backend: as in :func:`nde.solvers.solve_sde`; the
            combination is checked when the layer is built (torchsde backend) or on the first call (native).

    Attributes:
        stats: :class:`nde.solvers.SolveStats` of the last forward call.
    """

    def __init__(self, drift: nn.Module, diffusion: nn.Module, *, noise_type: NoiseType = "diagonal",
                 sde_type: SDEType = "ito", method: str | None = None, dt: float = 1e-2,
                 adjoint: AdjointMode = "direct", backend: Literal["torchsde", "native"] = "torchsde") -> None:
        super().__init__()
        if backend == "torchsde":
            check_sde_method(method, noise_type, sde_type, adjoint)
        self.backend: Literal["torchsde", "native"] = backend
        self.drift, self.diffusion = drift, diffusion
        self.noise_type: NoiseType = noise_type
        self.sde_type: SDEType = sde_type
        self.method, self.dt = method, dt
        self.adjoint: AdjointMode = adjoint
        self.stats = SolveStats()

    @classmethod
    def mlp(cls, channels: int, *, noise_type: NoiseType = "diagonal", noise_channels: int | None = None,
            width: int = 64, depth: int = 2, sde_type: SDEType = "ito", method: str | None = None,
            dt: float = 1e-2, adjoint: AdjointMode = "direct",
            backend: Literal["torchsde", "native"] = "torchsde") -> NeuralSDE:
        """An SDE with an MLP drift and the diffusion network matching ``noise_type``.

        ``noise_channels`` (``m``) defaults to ``channels``; diagonal noise has ``m = channels``.
        """
        m = channels if noise_channels is None else noise_channels
        drift = MLPVectorField(channels, width, depth)
        if noise_type == "diagonal":
            diffusion: nn.Module = DiagonalDiffusion(channels, width=max(4, width // 4))
        elif noise_type == "general":
            diffusion = GeneralDiffusion(channels, m, width, 1)
        elif noise_type == "additive":
            diffusion = AdditiveDiffusion(channels, m)
        else:
            raise ValueError(f"NeuralSDE.mlp builds diagonal, general or additive noise, not {noise_type!r}.")
        return cls(drift, diffusion, noise_type=noise_type, sde_type=sde_type, method=method, dt=dt,
                   adjoint=adjoint, backend=backend)

    def forward(self, y0: Tensor, times: Tensor, *, bm: torchsde.BrownianInterval | None = None,
                seed: int | None = None) -> Tensor:
        """``y0 [B, C]``, ``times [T]`` -> one sample path per batch row, ``ys [B, T, C]``.

        ``bm`` fixes the Brownian path; otherwise one is drawn (from ``seed``, or torch's global
        generator when ``seed`` is None).
        """
        solution = solve_sde(self.drift, self.diffusion, y0, times, noise_type=self.noise_type,
                             sde_type=self.sde_type, method=self.method, dt=self.dt, adjoint=self.adjoint,
                             bm=bm, seed=seed, backend=self.backend)
        self.stats = solution.stats
        return solution.ys
