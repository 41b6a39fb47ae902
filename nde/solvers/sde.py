"""Stochastic differential equations through torchsde.

Solves ``dy = f(t, y) dt + g(t, y) ∘ dW`` (Stratonovich) or ``dy = f(t, y) dt + g(t, y) dW`` (Itô) with
fixed steps ``dt``, and returns ``y`` at every entry of ``times``.

Noise types and the shape of ``g(t, y)`` for a state ``y [B, C]`` and ``m`` Brownian channels:

- ``"diagonal"``: ``[B, C]``, ``m = C``, and ``g_i`` may depend on ``y_i`` only;
- ``"general"``: ``[B, C, m]``;
- ``"additive"``: ``[B, C, m]``, not depending on ``y``;
- ``"scalar"``: ``[B, C, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torchsde
from torch import Tensor, nn

from nde.solvers import native
from nde.solvers.common import (
    AdjointMode,
    Solution,
    SolverInputError,
    SolveStats,
    check_initial_state,
    check_modules_for_adjoint,
    check_output_shape,
    check_positive,
    check_times,
)

__all__ = ["NOISE_TYPES", "SDE_METHODS", "SDEMethod", "solve_sde"]

NoiseType = Literal["diagonal", "general", "additive", "scalar"]
SDEType = Literal["ito", "stratonovich"]
NOISE_TYPES: tuple[str, ...] = ("diagonal", "general", "additive", "scalar")
_ALL_NOISE = NOISE_TYPES
_COMMUTATIVE = ("diagonal", "additive", "scalar")


@dataclass(frozen=True)
class SDEMethod:
    """Capabilities of one torchsde method.

    Attributes:
        name: torchsde's name.
        sde_type: the calculus it discretises (``"ito"`` or ``"stratonovich"``; Milstein has both).
        noise_types: noise types it supports.
        strong_order: strong order of convergence for the supported noise types.
        levy_area: the Lévy-area approximation it needs from the Brownian motion.
    """

    name: str
    sde_types: tuple[str, ...]
    noise_types: tuple[str, ...]
    strong_order: float
    levy_area: str = "none"


SDE_METHODS: dict[str, SDEMethod] = {
    m.name: m
    for m in (
        SDEMethod("euler", ("ito",), _ALL_NOISE, 0.5),
        SDEMethod("milstein", ("ito", "stratonovich"), _COMMUTATIVE, 1.0),
        SDEMethod("srk", ("ito",), _COMMUTATIVE, 1.5, "space-time"),
        SDEMethod("midpoint", ("stratonovich",), _ALL_NOISE, 0.5),
        SDEMethod("heun", ("stratonovich",), _ALL_NOISE, 0.5),
        SDEMethod("euler_heun", ("stratonovich",), _ALL_NOISE, 0.5),
        SDEMethod("reversible_heun", ("stratonovich",), _ALL_NOISE, 0.5),
        SDEMethod("log_ode", ("stratonovich",), _ALL_NOISE, 0.5, "foster"),
    )
}

_DEFAULT_METHOD = {"ito": "euler", "stratonovich": "midpoint"}
_SDE_ADJOINTS = ("direct", "adjoint", "reversible_heun")


class CountingSDE(nn.Module):
    """The object torchsde integrates: drift ``f`` and diffusion ``g`` with evaluation counters."""

    def __init__(self, drift: Callable[[Tensor, Tensor], Tensor], diffusion: Callable[[Tensor, Tensor], Tensor],
                 noise_type: str, sde_type: str, stats: SolveStats, drift_shape: tuple[int, ...],
                 diffusion_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        for name, fn in (("drift", drift), ("diffusion", diffusion)):
            if isinstance(fn, nn.Module):
                setattr(self, name, fn)
            else:
                object.__setattr__(self, name, fn)
        self.noise_type = noise_type
        self.sde_type = sde_type
        self.stats = stats
        self.in_backward = False
        self._drift_shape: tuple[int, ...] | None = drift_shape
        self._diffusion_shape = diffusion_shape

    def _count(self) -> None:
        if self.in_backward:
            self.stats.nfe_backward += 1
        else:
            self.stats.nfe_forward += 1

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        self._count()
        out = self.drift(t, y)
        if self._drift_shape is not None:
            check_output_shape(out, self._drift_shape, "drift")
            self._drift_shape = None
        return out

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        self._count()
        out = self.diffusion(t, y)
        if self._diffusion_shape is not None:
            check_output_shape(out, self._diffusion_shape, f"diffusion (noise_type={self.noise_type!r})")
            self._diffusion_shape = None
        return out


def _count_steps(times: Tensor, dt: float) -> int:
    """Steps torchsde's fixed-step loop takes: steps of ``dt`` until each output time is reached."""
    # Count in the times' precision: torchsde steps in it, and float32 rounding changes the count.
    ts = times.detach().cpu().numpy()
    step = ts.dtype.type(dt)
    curr, steps = ts[0], 0
    for out_t in ts[1:]:
        while curr < out_t:
            curr = min(curr + step, ts[-1])
            steps += 1
    return steps


