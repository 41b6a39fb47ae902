"""Native fixed-step solvers: plain PyTorch loops with static shapes.

The peers spend most of a small solve on Python bookkeeping. These solvers do only the arithmetic of
each step, on a step grid fixed before the solve, with every time and step size precomputed as device
tensors and the Brownian increments drawn up front. Nothing branches on tensor values or copies to the
host inside the loop, so a whole solve and its backward pass can be captured as one CUDA graph or
compiled with ``torch.compile``.

Methods (class attributes of :class:`NativeMethod`):

- ODEs and CDEs: ``euler`` (order 1), ``midpoint`` (2), ``rk4`` (4; the 3/8 rule, as torchdiffeq's rk4);
- SDEs: ``euler`` (Euler–Maruyama, Itô, strong order 0.5; 1.0 for additive noise), ``heun``
  (Stratonovich, 0.5; 1.0 for commuting noise), ``milstein`` (Itô or Stratonovich, diagonal or scalar
  noise, strong order 1.0).

Gradients: ``"direct"`` backpropagates through the loop; ``"checkpoint"`` keeps the state every
``ceil(sqrt(N))`` steps, recomputes each segment in the backward pass and differentiates one step at a
time: the network's activations are held for one step only, and the stored states grow as ``sqrt(N)``.

Under ``torch.compile`` the check-free loops (:func:`nde.solvers.ode.native_ode_loop`,
:func:`nde.solvers.sde.native_sde_loop`, :func:`nde.solvers.cde.native_cde_loop`) trace to one graph
(``fullgraph=True``). There ``"checkpoint"`` wraps each segment in ``torch.utils.checkpoint`` instead of
the eager custom autograd function, whose backward calls ``torch.autograd.grad`` (which dynamo does not
trace by default): the compiled forward saves segment states, not the network's activations, and the
gradients are the same.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from nde.solvers.common import SolveStats

__all__ = [
    "NATIVE_ODE_METHODS",
    "NATIVE_SDE_METHODS",
    "NativeMethod",
    "StepPlan",
    "brownian_increments",
    "step_grid",
]

Field = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class NativeMethod:
    """An explicit Runge–Kutta method (ODEs) or an SDE scheme, with its Butcher nodes ``c``.

    Attributes:
        name: method name.
        order: global order (ODE) or strong order (SDE, general case).
        nodes: the stage times as fractions of the step, where the control's derivative is read (CDEs).
        sde_types: for SDE schemes, the calculus it discretises.
        noise_types: for SDE schemes, the noise types it supports.
    """

    name: str
    order: float
    nodes: tuple[float, ...]
    sde_types: tuple[str, ...] = ()
    noise_types: tuple[str, ...] = ()


NATIVE_ODE_METHODS: dict[str, NativeMethod] = {
    m.name: m
    for m in (
        NativeMethod("euler", 1, (0.0,)),
        NativeMethod("midpoint", 2, (0.0, 0.5)),
        NativeMethod("rk4", 4, (0.0, 1 / 3, 2 / 3, 1.0)),
    )
}

NATIVE_SDE_METHODS: dict[str, NativeMethod] = {
    m.name: m
    for m in (
        NativeMethod("euler", 0.5, (0.0,), ("ito",), ("diagonal", "general", "additive", "scalar")),
        NativeMethod("heun", 0.5, (0.0, 1.0), ("stratonovich",), ("diagonal", "general", "additive", "scalar")),
        NativeMethod("milstein", 1.0, (0.0,), ("ito", "stratonovich"), ("diagonal", "scalar", "additive")),
    )
}


@dataclass
class StepPlan:
    """The precomputed step grid of a native solve: everything the loop reads, as device tensors.

    Build it once (it reads ``times`` on the host) and reuse it across solves, e.g. outside a CUDA graph.

    Attributes:
        grid: ``[N + 1]`` step boundaries.
        steps: ``[N]`` step sizes.
        out_index: position in ``grid`` of each output time.
    """

    grid: Tensor
    steps: Tensor
    out_index: list[int]

    def __post_init__(self) -> None:
        # 0-d views taken once: reading them in the loop is a list lookup, not an indexing kernel.
        self.grid_points: list[Tensor] = list(self.grid.unbind(0))
        self.step_sizes: list[Tensor] = list(self.steps.unbind(0))

    @classmethod
    def build(cls, times: Tensor, step_size: float | None, knots: Tensor | None = None) -> StepPlan:
        grid, index = step_grid(times, step_size, knots)
        return cls(grid, grid[1:] - grid[:-1], index)

    @property
    def n_steps(self) -> int:
        return self.steps.numel()


def step_grid(times: Tensor, step_size: float | None, knots: Tensor | None = None) -> tuple[Tensor, list[int]]:
    """The step grid through ``times`` (and ``knots``), each gap split into equal steps of at most ``step_size``.

    Returns:
        ``grid [N + 1]`` on ``times``' device and dtype, and the index in ``grid`` of each output time.
    """
    points = times.detach()
    if knots is not None:
        inner = knots.detach().to(points)
        inner = inner[(inner > points[0]) & (inner < points[-1])]
        points = torch.unique(torch.cat([points, inner]))
    values = points.cpu().tolist()
    # Gaps that are a whole number of steps up to the times' rounding must not gain an extra tiny step.
    slack = 64 * torch.finfo(points.dtype).eps
    pieces: list[Tensor] = []
    for a, b in itertools.pairwise(values):
        ratio = 1.0 if step_size is None else (b - a) / step_size
        n = max(1, math.ceil(ratio * (1 - slack)))
        pieces.append(a + (b - a) * torch.arange(n, dtype=torch.float64) / n)
    grid = torch.cat([*pieces, torch.tensor(values[-1:], dtype=torch.float64)]).to(points)
    index = torch.searchsorted(grid, times.detach()).cpu().tolist()
    return grid, index


def brownian_increments(grid: Tensor, shape: tuple[int, int], *, generator: torch.Generator | None = None,
                        bm: Callable[[float, float], Tensor] | None = None) -> Tensor:
    """Brownian increments ``[N, B, m]`` over the steps of ``grid``: ``W(grid[k+1]) - W(grid[k])``.

    Drawn from ``generator`` (Gaussian with variance equal to the step), or read from a Brownian path
    ``bm(ta, tb)`` (e.g. a ``torchsde.BrownianInterval``) step by step in time order, as torchsde's
    solvers query it, so that both see the same noise.
    """
    if bm is not None:
        ts = grid.detach().cpu().tolist()
        return torch.stack([bm(ta, tb) for ta, tb in itertools.pairwise(ts)]).to(grid.dtype)
    steps = grid[1:] - grid[:-1]
    noise = torch.randn((steps.numel(), *shape), generator=generator, dtype=grid.dtype,
                        device=generator.device if generator is not None else grid.device)
    return noise.to(grid.device) * steps.sqrt().view(-1, 1, 1)


# ---------------------------------------------------------------------------------------------------------
# One step of each method. `t` and `h` are 0-d tensors; `dxdt` (CDEs) holds the control's derivative at
# the method's nodes, [S, B, C]; `dw` (SDEs) is the step's Brownian increment, [B, m].
# ---------------------------------------------------------------------------------------------------------


def rk_step(method: str, stage: Callable[[int, Tensor, Tensor], Tensor], t: Tensor, h: Tensor, y: Tensor) -> Tensor:
    """One explicit Runge–Kutta step; ``stage(i, s, w)`` is the right-hand side at the ``i``-th node."""
    if method == "euler":
        return y + h * stage(0, t, y)
    if method == "midpoint":
        return y + h * stage(1, t + 0.5 * h, y + 0.5 * h * stage(0, t, y))
    # The 3/8 rule, as torchdiffeq's rk4 (rk4_alt_step_func), so both agree to rounding.
    k1 = stage(0, t, y)
    k2 = stage(1, t + h / 3, y + h * k1 / 3)
    k3 = stage(2, t + 2 * h / 3, y + h * (k2 - k1 / 3))
    k4 = stage(3, t + h, y + h * (k1 - k2 + k3))
    return y + h * (k1 + 3 * (k2 + k3) + k4) / 8


def ode_step(method: str, f: Field, t: Tensor, h: Tensor, y: Tensor) -> Tensor:
    """One Runge–Kutta step of ``dy/dt = f(t, y)``."""
    return rk_step(method, lambda i, s, w: f(s, w), t, h, y)


def cde_step(method: str, f: Field, t: Tensor, h: Tensor, z: Tensor, dxdt: Tensor) -> Tensor:
    """One Runge–Kutta step of ``dz/dt = f(t, z) dX/dt``, with ``dX/dt`` given at the method's nodes."""
    return rk_step(method, lambda i, s, w: (f(s, w) @ dxdt[i].unsqueeze(-1)).squeeze(-1), t, h, z)


