"""solve_cde and NeuralCDE along straight-line controls, where a CDE reduces to a closed-form ODE.

Along ``X(t) = x0 + t a`` the CDE ``dz = f(z) dX`` is the ODE ``dz/dt = f(z) a``; for the linear field
``f(z)[h, c] = Σ_k M[h, c, k] z_k`` that ODE is ``dz/dt = N z`` with ``N = Σ_c a_c M[:, c, :]``, solved by
``z(t) = matrix_exp(N t) z0``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from nde.layers import NeuralCDE, interpolation_coefficients, make_control
from nde.solvers import solve_cde, solve_ode
from tests.nde.solvers.helpers import DEVICES, LinearCDEField, linear_ode_solution

B, L, C, H = 3, 5, 2, 3
TIGHT = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12}


def _line(device: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Observation times [L], values [B, L, C] on the lines x0 + t a, and x0, a [B, C] (drawn on the CPU, so that
    every device gets the same lines and the tolerances below hold for all)."""
    torch.manual_seed(0)
    times = torch.linspace(0.0, 2.0, L, dtype=torch.float64, device=device)
    x0 = torch.randn(B, C, dtype=torch.float64).to(device)
    a = 0.7 * torch.randn(B, C, dtype=torch.float64).to(device)
    values = x0[:, None, :] + times[None, :, None] * a[:, None, :]
    return times, values, x0, a


def _field(device: str) -> LinearCDEField:
    torch.manual_seed(1)
    return LinearCDEField(0.5 * torch.randn(H, C, H, dtype=torch.float64)).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["linear", "cubic"])
def test_control_of_points_on_a_line_is_the_line(device: str, kind: str) -> None:
    times, values, x0, a = _line(device)
    control = make_control(interpolation_coefficients(values, times, kind), times, kind)
    for s in (0.0, 0.3, 0.5, 1.71, 2.0):
        t = torch.tensor(s, dtype=torch.float64, device=device)
        torch.testing.assert_close(control.evaluate(t), x0 + s * a, rtol=0, atol=1e-12)
        torch.testing.assert_close(control.derivative(t), a, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["linear", "cubic"])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_cde_on_a_line_equals_ode_and_closed_form(device: str, kind: str, method: str) -> None:
    times, values, _, a = _line(device)
    field = _field(device)
    control = make_control(interpolation_coefficients(values, times, kind), times, kind)
    torch.manual_seed(2)
    z0 = torch.randn(B, H, dtype=torch.float64).to(device)
    kwargs = TIGHT if method == "dopri5" else {"method": "rk4", "step_size": 2.0**-6}
    cde = solve_cde(field, control, z0, times, **kwargs)
    ode = solve_ode(lambda t, z: (field(t, z) @ a.unsqueeze(-1)).squeeze(-1), z0, times, **kwargs)
    exact = linear_ode_solution(z0, field.along(a).detach(), times)
    assert cde.ys.shape == (B, L, H)
    if method == "rk4":
        # The same steps of the same vector field (the control's derivative is exactly a): equal to rounding.
        torch.testing.assert_close(cde.ys, ode.ys, rtol=0, atol=1e-12)
        assert cde.stats.steps_accepted == ode.stats.steps_accepted == 128
    else:
        torch.testing.assert_close(cde.ys, ode.ys, rtol=0, atol=1e-9)
    # dopri5 holds the local error at 1e-10; rk4 with h = 1/64 has global error ~ h^4 ‖N‖^5 ~ 1e-8 at most.
    err = (cde.ys - exact).abs().max().item()
    assert err < (1e-9 if method == "dopri5" else 1e-7), err


@pytest.mark.parametrize("device", DEVICES)
def test_cde_default_times_are_the_interval_ends(device: str) -> None:
    times, values, _, a = _line(device)
    field = _field(device)
    control = make_control(interpolation_coefficients(values, times, "cubic"), times, "cubic")
    z0 = torch.ones(B, H, dtype=torch.float64, device=device)
    sol = solve_cde(field, control, z0, **TIGHT)
    assert sol.ys.shape == (B, 2, H)
    torch.testing.assert_close(sol.times, times[[0, -1]])
    exact = linear_ode_solution(z0, field.along(a).detach(), times[[0, -1]])
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=1e-9)