def _matrix_diffusion_shape(noise_type: str, batch: int, channels: int, got: Tensor) -> tuple[int, ...]:
    """``[B, C, m]`` for general and additive noise, with ``m`` read off an evaluation."""
    if got.ndim != 3:
        raise SolverInputError(
            f"with noise_type={noise_type!r} the diffusion must return [B, C, m], got shape {list(got.shape)}."
        )
    return (batch, channels, got.shape[2])


def _diffusion_shape(diffusion: Callable[[Tensor, Tensor], Tensor], y0: Tensor, times: Tensor, noise_type: str,
                     stats: SolveStats) -> tuple[int, ...]:
    """The diffusion's output shape; general and additive noise need one evaluation to know ``m``."""
    batch, channels = y0.shape
    if noise_type in ("diagonal", "scalar"):
        # The noise size is known: the diffusion's shape is checked on its first call instead.
        return (batch, channels) if noise_type == "diagonal" else (batch, channels, 1)
    with torch.no_grad():
        g0 = diffusion(times[0], y0)
    stats.nfe_forward += 1
    if not isinstance(g0, Tensor):
        raise SolverInputError(f"the diffusion must return a torch.Tensor, got {type(g0).__name__}.")
    g_shape = _matrix_diffusion_shape(noise_type, batch, channels, g0)
    check_output_shape(g0, g_shape, f"diffusion (noise_type={noise_type!r})")
    return g_shape


def check_sde_method(method: str | None, noise_type: str, sde_type: str, adjoint: str) -> SDEMethod:
    """Pick the default method and check method, noise type, calculus and adjoint against each other."""
    if noise_type not in NOISE_TYPES:
        raise SolverInputError(f"unknown noise_type {noise_type!r}; choose one of {NOISE_TYPES}.")
    if sde_type not in _DEFAULT_METHOD:
        raise SolverInputError(f"unknown sde_type {sde_type!r}; choose 'ito' or 'stratonovich'.")
    if adjoint not in _SDE_ADJOINTS:
        hint = " with torchsde (it is the native backend's: pass backend='native')" if adjoint == "checkpoint" else ""
        raise SolverInputError(f"unknown adjoint {adjoint!r}{hint}; choose one of {_SDE_ADJOINTS}.")
    if method is None:
        method = "reversible_heun" if adjoint == "reversible_heun" else _DEFAULT_METHOD[sde_type]
    if method not in SDE_METHODS:
        raise SolverInputError(f"unknown SDE method {method!r}; choose one of {sorted(SDE_METHODS)}.")
    spec = SDE_METHODS[method]
    if sde_type not in spec.sde_types:
        others = sorted(m for m, s in SDE_METHODS.items() if sde_type in s.sde_types)
        raise SolverInputError(
            f"method {method!r} discretises {'/'.join(spec.sde_types)} SDEs, not {sde_type}; "
            f"for sde_type={sde_type!r} use one of {others}."
        )
    if noise_type not in spec.noise_types:
        others = sorted(m for m, s in SDE_METHODS.items() if noise_type in s.noise_types and sde_type in s.sde_types)
        raise SolverInputError(
            f"method {method!r} does not support noise_type={noise_type!r}; use one of {others}."
        )
    if adjoint == "reversible_heun" and (method != "reversible_heun" or sde_type != "stratonovich"):
        raise SolverInputError(
            "adjoint='reversible_heun' needs method='reversible_heun' and sde_type='stratonovich' "
            f"(got method={method!r}, sde_type={sde_type!r})."
        )
    if adjoint == "adjoint" and sde_type == "ito" and noise_type == "general":
        # The adjoint of an Itô SDE needs the Itô–Stratonovich correction, which torchsde computes
        # only for commuting noise.
        raise SolverInputError(
            "adjoint='adjoint' is not supported for Itô SDEs with general noise; use sde_type='stratonovich' "
            "(e.g. method='midpoint', or adjoint='reversible_heun'), or adjoint='direct'."
        )
    if adjoint == "adjoint" and method == "log_ode":
        raise SolverInputError("adjoint='adjoint' does not support method='log_ode'; use 'midpoint'.")
    return spec


