"""Adjoint gradients of the layers against direct backpropagation (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from nde.layers import MLPVectorField, NeuralCDE, NeuralODE, NeuralSDE, make_control
from tests.nde.solvers.helpers import DEVICES, flat_grads, rel_err

F64 = torch.float64


def _ode_grads(model: NeuralODE, y0: Tensor, times: Tensor, adjoint: str) -> Tensor:
    model.adjoint = adjoint
    model.zero_grad()
    y = y0.clone().requires_grad_()
    ys = model(y, times)
    (ys[:, -1] ** 2).sum().backward()
    return flat_grads([*model.parameters(), y])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_neural_ode_adjoint_matches_direct(device: str, method: str) -> None:
    torch.manual_seed(0)
    model = NeuralODE(MLPVectorField(3, width=16, depth=2), method=method, rtol=1e-10, atol=1e-12).to(device, F64)
    y0 = torch.randn(4, 3, dtype=F64, device=device)
    if method == "dopri5":
        times = torch.tensor([0.0, 0.4, 1.0], dtype=F64, device=device)
    else:
        # rk4 steps from one output time to the next (step_size=None): forward and adjoint solves share one
        # grid. (With step_size set, the adjoint solve ignores it and takes one step per output interval:
        # reported as a library bug.)
        times = torch.linspace(0.0, 1.0, 21, dtype=F64, device=device)
    direct = _ode_grads(model, y0, times, "direct")
    adjoint = _ode_grads(model, y0, times, "adjoint")
    assert model.stats.nfe_backward > 0
    assert direct.abs().max() > 1e-2
    assert rel_err(adjoint, direct) < 1e-4
    # The gradient with respect to y0 on its own, too.
    assert rel_err(adjoint[-12:], direct[-12:]) < 1e-4


def _cde_setup(interpolation: str, method: str, device: str) -> tuple[NeuralCDE, Tensor, Tensor | None, Tensor]:
    torch.manual_seed(0)
    batch, length, channels, hidden = 2, 4, 3, 3
    times = torch.arange(length, dtype=F64, device=device)
    values = 0.5 * torch.randn(batch, length, channels, dtype=F64, device=device)
    values[..., 0] = times
    obs_times = None if interpolation == "rectilinear" else times
    if method == "dopri5":
        kwargs = {"rtol": 1e-9, "atol": 1e-11}
    else:
        kwargs = {"step_size": 0.0625}
    model = NeuralCDE(channels, hidden, interpolation=interpolation, width=8, depth=1, method=method,
                      **kwargs).to(device, F64)
    coeffs = model.coefficients(values, obs_times)
    interval = make_control(coeffs, obs_times, interpolation).interval
    if method == "rk4":
        # Output times on the step grid, so that the adjoint solve steps on the forward solve's grid (see the
        # NeuralODE test above).
        output_times = torch.arange(float(interval[0]), float(interval[1]) + 0.03, 0.0625, dtype=F64,
                                    device=device)
    else:
        output_times = interval
    return model, coeffs, obs_times, output_times


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
@pytest.mark.parametrize("interpolation", ["linear", "cubic", "rectilinear"])
def test_neural_cde_adjoint_matches_direct(device: str, method: str, interpolation: str) -> None:
    model, coeffs, obs_times, output_times = _cde_setup(interpolation, method, device)
    grads = {}
    for adjoint in ("direct", "adjoint"):
        model.adjoint = adjoint
        model.zero_grad()
        ys = model(coeffs, obs_times, output_times)
        (ys[:, -1] ** 2).sum().backward()
        grads[adjoint] = flat_grads(list(model.parameters()))
    assert model.stats.nfe_backward > 0
    assert grads["direct"].abs().max() > 1e-2
    assert rel_err(grads["adjoint"], grads["direct"]) < 1e-4


def _sde_grads(model: NeuralSDE, y0: Tensor, times: Tensor, seed: int) -> Tensor:
    model.zero_grad()
    y = y0.clone().requires_grad_()
    ys = model(y, times, seed=seed)
    (ys[:, -1] ** 2).mean().backward()
    return flat_grads([*model.parameters(), y])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("noise_type", ["diagonal", "general"])
def test_neural_sde_reversible_heun_adjoint_is_exact(device: str, noise_type: str) -> None:
    """The reversible Heun adjoint reconstructs the forward states exactly: the gradient of the discretisation,
    equal to direct backpropagation through reversible Heun on the same Brownian path, up to rounding."""
    torch.manual_seed(0)
    model = NeuralSDE.mlp(2, noise_type=noise_type, noise_channels=3, width=8, depth=1, sde_type="stratonovich",
                          method="reversible_heun", dt=0.05).to(device, F64)
    y0 = torch.randn(4, 2, dtype=F64, device=device)
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64, device=device)
    model.adjoint = "direct"
    direct = _sde_grads(model, y0, times, seed=11)
    model.adjoint = "reversible_heun"
    adjoint = _sde_grads(model, y0, times, seed=11)
    assert model.stats.nfe_backward > 0
    assert direct.abs().max() > 1e-2
    assert rel_err(adjoint, direct) < 1e-8


@pytest.mark.parametrize(("sde_type", "method"), [("ito", "euler"), ("stratonovich", "midpoint")])
def test_neural_sde_stochastic_adjoint_converges_to_direct(sde_type: str, method: str) -> None:
    """The stochastic adjoint (Li et al., 2020) solves the continuous adjoint SDE with the same scheme, so it differs
    from direct backpropagation by discretisation error: a few percent at most, shrinking as dt shrinks (observed:
    Itô/Euler 5.5e-3 -> 1.5e-3, Stratonovich/midpoint 1.8e-4 -> 4e-5 from dt = 0.02 to 0.005)."""
    torch.manual_seed(0)
    model = NeuralSDE.mlp(2, width=8, depth=1, sde_type=sde_type, method=method).to(dtype=F64)
    y0 = torch.randn(32, 2, dtype=F64)
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    errors = []
    for dt in (0.02, 0.005):
        model.dt = dt
        model.adjoint = "direct"
        direct = _sde_grads(model, y0, times, seed=3)
        model.adjoint = "adjoint"
        adjoint = _sde_grads(model, y0, times, seed=3)
        assert model.stats.nfe_backward > 0
        errors.append(rel_err(adjoint, direct))
    assert errors[0] < 0.03, errors
    assert errors[1] < errors[0] / 2, errors
