"""Controlled differential equations, reduced to ODEs through the control's derivative.

Solves ``z(t) = z0 + ∫ f(s, z(s)) dX(s)`` for a differentiable control path ``X`` (a torchcde
interpolation), by integrating the ODE ``dz/dt = f(t, z) · dX/dt`` with torchdiffeq, exactly as
``torchcde.cdeint`` does. Unlike ``torchcde.cdeint``, gradients reach the control's coefficients under
the adjoint method too (they are passed to the adjoint as parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

import torch
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
from nde.solvers.ode import ODE_METHODS, CountingField, check_ode_method, integrate

__all__ = ["Control", "solve_cde"]


class Control(Protocol):
    """A continuous path ``X(t)`` with values ``[B, C]``, such as ``torchcde.CubicSpline``."""

    @property
    def interval(self) -> Tensor: ...

    @property
    def grid_points(self) -> Tensor: ...

    def evaluate(self, t: Tensor) -> Tensor: ...

    def derivative(self, t: Tensor) -> Tensor: ...


class ControlledField:
    """The ODE vector field ``g(t, z) = f(t, z) @ dX/dt(t)``: ``[B, H, C] @ [B, C] -> [B, H]``."""

    def __init__(self, vector_field: Callable[[Tensor, Tensor], Tensor], control: Control,
                 expected_shape: tuple[int, int, int]) -> None:
        self.vector_field = vector_field
        self.control = control
        self._expected_shape: tuple[int, int, int] | None = expected_shape

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        matrix = self.vector_field(t, z)
        if self._expected_shape is not None:
            check_output_shape(matrix, self._expected_shape, "CDE vector field")
            self._expected_shape = None
        dxdt = self.control.derivative(t)
        return (matrix @ dxdt.unsqueeze(-1)).squeeze(-1)


def knot_grid(knots: Tensor, step_size: float | None) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """A torchdiffeq ``grid_constructor`` whose steps land on every knot of the control.

    The grid is the union of the requested times and the knots between them; each gap is split into
    ``ceil(gap / step_size)`` equal steps (one step per gap when ``step_size`` is None). Landing on the
    knots keeps fixed-step methods at their order on piecewise-smooth controls, and output times on the
    grid need no interpolation. torchdiffeq calls it for each backward interval of the adjoint as well,
    so the backward pass retraces the forward steps.
    """

    def construct(func: Any, y0: Tensor, t: Tensor) -> Tensor:
        if t[0] > t[-1]:
            # The adjoint's backward intervals arrive in decreasing time.
            return construct(func, y0, t.flip(0)).flip(0)
        inner = knots.to(t)[(knots > t[0]) & (knots < t[-1])]
        points = torch.unique(torch.cat([t, inner]))  # sorted
        if step_size is None:
            return points
        gaps = points[1:] - points[:-1]
        counts = torch.ceil(gaps / step_size - 1e-9).clamp(min=1).long().tolist()
        pieces = [points[i] + gaps[i] * torch.arange(n, dtype=t.dtype, device=t.device) / n
                  for i, n in enumerate(counts)]
        return torch.cat([*pieces, points[-1:]])

    return construct


def _autograd_id(tensor: Tensor) -> int:
    return id(tensor) if tensor.grad_fn is None else id(tensor.grad_fn)


def without_descendants(tensors: list[Tensor]) -> tuple[Tensor, ...]:
    """Drop every tensor computed from another one of the list.

    The adjoint differentiates the vector field with respect to each parameter it is given, following
    autograd's history. A linear interpolation holds both its coefficients and their differences; given
    both, the gradient through the differences would be counted twice (once for each). Given only the
    ancestor, autograd reaches it through the differences once.
    """
    ids = {_autograd_id(t) for t in tensors}
    kept = []
    for tensor in tensors:
        seen: set[int] = set()
        stack = [tensor.grad_fn] if tensor.grad_fn is not None else []
        is_descendant = False
        while stack and not is_descendant:
            node = stack.pop()
            for parent, _ in node.next_functions:
                if parent is None or id(parent) in seen:
                    continue
                seen.add(id(parent))
                variable = getattr(parent, "variable", None)
                if (id(variable) if variable is not None else id(parent)) in ids:
                    is_descendant = True
                    break
                stack.append(parent)
        if not is_descendant:
            kept.append(tensor)
    return tuple(kept)


def _is_piecewise_linear(control: Control) -> bool:
    return type(control).__name__ == "LinearInterpolation"


def solve_cde(
    vector_field: Callable[[Tensor, Tensor], Tensor],
    control: Control,
    z0: Tensor,
    times: Tensor | None = None,
    *,
    method: str = "rk4",
    rtol: float = 1e-4,
    atol: float = 1e-6,
    step_size: float | None = None,
    adjoint: AdjointMode = "direct",
    options: dict[str, Any] | None = None,
    backend: Literal["torchdiffeq", "native"] = "torchdiffeq",
) -> Solution:
    """Solve the CDE ``dz = f(t, z) dX(t)`` from ``z(times[0]) = z0``.

    Args:
        vector_field: ``f(t, z)``, ``z [B, H]`` -> ``[B, H, C]``; keep it bounded (e.g. end in tanh) so
            that the solve stays stable.
        control: the path ``X`` with ``derivative(t) -> [B, C]``, e.g. ``torchcde.CubicSpline`` or
            ``torchcde.LinearInterpolation`` (see :func:`nde.layers.make_control`).
        z0: initial hidden state ``[B, H]``.
        times: output times ``[T]`` inside ``control.interval``; default: the interval's two ends.
        method: an ODE method of :data:`nde.solvers.ODE_METHODS`; fixed-step by default (``"rk4"``).
        rtol, atol: tolerances of adaptive methods (torchcde's defaults).
        step_size: largest step of fixed-step methods. The steps always land on the control's knots
            (and on ``times``); by default there is one step from each knot to the next.
        adjoint: ``"direct"`` or ``"adjoint"``.
        options: further torchdiffeq options. For adaptive methods on a piecewise-linear control the
            control's grid points are passed as ``jump_t`` (derivative discontinuities) unless given.
        backend: ``"torchdiffeq"`` or ``"native"`` (:mod:`nde.solvers.native`: ``euler``, ``midpoint``,
            ``rk4`` in plain PyTorch with ``adjoint="direct"`` or ``"checkpoint"``; the control's derivative
            is read at every stage time before the loop, one-sided at the knots).

    Returns:
        :class:`Solution` with ``ys [B, T, H]``.
    """
    check_modules_for_adjoint(adjoint, vector_field=vector_field)
    if backend not in ("torchdiffeq", "native"):
        raise SolverInputError(f"unknown backend {backend!r}; choose 'torchdiffeq' or 'native'.")
    if backend == "native":
        native.check_native(method, adjoint, native.NATIVE_ODE_METHODS, "CDE")
    else:
        check_ode_method(method, adjoint, step_size)
    check_initial_state(z0, "z0")
    for attribute in ("derivative", "evaluate", "interval", "grid_points"):
        if not hasattr(control, attribute):
            raise SolverInputError(
                f"`control` has no `{attribute}`: pass a torchcde interpolation such as "
                "torchcde.CubicSpline(coeffs) (nde.layers.make_control builds one)."
            )
    interval = control.interval
    if times is None:
        times = interval.to(z0.dtype)
    check_times(times, z0)
    slack = 1e-6 * float((interval[1] - interval[0]).abs()) + 1e-12
    if float(times[0]) < float(interval[0]) - slack or float(times[-1]) > float(interval[1]) + slack:
        raise SolverInputError(
            f"`times` spans [{float(times[0])}, {float(times[-1])}] but the control is only defined on "
            f"[{float(interval[0])}, {float(interval[1])}]."
        )
    x0 = control.evaluate(times[0])
    if x0.ndim != 2 or x0.shape[0] != z0.shape[0]:
        raise SolverInputError(
            f"the control has values of shape {list(x0.shape)} but z0 has batch size {z0.shape[0]}; "
            "the control must be [B, C] at each time with the same B."
        )
    batch, hidden = z0.shape
    channels = x0.shape[1]

    if backend == "native":
        return _solve_cde_native(vector_field, control, z0, times, method, step_size, adjoint)
    spec = ODE_METHODS[method]
    opts = dict(options or {})
    grid = control.grid_points
    piecewise_linear = _is_piecewise_linear(control)
    if spec.adaptive:
        if piecewise_linear and "jump_t" not in opts:
            opts["jump_t"] = grid
    elif "grid_constructor" not in opts:
        opts["grid_constructor"] = knot_grid(grid, step_size)
        # At a knot of a piecewise-linear path, evaluate the derivative of the segment being stepped over.
        opts.setdefault("perturb", piecewise_linear)
        step_size = None

    stats = SolveStats()
    field = ControlledField(vector_field, control, (batch, hidden, channels))
    func = CountingField(field, stats, (batch, hidden), "CDE vector field", spec.adaptive)
    params: tuple[Tensor, ...] = ()
    if isinstance(vector_field, nn.Module):
        params = tuple(vector_field.parameters())
    if isinstance(control, nn.Module):
        # torchcde keeps the coefficients as buffers: hand those needing gradients to the adjoint.
        params = params + without_descendants([b for b in control.buffers() if b.requires_grad])
    ys = integrate(func, z0, times, spec=spec, rtol=rtol, atol=atol, step_size=step_size,
                   adjoint=adjoint, options=opts, adjoint_params=params)
    return Solution(ys=ys, times=times, stats=stats)


def _solve_cde_native(vector_field: Callable[[Tensor, Tensor], Tensor], control: Control, z0: Tensor,
                      times: Tensor, method: str, step_size: float | None, adjoint: str) -> Solution:
    check_positive(step_size, "step_size")
    plan = native.StepPlan.build(times, step_size, knots=control.grid_points)
    dxdt = native_control_derivatives(control, plan, method)
    batch, hidden = z0.shape
    checked = native.first_call_checked(vector_field, (batch, hidden, dxdt.shape[-1]), "CDE vector field")
    ys = native_cde_loop(vector_field, z0, plan, dxdt, method=method, adjoint=adjoint, first_call=checked)
    n_nodes = len(native.NATIVE_ODE_METHODS[method].nodes)
    return Solution(ys=ys, times=times, stats=native.fixed_step_stats(n_nodes, plan.n_steps, adjoint))


def native_control_derivatives(control: Control, plan: native.StepPlan, method: str) -> Tensor:
    """The control's derivative at every stage time of the plan: ``[N, S, B, C]``.

    One-sided at the step's ends: at a knot of a piecewise-linear path the derivative is that of the
    segment being stepped over. Traceable by ``torch.compile`` for torchcde's interpolations, so a compiled
    solve may start from the coefficients.
    """
    spec = native.NATIVE_ODE_METHODS[method]
    grid, steps = plan.grid, plan.steps
    nodes = torch.tensor(spec.nodes, dtype=grid.dtype, device=grid.device)
    stage_times = grid[:-1, None] + nodes * steps[:, None]  # [N, S]
    stage_times[:, 0] = torch.nextafter(stage_times[:, 0], grid[1:])
    if spec.nodes[-1] == 1.0:
        stage_times[:, -1] = torch.nextafter(stage_times[:, -1], grid[:-1])
    dxdt = control.derivative(stage_times.flatten())  # [B, N * S, C]
    return dxdt.reshape(dxdt.shape[0], plan.n_steps, len(spec.nodes), dxdt.shape[-1]).permute(1, 2, 0, 3)


def native_cde_loop(vector_field: Callable[[Tensor, Tensor], Tensor], z0: Tensor, plan: native.StepPlan,
                    dxdt: Tensor, *, method: str = "rk4", adjoint: str = "direct",
                    first_call: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """The native CDE solve without input checks: ``ys [B, T, H]``.

    The part a CUDA graph captures or ``torch.compile(fullgraph=True)`` traces; the checks and the
    :class:`~nde.solvers.native.StepPlan` (built with ``knots=control.grid_points``) come before.
    ``dxdt [N, S, B, C]`` is the control's derivative at the stage times, from
    :func:`native_control_derivatives`. ``first_call`` replaces the vector field at the first step.
    """
    first = vector_field if first_call is None else first_call
    per_step = dxdt.unbind(0)  # N x [S, B, C]: a checkpointed step differentiates only its own slice

    def step(k: int, z: Tensor) -> Tensor:
        return native.cde_step(method, first if k == 0 else vector_field, plan.grid_points[k],
                               plan.step_sizes[k], z, per_step[k])

    params = native.module_params(vector_field)
    if dxdt.requires_grad:
        params = params + list(per_step)
    return native.integrate_steps(step, z0, plan, adjoint, params)