def solve_sde(
    drift: Callable[[Tensor, Tensor], Tensor],
    diffusion: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    times: Tensor,
    *,
    noise_type: NoiseType = "diagonal",
    sde_type: SDEType = "ito",
    method: str | None = None,
    dt: float = 1e-2,
    adjoint: AdjointMode = "direct",
    bm: torchsde.BrownianInterval | None = None,
    seed: int | None = None,
    backend: Literal["torchsde", "native"] = "torchsde",
    generator: torch.Generator | None = None,
) -> Solution:
    """Solve ``dy = f(t, y) dt + g(t, y) dW`` from ``y(times[0]) = y0`` with fixed steps ``dt``.

    Args:
        drift: ``f(t, y)``, ``y [B, C]`` -> ``[B, C]``.
        diffusion: ``g(t, y)``, shape by ``noise_type`` (see the module docstring).
        y0: initial state ``[B, C]``.
        times: output times ``[T]``, strictly increasing.
        noise_type: ``"diagonal"``, ``"general"``, ``"additive"`` or ``"scalar"``.
        sde_type: ``"ito"`` or ``"stratonovich"``.
        method: a key of :data:`SDE_METHODS`; default ``"euler"`` (Itô), ``"midpoint"`` (Stratonovich),
            ``"reversible_heun"`` under ``adjoint="reversible_heun"``.
        dt: the fixed step. Under ``adjoint="reversible_heun"`` every gap of ``times`` must be a whole
            number of steps, so that the backward pass retraces the forward one exactly.
        adjoint: ``"direct"`` (backpropagate through the solver), ``"adjoint"`` (the stochastic adjoint of
            Li et al., 2020) or ``"reversible_heun"`` (Kidger et al., 2021: exact gradients of the
            discretisation, memory flat in the number of steps).
        bm: a Brownian motion of size ``[B, m]`` over ``[times[0], times[-1]]``, e.g. to reuse one path
            across solves; by default a ``torchsde.BrownianInterval`` seeded by ``seed`` is made.
        seed: seed of the default Brownian motion (``None``: drawn from torch's global generator, so that
            ``torch.manual_seed`` makes runs reproducible).

        backend: ``"torchsde"`` or ``"native"`` (:mod:`nde.solvers.native`: ``euler`` (Itô), ``heun``
            (Stratonovich), ``milstein`` (diagonal, scalar or additive noise) in plain PyTorch, with
            ``adjoint="direct"`` or ``"checkpoint"``; each gap of ``times`` is split into equal steps of at
            most ``dt``, and the Brownian increments are drawn before the loop from ``generator`` or
            ``seed``, or read from ``bm``).
        generator: the native backend's source of Brownian increments (default: from ``seed``, else
            torch's global generator).

    Returns:
        :class:`Solution` with ``ys [B, T, C]``; ``stats.steps_accepted`` counts the fixed steps.
    """
    check_modules_for_adjoint(adjoint, drift=drift, diffusion=diffusion)
    if backend == "native":
        return _solve_sde_native(drift, diffusion, y0, times, noise_type, sde_type, method, dt, adjoint, bm,
                                 seed, generator)
    if backend != "torchsde":
        raise SolverInputError(f"unknown backend {backend!r}; choose 'torchsde' or 'native'.")
    spec = check_sde_method(method, noise_type, sde_type, adjoint)
    check_initial_state(y0)
    check_times(times, y0)
    check_positive(dt, "dt", required=True)
    batch, channels = y0.shape
    if adjoint == "reversible_heun":
        steps = (times - times[0]) / dt
        if not torch.allclose(steps, steps.round(), rtol=0.0, atol=1e-6 * max(1.0, float(steps[-1]))):
            raise SolverInputError(
                "adjoint='reversible_heun' needs every output time to lie on the step grid times[0] + k*dt, "
                f"but (times - times[0]) / dt = {steps.tolist()[:6]}...; choose dt dividing every gap, "
                "or use adjoint='adjoint'."
            )

    stats = SolveStats()
    g_shape = _diffusion_shape(diffusion, y0, times, noise_type, stats)
    noise_channels = channels if noise_type == "diagonal" else g_shape[2]

    if bm is None:
        entropy = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
        bm = torchsde.BrownianInterval(
            t0=float(times[0]), t1=float(times[-1]), size=(batch, noise_channels), dtype=y0.dtype,
            device=y0.device, levy_area_approximation=spec.levy_area, entropy=entropy,
        )
    else:
        # Read the size, not a sample: querying a BrownianInterval changes the path it produces later.
        shape = tuple(getattr(bm, "shape", ()))
        if shape != (batch, noise_channels):
            raise SolverInputError(
                f"`bm` has shape {list(shape)}, expected [B, m] = {[batch, noise_channels]}."
            )
        have = getattr(bm, "levy_area_approximation", "none")
        if spec.levy_area != "none" and have not in (spec.levy_area, "foster"):
            raise SolverInputError(
                f"method {spec.name!r} needs a Brownian motion with levy_area_approximation={spec.levy_area!r}, "
                f"got {have!r}."
            )

    sde = CountingSDE(drift, diffusion, noise_type, sde_type, stats, (batch, channels),
                      g_shape if noise_type in ("diagonal", "scalar") else None)
    if adjoint == "direct":
        ys = torchsde.sdeint(sde, y0, times, bm=bm, method=spec.name, dt=dt)
    else:
        params = native.module_params(drift, diffusion)
        adjoint_method = "adjoint_reversible_heun" if adjoint == "reversible_heun" else None
        ys = torchsde.sdeint_adjoint(sde, y0, times, bm=bm, method=spec.name, adjoint_method=adjoint_method,
                                     dt=dt, adjoint_params=tuple(params))
    sde.in_backward = True
    stats.steps_accepted = _count_steps(times, dt)
    if adjoint != "direct":
        stats.backward_steps_accepted = stats.steps_accepted  # the adjoint retraces the same grid
    return Solution(ys=ys.transpose(0, 1), times=times, stats=stats)


