"""The layers: shapes and dtypes (batch size 1 included), the noise structure of NeuralSDE.mlp's diffusions."""

from __future__ import annotations

import pytest
import torch

from nde.layers import (
    AdditiveDiffusion,
    CDEVectorField,
    DiagonalDiffusion,
    GeneralDiffusion,
    MLPVectorField,
    NeuralCDE,
    NeuralODE,
    NeuralSDE,
)
from tests.nde.solvers.helpers import DEVICES

DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_neural_ode_shape_and_dtype(device: str, dtype: torch.dtype, batch: int, method: str) -> None:
    torch.manual_seed(0)
    model = NeuralODE(MLPVectorField(3, width=8, depth=1), method=method,
                      step_size=0.1 if method == "rk4" else None).to(device, dtype)
    y0 = torch.randn(batch, 3, dtype=dtype, device=device)
    times = torch.linspace(0, 1, 4, dtype=dtype, device=device)
    ys = model(y0, times)
    assert ys.shape == (batch, 4, 3)
    assert ys.dtype == dtype and ys.device.type == device
    assert torch.isfinite(ys).all()
    assert torch.equal(ys[:, 0], y0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("interpolation", ["linear", "cubic", "rectilinear"])
def test_neural_cde_shape_and_dtype(device: str, dtype: torch.dtype, batch: int, interpolation: str) -> None:
    torch.manual_seed(0)
    length, channels, hidden = 5, 3, 4
    model = NeuralCDE(channels, hidden, interpolation=interpolation, width=8, depth=1, step_size=0.05)
    model = model.to(device, dtype)
    values = torch.randn(batch, length, channels, dtype=dtype, device=device)
    values[..., 0] = torch.arange(length, dtype=dtype, device=device)
    coeffs = model.coefficients(values)
    assert coeffs.dtype == dtype
    ys = model(coeffs)
    assert ys.shape == (batch, 2, hidden)
    assert ys.dtype == dtype and ys.device.type == device
    assert torch.isfinite(ys).all()
    # z(t0) is the initial map of the first observation.
    torch.testing.assert_close(ys[:, 0], model.initial(values[:, 0]))
    # Output times inside the interval.
    end = 2 * (length - 1) if interpolation == "rectilinear" else length - 1
    out = model(coeffs, output_times=torch.linspace(0, end, 7, dtype=dtype, device=device))
    assert out.shape == (batch, 7, hidden)
    # The extra output times become extra solver steps: the end state agrees to the solver's accuracy.
    torch.testing.assert_close(out[:, -1], ys[:, -1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("noise_type", ["diagonal", "general", "additive"])
def test_neural_sde_mlp_shape_and_dtype(device: str, dtype: torch.dtype, batch: int, noise_type: str) -> None:
    torch.manual_seed(0)
    channels, noise_channels = 3, 2
    model = NeuralSDE.mlp(channels, noise_type=noise_type, noise_channels=noise_channels, width=8, depth=1,
                          dt=0.05).to(device, dtype)
    y0 = torch.randn(batch, channels, dtype=dtype, device=device)
    times = torch.linspace(0, 1, 5, dtype=dtype, device=device)
    ys = model(y0, times, seed=0)
    assert ys.shape == (batch, 5, channels)
    assert ys.dtype == dtype and ys.device.type == device
    assert torch.isfinite(ys).all()
    assert torch.equal(ys[:, 0], y0)
    assert model.stats.steps_accepted == 20
    # The diffusion network matches the noise type.
    g = model.diffusion(times[0], y0)
    expected = {"diagonal": (batch, channels), "general": (batch, channels, noise_channels),
                "additive": (batch, channels, noise_channels)}[noise_type]
    assert g.shape == expected
    # The same seed gives the same path; another seed another one.
    torch.testing.assert_close(model(y0, times, seed=0), ys, rtol=0, atol=0)
    assert not torch.equal(model(y0, times, seed=1), ys)


@pytest.mark.parametrize("sde_type", ["ito", "stratonovich"])
@pytest.mark.parametrize("noise_type", ["diagonal", "general", "additive"])
def test_neural_sde_mlp_each_calculus(sde_type: str, noise_type: str) -> None:
    torch.manual_seed(0)
    model = NeuralSDE.mlp(2, noise_type=noise_type, width=8, depth=1, sde_type=sde_type, dt=0.1)
    ys = model(torch.randn(4, 2), torch.tensor([0.0, 1.0]), seed=0)
    assert ys.shape == (4, 2, 2)
    assert torch.isfinite(ys).all()


def test_neural_sde_mlp_refuses_scalar_noise() -> None:
    with pytest.raises(ValueError, match="not 'scalar'"):
        NeuralSDE.mlp(2, noise_type="scalar")


@pytest.mark.parametrize("time_input", [True, False])
@pytest.mark.parametrize("final_activation", ["sigmoid", "softplus", None])
def test_diagonal_diffusion_channel_depends_only_on_its_own_state(time_input: bool, final_activation: str | None
                                                                  ) -> None:
    """g_i(t, y) depends on y_i alone: the Jacobian of the whole batch output is diagonal, over batch and channel."""
    torch.manual_seed(0)
    batch, channels = 3, 4
    g = DiagonalDiffusion(channels, width=6, time_input=time_input, final_activation=final_activation).double()
    y = torch.randn(batch, channels, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda y: g(t, y), y)  # [B, C, B, C]
    assert jac.shape == (batch, channels, batch, channels)
    mask = torch.eye(batch * channels, dtype=torch.bool).view(batch, channels, batch, channels)
    assert torch.all(jac[~mask] == 0)
    assert torch.all(jac[mask].abs() > 1e-6)  # and each channel does depend on its own state
    out = g(t, y)
    assert out.shape == (batch, channels)
    if final_activation is not None:
        assert torch.all(out > 0)


def test_diagonal_diffusion_channels_have_their_own_networks() -> None:
    """Two channels with the same state value get different noise: the networks are per channel."""
    torch.manual_seed(0)
    g = DiagonalDiffusion(2, width=6).double()
    out = g(torch.tensor(0.0, dtype=torch.float64), torch.full((1, 2), 0.5, dtype=torch.float64))
    assert (out[0, 0] - out[0, 1]).abs() > 1e-6


def test_vector_field_modules_shapes() -> None:
    torch.manual_seed(0)
    t = torch.tensor(0.5)
    y = torch.randn(1, 3)
    assert MLPVectorField(3, width=8, depth=2)(t, y).shape == (1, 3)
    assert MLPVectorField(3, width=8, depth=0, time_input=False)(t, y).shape == (1, 3)
    cde = CDEVectorField(3, 5, width=8, depth=1)(t, y)
    assert cde.shape == (1, 3, 5)
    assert cde.abs().max() <= 1.0  # bounded by tanh
    general = GeneralDiffusion(3, 2, width=8, scale=0.5)(t, y)
    assert general.shape == (1, 3, 2) and general.abs().max() <= 0.5
    additive = AdditiveDiffusion(3, 2)
    assert additive(t, y).shape == (1, 3, 2)
    # Additive noise does not depend on the state.
    torch.testing.assert_close(additive(t, y), additive(t, torch.randn(1, 3)))
    constant = AdditiveDiffusion(3, 2, time_dependent=False)
    torch.testing.assert_close(constant(t, y), constant(torch.tensor(2.0), y))
