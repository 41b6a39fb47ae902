"""The native fixed-step solvers against torchdiffeq, torchsde, torchcde and hand-written loops.

Reproduces, in one process and side by side, the reference table of the native-backend issue (H100,
torch 2.11, TF32 on): a 3-layer tanh MLP vector field (width 128, state 32), 100 steps, forward plus
backward, at batch 64 and 4096, with the native path (``backend="native"``) added:

- **ODE** (rk4, steps of 1/steps over [0, 1]): ``torchdiffeq.odeint`` | ``solve_ode(backend="native")`` |
  a hand-written eager RK4 loop (the 3/8 rule, as torchdiffeq's rk4); on CUDA also the native loop
  (``nde.solvers.ode.native_ode_loop``) and the hand loop, forward and backward, each
  captured as one CUDA graph and replayed; with ``--compile`` the native loop with each step compiled by
  ``torch.compile``.
- **SDE** (Itô, diagonal noise: drift the MLP, diffusion ``0.2 * sigmoid(a * y + b)`` per channel;
  Euler–Maruyama): ``torchsde.sdeint`` | ``solve_sde(backend="native", bm=...)`` | a plain eager loop, all on
  the same Brownian increments (a fresh ``torchsde.BrownianInterval`` with the same entropy per run, made
  outside the timed region; the plain loop gets the increments precomputed), and ``solve_sde(backend=
  "native", seed=...)``, which draws its increments inside the timed run (how users call it), checked
  against the plain loop fed with the same generator's increments. ``torchsde.sdeint`` is timed twice: with
  float32 ``ts``, as users call it, where its float32 sum of ``dt`` stops just short of 1 and it takes one
  extra, tiny step, whose query makes the BrownianInterval refine its dependency tree down to that length
  (most of its time); and with float64 ``ts``, where it takes exactly ``steps`` steps.
- **CDE** (rk4 over a natural cubic spline through ``steps + 1`` knots on [0, 1], one step per knot
  interval): ``torchcde.cdeint(adjoint=False, method="rk4", options={"step_size": 1/steps})`` |
  ``solve_cde(backend="native", step_size=None)`` (one step per knot interval: with ``step_size=1/steps``
  the native step grid splits the knot gaps that float32 rounding makes slightly longer than 1/steps).
- **Memory**: native rk4 with ``adjoint="direct"`` vs ``"checkpoint"`` at N and 10N steps. On CUDA the peak
  allocated memory of forward + backward (``torch.cuda.max_memory_allocated`` after a reset); everywhere the
  bytes autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once;
  the checkpoint Function's saved states are seen by the hook too): at the end of the forward pass, and the
  largest amount alive at any moment of forward + backward (the checkpoint recomputation included).

Every compared pair is checked before timing: outputs and every parameter's gradient must agree to
``--tolerance`` (default 1e-4) relative to their magnitude, otherwise the row is marked MISMATCH and the
script exits with status 1 after printing everything. On CUDA the checks run in full float32 (TF32 off)
and the timings with TF32 on (``torch.backends.cuda.matmul.allow_tf32 = True``), as the reference table.
Runs are warmed up, then interleaved (all variants per round, the order alternating); tables give medians
and speed-ups (peer time / native time).

Run from the repository root::

    python benchmarks/gpu_layers.py             # full run (CPU default: batch 64 and 1024, ~5 min, 1 thread)
    python benchmarks/gpu_layers.py --quick     # smoke run, under a minute on CPU
    python benchmarks/gpu_layers.py --batches 64 4096 --repeats 5   # the issue's batch sizes on a CPU (slow)

Markdown tables go to stdout, every measurement to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchcde
import torchdiffeq
import torchsde
from bench_common import TorchsdeSDE, machine_info, sync
from torch import Tensor, nn

from nde.solvers import native, solve_cde, solve_ode, solve_sde
from nde.solvers.ode import native_ode_loop

STATE = 32  # state / hidden channels
WIDTH = 128  # hidden width of the MLP
CDE_INPUT = 4  # channels of the CDE's control (time + 3 random-walk channels)
ENTROPY = 1234  # of every BrownianInterval
SEED = 1234  # of the native solver's own generator
MiB = 2.0**20

Result = tuple[Tensor, list[Tensor]]  # (output at the final time [B, C], gradient of every parameter)


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


class MLPField(nn.Module):
    """``f(t, y) = tanh(W3 tanh(W2 tanh(W1 y + b1) + b2) + b3)``; ``t`` is not an input (as in a plain loop)."""

    def __init__(self, state: int = STATE, width: int = WIDTH, out: int | None = None) -> None:
        super().__init__()
        self.out = out or state
        self.net = nn.Sequential(nn.Linear(state, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, self.out), nn.Tanh())

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


class CDEField(nn.Module):
    """The CDE's ``f(t, z) [B, H, C]``: the MLP with ``H * C`` outputs."""

    def __init__(self, hidden: int = STATE, channels: int = CDE_INPUT, width: int = WIDTH) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.mlp = MLPField(hidden, width, hidden * channels)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.mlp(t, z).view(z.shape[0], self.hidden, self.channels)


