"""The Neural ODE layer (Chen et al., 2018)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from nde.solvers import AdjointMode, SolveStats, native, solve_ode
from nde.solvers.ode import native_ode_loop

__all__ = ["NeuralODE"]


class _NativeSolve(nn.Module):
    """``y0 -> ys`` through the native solver on a fixed step plan: the unit a CUDA graph captures."""

    def __init__(self, vector_field: nn.Module, times: Tensor, method: str, step_size: float | None,
                 adjoint: str) -> None:
        super().__init__()
        self.vector_field = vector_field
        self.times, self.method, self.step_size, self.adjoint = times, method, step_size, adjoint
        self.plan = native.StepPlan.build(times, step_size)

    def forward(self, y0: Tensor) -> Tensor:
        return native_ode_loop(self.vector_field, y0, self.plan, self.method, self.adjoint)


class NeuralODE(nn.Module):
    """``y(t) = y0 + ∫ f(s, y(s)) ds`` with a learned vector field ``f``.

    Args:
        vector_field: ``f(t, y)``, ``[B, C] -> [B, C]``, e.g. :class:`nde.layers.MLPVectorField`.
        method, rtol, atol, step_size, adjoint, options, backend: as in :func:`nde.solvers.solve_ode`. The
            default tolerances (1e-4, 1e-6) suit training; tighten them for accurate solutions.
        graph: with ``backend="native"`` on CUDA, capture the solve and its backward pass as CUDA graphs
            (``torch.cuda.make_graphed_callables``) on the first call and replay them afterwards. The
            captured graphs are reused while the input's shape, dtype and device and ``times`` stay the
            same, and rebuilt otherwise. ``y0`` is copied into the graph's static input on each call; the
            input checks run when the graphs are built, not on every replay. The capture fails (a CUDA
            stream-capture error) while an autograd graph through ``vector_field``'s parameters from an
            eager call is still alive, e.g. an undeleted loss: delete or ``detach()`` it before the first
            graphed call.

    Attributes:
        stats: :class:`nde.solvers.SolveStats` of the last forward call (backward counters fill in
            during ``backward()``).
    """

    def __init__(self, vector_field: nn.Module, *, method: str = "dopri5", rtol: float = 1e-4,
                 atol: float = 1e-6, step_size: float | None = None, adjoint: AdjointMode = "direct",
                 options: dict[str, Any] | None = None,
                 backend: Literal["torchdiffeq", "native"] = "torchdiffeq", graph: bool = False) -> None:
        super().__init__()
        if graph and backend != "native":
            raise ValueError("graph=True captures the native solver: pass backend='native' too.")
        self.vector_field = vector_field
        self.method, self.rtol, self.atol, self.step_size = method, rtol, atol, step_size
        self.adjoint: AdjointMode = adjoint
        self.options = options
        self.backend: Literal["torchdiffeq", "native"] = backend
        self.graph = graph
        self._graphed: tuple[tuple[Any, ...], Any, SolveStats] | None = None
        self.stats = SolveStats()

    def forward(self, y0: Tensor, times: Tensor) -> Tensor:
        """``y0 [B, C]``, ``times [T]`` -> ``ys [B, T, C]`` with ``ys[:, 0] = y0``."""
        if self.graph and y0.is_cuda:
            return self._graph_forward(y0, times)
        solution = solve_ode(self.vector_field, y0, times, method=self.method, rtol=self.rtol, atol=self.atol,
                             step_size=self.step_size, adjoint=self.adjoint, options=self.options,
                             backend=self.backend)
        self.stats = solution.stats
        return solution.ys

    def _graph_forward(self, y0: Tensor, times: Tensor) -> Tensor:
        key = (tuple(y0.shape), y0.dtype, y0.device, y0.requires_grad, tuple(times.tolist()))
        if self._graphed is None or self._graphed[0] != key:
            # Check once, eagerly: inside the graph nothing may read values back to the host.
            with torch.no_grad():
                solve_ode(self.vector_field, y0.detach(), times, method=self.method, step_size=self.step_size,
                          backend="native")
            solve = _NativeSolve(self.vector_field, times, self.method, self.step_size, self.adjoint)
            sample = y0.detach().clone().requires_grad_(y0.requires_grad)
            stages = len(native.NATIVE_ODE_METHODS[self.method].nodes)
            stats = native.fixed_step_stats(stages, solve.plan.n_steps, self.adjoint)
            self._graphed = (key, torch.cuda.make_graphed_callables(solve, (sample,)), stats)
        self.stats = self._graphed[2]
        return self._graphed[1](y0)
