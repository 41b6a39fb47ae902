"""Regressions: each test pins a bug found in the solver fronts, against a closed form or plain backprop."""

from __future__ import annotations

import pytest
import torch

from nde.layers import MLPVectorField, interpolation_coefficients, make_control
from nde.solvers import solve_cde, solve_ode, solve_sde

from .helpers import LinearCDEField, flat_grads, rel_err


def test_ode_adjoint_uses_the_forward_step_size() -> None:
    # The backward solve once ignored step_size and crossed [0, 2] in one rk4 step (rel. error 3e-3).
    torch.manual_seed(0)
    field = MLPVectorField(2, width=16).double()
    y0 = torch.randn(3, 2, dtype=torch.float64)
    times = torch.tensor([0.0, 0.73, 2.0], dtype=torch.float64)  # off the step grid
    grads = {}
    for mode in ("direct", "adjoint"):
        field.zero_grad()
        solution = solve_ode(field, y0, times, method="rk4", step_size=0.05, adjoint=mode)
        solution.ys.square().sum().backward()
        grads[mode] = flat_grads(list(field.parameters()))
        if mode == "adjoint":
            assert solution.stats.backward_steps_accepted >= 40
    # Continuous adjoint vs. discrete gradient: they differ by the rk4 truncation error, not by 3e-3.
    assert rel_err(grads["adjoint"], grads["direct"]) < 1e-4


@pytest.mark.parametrize("kind", ["linear", "rectilinear", "cubic"])
def test_cde_adjoint_coefficient_gradient_counted_once(kind: str) -> None:
    # A linear interpolation holds its coefficients and their differences; passing both to the adjoint
    # once doubled the coefficient gradient.
    torch.manual_seed(1)
    times = torch.sort(torch.rand(7, dtype=torch.float64)).values
    values = torch.randn(2, 7, 3, dtype=torch.float64).cumsum(1)
    values[..., 0] = times
    field = LinearCDEField(0.3 * torch.randn(3, 3, 3, dtype=torch.float64))
    z0 = torch.randn(2, 3, dtype=torch.float64)
    grads = {}
    for mode in ("direct", "adjoint"):
        coeffs = interpolation_coefficients(values, times, kind=kind).clone().requires_grad_()
        control = make_control(coeffs, times, kind=kind)
        solution = solve_cde(field, control, z0, method="dopri5", rtol=1e-10, atol=1e-12, adjoint=mode)
        solution.ys[:, -1].square().sum().backward()
        grads[mode] = coeffs.grad.clone()
    # Piecewise-linear controls: dopri5 steps onto every kink (jump_t), so both agree to the tolerance;
    # the cubic spline's second-derivative jumps limit the adaptive solve's gradient accuracy.
    assert rel_err(grads["adjoint"], grads["direct"]) < (1e-4 if kind == "cubic" else 1e-6)


def test_cde_fixed_steps_land_on_the_knots_of_a_linear_control() -> None:
    # On a piecewise-linear zigzag the exact solution of the linear CDE is an ordered product of matrix
    # exponentials, one per segment. Steps that straddled a knot once gave an error of 0.57.
    torch.manual_seed(2)
    times = torch.tensor([0.0, 0.13, 0.3, 0.52, 0.71, 1.0], dtype=torch.float64)
    values = torch.stack([times, torch.tensor([0.0, 1.0, -0.5, 0.8, -1.0, 0.2], dtype=torch.float64)], -1)
    values = values.unsqueeze(0)
    field = LinearCDEField(0.7 * torch.randn(2, 2, 2, dtype=torch.float64))
    z0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    exact = z0[0]
    for k in range(len(times) - 1):
        increment = (values[:, k + 1] - values[:, k])
        exact = torch.linalg.matrix_exp(field.along(increment)[0]) @ exact
    control = make_control(interpolation_coefficients(values, times, kind="linear"), times, kind="linear")
    coarse = solve_cde(field, control, z0, method="rk4").ys[0, -1]         # one step per segment
    fine = solve_cde(field, control, z0, method="rk4", step_size=0.02).ys[0, -1]
    assert (coarse - exact).abs().max() < 2e-2  # rk4 truncation, not a straddled knot
    assert (fine - exact).abs().max() < 1e-6


def test_sde_step_count_in_float32() -> None:
    # torchsde steps in the times' precision; counting in float64 once reported 11 steps for 10.
    calls = []

    def drift(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(float(t))
        return -y

    times = torch.tensor([0.0, 0.5, 1.0])
    solution = solve_sde(drift, lambda t, y: 0.1 * torch.ones_like(y), torch.ones(4, 1), times,
                         method="euler", dt=0.1, seed=0)
    # Euler evaluates the drift once per step, after torchsde's one shape-check call.
    assert solution.stats.steps_accepted == len(calls) - 1


@pytest.mark.parametrize("step_size", [None, 0.5])
def test_cde_rk4_gradient_matches_finite_differences_where_torchcde_does_not(step_size: float | None) -> None:
    # torchcde.cdeint's own autograd gradient of this solve differs from the central finite differences of
    # its own output by up to 1% (torchcde 0.2.5, float64; see docs/solvers.md); solve_cde's must not.
    import torchcde

    from nde.layers import CDEVectorField

    torch.manual_seed(0)
    field = CDEVectorField(4, 3, width=8, depth=1).double()
    values = torch.randn(2, 6, 3, dtype=torch.float64).cumsum(1)
    coeffs = torchcde.hermite_cubic_coefficients_with_backward_differences(values)
    times = torch.arange(6, dtype=torch.float64)
    z0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        control = torchcde.CubicSpline(coeffs)
        return solve_cde(field, control, z0, times, method="rk4", step_size=step_size).ys[:, -1].square().sum()

    grad = torch.autograd.grad(loss(), z0)[0]
    eps = 1e-6
    numeric = torch.empty_like(grad)
    with torch.no_grad():
        for index in [(b, j) for b in range(2) for j in range(4)]:
            z0[index] += eps
            up = loss()
            z0[index] -= 2 * eps
            down = loss()
            z0[index] += eps
            numeric[index] = (up - down) / (2 * eps)
    assert rel_err(grad, numeric) < 1e-7
