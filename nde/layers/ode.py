"""The Neural ODE layer (Chen et al., 2018)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from nde.solvers import AdjointMode, SolveStats, solve_ode

__all__ = ["NeuralODE"]


class NeuralODE(nn.Module):
    """``y(t) = y0 + ∫ f(s, y(s)) ds`` with a learned vector field ``f``.

    Args:
        vector_field: ``f(t, y)``, ``[B, C] -> [B, C]``, e.g. :class:`nde.layers.MLPVectorField`.
        method, rtol, atol, step_size, adjoint, options: as in :func:`nde.solvers.solve_ode`. The
            default tolerances (1e-4, 1e-6) suit training; tighten them for accurate solutions.

    Attributes:
        stats: :class:`nde.solvers.SolveStats` of the last forward call (backward counters fill in
            during ``backward()``).
    """

    def __init__(self, vector_field: nn.Module, *, method: str = "dopri5", rtol: float = 1e-4,
                 atol: float = 1e-6, step_size: float | None = None, adjoint: AdjointMode = "direct",
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.vector_field = vector_field
        self.method, self.rtol, self.atol, self.step_size = method, rtol, atol, step_size
        self.adjoint: AdjointMode = adjoint
        self.options = options
        self.stats = SolveStats()

    def forward(self, y0: Tensor, times: Tensor) -> Tensor:
        """``y0 [B, C]``, ``times [T]`` -> ``ys [B, T, C]`` with ``ys[:, 0] = y0``."""
        solution = solve_ode(self.vector_field, y0, times, method=self.method, rtol=self.rtol, atol=self.atol,
                             step_size=self.step_size, adjoint=self.adjoint, options=self.options)
        self.stats = solution.stats
        return solution.ys
