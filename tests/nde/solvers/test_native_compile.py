"""The native solvers' check-free loops compile with ``torch.compile(fullgraph=True)`` (issue 3).

``fullgraph=True`` fails on any graph break: a copy to the host (``.item()``, ``bool(tensor)``), Python
branching on tensor values, an untraceable call. Each case compiles the map from inputs and parameters to
a scalar loss; the backend (AOTAutograd with no-op compilers, i.e. ``aot_eager``, counting its graphs)
also checks that the forward and the backward pass are one graph each. Outputs and gradients are compared
with the eager public front (``solve_ode`` / ``solve_sde`` / ``solve_cde`` with ``backend="native"``),
which checks its input and runs the same loop uncompiled. One case compiles with inductor (C++ on CPU).

Sizes are small (a few steps, an 8-wide MLP), since dynamo unrolls the loop and compile time grows with
the number of steps. Each compiling test takes 3-10 s on 2 cores (the inductor one about 40 s with an empty
inductor cache), so they are marked ``slow``; ``-m "not slow"`` leaves the eager check of the compiled
form of checkpointing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from nde.layers import interpolation_coefficients, make_control
from nde.solvers import solve_cde, solve_ode, solve_sde
from nde.solvers.cde import native_cde_loop, native_control_derivatives
from nde.solvers.native import StepPlan, brownian_increments, run_steps_checkpointed, run_steps_segment_checkpointed
from nde.solvers.ode import native_ode_loop
from nde.solvers.sde import native_sde_loop

F64 = torch.float64
B, C, H = 3, 2, 3  # batch, channels (ODE/SDE state, CDE control), CDE hidden size
WIDTH = 8  # of the MLPs


# ---------------------------------------------------------------------------------------------------------
# Fields and helpers.
# ---------------------------------------------------------------------------------------------------------


class MLPField(nn.Module):
    """``f(t, y) = W2 tanh(W1 y + t c)``: ODE vector field and SDE drift."""

    def __init__(self, channels: int, width: int = WIDTH) -> None:
        super().__init__()
        self.inner = nn.Linear(channels, width, dtype=F64)
        self.time = nn.Parameter(torch.randn(width, dtype=F64))
        self.outer = nn.Linear(width, channels, dtype=F64)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.outer(torch.tanh(self.inner(y) + t * self.time))


class DiagonalNoise(nn.Module):
    """``g_i(t, y) = 0.3 sigmoid(a_i y_i + b_i t + c_i)``: diagonal noise, ``[B, C]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a, self.b, self.c = (nn.Parameter(torch.randn(channels, dtype=F64)) for _ in range(3))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return 0.3 * torch.sigmoid(self.a * y + self.b * t + self.c)


class CDEField(nn.Module):
    """``f(t, z) [B, H] -> [B, H, C]``, bounded by tanh."""

    def __init__(self, hidden: int, channels: int) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.linear = nn.Linear(hidden, hidden * channels, dtype=F64)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return torch.tanh(self.linear(z)).view(z.shape[0], self.hidden, self.channels)