class DiagonalDiffusion(nn.Module):
    """Small per-channel diffusion ``0.2 * sigmoid(a * y + b)``: ``g_i`` depends on ``y_i`` only (diagonal)."""

    def __init__(self, state: int = STATE) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.5, 1.5, state))
        self.b = nn.Parameter(torch.linspace(-1.0, 1.0, state))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return 0.2 * torch.sigmoid(self.a * y + self.b)


# --------------------------------------------------------------------------------------------------------------
# Variants: one forward + backward computation each
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One way of computing a case. ``run(state)`` does forward + backward and returns the final state
    ``[B, C]`` and the parameter gradients; ``setup()`` makes its per-run state outside the timed region.
    ``ref`` names the variant it must agree with (None: it is the reference). ``native`` marks ours."""

    name: str
    run: Callable[[Any], Result]
    ref: str | None = None
    native: bool = False
    setup: Callable[[], Any] = lambda: None


@dataclass
class Case:
    family: str
    batch: int
    steps: int
    params: list[nn.Parameter]
    variants: list[Variant] = field(default_factory=list)
    peer: str = ""  # the library the issue measures against
    info: dict[str, Any] = field(default_factory=dict)


def _loss(y: Tensor) -> Tensor:
    return y.square().mean()


def _eager(params: list[nn.Parameter], forward: Callable[[Any], Tensor]) -> Callable[[Any], Result]:
    """Forward, ``loss.backward()``, then read the gradients (and clear them for the next run)."""

    def run(state: Any) -> Result:
        for p in params:
            p.grad = None
        y = forward(state)
        _loss(y).backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        for p in params:
            p.grad = None
        return y.detach(), grads

    return run


def _graphed(params: list[nn.Parameter], forward: Callable[[], Tensor], device: torch.device) -> Callable[[Any],
                                                                                                          Result]:
    """Forward + backward (``torch.autograd.grad``) captured once as one CUDA graph; each run replays it.

    The inputs are fixed tensors captured by ``forward``; the outputs live in the graph's static buffers.
    """

    def fwd_bwd() -> tuple[Tensor, ...]:
        y = forward()
        return (y.detach(), *torch.autograd.grad(_loss(y), params))

    for p in params:
        p.grad = None
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream, as torch.cuda.graph requires
            fwd_bwd()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = fwd_bwd()
    sync(device)

    def run(_: Any) -> Result:
        graph.replay()
        return static[0], list(static[1:])

    # Keep the graph and everything it reads alive with the callable: a replay reads the captured addresses,
    # so a tensor held only by ``forward``'s closure (native_loop's StepPlan) must not be freed and reused.
    run.graph = graph  # type: ignore[attr-defined]
    run.forward = forward  # type: ignore[attr-defined]
    return run


def rk4_loop(f: Callable[[Tensor, Tensor], Tensor], y0: Tensor, t0: Tensor, h: Tensor, n: int) -> Tensor:
    """The plain eager RK4 loop (3/8 rule, as torchdiffeq's rk4); the field ignores time."""
    y = y0
    for _ in range(n):
        k1 = f(t0, y)
        k2 = f(t0, y + h * k1 / 3)
        k3 = f(t0, y + h * (k2 - k1 / 3))
        k4 = f(t0, y + h * (k1 - k2 + k3))
        y = y + h * (k1 + 3 * (k2 + k3) + k4) / 8
    return y


def em_loop(f: Callable[[Tensor, Tensor], Tensor], g: Callable[[Tensor, Tensor], Tensor], y0: Tensor, t0: Tensor,
            h: Tensor, dw: Tensor) -> Tensor:
    """The plain eager Euler–Maruyama loop on precomputed increments ``dw [N, B, C]`` (diagonal noise)."""
    y = y0
    for k in range(dw.shape[0]):
        y = y + f(t0, y) * h + g(t0, y) * dw[k]
    return y


def ode_case(batch: int, steps: int, device: torch.device, graphs: bool, compile_mode: str | None) -> Case:
    torch.manual_seed(0)
    f = MLPField().to(device)
    params = list(f.parameters())
    y0 = torch.randn(batch, STATE, device=device)
    times = torch.tensor([0.0, 1.0], device=device)
    step_size = 1.0 / steps
    grid, out_index = native.step_grid(times, step_size)
    h_grid = grid[1:] - grid[:-1]
    n = h_grid.numel()
    h = torch.tensor(step_size, device=device)
    t0 = times[0]

    def tdq(_: Any) -> Tensor:
        return torchdiffeq.odeint(f, y0, times, method="rk4", options={"step_size": step_size})[-1]

    def nat(_: Any) -> Tensor:
        return solve_ode(f, y0, times, method="rk4", step_size=step_size, backend="native").ys[:, -1]

    plan = native.StepPlan.build(times, step_size)

    def native_loop() -> Tensor:
        # What solve_ode(backend="native") runs after its checks and step plan (those read values on the
        # host and cannot be captured), as NeuralODE(graph=True) captures it.
        return native_ode_loop(f, y0, plan, "rk4", "direct")[:, -1]

    def loop(_: Any) -> Tensor:
        return rk4_loop(f, y0, t0, h, n)

    case = Case("ODE rk4", batch, n, params, peer="torchdiffeq rk4")
    case.variants = [
        Variant("torchdiffeq rk4", _eager(params, tdq), ref="native"),
        Variant("native", _eager(params, nat), native=True),
        Variant("RK4 loop eager", _eager(params, loop), ref="native"),
    ]
    if graphs:
        for name, forward, ref in (("RK4 loop CUDA graph", lambda: rk4_loop(f, y0, t0, h, n), "RK4 loop eager"),
                                   ("native CUDA graph", native_loop, "native")):
            try:
                case.variants.append(Variant(name, _graphed(params, forward, device), ref=ref,
                                             native=name.startswith("native")))
            except Exception as error:  # report and go on with the other variants
                case.info[f"{name} failed"] = f"{type(error).__name__}: {error}"
                print(f"  {name} B={batch}: capture failed: {type(error).__name__}: {error}", file=sys.stderr)
                sync(device)
    if compile_mode is not None:
        compiled = torch.compile(lambda t, dt, y: native.ode_step("rk4", f, t, dt, y), mode=compile_mode)

        def compiled_loop(_: Any) -> Tensor:
            return native.run_steps(lambda k, y: compiled(grid[k], h_grid[k], y), y0, n, out_index)[:, -1]

        case.variants.append(Variant(f"native torch.compile({compile_mode})", _eager(params, compiled_loop),
                                     ref="native", native=True))
    return case


def _torchsde_steps(times: Tensor, dt: float) -> int:
    """Steps torchsde's fixed-step loop takes (its arithmetic: ``min(t + dt, ts[-1])`` in the times' dtype)."""
    t, n = times[0].cpu(), 0
    while t < times[-1]:
        t, n = torch.minimum(t + dt, times[-1].cpu()), n + 1
    return n


def sde_case(batch: int, steps: int, device: torch.device) -> Case:
    torch.manual_seed(0)
    drift, diffusion = MLPField().to(device), DiagonalDiffusion().to(device)
    sde = TorchsdeSDE(drift, diffusion)
    params = list(drift.parameters()) + list(diffusion.parameters())
    y0 = 0.5 * torch.randn(batch, STATE, device=device)
    times = torch.tensor([0.0, 1.0], device=device)
    dt = 1.0 / steps
    grid, _ = native.step_grid(times, dt)
    h_grid = grid[1:] - grid[:-1]
    t0 = times[0]

    def make_bm() -> torchsde.BrownianInterval:
        # A fresh path with the same entropy for every run: identical noise, cold caches.
        return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(batch, STATE), dtype=y0.dtype, device=device,
                                         entropy=ENTROPY)

    # The plain loop's increments: the same path, queried at the native grid (as the native solver does).
    dw_bm = native.brownian_increments(grid, (batch, STATE), bm=make_bm())
    # ... and those the native solver draws from seed=SEED (same generator, same call).
    dw_seed = native.brownian_increments(grid, (batch, STATE),
                                         generator=torch.Generator(device=device).manual_seed(SEED))
    h = h_grid[0]

    def tsde(bm: torchsde.BrownianInterval) -> Tensor:
        return torchsde.sdeint(sde, y0, times, bm=bm, method="euler", dt=dt)[-1]

    times64 = times.double()

    def tsde64(bm: torchsde.BrownianInterval) -> Tensor:
        # float64 times: torchsde then takes exactly `steps` steps (see the module docstring).
        return torchsde.sdeint(sde, y0, times64, bm=bm, method="euler", dt=dt)[-1]

    def nat_bm(bm: torchsde.BrownianInterval) -> Tensor:
        return solve_sde(drift, diffusion, y0, times, method="euler", dt=dt, bm=bm, backend="native").ys[:, -1]

    def nat_seed(_: Any) -> Tensor:
        return solve_sde(drift, diffusion, y0, times, method="euler", dt=dt, seed=SEED, backend="native").ys[:, -1]

    case = Case("SDE Euler–Maruyama", batch, h_grid.numel(), params, peer="torchsde.sdeint")
    case.info["torchsde_steps"] = _torchsde_steps(times, dt)
    case.info["torchsde_steps_float64_ts"] = _torchsde_steps(times64, dt)
    case.variants = [
        Variant("torchsde.sdeint", _eager(params, tsde), ref="native (bm=)", setup=make_bm),
        Variant("torchsde.sdeint, float64 ts", _eager(params, tsde64), ref="native (bm=)", setup=make_bm),
        Variant("native (bm=)", _eager(params, nat_bm), native=True, setup=make_bm),
        Variant("EM loop eager", _eager(params, lambda _: em_loop(drift, diffusion, y0, t0, h, dw_bm)),
                ref="native (bm=)"),
        Variant("native (seed=)", _eager(params, nat_seed), native=True, ref="EM loop, seed increments"),
        # Not timed: the plain loop on the increments of seed=SEED, to check the native (seed=) column.
        Variant("EM loop, seed increments", _eager(params, lambda _: em_loop(drift, diffusion, y0, t0, h, dw_seed))),
    ]
    return case