_NATIVE_DEFAULT = {"ito": "euler", "stratonovich": "heun"}
# Drift and diffusion evaluations per step (Milstein's vector-Jacobian product counted as one).
_NATIVE_NFE = {"euler": 2, "heun": 4, "milstein": 3}


def _solve_sde_native(drift: Callable[[Tensor, Tensor], Tensor], diffusion: Callable[[Tensor, Tensor], Tensor],
                      y0: Tensor, times: Tensor, noise_type: str, sde_type: str, method: str | None, dt: float,
                      adjoint: str, bm: torchsde.BrownianInterval | None, seed: int | None,
                      generator: torch.Generator | None) -> Solution:
    if noise_type not in NOISE_TYPES:
        raise SolverInputError(f"unknown noise_type {noise_type!r}; choose one of {NOISE_TYPES}.")
    if sde_type not in _NATIVE_DEFAULT:
        raise SolverInputError(f"unknown sde_type {sde_type!r}; choose 'ito' or 'stratonovich'.")
    method = _NATIVE_DEFAULT[sde_type] if method is None else method
    spec = native.check_native(method, adjoint, native.NATIVE_SDE_METHODS, "SDE")
    if sde_type not in spec.sde_types:
        raise SolverInputError(
            f"native method {method!r} discretises {'/'.join(spec.sde_types)} SDEs, not {sde_type}; use "
            f"{_NATIVE_DEFAULT[sde_type]!r}."
        )
    if noise_type not in spec.noise_types:
        raise SolverInputError(f"native method {method!r} does not support noise_type={noise_type!r}.")
    check_initial_state(y0)
    check_times(times, y0)
    check_positive(dt, "dt", required=True)
    stats = SolveStats()
    g_shape = _diffusion_shape(diffusion, y0, times, noise_type, stats)
    noise_channels = y0.shape[1] if noise_type == "diagonal" else g_shape[2]
    plan = native.StepPlan.build(times, dt)
    if bm is not None:
        shape = tuple(getattr(bm, "shape", ()))
        if shape != (y0.shape[0], noise_channels):
            raise SolverInputError(f"`bm` has shape {list(shape)}, expected [B, m] = {[y0.shape[0], noise_channels]}.")
        dw = native.brownian_increments(plan.grid, (y0.shape[0], noise_channels), bm=bm)
    else:
        if generator is None and seed is not None:
            generator = torch.Generator(device=y0.device).manual_seed(seed)
        dw = native.brownian_increments(plan.grid, (y0.shape[0], noise_channels), generator=generator)
    f = native.first_call_checked(drift, tuple(y0.shape), "drift")
    g = native.first_call_checked(diffusion, g_shape, f"diffusion (noise_type={noise_type!r})")
    ys = native_sde_loop(drift, diffusion, y0, plan, dw, method=method, sde_type=sde_type, noise_type=noise_type,
                         adjoint=adjoint, first_calls=(f, g))
    per_step = 2 if noise_type == "additive" else _NATIVE_NFE[method]  # additive Milstein is Euler
    counted = native.fixed_step_stats(per_step, plan.n_steps, adjoint)
    counted.nfe_forward += stats.nfe_forward  # the evaluation that read off the noise size
    return Solution(ys=ys, times=times, stats=counted)