class GraphCounter:
    """A ``torch.compile`` backend: AOTAutograd with no-op compilers (``aot_eager``) that counts graphs."""

    def __init__(self) -> None:
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        self.forward_graphs = self.backward_graphs = 0
        self.saved_shapes: list[tuple[int, ...]] = []  # of the forward graph's outputs: the loss, saved tensors

        def forward(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable:
            self.forward_graphs += 1
            (outputs,) = (node.args[0] for node in gm.graph.nodes if node.op == "output")
            values = [getattr(node, "meta", {}).get("val") for node in outputs]
            self.saved_shapes += [tuple(v.shape) for v in values if isinstance(v, Tensor)]
            return make_boxed_func(gm.forward)

        def backward(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable:
            self.backward_graphs += 1
            return make_boxed_func(gm.forward)

        self.backend = aot_autograd(fw_compiler=forward, bw_compiler=backward)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()


def loss_of(ys: Tensor) -> Tensor:
    """A scalar that weighs every output differently, so that gradient errors cannot cancel."""
    weights = torch.linspace(0.5, 1.5, ys.numel(), dtype=ys.dtype).view_as(ys)
    return (weights * ys).sum() + ys.square().sum()


def value_and_grads(fn: Callable[..., Tensor], inputs: list[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``fn(*inputs)`` and its gradients; the losses take the modules' parameters as arguments only to name
    them as inputs (they read them from the modules)."""
    loss = fn(*inputs)
    return loss.detach(), torch.autograd.grad(loss, inputs)


def compare(compiled: Callable[..., Tensor], eager: Callable[..., Tensor], inputs: list[Tensor],
            tol: float = 1e-10) -> float:
    """Loss and gradients of the compiled and the eager function agree; returns the largest difference."""
    got, got_grads = value_and_grads(compiled, inputs)
    want, want_grads = value_and_grads(eager, inputs)
    largest = 0.0
    for a, b in zip((got, *got_grads), (want, *want_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        largest = max(largest, float((a - b).abs().max()))
    return largest


def compile_checked(fn: Callable[..., Tensor]) -> tuple[Callable[..., Tensor], GraphCounter]:
    counter = GraphCounter()
    return torch.compile(fn, fullgraph=True, backend=counter.backend), counter


def assert_one_graph_each(counter: GraphCounter) -> None:
    """After forward and backward passes: no graph break, and no recompilation."""
    assert (counter.forward_graphs, counter.backward_graphs) == (1, 1)


# ---------------------------------------------------------------------------------------------------------
# (a), (d) ODE, MLP vector field, rk4; direct and checkpointed gradients.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_ode_rk4_compiles_to_one_graph(adjoint: str) -> None:
    field = MLPField(C)
    y0 = torch.randn(B, C, dtype=F64, requires_grad=True)
    # 4 steps in 3 gaps: each checkpoint segment (2 steps) holds an output time inside it.
    times = torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=F64)
    plan = StepPlan.build(times, 0.25)
    assert plan.n_steps == 4
    inputs = [y0, *field.parameters()]

    def compiled_loss(y0: Tensor, *params: Tensor) -> Tensor:
        return loss_of(native_ode_loop(field, y0, plan, "rk4", adjoint))

    def eager_loss(y0: Tensor, *params: Tensor) -> Tensor:
        return loss_of(solve_ode(field, y0, times, method="rk4", step_size=0.25, adjoint=adjoint,
                                 backend="native").ys)

    compiled, counter = compile_checked(compiled_loss)
    compare(compiled, eager_loss, inputs)
    assert_one_graph_each(counter)
    # A new initial state of the same shape replays the graphs: nothing is guarded on tensor values.
    compare(compiled, eager_loss, [(2 * y0).detach().requires_grad_(True), *field.parameters()])
    assert_one_graph_each(counter)
    # The network's hidden activations [B, width] are saved for the backward pass unless checkpointed.
    activations = [shape for shape in counter.saved_shapes if shape == (B, WIDTH)]
    assert (len(activations) > 0) == (adjoint == "direct")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_ode_rk4_compiles_with_inductor() -> None:
    """Inductor generates and builds C++ for the forward and backward graphs (about 40 s on 2 cores with an
    empty inductor cache, 6 s with a warm one)."""
    field = MLPField(C)
    y0 = torch.randn(B, C, dtype=F64, requires_grad=True)
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    plan = StepPlan.build(times, 0.5)

    def loss(y0: Tensor, *params: Tensor) -> Tensor:
        return loss_of(native_ode_loop(field, y0, plan, "rk4", "direct"))

    compare(torch.compile(loss, fullgraph=True, backend="inductor"), loss, [y0, *field.parameters()])


# ---------------------------------------------------------------------------------------------------------
# (b) SDE, diagonal noise, Euler–Maruyama on increments drawn up front.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sde_euler_maruyama_compiles_to_one_graph() -> None:
    drift, diffusion = MLPField(C), DiagonalNoise(C)
    y0 = torch.randn(B, C, dtype=F64, requires_grad=True)
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    dt, seed = 0.25, 11
    plan = StepPlan.build(times, dt)
    # The front draws from a generator seeded with `seed`; the compiled loop is handed the same increments.
    dw = brownian_increments(plan.grid, (B, C), generator=torch.Generator().manual_seed(seed))
    inputs = [y0, *drift.parameters(), *diffusion.parameters()]

    def compiled_loss(y0: Tensor, *params: Tensor) -> Tensor:
        return loss_of(native_sde_loop(drift, diffusion, y0, plan, dw, method="euler", noise_type="diagonal"))

    def eager_loss(y0: Tensor, *params: Tensor) -> Tensor:
        return loss_of(solve_sde(drift, diffusion, y0, times, noise_type="diagonal", method="euler", dt=dt,
                                 seed=seed, backend="native").ys)

    compiled, counter = compile_checked(compiled_loss)
    compare(compiled, eager_loss, inputs)
    assert_one_graph_each(counter)


# ---------------------------------------------------------------------------------------------------------
# (c) CDE on a cubic control, rk4: compiled from the spline coefficients on.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cde_rk4_on_cubic_control_compiles_to_one_graph() -> None:
    field = CDEField(H, C)
    observed = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    values = torch.randn(B, 3, C, dtype=F64).cumsum(1)
    coeffs = interpolation_coefficients(values, observed, "cubic").requires_grad_(True)
    z0 = torch.randn(B, H, dtype=F64, requires_grad=True)
    times = torch.tensor([0.0, 1.5, 2.0], dtype=F64)
    plan = StepPlan.build(times, None, knots=observed)  # a step to each knot and output time: 3 steps
    assert plan.n_steps == 3
    inputs = [coeffs, z0, *field.parameters()]

    def compiled_loss(coeffs: Tensor, z0: Tensor, *params: Tensor) -> Tensor:
        dxdt = native_control_derivatives(make_control(coeffs, observed, "cubic"), plan, "rk4")
        return loss_of(native_cde_loop(field, z0, plan, dxdt, method="rk4"))

    def eager_loss(coeffs: Tensor, z0: Tensor, *params: Tensor) -> Tensor:
        return loss_of(solve_cde(field, make_control(coeffs, observed, "cubic"), z0, times, method="rk4",
                                 backend="native").ys)

    compiled, counter = compile_checked(compiled_loss)
    compare(compiled, eager_loss, inputs)
    assert_one_graph_each(counter)


# ---------------------------------------------------------------------------------------------------------
# The compiled form of checkpointing, eagerly: the same gradients as the custom autograd function.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("step_size", "n_steps"), [(1.0, 2), (0.2, 6), (0.1, 10)])
def test_segment_checkpointing_matches_the_autograd_function(step_size: float, n_steps: int) -> None:
    field = MLPField(C)
    y0 = torch.randn(B, C, dtype=F64, requires_grad=True)
    plan = StepPlan.build(torch.tensor([0.0, 0.3, 1.0], dtype=F64), step_size)
    assert plan.n_steps == n_steps
    grid, steps = plan.grid_points, plan.step_sizes

    def step(k: int, y: Tensor) -> Tensor:
        return y + steps[k] * field(grid[k], y)

    params = list(field.parameters())
    inputs = [y0, *params]
    compare(lambda y0, *p: loss_of(run_steps_segment_checkpointed(step, y0, plan.n_steps, plan.out_index)),
            lambda y0, *p: loss_of(run_steps_checkpointed(step, y0, plan.n_steps, plan.out_index, params)),
            inputs, tol=1e-13)