def cde_case(batch: int, steps: int, device: torch.device) -> Case:
    torch.manual_seed(0)
    f = CDEField().to(device)
    params = list(f.parameters())
    knots = steps + 1
    t_knots = torch.linspace(0.0, 1.0, knots, device=device)
    t = t_knots.expand(batch, knots).unsqueeze(-1)
    walk = torch.randn(batch, knots, CDE_INPUT - 1, device=device).cumsum(1) / knots**0.5
    # Preprocessing, not timed: the spline through the knots t_knots on [0, 1].
    coeffs = torchcde.natural_cubic_coeffs(torch.cat([t, walk], dim=-1), t=t_knots)
    z0 = torch.randn(batch, STATE, device=device)
    step_size = 1.0 / steps

    def tcde(_: Any) -> Tensor:
        x = torchcde.CubicSpline(coeffs, t=t_knots)
        # adjoint=False: backpropagate through the solver, like the native direct mode (torchcde's default is
        # the continuous adjoint, whose gradients differ at the discretisation level).
        return torchcde.cdeint(X=x, func=f, z0=z0, t=x.interval, adjoint=False, method="rk4",
                               options={"step_size": step_size})[:, -1]

    def nat(_: Any) -> Tensor:
        # step_size=None: one step per knot interval, the grid torchcde's step_size=1/steps takes here. (With
        # step_size=1/steps, step_grid splits the knot gaps that float32 rounding makes longer than 1/steps.)
        x = torchcde.CubicSpline(coeffs, t=t_knots)
        return solve_cde(f, x, z0, method="rk4", step_size=None, backend="native").ys[:, -1]

    case = Case("CDE rk4, cubic spline", batch, steps, params, peer="torchcde.cdeint rk4")
    grid_with_step = native.step_grid(t_knots[[0, -1]], step_size, knots=t_knots)[0]
    case.info["native_steps_with_step_size"] = grid_with_step.numel() - 1
    case.variants = [
        Variant("torchcde.cdeint rk4", _eager(params, tcde), ref="native"),
        Variant("native", _eager(params, nat), native=True),
    ]
    return case


