"""Malformed input is refused before any solving, with a SolverInputError that names the problem."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchsde
from torch import Tensor

from nde.layers import NeuralCDE, NeuralSDE, interpolation_coefficients, make_control
from nde.solvers import SolverInputError, solve_cde, solve_ode, solve_sde

B, C, H = 3, 2, 4
F64 = torch.float64


class Field:
    """A vector field that counts its calls: a check must fire before the first one."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(t, y)


def _y0() -> Tensor:
    return torch.ones(B, C, dtype=F64)


def _times() -> Tensor:
    return torch.tensor([0.0, 0.5, 1.0], dtype=F64)


def _control(batch: int = B, channels: int = C) -> Any:
    torch.manual_seed(0)
    values = torch.randn(batch, 3, channels, dtype=F64)
    return make_control(interpolation_coefficients(values, _times(), "cubic"), _times(), "cubic")


FRONTS = ["ode", "sde", "cde"]


def _run(front: str, field: Field, y0: Tensor | None = None, times: Tensor | None = None, **kwargs: Any) -> None:
    """Call one solver front on a well-formed problem, with the given pieces replaced."""
    y0 = _y0() if y0 is None else y0
    times = _times() if times is None else times
    if front == "ode":
        solve_ode(field, y0, times, **kwargs)
    elif front == "sde":
        solve_sde(field, lambda t, y: 0.1 * torch.ones_like(y), y0, times, seed=0, **kwargs)
    else:
        solve_cde(field, _control(), y0, times, **kwargs)


def _field(front: str) -> Field:
    if front == "cde":
        return Field(lambda t, z: 0.1 * torch.ones(z.shape[0], z.shape[1], C, dtype=z.dtype))
    return Field(lambda t, y: -y)


def _refused(front: str, match: str, **kwargs: Any) -> None:
    """The call raises SolverInputError matching ``match``, without evaluating the vector field."""
    field = _field(front)
    with pytest.raises(SolverInputError, match=match):
        _run(front, field, **kwargs)
    assert field.calls == 0, "the vector field was evaluated before the input was checked"


def test_well_formed_problems_pass() -> None:
    """The baseline the checks below perturb is accepted by every front."""
    for front in FRONTS:
        field = _field(front)
        _run(front, field)
        assert field.calls > 0


def test_solver_input_error_is_a_value_error() -> None:
    assert issubclass(SolverInputError, ValueError)
    with pytest.raises(ValueError, match="strictly increasing"):
        _run("ode", _field("ode"), times=torch.tensor([1.0, 0.0], dtype=F64))


# --- times -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
def test_unsorted_times(front: str) -> None:
    _refused(front, r"strictly increasing.*times\[0\]=0\.5", times=torch.tensor([0.5, 0.0, 1.0], dtype=F64))


@pytest.mark.parametrize("front", FRONTS)
def test_duplicate_times(front: str) -> None:
    _refused(front, r"strictly increasing.*drop duplicates", times=torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=F64))


@pytest.mark.parametrize("front", FRONTS)
def test_two_dimensional_times(front: str) -> None:
    _refused(front, r"must be 1-D", times=torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=F64))


@pytest.mark.parametrize("front", FRONTS)
def test_single_time_point(front: str) -> None:
    _refused(front, r"at least 2 entries", times=torch.tensor([0.0], dtype=F64))


@pytest.mark.parametrize("front", FRONTS)
def test_times_with_nan(front: str) -> None:
    _refused(front, r"NaN or infinite", times=torch.tensor([0.0, float("nan"), 1.0], dtype=F64))


