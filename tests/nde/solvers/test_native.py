"""The native fixed-step backend (:mod:`nde.solvers.native`) of solve_ode, solve_cde and solve_sde.

- On the same step grid it agrees with torchdiffeq / torchsde to rounding, outputs and gradients.
- ``adjoint="checkpoint"`` gives the gradients of ``adjoint="direct"`` to rounding.
- Convergence orders: rk4 4, midpoint 2, euler 1 on a linear ODE (against ``matrix_exp``);
  Euler–Maruyama 0.5 and Milstein 1.0 (strong) on geometric Brownian motion (against its closed form).
- Statistics, seeding of the Brownian increments, input errors, float32 and batch size 1.

All step sizes are powers of two and all output times multiples of them, so that the grids of the
backends coincide exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torchdiffeq
import torchsde
from torch import Tensor, nn

from nde.layers import interpolation_coefficients, make_control
from nde.solvers import SolverInputError, solve_cde, solve_ode, solve_sde
from nde.solvers.native import step_grid
from tests.nde.solvers.helpers import LinearField, linear_ode_solution

F64 = torch.float64
ATOL = 1e-12
H = 2.0**-5  # step of the agreement tests
ODE_METHODS = ["euler", "midpoint", "rk4"]
STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}
INTERPOLATIONS = ["linear", "cubic", "rectilinear"]


def assert_close(got: Tensor, want: Tensor, atol: float = ATOL, rtol: float = 0.0) -> None:
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def assert_all_close(got: list[Tensor], want: list[Tensor]) -> None:
    """Gradients (entries up to ~30 here; observed differences up to ~1e-13) to 1e-12 absolute + relative."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------------------------------------------
# Vector fields.
# ---------------------------------------------------------------------------------------------------------


class MLPField(nn.Module):
    """``f(t, y) = W2 tanh(W1 y + t c)``: a small nonlinear, time-dependent ODE vector field / drift."""

    def __init__(self, channels: int, width: int = 8, scale: float = 1.0) -> None:
        super().__init__()
        self.inner = nn.Linear(channels, width, dtype=F64)
        self.time = nn.Parameter(torch.randn(width, dtype=F64))
        self.outer = nn.Linear(width, channels, dtype=F64)
        self.scale = scale

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.scale * self.outer(torch.tanh(self.inner(y) + t * self.time))


class CDEField(nn.Module):
    """``f(t, z) [B, H] -> [B, H, C]``, bounded by tanh."""

    def __init__(self, hidden: int, channels: int) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.linear = nn.Linear(hidden, hidden * channels, dtype=F64)
        self.time = nn.Parameter(0.3 * torch.randn(hidden * channels, dtype=F64))

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return torch.tanh(self.linear(z) + t * self.time).view(z.shape[0], self.hidden, self.channels)


