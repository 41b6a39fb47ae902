"""solve_ode and NeuralODE against the closed form of the linear ODE ``dy/dt = A y``."""

from __future__ import annotations

import itertools

import pytest
import torch

from nde.layers import NeuralODE
from nde.solvers import solve_ode
from tests.nde.solvers.helpers import DEVICES, LinearField, linear_ode_solution

# A damped rotation coupled to a decaying mode: eigenvalues -0.5 ± 2i (about) and -1, so the solution
# oscillates and decays but stays O(1) on [0, 3.5].
MATRIX = [[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.1, 0.0, -1.0]]
TIMES = [0.0, 0.25, 1.0, 2.0, 3.5]


def _problem(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    a = torch.tensor(MATRIX, dtype=torch.float64, device=device)
    y0 = torch.randn(4, 3, dtype=torch.float64, device=device)
    times = torch.tensor(TIMES, dtype=torch.float64, device=device)
    return a, y0, times, linear_ode_solution(y0, a, times)


@pytest.mark.parametrize("device", DEVICES)
def test_dopri5_matches_matrix_exponential(device: str) -> None:
    a, y0, times, exact = _problem(device)
    sol = solve_ode(lambda t, y: y @ a.T, y0, times, method="dopri5", rtol=1e-10, atol=1e-12)
    assert sol.ys.shape == (4, 5, 3)
    assert sol.ys.dtype == torch.float64
    assert torch.equal(sol.ys[:, 0], y0)
    assert torch.equal(sol.times, times)
    # Local error per step is held below atol + rtol |y| ~ 1e-10 (|y| = O(1)); about 200 steps of the damped
    # dynamics keep the global error within a small multiple of that (observed: 6e-11).
    err = (sol.ys - exact).abs().max().item()
    assert err < 1e-9, err


@pytest.mark.parametrize("device", DEVICES)
def test_rk4_fixed_step_matches_matrix_exponential(device: str) -> None:
    a, y0, times, exact = _problem(device)
    sol = solve_ode(lambda t, y: y @ a.T, y0, times, method="rk4", step_size=2.0**-7)
    # Global error of RK4 is C h^4; test_rk4_is_fourth_order measures C ~ 0.36 (5.5e-6 at h = 1/16),
    # so h = 2^-7 gives ~1.3e-9.
    err = (sol.ys - exact).abs().max().item()
    assert err < 1e-8, err
    assert sol.stats.steps_accepted == 448  # 3.5 / 2^-7


def test_rk4_is_fourth_order() -> None:
    """Halving the step divides the error by 2^4 = 16 (asymptotically)."""
    a, y0, times, exact = _problem("cpu")
    errors = []
    for h in (2.0**-3, 2.0**-4, 2.0**-5):  # powers of two: the output times lie exactly on the step grid
        sol = solve_ode(lambda t, y: y @ a.T, y0, times, method="rk4", step_size=h)
        errors.append((sol.ys - exact).abs().max().item())
    for coarse, fine in itertools.pairwise(errors):
        assert 12.0 < coarse / fine < 20.0, errors


def test_euler_is_first_order() -> None:
    """The method table's orders hold: Euler's error halves with the step."""
    a, y0, times, exact = _problem("cpu")
    errors = []
    for h in (2.0**-8, 2.0**-9):
        sol = solve_ode(lambda t, y: y @ a.T, y0, times, method="euler", step_size=h)
        errors.append((sol.ys - exact).abs().max().item())
    assert 1.8 < errors[0] / errors[1] < 2.2, errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_neural_ode_with_linear_vector_field(device: str, method: str) -> None:
    a, y0, times, exact = _problem(device)
    kwargs = {"rtol": 1e-10, "atol": 1e-12} if method == "dopri5" else {"step_size": 2.0**-7}
    model = NeuralODE(LinearField(a), method=method, **kwargs)
    ys = model(y0, times)
    assert ys.shape == (4, 5, 3)
    err = (ys - exact).abs().max().item()
    assert err < (1e-9 if method == "dopri5" else 1e-8), err
    assert model.stats.nfe_forward > 0
    assert model.stats.steps_accepted > 0


def test_float32_solution_is_float32_and_accurate() -> None:
    a, y0, times, exact = _problem("cpu")
    sol = solve_ode(lambda t, y: y @ a.float().T, y0.float(), times.float(), method="dopri5", rtol=1e-6, atol=1e-7)
    assert sol.ys.dtype == torch.float32
    # float32 rounding (6e-8 relative per step over ~100 steps) plus the 1e-6 tolerance (observed: 3e-6).
    assert (sol.ys.double() - exact).abs().max().item() < 2e-5
