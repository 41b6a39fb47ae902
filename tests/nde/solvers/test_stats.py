"""The counters of SolveStats: steps and vector-field evaluations, forward and backward."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from nde.layers import MLPVectorField, NeuralCDE, NeuralODE, NeuralSDE
from nde.solvers import SolveStats, solve_ode, solve_sde

F64 = torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("output_times", [2, 11])
def test_rk4_fixed_step_counts(dtype: torch.dtype, output_times: int) -> None:
    """rk4 over [0, 1] with step 0.1: 10 steps of 4 evaluations, nothing rejected (whether the output times are just
    the ends or the step grid itself)."""
    sol = solve_ode(lambda t, y: -y, torch.ones(2, 3, dtype=dtype), torch.linspace(0, 1, output_times, dtype=dtype),
                    method="rk4", step_size=0.1)
    assert sol.stats.steps_accepted == 10
    assert sol.stats.steps_rejected == 0
    assert sol.stats.nfe_forward == 40
    assert sol.stats.nfe_backward == 0


def _dopri5(decay: float) -> SolveStats:
    matrix = torch.tensor([[-decay, 0.0], [1.0, -1.0]], dtype=F64)
    sol = solve_ode(lambda t, y: y @ matrix.T, torch.ones(3, 2, dtype=F64), torch.tensor([0.0, 5.0], dtype=F64),
                    method="dopri5", rtol=1e-6, atol=1e-8)
    return sol.stats


def test_dopri5_counts_on_a_stiff_problem() -> None:
    """Eigenvalues -50 and -1: the fast mode dies out at once but dopri5's stability region (about [-3.3, 0] on the
    real axis) still caps the step at ~3.3/50, so at least 5 / 0.066 ~ 75 steps are needed, with rejections where
    the controller probes larger steps. Each attempted step costs 6 evaluations (7 stages, first same as last), plus
    2 at the start (f(t0, y0) and the initial step-size probe)."""
    stiff = _dopri5(50.0)
    assert stiff.steps_accepted >= 75
    assert stiff.steps_rejected > 0
    attempted = stiff.steps_accepted + stiff.steps_rejected
    assert 0 < stiff.nfe_forward - 6 * attempted <= 3, stiff
    mild = _dopri5(2.0)
    assert 0 < mild.nfe_forward - 6 * (mild.steps_accepted + mild.steps_rejected) <= 3, mild
    assert mild.steps_accepted < stiff.steps_accepted / 2


def test_ode_adjoint_counts_backward_evaluations() -> None:
    torch.manual_seed(0)
    model = NeuralODE(MLPVectorField(2, width=8, depth=1), adjoint="adjoint")
    ys = model(torch.randn(3, 2), torch.tensor([0.0, 1.0]))
    assert model.stats.nfe_forward > 0
    assert model.stats.nfe_backward == 0  # nothing yet: the backward counters fill in during backward()
    ys.sum().backward()
    assert model.stats.nfe_backward > 0
    assert model.stats.backward_steps_accepted > 0


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_ode_direct_has_no_backward_evaluations(method: str) -> None:
    torch.manual_seed(0)
    model = NeuralODE(MLPVectorField(2, width=8, depth=1), method=method, adjoint="direct",
                      step_size=0.1 if method == "rk4" else None)
    ys = model(torch.randn(3, 2), torch.tensor([0.0, 1.0]))
    forward = model.stats.nfe_forward
    ys.sum().backward()
    assert model.stats.nfe_backward == 0
    assert model.stats.backward_steps_accepted == 0
    assert model.stats.nfe_forward == forward


@pytest.mark.parametrize("adjoint", ["direct", "adjoint"])
def test_cde_counts(adjoint: str) -> None:
    """rk4 by default steps the smallest gap between the control's grid points: L - 1 steps for times 0..L-1."""
    torch.manual_seed(0)
    model = NeuralCDE(2, 3, width=8, depth=1, interpolation="cubic", adjoint=adjoint)
    coeffs = model.coefficients(torch.randn(2, 6, 2))
    model(coeffs).sum().backward()
    assert model.stats.steps_accepted == 5
    assert model.stats.nfe_forward == 20
    assert (model.stats.nfe_backward > 0) == (adjoint == "adjoint")


@pytest.mark.parametrize(
    ("times", "dt", "dtype"),
    [
        ([0.0, 0.25, 0.5, 0.75, 1.0], 0.05, F64),
        ([0.0, 2.0], 0.1, F64),
        ([0.0, 0.5, 2.0], 0.25, F64),
        ([0.0, 0.5, 2.0], 0.25, torch.float32),
        ([1.0, 1.5], 0.125, F64),
        ([1.0, 1.5], 0.125, torch.float32),
    ],
)
def test_sde_steps(times: list[float], dt: float, dtype: torch.dtype) -> None:
    """Fixed steps: ceil((t1 - t0) / dt) of them when dt divides the gaps, as many as the solver really takes (Euler
    evaluates the drift once a step, plus once more when torchsde checks the shapes first)."""
    drift_calls = 0

    def drift(t: Tensor, y: Tensor) -> Tensor:
        nonlocal drift_calls
        drift_calls += 1
        return -y

    ts = torch.tensor(times, dtype=dtype)
    sol = solve_sde(drift, lambda t, y: 0.1 * torch.ones_like(y), torch.ones(2, 2, dtype=dtype), ts, dt=dt, seed=0)
    steps = math.ceil((times[-1] - times[0]) / dt - 1e-9)
    assert sol.stats.steps_accepted == steps
    assert steps <= drift_calls <= steps + 1
    assert 2 * steps <= sol.stats.nfe_forward <= 2 * steps + 3
    assert sol.stats.steps_rejected == 0
    assert sol.stats.nfe_backward == 0


def test_sde_reversible_heun_counts_backward() -> None:
    torch.manual_seed(0)
    model = NeuralSDE.mlp(2, width=8, depth=1, sde_type="stratonovich", adjoint="reversible_heun", dt=0.125)
    ys = model(torch.randn(3, 2), torch.tensor([0.0, 0.5, 1.0]), seed=0)
    assert model.stats.steps_accepted == 8
    assert model.stats.nfe_backward == 0
    ys.sum().backward()
    assert model.stats.nfe_backward > 0
    assert model.stats.backward_steps_accepted == 8