class DiagonalDiffusion(nn.Module):
    """``g(t, y)_i = s_i sin(y_i) + a_i + b_i t``: ``g_i`` depends on ``y_i`` only (diagonal noise)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.s = nn.Parameter(0.5 + 0.1 * torch.randn(channels, dtype=F64))
        self.a = nn.Parameter(0.3 + 0.1 * torch.randn(channels, dtype=F64))
        self.b = nn.Parameter(0.1 * torch.randn(channels, dtype=F64))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.s * torch.sin(y) + self.a + self.b * t


class GeneralDiffusion(nn.Module):
    """``g(t, y) [B, C] -> [B, C, m]``."""

    def __init__(self, channels: int, noise: int) -> None:
        super().__init__()
        self.channels, self.noise = channels, noise
        self.linear = nn.Linear(channels, channels * noise, dtype=F64)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return 0.5 * torch.tanh(self.linear(y) + t).view(y.shape[0], self.channels, self.noise)


class TorchsdeSDE(nn.Module):
    """The same drift and diffusion as a torchsde SDE object."""

    def __init__(self, drift: nn.Module, diffusion: nn.Module, noise_type: str, sde_type: str) -> None:
        super().__init__()
        self.drift, self.diffusion = drift, diffusion
        self.noise_type, self.sde_type = noise_type, sde_type

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self.drift(t, y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.diffusion(t, y)


def params_of(*modules: nn.Module) -> list[Tensor]:
    return [p for m in modules for p in m.parameters()]


def weighted_sum(ys: Tensor) -> Tensor:
    """A loss that weighs every output differently, so that gradients see each entry."""
    weights = torch.linspace(0.5, 1.5, ys.numel(), dtype=ys.dtype).view_as(ys)
    return (weights * ys).sum() + (ys**2).sum()


def grads(loss: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    return list(torch.autograd.grad(loss, inputs))


# ---------------------------------------------------------------------------------------------------------
# 1. Agreement with the peers on the same grid; 2. checkpoint == direct.
# ---------------------------------------------------------------------------------------------------------

ODE_TIMES = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)


def _ode_problem() -> tuple[MLPField, Tensor]:
    torch.manual_seed(0)
    field = MLPField(3)
    y0 = torch.randn(4, 3, dtype=F64, requires_grad=True)
    return field, y0


@pytest.mark.parametrize("method", ODE_METHODS)
def test_ode_native_equals_torchdiffeq(method: str) -> None:
    field, y0 = _ode_problem()
    inputs = [y0, *params_of(field)]
    native = solve_ode(field, y0, ODE_TIMES, method=method, step_size=H, backend="native")
    peer = torchdiffeq.odeint(field, y0, ODE_TIMES, method=method, options={"step_size": H}).transpose(0, 1)
    assert native.ys.shape == (4, 4, 3)
    assert_close(native.ys, peer)
    assert_all_close(grads(weighted_sum(native.ys), inputs), grads(weighted_sum(peer), inputs))


@pytest.mark.parametrize("method", ODE_METHODS)
def test_ode_checkpoint_equals_direct(method: str) -> None:
    field, y0 = _ode_problem()
    inputs = [y0, *params_of(field)]
    out = {}
    for adjoint in ("direct", "checkpoint"):
        sol = solve_ode(field, y0, ODE_TIMES, method=method, step_size=H, backend="native", adjoint=adjoint)
        out[adjoint] = (sol.ys, grads(weighted_sum(sol.ys), inputs))
    assert_close(out["checkpoint"][0], out["direct"][0], atol=0.0)
    assert_all_close(out["checkpoint"][1], out["direct"][1])


B_CDE, L_CDE, C_CDE, H_CDE = 3, 5, 3, 4


def _cde_problem(kind: str) -> tuple[CDEField, Tensor, Tensor, Tensor]:
    """Vector field, data values [B, L, C] (channel 0 is time), z0 and output times inside the interval."""
    torch.manual_seed(1)
    field = CDEField(H_CDE, C_CDE)
    obs_times = torch.arange(L_CDE, dtype=F64).view(1, L_CDE, 1).expand(B_CDE, L_CDE, 1)
    values = torch.cat([obs_times, torch.randn(B_CDE, L_CDE, C_CDE - 1, dtype=F64)], -1)
    values.requires_grad_(True)
    z0 = torch.randn(B_CDE, H_CDE, dtype=F64, requires_grad=True)
    end = 2.0 * (L_CDE - 1) if kind == "rectilinear" else L_CDE - 1.0
    times = torch.tensor([0.0, 1.5, 2.25, end], dtype=F64)
    return field, values, z0, times


def _cde_solve(kind: str, field: CDEField, values: Tensor, z0: Tensor, times: Tensor, **kwargs: object) -> Tensor:
    control = make_control(interpolation_coefficients(values, kind=kind), kind=kind)
    return solve_cde(field, control, z0, times, step_size=2.0**-3, **kwargs).ys


@pytest.mark.parametrize("kind", INTERPOLATIONS)
@pytest.mark.parametrize("method", ODE_METHODS)
def test_cde_native_equals_torchdiffeq(kind: str, method: str) -> None:
    field, values, z0, times = _cde_problem(kind)
    inputs = [values, z0, *params_of(field)]
    native = _cde_solve(kind, field, values, z0, times, method=method, backend="native")
    peer = _cde_solve(kind, field, values, z0, times, method=method, backend="torchdiffeq")
    assert native.shape == (B_CDE, 4, H_CDE)
    assert_close(native, peer)
    native_grads = grads(weighted_sum(native), inputs)
    assert native_grads[0].abs().sum() > 0  # the data values do receive a gradient
    assert_all_close(native_grads, grads(weighted_sum(peer), inputs))


@pytest.mark.parametrize("kind", INTERPOLATIONS)
@pytest.mark.parametrize("method", ODE_METHODS)
def test_cde_checkpoint_equals_direct(kind: str, method: str) -> None:
    field, values, z0, times = _cde_problem(kind)
    inputs = [values, z0, *params_of(field)]
    out = {}
    for adjoint in ("direct", "checkpoint"):
        ys = _cde_solve(kind, field, values, z0, times, method=method, backend="native", adjoint=adjoint)
        out[adjoint] = (ys, grads(weighted_sum(ys), inputs))
    assert_close(out["checkpoint"][0], out["direct"][0], atol=0.0)
    assert_all_close(out["checkpoint"][1], out["direct"][1])


B_SDE, C_SDE, M_GENERAL = 5, 2, 3
SDE_TIMES = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
SDE_CASES = [  # (method, sde_type, noise_type)
    pytest.param("euler", "ito", "diagonal", id="euler-ito-diagonal"),
    pytest.param("euler", "ito", "general", id="euler-ito-general"),
    pytest.param("heun", "stratonovich", "diagonal", id="heun-strat-diagonal"),
    pytest.param("heun", "stratonovich", "general", id="heun-strat-general"),
    pytest.param("milstein", "ito", "diagonal", id="milstein-ito-diagonal"),
    pytest.param("milstein", "stratonovich", "diagonal", id="milstein-strat-diagonal"),
]


def _sde_problem(noise_type: str) -> tuple[MLPField, nn.Module, Tensor, int]:
    torch.manual_seed(2)
    drift = MLPField(C_SDE, scale=0.5)
    diffusion = DiagonalDiffusion(C_SDE) if noise_type == "diagonal" else GeneralDiffusion(C_SDE, M_GENERAL)
    y0 = torch.randn(B_SDE, C_SDE, dtype=F64, requires_grad=True)
    noise = C_SDE if noise_type == "diagonal" else M_GENERAL
    return drift, diffusion, y0, noise


def _interval(noise: int, entropy: int = 123) -> torchsde.BrownianInterval:
    return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(B_SDE, noise), dtype=F64, entropy=entropy)


@pytest.mark.parametrize(("method", "sde_type", "noise_type"), SDE_CASES)
def test_sde_native_equals_torchsde(method: str, sde_type: str, noise_type: str) -> None:
    drift, diffusion, y0, noise = _sde_problem(noise_type)
    inputs = [y0, *params_of(drift, diffusion)]
    native = solve_sde(drift, diffusion, y0, SDE_TIMES, noise_type=noise_type, sde_type=sde_type, method=method,
                       dt=H, backend="native", bm=_interval(noise)).ys
    sde = TorchsdeSDE(drift, diffusion, noise_type, sde_type)
    peer = torchsde.sdeint(sde, y0, SDE_TIMES, bm=_interval(noise), method=method, dt=H).transpose(0, 1)
    assert native.shape == (B_SDE, 4, C_SDE)
    assert_close(native, peer)
    assert_all_close(grads(weighted_sum(native), inputs), grads(weighted_sum(peer), inputs))
    # The noise matters: another Brownian path gives another solution.
    other = solve_sde(drift, diffusion, y0, SDE_TIMES, noise_type=noise_type, sde_type=sde_type, method=method,
                      dt=H, backend="native", bm=_interval(noise, entropy=124)).ys
    assert (other - native).abs().max() > 1e-3


@pytest.mark.parametrize(("method", "sde_type", "noise_type"), SDE_CASES)
def test_sde_checkpoint_equals_direct(method: str, sde_type: str, noise_type: str) -> None:
    drift, diffusion, y0, _ = _sde_problem(noise_type)
    inputs = [y0, *params_of(drift, diffusion)]
    out = {}
    for adjoint in ("direct", "checkpoint"):
        ys = solve_sde(drift, diffusion, y0, SDE_TIMES, noise_type=noise_type, sde_type=sde_type, method=method,
                       dt=H, backend="native", adjoint=adjoint, seed=7).ys
        out[adjoint] = (ys, grads(weighted_sum(ys), inputs))
    assert_close(out["checkpoint"][0], out["direct"][0], atol=0.0)
    assert_all_close(out["checkpoint"][1], out["direct"][1])


# ---------------------------------------------------------------------------------------------------------
# 3. Strong order on geometric Brownian motion; 4. ODE order against matrix_exp.
# ---------------------------------------------------------------------------------------------------------

GBM_MU, GBM_SIGMA, GBM_X0, GBM_T = 0.5, 0.8, 1.0, 1.0
GBM_PATHS, GBM_FINE = 2000, 2**10
GBM_DTS = [2.0**-k for k in range(4, 9)]


class FineBrownian:
    """A Brownian path ``[B, 1]`` sampled on a fine grid of ``T / n`` steps; ``bm(ta, tb) = W(tb) - W(ta)``.

    The increments of any coarser grid of the fine one are sums of the same fine increments, so every step
    size sees the same path.
    """

    def __init__(self, batch: int, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        dw = torch.randn(n, batch, 1, generator=gen, dtype=F64) * math.sqrt(GBM_T / n)
        self.w = torch.cat([torch.zeros(1, batch, 1, dtype=F64), dw.cumsum(0)])
        self.n = n
        self.shape = (batch, 1)

    def _index(self, t: float) -> int:
        k = t * self.n / GBM_T
        assert abs(k - round(k)) < 1e-9, "time off the fine grid"
        return round(k)

    def __call__(self, ta: float, tb: float) -> Tensor:
        return self.w[self._index(tb)] - self.w[self._index(ta)]


def _gbm_errors(method: str, bm: FineBrownian) -> list[float]:
    times = torch.tensor([0.0, GBM_T], dtype=F64)
    y0 = torch.full((GBM_PATHS, 1), GBM_X0, dtype=F64)
    exact = GBM_X0 * torch.exp((GBM_MU - GBM_SIGMA**2 / 2) * GBM_T + GBM_SIGMA * bm.w[-1])
    errors = []
    with torch.no_grad():
        for dt in GBM_DTS:
            ys = solve_sde(lambda t, y: GBM_MU * y, lambda t, y: GBM_SIGMA * y, y0, times, noise_type="diagonal",
                           sde_type="ito", method=method, dt=dt, backend="native", bm=bm).ys
            errors.append(float((ys[:, -1] - exact).abs().mean()))
    return errors


def _slope(dts: list[float], errors: list[float]) -> float:
    x = torch.tensor(dts, dtype=F64).log()
    y = torch.tensor(errors, dtype=F64).log()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def test_sde_strong_order_on_geometric_brownian_motion() -> None:
    bm = FineBrownian(GBM_PATHS, GBM_FINE, seed=2024)
    euler, milstein = _gbm_errors("euler", bm), _gbm_errors("milstein", bm)
    euler_slope, milstein_slope = _slope(GBM_DTS, euler), _slope(GBM_DTS, milstein)
    assert 0.35 <= euler_slope <= 0.7, (euler_slope, euler)
    assert 0.85 <= milstein_slope <= 1.2, (milstein_slope, milstein)
    assert milstein[-1] < euler[-1], (milstein, euler)
    # Both converge: the error falls with every halving of dt.
    for errs in (euler, milstein):
        assert all(b < a for a, b in itertools.pairwise(errs)), errs


LIN_MATRIX = torch.tensor([[-0.3, 1.2, 0.0], [-1.0, -0.2, 0.5], [0.2, -0.4, -0.6]], dtype=F64)


@pytest.mark.parametrize(("method", "coarse", "low", "high"), [
    ("euler", 2.0**-6, 1.8, 2.2),
    ("midpoint", 2.0**-4, 3.6, 4.4),
    ("rk4", 2.0**-3, 14.0, 18.0),
])
def test_ode_order_on_linear_system(method: str, coarse: float, low: float, high: float) -> None:
    torch.manual_seed(3)
    y0 = torch.randn(4, 3, dtype=F64)
    times = torch.tensor([0.0, 0.5, 2.0], dtype=F64)
    field = LinearField(LIN_MATRIX)
    exact = linear_ode_solution(y0, LIN_MATRIX, times)
    with torch.no_grad():
        errors = [float((solve_ode(field, y0, times, method=method, step_size=h, backend="native").ys - exact)
                        .abs().max()) for h in (coarse, coarse / 2)]
    ratio = errors[0] / errors[1]
    assert low <= ratio <= high, (ratio, errors)
    assert errors[1] > 1e-11  # well above rounding, so the ratio measures the truncation error


# ---------------------------------------------------------------------------------------------------------
# 5. Statistics.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ODE_METHODS)
@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_ode_statistics(method: str, adjoint: str) -> None:
    field, y0 = _ode_problem()
    times = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    step = 0.1
    grid, index = step_grid(times, step)
    n_steps = grid.numel() - 1
    assert n_steps == 3 + 7  # ceil(0.3 / 0.1) + ceil(0.7 / 0.1)
    assert index == [0, 3, 10]
    sol = solve_ode(field, y0, times, method=method, step_size=step, backend="native", adjoint=adjoint)
    assert sol.stats.nfe_forward == STAGES[method] * n_steps
    assert sol.stats.steps_accepted == n_steps
    assert sol.stats.steps_rejected == 0
    sol.ys.sum().backward()
    if adjoint == "checkpoint":
        assert sol.stats.nfe_backward == STAGES[method] * n_steps
        assert sol.stats.backward_steps_accepted == n_steps
    else:
        assert sol.stats.nfe_backward == 0


@pytest.mark.parametrize("kind", ["linear", "cubic"])
def test_cde_statistics_count_steps_through_knots(kind: str) -> None:
    field, values, z0, _ = _cde_problem(kind)
    times = torch.tensor([0.5, 3.0], dtype=F64)
    control = make_control(interpolation_coefficients(values.detach(), kind=kind), kind=kind)
    sol = solve_cde(field, control, z0, times, method="midpoint", step_size=0.4, backend="native",
                    adjoint="checkpoint")
    # Pieces [0.5, 1], [1, 2], [2, 3] (the knots 1 and 2 lie inside): 2 + 3 + 3 steps of at most 0.4.
    grid, index = step_grid(times, 0.4, knots=torch.arange(L_CDE, dtype=F64))
    assert grid.numel() - 1 == 8 and index == [0, 8]
    assert sol.stats.steps_accepted == 8
    assert sol.stats.nfe_forward == 2 * 8
    sol.ys.sum().backward()
    assert sol.stats.nfe_backward == 2 * 8


@pytest.mark.parametrize(("method", "sde_type"), [("euler", "ito"), ("heun", "stratonovich"), ("milstein", "ito")])
@pytest.mark.parametrize(("t_end", "dt"), [(1.0, 0.1), (0.7, 0.1), (1.0, 0.03)])
def test_sde_steps_accepted(method: str, sde_type: str, t_end: float, dt: float) -> None:
    drift, diffusion, y0, _ = _sde_problem("diagonal")
    times = torch.tensor([0.0, t_end], dtype=F64)
    sol = solve_sde(drift, diffusion, y0, times, sde_type=sde_type, method=method, dt=dt, backend="native", seed=0)
    expected = math.ceil(t_end / dt - 1e-9)
    assert sol.stats.steps_accepted == expected
    assert sol.stats.nfe_forward > 0


# ---------------------------------------------------------------------------------------------------------
# 6. Seeds and generators.
# ---------------------------------------------------------------------------------------------------------


def _brownian_paths(batch: int, times: Tensor, dt: float, **kwargs: object) -> Tensor:
    """``W`` at ``times`` for ``batch`` independent 1-d paths: the native Euler solve of ``dY = dW``."""
    y0 = torch.zeros(batch, 1, dtype=F64)
    return solve_sde(lambda t, y: torch.zeros_like(y), lambda t, y: torch.ones_like(y), y0, times,
                     noise_type="diagonal", method="euler", dt=dt, backend="native", **kwargs).ys[..., 0]


def test_sde_seed_reproducible() -> None:
    drift, diffusion, y0, _ = _sde_problem("diagonal")

    def run(**kwargs: object) -> Tensor:
        return solve_sde(drift, diffusion, y0, SDE_TIMES, dt=H, backend="native", **kwargs).ys.detach()

    first, again, other = run(seed=11), run(seed=11), run(seed=12)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3
    # A generator seeded alike gives the same path as `seed=`; the generator is consumed by the solve.
    gen = torch.Generator().manual_seed(11)
    assert torch.equal(run(generator=gen), first)
    assert not torch.equal(run(generator=gen), first)
    # Without seed or generator the global generator decides.
    torch.manual_seed(5)
    a = run()
    torch.manual_seed(5)
    assert torch.equal(run(), a)


def test_sde_increments_have_the_right_variance() -> None:
    n, dt, t_end = 4000, 2.0**-4, 2.0
    times = torch.arange(0.0, t_end + dt / 2, dt, dtype=F64)
    w = _brownian_paths(n, times, dt, generator=torch.Generator().manual_seed(99))
    assert w.shape == (n, times.numel())
    assert torch.equal(w[:, 0], torch.zeros(n, dtype=F64))
    increments = w[:, 1:] - w[:, :-1]
    # Quadratic variation: E Σ ΔW² = T, Var = 2 Σ dt² = 2 T dt per path.
    qv = (increments**2).sum(1)
    qv_se = math.sqrt(2 * t_end * dt / n)
    assert abs(float(qv.mean()) - t_end) < 4 * qv_se, float(qv.mean())
    # W_T ~ N(0, T): mean within 4 standard errors, sample variance within 4 of its standard errors.
    w_end = w[:, -1]
    assert abs(float(w_end.mean())) < 4 * math.sqrt(t_end / n)
    assert abs(float(w_end.var()) - t_end) < 4 * t_end * math.sqrt(2 / (n - 1))
    # Increments of different steps are uncorrelated.
    corr = float((increments[:, 0] * increments[:, 1]).mean()) / dt
    assert abs(corr) < 4 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------------------
# 7. Bad input.
# ---------------------------------------------------------------------------------------------------------


def _ode_args() -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]:
    return (lambda t, y: -y), torch.ones(2, 3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)


def _cde_args() -> tuple[Callable[[Tensor, Tensor], Tensor], object, Tensor]:
    values = torch.randn(2, 4, 3, dtype=F64)
    control = make_control(interpolation_coefficients(values, kind="linear"), kind="linear")
    return (lambda t, z: torch.tanh(z).unsqueeze(-1).expand(2, 5, 3)), control, torch.ones(2, 5, dtype=F64)


def _sde_args() -> tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]:
    return (lambda t, y: -y), (lambda t, y: 0.5 * torch.ones_like(y)), torch.ones(2, 3, dtype=F64), \
        torch.tensor([0.0, 1.0], dtype=F64)


def test_bad_ode_input() -> None:
    f, y0, times = _ode_args()
    with pytest.raises(SolverInputError, match="backend='native' has no ODE method 'dopri5'"):
        solve_ode(f, y0, times, method="dopri5", backend="native")
    with pytest.raises(SolverInputError, match="adjoint='direct' or 'checkpoint', not 'adjoint'"):
        solve_ode(f, y0, times, method="rk4", step_size=0.1, backend="native", adjoint="adjoint")
    with pytest.raises(SolverInputError, match="unknown backend 'jax'"):
        solve_ode(f, y0, times, method="rk4", backend="jax")  # type: ignore[arg-type]
    with pytest.raises(SolverInputError, match="`step_size` must be a positive finite number"):
        solve_ode(f, y0, times, method="rk4", step_size=-0.1, backend="native")
    with pytest.raises(SolverInputError, match=r"vector field returned shape \[2, 2\], expected \[2, 3\]"):
        solve_ode(lambda t, y: y[:, :2], y0, times, method="euler", step_size=0.1, backend="native")


def test_bad_cde_input() -> None:
    f, control, z0 = _cde_args()
    with pytest.raises(SolverInputError, match="backend='native' has no CDE method 'dopri5'"):
        solve_cde(f, control, z0, method="dopri5", backend="native")
    with pytest.raises(SolverInputError, match="not 'adjoint'"):
        solve_cde(f, control, z0, method="rk4", backend="native", adjoint="adjoint")
    with pytest.raises(SolverInputError, match="unknown backend 'jax'"):
        solve_cde(f, control, z0, backend="jax")  # type: ignore[arg-type]
    with pytest.raises(SolverInputError, match="`step_size` must be a positive finite number"):
        solve_cde(f, control, z0, method="rk4", step_size=-0.5, backend="native")
    with pytest.raises(SolverInputError, match=r"CDE vector field returned shape \[2, 5, 2\], expected \[2, 5, 3\]"):
        solve_cde(lambda t, z: torch.zeros(2, 5, 2, dtype=F64), control, z0, backend="native")


def test_bad_sde_input() -> None:
    f, g, y0, times = _sde_args()
    with pytest.raises(SolverInputError, match="backend='native' has no SDE method 'srk'"):
        solve_sde(f, g, y0, times, method="srk", backend="native")
    with pytest.raises(SolverInputError, match="not 'adjoint'"):
        solve_sde(f, g, y0, times, method="euler", backend="native", adjoint="adjoint")
    with pytest.raises(SolverInputError, match="unknown backend 'jax'"):
        solve_sde(f, g, y0, times, backend="jax")  # type: ignore[arg-type]

    def general(t: Tensor, y: Tensor) -> Tensor:
        return torch.ones(2, 3, 2, dtype=F64)

    with pytest.raises(SolverInputError, match="native method 'milstein' does not support noise_type='general'"):
        solve_sde(f, general, y0, times, noise_type="general", method="milstein", backend="native")
    with pytest.raises(SolverInputError, match="native method 'heun' discretises stratonovich SDEs, not ito"):
        solve_sde(f, g, y0, times, sde_type="ito", method="heun", backend="native")
    with pytest.raises(SolverInputError, match="native method 'euler' discretises ito SDEs, not stratonovich"):
        solve_sde(f, g, y0, times, sde_type="stratonovich", method="euler", backend="native")
    wrong_bm = FineBrownian(3, 16, seed=0)  # shape (3, 1), not (2, 3)
    with pytest.raises(SolverInputError, match=r"`bm` has shape \[3, 1\], expected \[B, m\] = \[2, 3\]"):
        solve_sde(f, g, y0, times, method="euler", backend="native", bm=wrong_bm)  # type: ignore[arg-type]
    with pytest.raises(SolverInputError, match="`dt` must be a positive finite number"):
        solve_sde(f, g, y0, times, method="euler", dt=-0.01, backend="native")
    with pytest.raises(SolverInputError, match=r"drift returned shape \[2, 1\], expected \[2, 3\]"):
        solve_sde(lambda t, y: y[:, :1], g, y0, times, method="euler", backend="native")
    with pytest.raises(SolverInputError, match=r"diffusion \(noise_type='diagonal'\) returned shape \[2, 3, 1\]"):
        solve_sde(f, lambda t, y: y.unsqueeze(-1), y0, times, method="euler", backend="native")


# ---------------------------------------------------------------------------------------------------------
# 8. float32 and batch size 1.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_dtypes_and_batch_size_one(dtype: torch.dtype, batch: int) -> None:
    torch.manual_seed(4)
    times = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)
    field = MLPField(2).to(dtype)
    y0 = torch.randn(batch, 2, dtype=dtype, requires_grad=True)
    for method in ODE_METHODS:
        for adjoint in ("direct", "checkpoint"):
            ys = solve_ode(field, y0, times, method=method, step_size=0.1, backend="native", adjoint=adjoint).ys
            assert ys.shape == (batch, 3, 2) and ys.dtype == dtype and torch.isfinite(ys).all()
            (grad,) = torch.autograd.grad(ys.sum(), y0)
            assert grad.dtype == dtype and torch.isfinite(grad).all()
    # The float32 solve is the float64 one to float32 rounding.
    ys64 = solve_ode(field.to(F64), y0.detach().to(F64), times.to(F64), method="rk4", step_size=0.1,
                     backend="native").ys
    ys = solve_ode(field.to(dtype), y0, times, method="rk4", step_size=0.1, backend="native").ys
    assert_close(ys.to(F64), ys64, atol=1e-5 if dtype == torch.float32 else 1e-14)

    for method, sde_type in (("euler", "ito"), ("heun", "stratonovich"), ("milstein", "ito")):
        ys = solve_sde(lambda t, y: -y, lambda t, y: 0.3 * torch.cos(y), y0, times, sde_type=sde_type,
                       method=method, dt=0.1, backend="native", seed=1).ys
        assert ys.shape == (batch, 3, 2) and ys.dtype == dtype and torch.isfinite(ys).all()

    values = torch.randn(batch, 4, 2, dtype=dtype)
    control = make_control(interpolation_coefficients(values, kind="cubic"), kind="cubic")
    cde_field = CDEField(3, 2).to(dtype)
    z0 = torch.randn(batch, 3, dtype=dtype)
    for adjoint in ("direct", "checkpoint"):
        zs = solve_cde(cde_field, control, z0, method="rk4", step_size=0.25, backend="native", adjoint=adjoint).ys
        assert zs.shape == (batch, 2, 3) and zs.dtype == dtype and torch.isfinite(zs).all()