# --------------------------------------------------------------------------------------------------------------
# Checks and timing
# --------------------------------------------------------------------------------------------------------------


def compare(a: Result, b: Result, tolerance: float) -> dict[str, Any]:
    """``a`` against the reference ``b``: outputs relative to max(1, max |b|), gradients per parameter
    relative to that gradient's largest entry."""
    (ya, ga), (yb, gb) = a, b
    if ya.shape != yb.shape:
        return {"ok": False, "why": f"output shapes {list(ya.shape)} vs {list(yb.shape)}"}
    dy = float((ya - yb).abs().max())
    scale = float(yb.abs().max())
    rel = [float((x - y).abs().max()) / max(float(y.abs().max()), 1e-30) for x, y in zip(ga, gb, strict=True)]
    dg0 = float((ga[0] - gb[0]).abs().max())
    why = []
    if not dy <= tolerance * max(1.0, scale):
        why.append(f"outputs differ by {dy:.2e} (max |ref| {scale:.2e})")
    if not max(rel) <= tolerance:
        why.append(f"gradients differ by {max(rel):.2e} (relative)")
    return {"ok": not why, "why": "; ".join(why), "max_abs_diff_output": dy, "max_abs_output": scale,
            "max_abs_diff_grad_first_weight": dg0, "max_abs_grad_first_weight": float(gb[0].abs().max()),
            "max_rel_diff_grad_all_params": max(rel)}