def _noise_product(g: Tensor, dw: Tensor, noise_type: str) -> Tensor:
    if noise_type == "diagonal":
        return g * dw
    return (g @ dw.unsqueeze(-1)).squeeze(-1)


def sde_step(method: str, sde_type: str, noise_type: str, f: Field, g: Field, t: Tensor, h: Tensor, y: Tensor,
             dw: Tensor, create_graph: bool) -> Tensor:
    """One step of an SDE scheme (formulas as torchsde's, so both agree on the same increments)."""
    if method == "euler":
        return y + f(t, y) * h + _noise_product(g(t, y), dw, noise_type)
    if method == "heun":
        drift, noise = f(t, y) * h, _noise_product(g(t, y), dw, noise_type)
        y_pred = y + drift + noise
        return y + 0.5 * (drift + f(t + h, y_pred) * h + noise + _noise_product(g(t + h, y_pred), dw, noise_type))
    # Milstein for commuting (diagonal/scalar) noise: the correction 1/2 g g' (dW^2 - h) [Itô] or
    # 1/2 g g' dW^2 [Stratonovich], with g g' as a vector-Jacobian product (exact for diagonal noise).
    if noise_type == "additive":
        return y + f(t, y) * h + _noise_product(g(t, y), dw, noise_type)
    v = dw.square() - h if sde_type == "ito" else dw.square()
    with torch.enable_grad():
        y_in = y if y.requires_grad else y.detach().requires_grad_(True)
        g_val = g(t, y_in)
        g_diag = g_val if noise_type == "diagonal" else g_val.squeeze(-1)
        (gdg,) = torch.autograd.grad(g_diag, y_in, grad_outputs=g_diag * 0.5 * v.expand_as(g_diag),
                                     create_graph=create_graph)
    if not create_graph:
        g_val, gdg = g_val.detach(), gdg.detach()
    return y + f(t, y) * h + _noise_product(g_val, dw, noise_type) + gdg


