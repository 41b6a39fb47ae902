"""Ordinary differential equations through torchdiffeq.

Solves ``dy/dt = f(t, y)``, ``y(times[0]) = y0``, and returns ``y`` at every entry of ``times``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torchdiffeq
from torch import Tensor, nn

from nde.solvers import native
from nde.solvers.common import (
    AdjointMode,
    Solution,
    SolverInputError,
    SolveStats,
    check_initial_state,
    check_modules_for_adjoint,
    check_output_shape,
    check_positive,
    check_times,
)

__all__ = ["ODE_METHODS", "ODEMethod", "solve_ode"]

VectorField = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ODEMethod:
    """Capabilities of one torchdiffeq method.

    Attributes:
        name: torchdiffeq's name for it.
        order: order of convergence of the global error.
        adaptive: True for embedded Runge–Kutta pairs with error control (``rtol``/``atol`` apply,
            ``step_size`` does not); False for fixed steps (``step_size`` applies).
    """

    name: str
    order: int
    adaptive: bool


ODE_METHODS: dict[str, ODEMethod] = {
    m.name: m
    for m in (
        ODEMethod("dopri8", 8, True),
        ODEMethod("dopri5", 5, True),
        ODEMethod("bosh3", 3, True),
        ODEMethod("fehlberg2", 2, True),
        ODEMethod("adaptive_heun", 2, True),
        ODEMethod("euler", 1, False),
        ODEMethod("midpoint", 2, False),
        ODEMethod("heun2", 2, False),
        ODEMethod("heun3", 3, False),
        ODEMethod("rk4", 4, False),
        ODEMethod("explicit_adams", 4, False),
        ODEMethod("implicit_adams", 4, False),
    )
}

_ODE_ADJOINTS = ("direct", "adjoint")


class CountingField:
    """Wraps ``f(t, y)`` to count evaluations and solver steps into a :class:`SolveStats`.

    Evaluations made after the forward solve has returned belong to the adjoint solve of the backward
    pass. The step counters use torchdiffeq's step callbacks, which the solver looks up on the function it
    is given. A plain callable rather than a Module: the adjoint receives its parameters explicitly, and a
    Module's ``__call__`` costs a few microseconds per evaluation.
    """

    def __init__(self, vector_field: VectorField, stats: SolveStats, expected_shape: tuple[int, ...],
                 what: str, adaptive: bool) -> None:
        self.vector_field = vector_field
        self.stats = stats
        self.in_backward = False
        self._expected_shape: tuple[int, ...] | None = expected_shape
        self._what = what
        # torchdiffeq warns about callbacks a solver does not call, so only the valid ones are set.
        if adaptive:
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject
            self.callback_accept_step_adjoint = self._accept_adjoint
            self.callback_reject_step_adjoint = self._reject_adjoint
        else:
            self.callback_step = self._accept
            self.callback_step_adjoint = self._accept_adjoint

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.vector_field(t, y)
        if self.in_backward:
            self.stats.nfe_backward += 1
        else:
            self.stats.nfe_forward += 1
            if self._expected_shape is not None:
                check_output_shape(out, self._expected_shape, self._what)
                self._expected_shape = None
        return out

    def _accept(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.steps_accepted += 1

    def _reject(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.steps_rejected += 1

    def _accept_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.backward_steps_accepted += 1

    def _reject_adjoint(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.backward_steps_rejected += 1


def check_ode_method(method: str, adjoint: str, step_size: float | None) -> ODEMethod:
    """Check the method, the adjoint choice and the step size against each other."""
    if method not in ODE_METHODS:
        raise SolverInputError(f"unknown ODE method {method!r}; choose one of {sorted(ODE_METHODS)}.")
    if adjoint not in _ODE_ADJOINTS:
        hint = {"reversible_heun": " (reversible Heun is an SDE method: use it with solve_sde)",
                "checkpoint": " with torchdiffeq (it is the native backend's: pass backend='native')"}.get(adjoint, "")
        raise SolverInputError(f"adjoint={adjoint!r} is not available for ODEs{hint}; choose one of {_ODE_ADJOINTS}.")
    spec = ODE_METHODS[method]
    if spec.adaptive and step_size is not None:
        raise SolverInputError(
            f"method {method!r} chooses its own steps from rtol/atol; `step_size` applies to fixed-step methods "
            f"({sorted(m for m, s in ODE_METHODS.items() if not s.adaptive)})."
        )
    check_positive(step_size, "step_size")
    return spec


def integrate(func: CountingField, y0: Tensor, times: Tensor, *, spec: ODEMethod, rtol: float, atol: float,
              step_size: float | None, adjoint: str, options: dict[str, Any] | None,
              adjoint_params: Sequence[Tensor]) -> Tensor:
    """Run torchdiffeq on a prepared :class:`CountingField`; returns ``[B, T, C]``."""
    opts: dict[str, Any] = dict(options or {})
    if step_size is not None:
        opts["step_size"] = step_size
    if adjoint == "adjoint":
        # The backward solve takes the forward options (step size, grid, jumps) so that it retraces the
        # forward steps; torchdiffeq flips time-valued options itself.
        adjoint_options: dict[str, Any] = {k: v for k, v in opts.items() if k != "norm"}
        if spec.adaptive:
            # The seminorm (Kidger et al., 2021) ignores the parameter-gradient channels in the step-size
            # control of the adjoint solve: far fewer steps, the same gradients to the tolerance.
            adjoint_options["norm"] = "seminorm"
        ys = torchdiffeq.odeint_adjoint(
            func, y0, times, rtol=rtol, atol=atol, method=spec.name, options=opts,
            adjoint_options=adjoint_options, adjoint_params=tuple(adjoint_params),
        )
    else:
        ys = torchdiffeq.odeint(func, y0, times, rtol=rtol, atol=atol, method=spec.name, options=opts)
    func.in_backward = True
    return ys.transpose(0, 1)


def solve_ode(
    vector_field: VectorField,
    y0: Tensor,
    times: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: float | None = None,
    adjoint: AdjointMode = "direct",
    options: dict[str, Any] | None = None,
    backend: Literal["torchdiffeq", "native"] = "torchdiffeq",
) -> Solution:
    """Solve ``dy/dt = f(t, y)`` from ``y(times[0]) = y0`` and return ``y`` at ``times``.

    Args:
        vector_field: ``f(t, y)``, ``t`` a scalar tensor, ``y [B, C]`` -> ``[B, C]``. With
            ``adjoint="adjoint"`` the gradients of its parameters are computed when it is a
            ``torch.nn.Module``; a plain function may close over no trainable tensors.
        y0: initial state ``[B, C]``, float32 or float64.
        times: output times ``[T]``, strictly increasing, on ``y0``'s device; the solve runs from
            ``times[0]`` to ``times[-1]``.
        method: a key of :data:`ODE_METHODS` (``"dopri5"`` adaptive by default; ``"rk4"``, ``"euler"``,
            ... fixed step).
        rtol, atol: tolerances of adaptive methods (also used by the adjoint solve).
        step_size: step of fixed-step methods; ``None`` steps from one output time to the next.
        adjoint: ``"direct"`` (backpropagate through the solver) or ``"adjoint"`` (solve the adjoint
            equation backwards: memory flat in the number of steps).
        options: further torchdiffeq options, e.g. ``{"jump_t": t}`` for known discontinuities.
        backend: ``"torchdiffeq"`` or ``"native"`` (:mod:`nde.solvers.native`: ``euler``, ``midpoint``,
            ``rk4`` in plain PyTorch, with ``adjoint="direct"`` or ``"checkpoint"``; each gap of ``times``
            is split into equal steps of at most ``step_size``).

    Returns:
        :class:`Solution` with ``ys [B, T, C]`` and the counters in ``stats``.

    Raises:
        SolverInputError: on malformed input, before any solving.
    """
    check_modules_for_adjoint(adjoint, vector_field=vector_field)
    if backend == "native":
        return _solve_ode_native(vector_field, y0, times, method, step_size, adjoint)
    if backend != "torchdiffeq":
        raise SolverInputError(f"unknown backend {backend!r}; choose 'torchdiffeq' or 'native'.")
    spec = check_ode_method(method, adjoint, step_size)
    check_initial_state(y0)
    check_times(times, y0)
    stats = SolveStats()
    func = CountingField(vector_field, stats, tuple(y0.shape), "vector field", spec.adaptive)
    params = tuple(vector_field.parameters()) if isinstance(vector_field, nn.Module) else ()
    ys = integrate(func, y0, times, spec=spec, rtol=rtol, atol=atol, step_size=step_size, adjoint=adjoint,
                   options=options, adjoint_params=params)
    return Solution(ys=ys, times=times, stats=stats)


def _solve_ode_native(vector_field: VectorField, y0: Tensor, times: Tensor, method: str, step_size: float | None,
                      adjoint: str) -> Solution:
    spec = native.check_native(method, adjoint, native.NATIVE_ODE_METHODS, "ODE")
    check_initial_state(y0)
    check_times(times, y0)
    check_positive(step_size, "step_size")
    plan = native.StepPlan.build(times, step_size)
    checked = native.first_call_checked(vector_field, tuple(y0.shape), "vector field")
    ys = native_ode_loop(vector_field, y0, plan, method, adjoint, first_call=checked)
    return Solution(ys=ys, times=times, stats=native.fixed_step_stats(len(spec.nodes), plan.n_steps, adjoint))


def native_ode_loop(vector_field: VectorField, y0: Tensor, plan: native.StepPlan, method: str, adjoint: str,
                    first_call: VectorField | None = None) -> Tensor:
    """The native ODE solve without input checks (they read values on the host): ``ys [B, T, C]``.

    This is the part a CUDA graph captures or ``torch.compile(fullgraph=True)`` traces; the checks and the
    :class:`~nde.solvers.native.StepPlan` come before. ``first_call`` replaces the vector field at the first
    step (e.g. to check its output shape).
    """
    grid, steps = plan.grid_points, plan.step_sizes
    first = vector_field if first_call is None else first_call

    def step(k: int, y: Tensor) -> Tensor:
        return native.ode_step(method, first if k == 0 else vector_field, grid[k], steps[k], y)

    return native.integrate_steps(step, y0, plan, adjoint, native.module_params(vector_field))