def check_case(case: Case, tolerance: float) -> dict[str, dict[str, Any]]:
    results: dict[str, Result] = {}
    for v in case.variants:
        y, grads = v.run(v.setup())
        results[v.name] = (y.detach().clone(), [g.detach().clone() for g in grads])
    checks = {}
    for v in case.variants:
        if v.ref is not None:
            checks[f"{v.name} vs {v.ref}"] = compare(results[v.name], results[v.ref], tolerance)
    return checks


def _timed(v: Variant, device: torch.device) -> float:
    state = v.setup()
    gc.collect()
    sync(device)
    gc.disable()
    try:
        start = time.perf_counter()
        v.run(state)
        sync(device)
        return time.perf_counter() - start
    finally:
        gc.enable()


def time_case(variants: list[Variant], repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    for _ in range(warmup):
        for v in variants:
            _timed(v, device)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for i in range(repeats):
        order = variants if i % 2 == 0 else variants[::-1]  # interleaved, alternating order
        for v in order:
            times[v.name].append(_timed(v, device))
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = {"median_s": statistics.median(ts), "min_s": min(ts), "q1_s": q[0], "q3_s": q[2]}
    return out


# --------------------------------------------------------------------------------------------------------------
# Memory: direct vs checkpoint as the steps grow tenfold
# --------------------------------------------------------------------------------------------------------------


class SavedBytes:
    """Counts the storages autograd saves for backward (each once) while the context is active: those alive at
    :meth:`snapshot`, and the most alive at any moment (``peak``)."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.live: dict[int, list[Any]] = {}  # storage pointer -> [nbytes, number of live tensors]
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def pack(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr == 0 or ptr in self.exclude:
            return t
        entry = self.live.get(ptr)
        if entry is None:
            self.live[ptr] = [storage.nbytes(), 1]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        else:
            entry[1] += 1
        weakref.finalize(t, self._release, ptr)
        return t

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def measure_memory(adjoint: str, steps: int, batch: int, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    f = MLPField().to(device)
    y0 = torch.randn(batch, STATE, device=device)
    times = torch.tensor([0.0, 1.0], device=device)

    def run() -> Tensor:
        return solve_ode(f, y0, times, method="rk4", step_size=1.0 / steps, backend="native", adjoint=adjoint).ys

    _loss(run()).backward()  # warm-up
    f.zero_grad(set_to_none=True)
    gc.collect()
    # Parameters are saved too, but exist anyway: leave them out (and gradients are allocated either way).
    counter = SavedBytes({p.untyped_storage().data_ptr() for p in f.parameters()})
    result: dict[str, Any] = {"adjoint": adjoint, "steps": steps, "batch": batch}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with counter.hooks():
        ys = run()
        result["saved_after_forward_bytes"] = counter.current
        _loss(ys).backward()
    result["saved_peak_bytes"] = counter.peak
    result["states_bytes"] = (steps + 1) * y0.numel() * y0.element_size()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - before
    del ys
    f.zero_grad(set_to_none=True)
    return result


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{1e3 * seconds:.1f}"


def _x(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def case_table(rows: list[dict[str, Any]]) -> str:
    """One family: medians (ms) of each variant, then speed-ups of the native variants over each peer."""
    timed = [n for n in rows[0]["timing"]]
    natives = rows[0]["native_variants"]
    peers = [n for n in timed if n not in natives]
    head = "| batch | steps | " + " | ".join(f"{n} ms" for n in timed) + " | " + " | ".join(
        f"{p} / {n}" for n in natives for p in peers) + " | check |"
    lines = [head, "|" + "---:|" * (2 + len(timed) + len(natives) * len(peers)) + "---|"]
    for r in rows:
        med = {n: r["timing"][n]["median_s"] for n in timed}
        ratios = [med[p] / med[n] for n in natives for p in peers]
        ok = all(c["ok"] for c in r["checks"].values())
        lines.append(f"| {r['batch']} | {r['steps']} | " + " | ".join(_ms(med[n]) for n in timed) + " | "
                     + " | ".join(_x(x) for x in ratios) + f" | {'ok' if ok else '**MISMATCH**'} |")
    return "\n".join(lines)


def issue_table(rows: list[dict[str, Any]], device: torch.device) -> str:
    """The issue's layout (torchdiffeq rk4 | RK4 loop eager | its CUDA graph | torchsde.sdeint | EM loop eager),
    with the native columns added."""
    cols = [("ODE", "torchdiffeq rk4"), ("ODE", "RK4 loop eager"), ("ODE", "RK4 loop CUDA graph"),
            ("ODE", "native"), ("ODE", "native CUDA graph"), ("SDE", "torchsde.sdeint"), ("SDE", "EM loop eager"),
            ("SDE", "torchsde.sdeint, float64 ts"), ("SDE", "native (bm=)"), ("SDE", "native (seed=)")]
    by = {(r["family"].split()[0], r["batch"]): r for r in rows}
    cols = [c for c in cols if any(r["family"].startswith(c[0]) and c[1] in r["timing"] for r in rows)]
    lines = ["| batch | " + " | ".join(f"{fam} {n}" for fam, n in cols) + " |", "|---:|" + "---:|" * len(cols)]
    for batch in sorted({r["batch"] for r in rows}):
        cells = []
        for fam, name in cols:
            r = by.get((fam, batch))
            cells.append(_ms(r["timing"][name]["median_s"]) if r and name in r["timing"] else "–")
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | batch | pair | max abs Δ out | max abs out | max rel Δ grad (all params) | check |",
             "|---|---:|---|---:|---:|---:|---|"]
    nan = float("nan")
    for r in rows:
        for pair, c in r["checks"].items():
            lines.append(f"| {r['family']} | {r['batch']} | {pair} | {c.get('max_abs_diff_output', nan):.1e} | "
                         f"{c.get('max_abs_output', nan):.2f} | {c.get('max_rel_diff_grad_all_params', nan):.1e} | "
                         f"{'ok' if c['ok'] else '**MISMATCH** ' + c['why']} |")
    return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / MiB:.1f}"


def memory_table(rows: list[dict[str, Any]], low: int, high: int) -> str:
    cuda = any("cuda_peak_bytes" in r for r in rows)
    head = "| adjoint | steps | saved after forward MiB | saved, peak over fwd+bwd MiB | states [N+1,B,C] MiB |"
    sep = "|---|---:|---:|---:|---:|"
    if cuda:
        head, sep = head + " CUDA peak allocated MiB |", sep + "---:|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['adjoint']} | {r['steps']} | {_mib(r['saved_after_forward_bytes'])} | "
                f"{_mib(r['saved_peak_bytes'])} | {_mib(r['states_bytes'])} |")
        if cuda:
            line += f" {_mib(r.get('cuda_peak_bytes'))} |"
        lines.append(line)
    by = {(r["adjoint"], r["steps"]): r for r in rows}
    key = "cuda_peak_bytes" if cuda else "saved_peak_bytes"
    lines += ["", f"| adjoint | {key.replace('_bytes', '')} × from {low} to {high} steps |", "|---|---:|"]
    for adjoint in ("direct", "checkpoint"):
        a, b = by.get((adjoint, low)), by.get((adjoint, high))
        if a and b:
            lines.append(f"| {adjoint} | {b[key] / max(a[key], 1):.2f}× |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], device: torch.device) -> list[str]:
    """The issue's targets, as measured (reported, not enforced)."""
    out = []
    for r in rows:
        med = {n: t["median_s"] for n, t in r["timing"].items()}
        if r["family"].startswith("ODE"):
            best = min((n for n in med if n.startswith("native")), key=lambda n: med[n])
            ratio = med["torchdiffeq rk4"] / med[best]
            goal = 4.0 if device.type == "cuda" else None
            out.append(f"ODE B={r['batch']}: torchdiffeq rk4 / {best} = {ratio:.2f}×"
                       + (f" (target ≥ {goal:g}×: {'met' if ratio >= goal else 'NOT met'})" if goal else ""))
        if r["family"].startswith("SDE"):
            for peer in ("torchsde.sdeint", "torchsde.sdeint, float64 ts"):
                for n in ("native (bm=)", "native (seed=)"):
                    ratio = med[peer] / med[n]
                    goal = 10.0 if device.type == "cuda" else 1.0
                    out.append(f"SDE B={r['batch']}: {peer} / {n} = {ratio:.2f}× (target "
                               f"{'≥ 10×' if device.type == 'cuda' else '> 1× on CPU'}: "
                               f"{'met' if ratio > goal or (goal > 1 and ratio >= goal) else 'NOT met'})")
    return out


def set_tf32(on: bool) -> None:
    """TF32 for float32 matrix products (and cuDNN), as the reference table was measured."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers fp32_precision; the flag still applies
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 64, 20 steps, few repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes (default 64 4096 on CUDA, 64 1024 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="fixed steps per solve (default 100)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds (default CUDA 21; CPU 11, 5 for batches >= 1024; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2, quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--only", nargs="+", choices=("ode", "sde", "cde", "memory"),
                        default=["ode", "sde", "cde", "memory"])
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        help="add the native loop with each step under torch.compile (mode, default 'default')")
    parser.add_argument("--no-graphs", action="store_true", help="on CUDA, skip the CUDA-graph variants")
    parser.add_argument("--memory-steps", type=int, default=None, help="N of the memory comparison, N vs 10N "
                        "(default 20, quick 5)")
    parser.add_argument("--memory-batch", type=int, default=None, help="default 4096 on CUDA, 256 on CPU")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/gpu_layers.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.set_num_threads(args.threads)
    batches = args.batches or ([64] if args.quick else [64, 4096] if cuda else [64, 1024])
    steps = args.steps or (20 if args.quick else 100)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)

    def repeats_for(batch: int) -> int:
        if args.repeats is not None:
            return args.repeats
        if args.quick:
            return 3
        return 21 if cuda else (5 if batch >= 1024 else 11)

    mem_low = args.memory_steps or (5 if args.quick else 20)
    mem_batch = args.memory_batch or (4096 if cuda else (64 if args.quick else 256))
    graphs = cuda and not args.no_graphs
    started = time.perf_counter()
    info = machine_info(device)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    notes = []
    if not cuda and args.batches is None and not args.quick:
        notes.append("CPU default: batches 64 and 1024 (4096 takes ~6 s per torchdiffeq run on one thread; "
                     "pass --batches 64 4096 for the issue's sizes).")
    if cuda:
        notes.append("Checks in full float32 (TF32 off); timings with torch.backends.cuda.matmul.allow_tf32 = True.")
        notes.append("CUDA graph columns capture forward + backward of nde.solvers.ode.native_ode_loop "
                     "(the loop solve_ode(backend='native') runs): solve_ode itself copies to the host in its "
                     "checks and step grid, which a capture does not allow.")
    print(f"# Native solvers vs peer libraries\n\n{date}: device {device}"
          f"{' (' + info['gpu'] + ')' if cuda else ''}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"CPU {info['cpu']}; MLP 3 tanh layers, width {WIDTH}, state {STATE}; {steps} steps; forward + backward; "
          f"warm-up {warmup}, repeats {', '.join(f'{repeats_for(b)} at B={b}' for b in batches)} (medians)."
          f"{' TF32 on for timings.' if cuda else ''}\n", flush=True)
    for note in notes:
        print(f"- {note}")
    print()

    rows: list[dict[str, Any]] = []
    builders: list[Callable[[], Case]] = []
    for batch in batches:
        if "ode" in args.only:
            builders.append(lambda b=batch: ode_case(b, steps, device, graphs, args.compile))
        if "sde" in args.only:
            builders.append(lambda b=batch: sde_case(b, steps, device))
        if "cde" in args.only:
            builders.append(lambda b=batch: cde_case(b, steps, device))
    for build in builders:
        if cuda:
            set_tf32(False)
        case = build()
        checks = check_case(case, args.tolerance)
        if cuda:
            # Rebuild under TF32 so that the CUDA graphs capture the TF32 kernels.
            set_tf32(True)
            del case
            gc.collect()
            torch.cuda.empty_cache()
            case = build()
        timed = [v for v in case.variants if v.name != "EM loop, seed increments"]
        t0 = time.perf_counter()
        times = time_case(timed, repeats_for(case.batch), warmup, device)
        row = {"family": case.family, "batch": case.batch, "steps": case.steps, "checks": checks, "info": case.info,
               "timing": summarise(times), "times_s": times,
               "native_variants": [v.name for v in timed if v.native], "peer": case.peer}
        rows.append(row)
        status = "ok" if all(c["ok"] for c in checks.values()) else "MISMATCH"
        print(f"  {case.family:24s} B={case.batch:<5d} {status:8s} "
              + "  ".join(f"{n} {_ms(t['median_s'])}" for n, t in row["timing"].items())
              + f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        for pair, c in checks.items():
            if not c["ok"]:
                print(f"    MISMATCH {pair}: {c['why']}", file=sys.stderr, flush=True)
        del case
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    if rows:
        print("## The issue's table, with the native path (median ms, forward + backward)\n")
        print(issue_table(rows, device) + "\n")
        for family in dict.fromkeys(r["family"] for r in rows):
            print(f"## {family}: median ms and speed-ups (peer / native)\n")
            print(case_table([r for r in rows if r["family"] == family]) + "\n")
        print("## Agreement (checked before timing; tolerance "
              f"{args.tolerance:g} relative{', TF32 off' if cuda else ''})\n")
        print(check_table(rows) + "\n")
        for r in rows:
            if "torchsde_steps" in r["info"]:
                i = r["info"]
                print(f"- SDE B={r['batch']}: torchsde.sdeint takes {i['torchsde_steps']} steps with float32 ts "
                      f"({i['torchsde_steps_float64_ts']} with float64 ts, native {r['steps']}): float32 sums of dt "
                      "stop short of 1, and the last, tiny step makes BrownianInterval refine its dependency tree "
                      "down to that step's length (tens of thousands of splits).")
            for key, value in r["info"].items():
                if key.endswith("failed"):
                    print(f"- {r['family']} B={r['batch']}: {key}: {value}")
            if "native_steps_with_step_size" in r["info"]:
                n = r["info"]["native_steps_with_step_size"]
                print(f"- CDE B={r['batch']}: native takes step_size=None (one step per knot interval, {r['steps']} "
                      f"steps); with step_size=1/{r['steps']} step_grid would take {n} steps on these float32 knots.")
        print()
        print("## Targets\n")
        for line in targets(rows, device):
            print(f"- {line}")
        print()

    memory: list[dict[str, Any]] = []
    if "memory" in args.only:
        if cuda:
            set_tf32(True)
        for adjoint in ("direct", "checkpoint"):
            for n in (mem_low, 10 * mem_low):
                memory.append(measure_memory(adjoint, n, mem_batch, device))
        print(f"## Memory: native rk4, direct vs checkpoint, {mem_low} → {10 * mem_low} steps (batch {mem_batch})\n")
        print(memory_table(memory, mem_low, 10 * mem_low) + "\n")
        print("Saved bytes exclude the parameters. With checkpoint the saved bytes are the [N+1, B, C] states "
              "plus one step's recomputation in the backward pass.\n")

    elapsed = time.perf_counter() - started
    mismatches = [f"{r['family']} B={r['batch']}: {pair} ({c['why']})" for r in rows
                  for pair, c in r["checks"].items() if not c["ok"]]
    print(f"Total time {elapsed:.0f} s.")
    result = {
        "date": date,
        "machine": info,
        "settings": {"batches": batches, "steps": steps, "warmup": warmup,
                     "repeats": {str(b): repeats_for(b) for b in batches}, "state": STATE, "width": WIDTH,
                     "cde_input_channels": CDE_INPUT, "tolerance": args.tolerance, "compile": args.compile,
                     "cuda_graphs": graphs, "tf32_timings": cuda, "memory_steps": [mem_low, 10 * mem_low],
                     "memory_batch": mem_batch, "quick": args.quick, "argv": sys.argv[1:] if argv is None else argv},
        "notes": notes,
        "cases": rows,
        "targets": targets(rows, device),
        "memory": memory,
        "mismatches": mismatches,
        "elapsed_s": elapsed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"Wrote {args.out}.")
    if mismatches:
        print("\nMISMATCH: " + "; ".join(mismatches), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
