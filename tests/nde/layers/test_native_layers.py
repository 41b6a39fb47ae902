"""The layers on the native backend give the library backend's numbers; graph capture replays them (CUDA)."""

from __future__ import annotations

import pytest
import torch
import torchsde

from nde.layers import MLPVectorField, NeuralCDE, NeuralODE, NeuralSDE

F64 = torch.float64


def _grads(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def test_neural_ode_native_matches_torchdiffeq() -> None:
    torch.manual_seed(0)
    field = MLPVectorField(3, width=16).double()
    y0 = torch.randn(4, 3, dtype=F64)
    times = torch.linspace(0, 1, 5, dtype=F64)
    results = {}
    for backend, adjoint in (("torchdiffeq", "direct"), ("native", "direct"), ("native", "checkpoint")):
        layer = NeuralODE(field, method="rk4", step_size=2**-5, backend=backend, adjoint=adjoint)
        field.zero_grad()
        ys = layer(y0, times)
        ys.square().sum().backward()
        results[(backend, adjoint)] = (ys.detach(), _grads(field))
    ref_y, ref_g = results[("torchdiffeq", "direct")]
    for key in (("native", "direct"), ("native", "checkpoint")):
        torch.testing.assert_close(results[key][0], ref_y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(results[key][1], ref_g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_neural_cde_native_matches_torchdiffeq(interpolation: str) -> None:
    torch.manual_seed(1)
    values = torch.randn(3, 9, 2, dtype=F64).cumsum(1)
    outputs = {}
    for backend in ("torchdiffeq", "native"):
        torch.manual_seed(2)
        layer = NeuralCDE(2, 5, interpolation=interpolation, width=8, method="rk4", step_size=0.25,
                          backend=backend).double()
        z = layer(layer.coefficients(values))
        z[:, -1].sum().backward()
        outputs[backend] = (z.detach(), _grads(layer))
    torch.testing.assert_close(outputs["native"][0], outputs["torchdiffeq"][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outputs["native"][1], outputs["torchdiffeq"][1], rtol=1e-10, atol=1e-12)


def test_neural_sde_native_matches_torchsde_on_one_path() -> None:
    torch.manual_seed(3)
    layer = NeuralSDE.mlp(3, width=16, dt=2**-5).double()
    y0 = torch.randn(5, 3, dtype=F64)
    times = torch.linspace(0, 1, 5, dtype=F64)
    paths = {}
    for backend in ("torchsde", "native"):
        layer.backend = backend
        bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(5, 3), dtype=F64, entropy=11)
        paths[backend] = layer(y0, times, bm=bm).detach()
    torch.testing.assert_close(paths["native"], paths["torchsde"], rtol=1e-12, atol=1e-12)


def test_graph_needs_the_native_backend() -> None:
    with pytest.raises(ValueError, match="backend='native'"):
        NeuralODE(MLPVectorField(2), method="rk4", graph=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_neural_ode_replays_the_eager_solve() -> None:
    torch.manual_seed(4)
    device = torch.device("cuda")
    field = MLPVectorField(8, width=32).to(device)
    times = torch.linspace(0, 1, 3, device=device)
    eager = NeuralODE(field, method="rk4", step_size=0.05, backend="native")
    graphed = NeuralODE(field, method="rk4", step_size=0.05, backend="native", graph=True)
    for trial in range(3):  # capture once, then replay with new inputs
        y0 = torch.randn(16, 8, device=device) * (trial + 1)
        field.zero_grad()
        ys_eager = eager(y0, times)
        ys_eager.square().sum().backward()
        # An eager autograd graph still alive at the capture makes it fail (see NeuralODE's ``graph``).
        ys_eager = ys_eager.detach()
        g_eager = _grads(field)
        field.zero_grad()
        ys_graph = graphed(y0, times)
        ys_graph.square().sum().backward()
        torch.testing.assert_close(ys_graph, ys_eager, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_grads(field), g_eager, rtol=1e-4, atol=1e-5)