def native_sde_loop(drift: Callable[[Tensor, Tensor], Tensor], diffusion: Callable[[Tensor, Tensor], Tensor],
                    y0: Tensor, plan: native.StepPlan, dw: Tensor, *, method: str = "euler", sde_type: str = "ito",
                    noise_type: str = "diagonal", adjoint: str = "direct",
                    first_calls: tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]
                    | None = None) -> Tensor:
    """The native SDE solve without input checks: ``ys [B, T, C]``, on given Brownian increments.

    The part a CUDA graph captures or ``torch.compile(fullgraph=True)`` traces; the checks, the
    :class:`~nde.solvers.native.StepPlan` and the increments ``dw [N, B, m]`` (e.g.
    :func:`~nde.solvers.native.brownian_increments` over ``plan.grid``) come before. Milstein (except for
    additive noise) differentiates the diffusion inside each step with ``torch.autograd.grad``, which
    dynamo does not trace by default: compile ``euler`` or ``heun``. ``first_calls`` replace drift and
    diffusion at the first step (e.g. to check their output shapes).
    """
    grid, steps, increments = plan.grid_points, plan.step_sizes, dw.unbind(0)
    f0, g0 = (drift, diffusion) if first_calls is None else first_calls

    def step(k: int, y: Tensor) -> Tensor:
        # create_graph read per call: a checkpointed forward runs without a graph, its recomputation with one.
        return native.sde_step(method, sde_type, noise_type, f0 if k == 0 else drift, g0 if k == 0 else diffusion,
                               grid[k], steps[k], y, increments[k], create_graph=torch.is_grad_enabled())

    return native.integrate_steps(step, y0, plan, adjoint, native.module_params(drift, diffusion))