# ---------------------------------------------------------------------------------------------------------
# Loops: direct (autograd records every step) and checkpointed (one step recomputed at a time).
# ---------------------------------------------------------------------------------------------------------

Step = Callable[[int, Tensor], Tensor]


def run_steps(step: Step, y0: Tensor, n_steps: int, out_index: Sequence[int]) -> Tensor:
    """Apply ``step(k, y)`` for ``k = 0..n_steps-1`` and return the states at ``out_index``: ``[B, T, C]``."""
    wanted = set(out_index)
    states = {0: y0}
    y = y0
    for k in range(n_steps):
        y = step(k, y)
        if k + 1 in wanted:
            states[k + 1] = y
    return torch.stack([states[i] for i in out_index], dim=1)


class _CheckpointedSteps(torch.autograd.Function):
    """Two-level checkpointing of a fixed-step loop.

    The forward pass runs without a graph and keeps the state at the start of every segment of
    ``ceil(sqrt(N))`` steps. The backward pass walks the segments in reverse: it recomputes the segment's
    states without a graph, then differentiates one step at a time. Memory: ``O(sqrt(N))`` states and one
    step's activations; cost: one extra forward pass.
    """

    @staticmethod
    def forward(ctx, step: Step, n_steps: int, out_positions: dict[int, int], y0: Tensor,  # type: ignore[override]
                *params: Tensor) -> Tensor:
        segment = checkpoint_segment(n_steps)
        marks = y0.new_empty((-(-n_steps // segment), *y0.shape))
        outputs = y0.new_empty((len(out_positions), *y0.shape))
        with torch.no_grad():
            y = y0
            if 0 in out_positions:
                outputs[out_positions[0]] = y0
            for k in range(n_steps):
                if k % segment == 0:
                    marks[k // segment] = y
                y = step(k, y)
                if k + 1 in out_positions:
                    outputs[out_positions[k + 1]] = y
        ctx.step, ctx.n_steps, ctx.segment, ctx.out_positions = step, n_steps, segment, out_positions
        ctx.save_for_backward(marks, *params)
        return outputs.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        marks, *params = ctx.saved_tensors
        step, n_steps, segment, positions = ctx.step, ctx.n_steps, ctx.segment, ctx.out_positions
        grad_out = grad_out.transpose(0, 1)
        adjoint = grad_out[positions[n_steps]] if n_steps in positions else torch.zeros_like(marks[0])
        param_grads = [torch.zeros_like(p) for p in params]
        trainable = [i for i, p in enumerate(params) if p.requires_grad]
        buffer = marks.new_empty((min(segment, n_steps), *marks.shape[1:]))
        for s in range(marks.shape[0] - 1, -1, -1):
            start, end = s * segment, min((s + 1) * segment, n_steps)
            with torch.no_grad():
                y = marks[s]
                for k in range(start, end):
                    buffer[k - start] = y
                    if k + 1 < end:
                        y = step(k, y)
            for k in range(end - 1, start - 1, -1):
                with torch.enable_grad():
                    y = buffer[k - start].detach().requires_grad_(True)
                    y_next = step(k, y)
                    inputs = [y] + [params[i] for i in trainable]
                    grads = torch.autograd.grad(y_next, inputs, grad_outputs=adjoint, allow_unused=True)
                adjoint = grads[0]
                if k in positions:
                    adjoint = adjoint + grad_out[positions[k]]
                for i, grad in zip(trainable, grads[1:], strict=True):
                    if grad is not None:
                        param_grads[i] += grad
        return (None, None, None, adjoint, *param_grads)


def run_steps_checkpointed(step: Step, y0: Tensor, n_steps: int, out_index: Sequence[int],
                           params: Sequence[Tensor]) -> Tensor:
    """As :func:`run_steps`, keeping ``O(sqrt(N))`` states and one step's activations for the backward pass.

    ``params`` are the tensors the step depends on that need gradients (the vector fields' parameters,
    and for CDEs the control's derivative values).
    """
    positions = {k: j for j, k in enumerate(out_index)}
    return _CheckpointedSteps.apply(step, n_steps, positions, y0, *params)


def checkpoint_segment(n_steps: int) -> int:
    """Steps per checkpointed segment: ``ceil(sqrt(N))``."""
    return max(1, math.isqrt(max(n_steps - 1, 0)) + 1)


def run_steps_segment_checkpointed(step: Step, y0: Tensor, n_steps: int, out_index: Sequence[int]) -> Tensor:
    """As :func:`run_steps_checkpointed`, with each segment of ``ceil(sqrt(N))`` steps a ``torch.utils.checkpoint``.

    The form ``torch.compile`` traces without graph breaks (the partitioner recomputes each segment in the
    backward graph); gradients reach every tensor the step reads, so no parameter list is needed.
    """
    from torch.utils.checkpoint import checkpoint

    segment = checkpoint_segment(n_steps)
    wanted = set(out_index)
    states = {0: y0}
    y = y0
    for start in range(0, n_steps, segment):
        end = min(start + segment, n_steps)
        kept = [k for k in range(start + 1, end) if k in wanted]  # states inside the segment that are outputs

        def run(y: Tensor, start: int = start, end: int = end, kept: list[int] = kept) -> tuple[Tensor, ...]:
            inner = []
            for k in range(start, end):
                y = step(k, y)
                if k + 1 in kept:
                    inner.append(y)
            return (y, *inner)

        y, *inner = checkpoint(run, y, use_reentrant=False)
        states.update(zip(kept, inner, strict=True))
        states[end] = y
    return torch.stack([states[i] for i in out_index], dim=1)


# ---------------------------------------------------------------------------------------------------------
# Checks and the pieces the solver fronts share.
# ---------------------------------------------------------------------------------------------------------

NATIVE_ADJOINTS = ("direct", "checkpoint")


def check_native(method: str, adjoint: str, table: dict[str, NativeMethod], what: str) -> NativeMethod:
    """Check a native method name and gradient mode; raise the solver layer's input error otherwise."""
    from nde.solvers.common import SolverInputError

    if method not in table:
        raise SolverInputError(
            f"backend='native' has no {what} method {method!r}; choose one of {sorted(table)} "
            "(or the library backend for adaptive methods)."
        )
    if adjoint not in NATIVE_ADJOINTS:
        raise SolverInputError(
            f"backend='native' computes gradients with adjoint='direct' or 'checkpoint', not {adjoint!r}; "
            "use the library backend for the continuous adjoint."
        )
    return table[method]


def first_call_checked(f: Field, expected: tuple[int, ...], what: str) -> Field:
    """``f`` that checks its output shape on its first call only (before the loop's hot path)."""
    from nde.solvers.common import check_output_shape

    state = {"checked": False}

    def checked(t: Tensor, y: Tensor) -> Tensor:
        out = f(t, y)
        if not state["checked"]:
            check_output_shape(out, expected, what)
            state["checked"] = True
        return out

    return checked


def module_params(*fns: object) -> list[Tensor]:
    """Trainable parameters of those arguments that are ``torch.nn.Module``s."""
    return [p for fn in fns if isinstance(fn, torch.nn.Module) for p in fn.parameters() if p.requires_grad]


def integrate_steps(step: Step, y0: Tensor, plan: StepPlan, adjoint: str, params: Sequence[Tensor]) -> Tensor:
    """Run the loop with the chosen gradient mode; ``[B, T, C]``.

    Under ``torch.compile`` checkpointing goes through ``torch.utils.checkpoint``, which dynamo traces (the
    eager autograd function's backward calls ``torch.autograd.grad``, a graph break by default).
    """
    if adjoint == "checkpoint" and torch.is_grad_enabled():
        if _is_compiling():
            return run_steps_segment_checkpointed(step, y0, plan.n_steps, plan.out_index)
        return run_steps_checkpointed(step, y0, plan.n_steps, plan.out_index, params)
    return run_steps(step, y0, plan.n_steps, plan.out_index)


def _is_compiling() -> bool:
    """Whether dynamo is tracing (a constant while it does, so no graph break)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return torch._dynamo.is_compiling() if is_compiling is None else is_compiling()


def fixed_step_stats(evaluations_per_step: int, n_steps: int, adjoint: str) -> SolveStats:
    """Counters of a native solve, known from the grid (no per-call counting in the hot loop)."""
    from nde.solvers.common import SolveStats

    stats = SolveStats(nfe_forward=evaluations_per_step * n_steps, steps_accepted=n_steps)
    if adjoint == "checkpoint" and torch.is_grad_enabled():
        stats.nfe_backward, stats.backward_steps_accepted = evaluations_per_step * n_steps, n_steps
    return stats