@pytest.mark.parametrize("front", FRONTS)
def test_integer_times(front: str) -> None:
    _refused(front, r"must be a floating-point tensor", times=torch.tensor([0, 1]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("front", FRONTS)
def test_times_on_another_device(front: str) -> None:
    _refused(front, r"is on cuda.*initial state is on cpu", times=_times().cuda())


def test_times_outside_the_control_interval() -> None:
    _refused("cde", r"control is only defined on \[0\.0, 1\.0\]", times=torch.tensor([0.0, 1.5], dtype=F64))


# --- initial state -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
def test_initial_state_with_nan(front: str) -> None:
    y0 = _y0()
    y0[1, 0] = float("nan")
    _refused(front, r"NaN or infinite entry at index \[1, 0\]", y0=y0)


@pytest.mark.parametrize("front", FRONTS)
def test_one_dimensional_initial_state(front: str) -> None:
    _refused(front, r"shape \[B, C\].*unsqueeze\(0\)", y0=torch.ones(C, dtype=F64))


@pytest.mark.parametrize("front", FRONTS)
def test_integer_initial_state(front: str) -> None:
    _refused(front, r"must be floating point", y0=torch.ones(B, C, dtype=torch.long))


# --- vector fields and controls ----------------------------------------------------------------------------------


def test_ode_vector_field_with_wrong_shape() -> None:
    with pytest.raises(SolverInputError, match=r"vector field returned shape \[3, 3\], expected \[3, 2\]"):
        solve_ode(lambda t, y: torch.ones(B, C + 1, dtype=F64), _y0(), _times())


def test_cde_vector_field_with_wrong_shape() -> None:
    with pytest.raises(SolverInputError, match=r"CDE vector field returned shape \[3, 4, 3\], expected \[3, 4, 2\]"):
        solve_cde(lambda t, z: torch.ones(B, H, C + 1, dtype=F64), _control(), torch.ones(B, H, dtype=F64))


def test_control_batch_size_mismatch() -> None:
    with pytest.raises(SolverInputError, match=r"z0 has batch size 3"):
        solve_cde(lambda t, z: torch.ones(B, H, C, dtype=F64), _control(batch=2), torch.ones(B, H, dtype=F64))


def test_control_without_derivative() -> None:
    with pytest.raises(SolverInputError, match=r"`control` has no `derivative`"):
        solve_cde(lambda t, z: z, object(), torch.ones(B, H, dtype=F64))  # type: ignore[arg-type]


# --- ODE options -------------------------------------------------------------------------------------------------


def test_unknown_ode_method() -> None:
    _refused("ode", r"unknown ODE method 'rk5'", method="rk5")


def test_step_size_with_adaptive_method() -> None:
    _refused("ode", r"'dopri5' chooses its own steps.*step_size", method="dopri5", step_size=0.1)


@pytest.mark.parametrize("step_size", [-0.1, 0.0, float("inf"), float("nan")])
def test_non_positive_step_size(step_size: float) -> None:
    _refused("ode", r"`step_size` must be a positive finite number", method="rk4", step_size=step_size)


def test_reversible_heun_adjoint_for_an_ode() -> None:
    _refused("ode", r"not available for ODEs \(reversible Heun is an SDE method", adjoint="reversible_heun")


def test_cde_refuses_the_same_method_options() -> None:
    _refused("cde", r"unknown ODE method", method="nope")
    _refused("cde", r"not available for ODEs", adjoint="reversible_heun")


# --- SDE options -------------------------------------------------------------------------------------------------


def test_unknown_sde_method() -> None:
    _refused("sde", r"unknown SDE method 'rk4'", method="rk4")


def test_sde_method_incompatible_with_sde_type() -> None:
    _refused("sde", r"'euler' discretises ito SDEs, not stratonovich", method="euler", sde_type="stratonovich")


def test_sde_method_incompatible_with_ito() -> None:
    _refused("sde", r"'midpoint' discretises stratonovich SDEs, not ito", method="midpoint", sde_type="ito")


def test_sde_method_incompatible_with_noise_type() -> None:
    _refused("sde", r"'milstein' does not support noise_type='general'", method="milstein", noise_type="general")


def test_reversible_heun_adjoint_with_another_method() -> None:
    _refused("sde", r"adjoint='reversible_heun' needs method='reversible_heun'", method="midpoint",
             sde_type="stratonovich", adjoint="reversible_heun")


def test_reversible_heun_adjoint_with_dt_off_the_grid() -> None:
    _refused("sde", r"step grid", sde_type="stratonovich", adjoint="reversible_heun", dt=0.3)


def test_ito_general_noise_with_stochastic_adjoint() -> None:
    # torchsde would return silently wrong gradients here (no Itô–Stratonovich correction for general noise).
    _refused("sde", r"not supported for Itô SDEs with general noise", noise_type="general", adjoint="adjoint")


def test_unknown_noise_type() -> None:
    _refused("sde", r"unknown noise_type 'multiplicative'", noise_type="multiplicative")


def test_unknown_sde_type() -> None:
    _refused("sde", r"unknown sde_type 'ito_strat'", sde_type="ito_strat")


def test_unknown_sde_adjoint() -> None:
    _refused("sde", r"unknown adjoint 'backprop'", adjoint="backprop")


@pytest.mark.parametrize("dt", [0.0, -0.01])
def test_non_positive_dt(dt: float) -> None:
    _refused("sde", r"`dt` must be a positive finite number", dt=dt)


def test_diffusion_with_wrong_shape() -> None:
    with pytest.raises(SolverInputError, match=r"diffusion \(noise_type='diagonal'\) returned shape \[3, 2, 1\]"):
        solve_sde(lambda t, y: -y, lambda t, y: torch.ones(B, C, 1, dtype=F64), _y0(), _times(), seed=0)


def test_general_diffusion_without_noise_dimension() -> None:
    with pytest.raises(SolverInputError, match=r"noise_type='general' the diffusion must return \[B, C, m\]"):
        solve_sde(lambda t, y: -y, lambda t, y: torch.ones(B, C, dtype=F64), _y0(), _times(), noise_type="general",
                  method="euler", seed=0)


def test_brownian_motion_with_wrong_size() -> None:
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(B + 1, C), dtype=F64, entropy=0)
    match = r"`bm` has shape \[4, 2\], expected \[B, m\] = \[3, 2\]"
    with pytest.raises(SolverInputError, match=match):
        solve_sde(lambda t, y: -y, lambda t, y: 0.1 * torch.ones_like(y), _y0(), _times(), bm=bm)


def test_neural_sde_checks_its_configuration_when_built() -> None:
    with pytest.raises(SolverInputError, match=r"'euler' discretises ito SDEs"):
        NeuralSDE.mlp(2, sde_type="stratonovich", method="euler")


# --- interpolation -----------------------------------------------------------------------------------------------


def test_unknown_interpolation() -> None:
    # The layers raise a plain ValueError (which SolverInputError also is) for an unknown interpolation.
    values = torch.randn(B, 3, C, dtype=F64)
    with pytest.raises(ValueError, match=r"unknown interpolation 'quadratic'"):
        interpolation_coefficients(values, kind="quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown interpolation 'quadratic'"):
        make_control(values, kind="quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown interpolation 'quadratic'"):
        NeuralCDE(C, H, interpolation="quadratic")  # type: ignore[arg-type]


GLOBAL_NET = torch.nn.Linear(2, 2, dtype=torch.float64)


@pytest.mark.parametrize("backend_adjoint", [("torchdiffeq", "adjoint"), ("native", "checkpoint")])
def test_second_pass_gradients_refuse_functions_holding_parameters(backend_adjoint: tuple[str, str]) -> None:
    backend, adjoint = backend_adjoint
    local_net = torch.nn.Linear(2, 2, dtype=torch.float64)
    y0 = torch.ones(3, 2, dtype=torch.float64)
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for field in (lambda t, y: local_net(y), lambda t, y: GLOBAL_NET(y)):
        with pytest.raises(SolverInputError, match="holding trainable tensors"):
            solve_ode(field, y0, times, method="rk4", step_size=0.25, backend=backend, adjoint=adjoint)
    # A function without trainable tensors is fine: gradients then flow to y0 only.
    y0.requires_grad_(True)
    solve_ode(lambda t, y: -y, y0, times, method="rk4", step_size=0.25, backend=backend,
              adjoint=adjoint).ys.sum().backward()
    assert torch.allclose(y0.grad, torch.full_like(y0, 1 + torch.exp(torch.tensor(-1.0, dtype=torch.float64))),
                          atol=1e-3)