def _staircase(values: Tensor) -> Tensor:
    """The 2L - 1 corners of the rectilinear path through ``values [B, L, C]`` (channel 0 moves first)."""
    corners = [values[:, 0]]
    for i in range(1, values.shape[1]):
        corners.append(torch.cat([values[:, i, :1], values[:, i - 1, 1:]], dim=-1))
        corners.append(values[:, i])
    return torch.stack(corners, dim=1)


def _twin_models(vector_field: nn.Module | None, channels: int) -> tuple[NeuralCDE, NeuralCDE]:
    torch.manual_seed(3)
    kwargs = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-12, "width": 8, "depth": 1}
    rect = NeuralCDE(channels, H, vector_field, interpolation="rectilinear", time_channel=0, **kwargs).double()
    lin = NeuralCDE(channels, H, vector_field, interpolation="linear", **kwargs).double()
    lin.load_state_dict(rect.state_dict())
    return rect, lin


def test_rectilinear_equals_linear_interpolation_of_its_corners() -> None:
    """Reparametrisation invariance: the rectilinear control (index time 0..2L-2) and the linear interpolation
    of the staircase's corners at irregular times trace one geometric path, so a CDE (here with the default,
    nonlinear CDEVectorField) ends in the same state along both."""
    torch.manual_seed(4)
    values = torch.randn(B, L, 3, dtype=torch.float64)
    values[..., 0] = torch.cumsum(torch.rand(L, dtype=torch.float64) + 0.1, 0)  # observation times
    rect, lin = _twin_models(None, 3)
    corners = _staircase(values)
    rect_control = make_control(rect.coefficients(values), kind="rectilinear")
    for s in range(2 * L - 1):  # the rectilinear control passes through the corners at integer index times
        torch.testing.assert_close(rect_control.evaluate(torch.tensor(float(s), dtype=torch.float64)),
                                   corners[:, s], rtol=0, atol=1e-12)
    param_times = torch.cumsum(torch.rand(2 * L - 1, dtype=torch.float64) * 2 + 0.05, 0)
    z_rect = rect(rect.coefficients(values))
    z_lin = lin(lin.coefficients(corners, param_times), param_times)
    assert z_rect.shape == z_lin.shape == (B, 2, H)
    torch.testing.assert_close(z_rect[:, -1], z_lin[:, -1], rtol=0, atol=1e-8)
    # Not vacuous: the state moved, and the straight-line interpolation of the observations (another path)
    # ends elsewhere.
    assert (z_rect[:, -1] - z_rect[:, 0]).abs().max() > 0.5
    obs_times = values[0, :, 0].contiguous()
    z_straight = lin(lin.coefficients(values, obs_times), obs_times)
    assert (z_rect[:, -1] - z_straight[:, -1]).abs().max() > 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_rectilinear_on_a_line_with_commuting_field_equals_linear(device: str) -> None:
    """With data on a straight line (time channel 0 included) and a field whose matrices N_c = M[:, c, :]
    commute, the CDE solution depends on the path only through its end points: z(T) = exp(Σ_c ΔX_c N_c) z0.
    The rectilinear staircase and the straight line then end in the same state, which is that closed form."""
    times, values, _, _ = _line(device)
    values = torch.cat([times.expand(B, L).unsqueeze(-1), values], dim=-1)  # [B, L, 1 + C]
    torch.manual_seed(5)
    base = torch.randn(H, H, dtype=torch.float64)
    coef = torch.randn(1 + C, 3, dtype=torch.float64)
    eye = torch.eye(H, dtype=torch.float64)
    # N_c = α_c I + β_c base + γ_c base²: polynomials in one matrix commute.
    mats = [0.3 * (coef[c, 0] * eye + coef[c, 1] * base + coef[c, 2] * 0.3 * base @ base) for c in range(1 + C)]
    field = LinearCDEField(torch.stack(mats, dim=1)).to(device)  # [H, 1 + C, H]
    rect, lin = _twin_models(field, 1 + C)
    rect, lin = rect.to(device), lin.to(device)
    z_rect = rect(rect.coefficients(values))[:, -1]
    z_lin = lin(lin.coefficients(values, times), times)[:, -1]
    with torch.no_grad():
        z0 = rect.initial(values[:, 0])
        increment = values[:, -1] - values[:, 0]
        exact = linear_ode_solution(z0, field.along(increment), times.new_tensor([0.0, 1.0]))[:, -1]
    torch.testing.assert_close(z_lin, exact, rtol=0, atol=1e-8)
    torch.testing.assert_close(z_rect, exact, rtol=0, atol=1e-8)
