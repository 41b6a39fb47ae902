"""Overhead and memory of the nde layers against the peer libraries they wrap.

Two measurements, in one process:

1. **Overhead.** Forward + backward wall time of ``NeuralODE``, ``NeuralCDE`` and ``NeuralSDE`` against the
   same computation written directly with torchdiffeq / torchcde / torchsde: the same vector-field module
   instances, the same inputs, the same solver settings, the same Brownian path (a fresh
   ``torchsde.BrownianInterval`` with the same entropy for every run, queried at the same points). Before
   timing, every pair is checked to compute the same thing: outputs and all parameter gradients must agree to
   float tolerance and the vector field must be called as often on both sides; otherwise the pair is
   reported as a MISMATCH and the script exits with status 1 (after printing everything).
   Runs are interleaved (ours, raw, raw, ours, ...) after warm-up; the table gives the median of each and
   the ratio ours/raw.
2. **Memory vs steps.** ``NeuralODE`` (rk4) and ``NeuralSDE`` (euler) with N and 10N steps, direct vs adjoint:
   the bytes autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``, each storage counted
   once), the process's peak RSS growth during forward + backward (Linux), and on CUDA the peak allocated
   memory.

Run from the repository root::

    python benchmarks/layers.py            # full run (a few minutes on one CPU thread)
    python benchmarks/layers.py --quick    # smoke run, under a minute

Markdown tables go to stdout, every measurement to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchcde
import torchdiffeq
import torchsde
from bench_common import TorchsdeSDE, machine_info, sync
from torch import Tensor, nn

from nde.layers import MLPVectorField, NeuralCDE, NeuralODE, NeuralSDE

STATE = 32  # state / hidden channels
WIDTH = 64  # hidden width of the vector fields
CDE_INPUT = 4  # channels of the CDE's control path (time + 3)
TOLERANCE = 1e-5  # outputs: max |ours - raw| <= TOLERANCE * max(1, max |raw|); gradients: relative to max |raw|
CALL_SLACK = 2  # vector-field calls the two sides may differ by: shape checks before solving
MiB = 2.0**20


# --------------------------------------------------------------------------------------------------------------
# Cases: one configuration, our layer and the raw peer-library computation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """A pair of forward + backward computations that must agree.

    ``ours(state)`` and ``raw(state)`` run forward and backward and return the (detached) output
    ``[B, T, C]``; ``setup()`` builds per-run state
    outside the timed region (e.g. a fresh Brownian motion). ``counted`` is the vector field whose calls
    (forward and adjoint solve together) must be as many on both sides.
    """

    layer: str
    method: str
    mode: str
    batch: int
    steps: str
    ours: Callable[[Any], Tensor]
    raw: Callable[[Any], Tensor]
    params: list[nn.Parameter]
    grad_param: nn.Parameter
    counted: nn.Module
    setup: Callable[[], Any] = lambda: None
    stats: Callable[[], dict[str, int]] = dict


def _loss(ys: Tensor) -> Tensor:
    return ys.square().mean()


def _backward(ys: Tensor) -> Tensor:
    _loss(ys).backward()
    return ys.detach()


def ode_case(batch: int, method: str, mode: str, steps: int, device: torch.device) -> Case:
    torch.manual_seed(0)
    vf = MLPVectorField(STATE, WIDTH, depth=2).to(device)
    y0 = torch.randn(batch, STATE, device=device)
    times = torch.linspace(0.0, 1.0, 11, device=device)
    adaptive = method != "rk4"
    step_size = None if adaptive else 1.0 / steps
    rtol, atol = (1e-6, 1e-8) if adaptive else (1e-4, 1e-6)
    layer = NeuralODE(vf, method=method, rtol=rtol, atol=atol, step_size=step_size, adjoint=mode)
    options = None if adaptive else {"step_size": step_size}

    def ours(_: Any) -> Tensor:
        return _backward(layer(y0, times))

    def raw(_: Any) -> Tensor:
        if mode == "direct":
            ys = torchdiffeq.odeint(vf, y0, times, rtol=rtol, atol=atol, method=method, options=options)
        else:
            # The layer's documented adjoint settings: seminorm for adaptive methods, the forward options otherwise.
            adjoint_options = {"norm": "seminorm"} if adaptive else None
            ys = torchdiffeq.odeint_adjoint(vf, y0, times, rtol=rtol, atol=atol, method=method, options=options,
                                            adjoint_options=adjoint_options, adjoint_params=tuple(vf.parameters()))
        return _backward(ys.transpose(0, 1))

    label = f"{steps} steps" if not adaptive else f"rtol {rtol:g}"
    return Case("NeuralODE", method, mode, batch, label, ours, raw, list(vf.parameters()), vf.net[0].weight, vf,
                stats=lambda: layer.stats.as_dict())


def cde_case(batch: int, mode: str, steps: int, device: torch.device) -> Case:
    torch.manual_seed(0)
    model = NeuralCDE(CDE_INPUT, STATE, width=WIDTH, depth=2, interpolation="cubic", method="rk4",
                      adjoint=mode).to(device)
    length = steps + 1
    t = torch.linspace(0.0, 1.0, length, device=device).expand(batch, length).unsqueeze(-1)
    walk = torch.randn(batch, length, CDE_INPUT - 1, device=device).cumsum(1) / length**0.5
    values = torch.cat([t, walk], dim=-1)
    coeffs = model.coefficients(values)  # preprocessing: outside the timed region, for both
    grid = torchcde.CubicSpline(coeffs).grid_points
    step_size = float((grid[1:] - grid[:-1]).min())  # what solve_cde picks by default

    def ours(_: Any) -> Tensor:
        return _backward(model(coeffs))

    def raw(_: Any) -> Tensor:
        x = torchcde.CubicSpline(coeffs)
        z0 = model.initial(x.evaluate(x.interval[0]))
        ys = torchcde.cdeint(X=x, func=model.vector_field, z0=z0, t=x.interval, adjoint=mode == "adjoint",
                             method="rk4", options={"step_size": step_size})
        return _backward(ys)

    params = list(model.parameters())
    return Case("NeuralCDE", "rk4 cubic", mode, batch, f"{steps} steps", ours, raw, params,
                model.vector_field.net[0].weight, model.vector_field, stats=lambda: model.stats.as_dict())


def sde_case(batch: int, mode: str, steps: int, device: torch.device) -> Case:
    torch.manual_seed(0)
    dt = 1.0 / steps
    layer = NeuralSDE.mlp(STATE, width=WIDTH, depth=2, noise_type="diagonal", sde_type="ito", method="euler",
                          dt=dt, adjoint=mode).to(device)
    sde = TorchsdeSDE(layer.drift, layer.diffusion)
    y0 = 0.1 * torch.randn(batch, STATE, device=device)
    times = torch.linspace(0.0, 1.0, 11, device=device)

    def make_bm() -> torchsde.BrownianInterval:
        # A fresh path with the same entropy for every run of either side: identical noise, cold caches.
        return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(batch, STATE), dtype=y0.dtype, device=device,
                                         entropy=1234)

    def ours(bm: torchsde.BrownianInterval) -> Tensor:
        return _backward(layer(y0, times, bm=bm))

    def raw(bm: torchsde.BrownianInterval) -> Tensor:
        solve = torchsde.sdeint if mode == "direct" else torchsde.sdeint_adjoint
        ys = solve(sde, y0, times, bm=bm, method="euler", dt=dt)
        return _backward(ys.transpose(0, 1))

    return Case("NeuralSDE", "euler ito diag", mode, batch, f"{steps} steps", ours, raw, list(layer.parameters()),
                layer.drift.net[0].weight, layer.drift, setup=make_bm,
                stats=lambda: layer.stats.as_dict())


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------


def _zero(params: list[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


def _timed(fn: Callable[[Any], Tensor], case: Case, device: torch.device) -> float:
    state = case.setup()
    _zero(case.params)
    gc.collect()
    sync(device)
    gc.disable()
    try:
        start = time.perf_counter()
        fn(state)
        sync(device)
        return time.perf_counter() - start
    finally:
        gc.enable()


def check_case(case: Case) -> dict[str, Any]:
    """Run both sides once; compare outputs, every parameter's gradient and the number of vector-field calls."""
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    def run(fn: Callable[[Any], Tensor], state: Any) -> tuple[Tensor, list[Tensor], int]:
        _zero(case.params)
        calls[0] = 0
        handle = case.counted.register_forward_pre_hook(count)
        try:
            ys = fn(state)
        finally:
            handle.remove()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in case.params]
        _zero(case.params)
        return ys, grads, calls[0]

    y_ours, g_ours, calls_ours = run(case.ours, case.setup())
    stats = case.stats()
    y_raw, g_raw, calls_raw = run(case.raw, case.setup())
    result: dict[str, Any] = {"stats": stats, "vector_field_calls_ours": calls_ours,
                              "vector_field_calls_raw": calls_raw}
    if y_ours.shape != y_raw.shape:
        return {**result, "ok": False, "why": f"output shapes {list(y_ours.shape)} vs {list(y_raw.shape)}"}
    dy = float((y_ours - y_raw).abs().max())
    y_scale = float(y_raw.abs().max())
    index = next(i for i, p in enumerate(case.params) if p is case.grad_param)
    dg = float((g_ours[index] - g_raw[index]).abs().max())
    # Largest gradient difference over all parameters, relative to the largest entry of that gradient.
    rel = max(float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30) for a, b in zip(g_ours, g_raw,
                                                                                            strict=True))
    why = []
    if dy > TOLERANCE * max(1.0, y_scale):
        why.append(f"outputs differ by {dy:.2e}")
    if rel > TOLERANCE:
        why.append(f"gradients differ by {rel:.2e} (relative)")
    # The front ends check shapes with a call or two of their own (torchcde calls func(t0, z0) once, torchsde calls
    # f and g at t0); a difference beyond that means the solves themselves differ.
    if abs(calls_ours - calls_raw) > CALL_SLACK:
        why.append(f"{calls_ours} vector-field calls vs {calls_raw}")
    result.update({"ok": not why, "why": "; ".join(why), "max_abs_diff_output": dy, "max_abs_output": y_scale,
                   "grad_param": "first-layer weight of the vector field (drift for the SDE)",
                   "max_abs_diff_grad": dg, "max_abs_grad": float(g_raw[index].abs().max()),
                   "max_rel_diff_grad_all_params": rel, "shape": list(y_ours.shape)})
    return result


def time_case(case: Case, repeats: int, warmup: int, device: torch.device) -> dict[str, Any]:
    for _ in range(warmup):
        _timed(case.ours, case, device)
        _timed(case.raw, case, device)
    ours: list[float] = []
    raw: list[float] = []
    for i in range(repeats):
        # Interleaved, alternating which side goes first: ours raw | raw ours | ours raw ...
        if i % 2 == 0:
            ours.append(_timed(case.ours, case, device))
            raw.append(_timed(case.raw, case, device))
        else:
            raw.append(_timed(case.raw, case, device))
            ours.append(_timed(case.ours, case, device))
    m_ours, m_raw = statistics.median(ours), statistics.median(raw)
    # The ratios of the back-to-back pairs show the noise: their interquartile range is given next to the ratio.
    paired = sorted(a / b for a, b in zip(ours, raw, strict=True))
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    return {"ours_s": ours, "raw_s": raw, "median_ours_s": m_ours, "median_raw_s": m_raw,
            "min_ours_s": min(ours), "min_raw_s": min(raw), "ratio": m_ours / m_raw,
            "overhead_pct": 100.0 * (m_ours / m_raw - 1.0), "paired_ratio_quartiles": quartiles}


# --------------------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------------------


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Release freed heap memory to the OS and reset the kernel's peak-RSS mark (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure_memory(layer_name: str, mode: str, steps: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Bytes saved for backward, peak RSS growth and (CUDA) peak allocation of one forward + backward."""
    torch.manual_seed(0)
    times = torch.linspace(0.0, 1.0, 5, device=device)
    y0 = torch.randn(batch, STATE, device=device)
    if layer_name == "NeuralODE":
        module: nn.Module = NeuralODE(MLPVectorField(STATE, WIDTH, 2), method="rk4", step_size=1.0 / steps,
                                      adjoint=mode).to(device)

        def run() -> Tensor:
            return module(y0, times)
    else:
        module = NeuralSDE.mlp(STATE, width=WIDTH, depth=2, method="euler", dt=1.0 / steps, adjoint=mode).to(device)

        def run() -> Tensor:
            bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(batch, STATE), device=device, entropy=1234)
            return module(y0 * 0.1, times, bm=bm)

    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    _loss(run()).backward()  # warm-up: lazy initialisation stays out of the measurement
    module.zero_grad(set_to_none=True)
    packed: list[tuple[weakref.ref[Tensor], int, int]] = []

    def pack(t: Tensor) -> Tensor:
        # Autograd keeps what this returns (t itself) for as long as the saving node lives; a weak reference
        # tells at the end of the forward pass whether it is still held (graph branches that were dropped
        # free theirs, and their memory may be reused by later tensors).
        storage = t.untyped_storage()
        packed.append((weakref.ref(t), storage.data_ptr(), storage.nbytes()))
        return t

    gc.collect()
    rss_ok = device.type == "cpu" and _reset_peak_rss()
    rss_before = _proc_status_kib("VmRSS") if rss_ok else None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ys = run()
    storages = {ptr: nbytes for ref, ptr, nbytes in packed if ptr != 0 and ref() is not None}
    packed.clear()
    _loss(ys).backward()
    result: dict[str, Any] = {"layer": layer_name, "mode": mode, "steps": steps, "batch": batch}
    result["saved_bytes"] = sum(storages.values())
    result["saved_bytes_without_params"] = sum(n for p, n in storages.items() if p not in param_ptrs)
    result["saved_storages"] = len(storages)
    if rss_ok and rss_before is not None:
        hwm = _proc_status_kib("VmHWM")
        result["peak_rss_growth_bytes"] = None if hwm is None else 1024 * (hwm - rss_before)
    else:
        result["peak_rss_growth_bytes"] = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - cuda_before
    del ys
    return result


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f}"


def overhead_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| layer | method | grad | batch | steps | nfe fwd/bwd | f calls ours/raw | ours ms | raw ms | ours/raw | "
        "pair ratios IQR | overhead | max abs Δ out | max abs Δ grad | max rel Δ grads | check |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    notes = []
    for r in rows:
        c, s, q = r["check"], r["stats"], r["paired_ratio_quartiles"]
        nfe = f"{s.get('nfe_forward', 0)}/{s.get('nfe_backward', 0)}"
        calls = f"{c['vector_field_calls_ours']}/{c['vector_field_calls_raw']}"
        nan = float("nan")
        lines.append(
            f"| {r['layer']} | {r['method']} | {r['mode']} | {r['batch']} | {r['steps']} | {nfe} | {calls} | "
            f"{_ms(r['median_ours_s'])} | {_ms(r['median_raw_s'])} | {r['ratio']:.3f} | {q[0]:.2f}–{q[2]:.2f} | "
            f"{r['overhead_pct']:+.1f}% | "
            f"{c.get('max_abs_diff_output', nan):.1e} | {c.get('max_abs_diff_grad', nan):.1e} | "
            f"{c.get('max_rel_diff_grad_all_params', nan):.1e} | {'ok' if c['ok'] else '**MISMATCH**'} |"
        )
        if not c["ok"]:
            notes.append(f"- MISMATCH {r['layer']} {r['method']} {r['mode']} B={r['batch']}: {c['why']}.")
    legend = ("\nnfe: the layer's own counters; f calls: calls of the vector field (SDE: drift) on each side, "
              "forward and backward; ours/raw: ratio of the medians; pair ratios IQR: quartiles of the "
              "ratios of back-to-back runs (noise); Δ grad: first-layer weight; rel Δ grads: max over all "
              "parameters, relative to the largest entry.")
    return "\n".join([*lines, legend, *notes])


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / MiB:.2f}"


def memory_table(rows: list[dict[str, Any]], low: int, high: int) -> str:
    cuda = any("cuda_peak_bytes" in r for r in rows)
    head = "| layer | grad | steps | saved for backward MiB | (without params) | peak RSS growth MiB |"
    sep = "|---|---|---:|---:|---:|---:|"
    if cuda:
        head += " CUDA peak MiB |"
        sep += "---:|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['layer']} | {r['mode']} | {r['steps']} | {_mib(r['saved_bytes'])} | "
                f"{_mib(r['saved_bytes_without_params'])} | {_mib(r['peak_rss_growth_bytes'])} |")
        if cuda:
            line += f" {_mib(r.get('cuda_peak_bytes'))} |"
        lines.append(line)
    by_key = {(r["layer"], r["mode"], r["steps"]): r for r in rows}
    lines += ["", f"| layer | grad | saved ×, {low}→{high} steps | adjoint saves vs direct at {low} | at {high} |",
              "|---|---|---:|---:|---:|"]
    for layer in dict.fromkeys(r["layer"] for r in rows):
        for mode in ("direct", "adjoint"):
            a, b = by_key.get((layer, mode, low)), by_key.get((layer, mode, high))
            if a is None or b is None:
                continue
            growth = b["saved_bytes"] / max(a["saved_bytes"], 1)
            if mode == "adjoint":
                d_low, d_high = by_key[(layer, "direct", low)], by_key[(layer, "direct", high)]
                saved = (f"{_mib(d_low['saved_bytes'] - a['saved_bytes'])} MiB less | "
                         f"{_mib(d_high['saved_bytes'] - b['saved_bytes'])} MiB less")
            else:
                saved = "– | –"
            lines.append(f"| {layer} | {mode} | {growth:.2f}× | {saved} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: one batch size, few repeats (< 1 min)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each side (default 21, quick 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs of each side first (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 16 256)")
    parser.add_argument("--steps", type=int, default=None, help="fixed steps per solve (default 50)")
    parser.add_argument("--only", default="", help="run only cases whose 'layer method grad' contains this text")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--memory-steps", type=int, default=20, help="N of the memory comparison (N vs 10N)")
    parser.add_argument("--memory-batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/layers.json"))
    args = parser.parse_args(argv)

    repeats = args.repeats if args.repeats is not None else (5 if args.quick else 21)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    batches = args.batches or ([16] if args.quick else [16, 256])
    steps = args.steps or (20 if args.quick else 50)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = machine_info(device)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"# nde layers vs peer libraries\n\n{date}: device {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, CPU {info['cpu']}, "
          f"repeats {repeats} (median), warm-up {warmup}\n", flush=True)

    builders: list[Callable[[], Case]] = []
    for mode in ("direct", "adjoint"):
        for batch in batches:
            builders.append(lambda b=batch, m=mode: ode_case(b, "rk4", m, steps, device))
            builders.append(lambda b=batch, m=mode: ode_case(b, "dopri5", m, steps, device))
            builders.append(lambda b=batch, m=mode: cde_case(b, m, steps, device))
            builders.append(lambda b=batch, m=mode: sde_case(b, m, steps, device))

    rows: list[dict[str, Any]] = []
    for build in builders:
        case = build()
        if args.only and args.only not in f"{case.layer} {case.method} {case.mode}":
            continue
        check = check_case(case)
        timing = time_case(case, repeats, warmup, device)
        row = {"layer": case.layer, "method": case.method, "mode": case.mode, "batch": case.batch,
               "steps": case.steps, "check": check, "stats": check.pop("stats"), **timing}
        rows.append(row)
        status = "ok" if check["ok"] else "MISMATCH"
        print(f"  {case.layer:9s} {case.method:14s} {case.mode:7s} B={case.batch:<4d} {status:8s} "
              f"ours {_ms(row['median_ours_s'])} ms raw {_ms(row['median_raw_s'])} ms "
              f"({row['overhead_pct']:+.1f}%)", file=sys.stderr, flush=True)

    print("## Overhead: forward + backward, ours vs the peer library\n")
    print(overhead_table(rows) + "\n")

    memory: list[dict[str, Any]] = []
    low, high = args.memory_steps, 10 * args.memory_steps
    if not args.no_memory:
        for layer in ("NeuralODE", "NeuralSDE"):
            for mode in ("direct", "adjoint"):
                for n in (low, high):
                    memory.append(measure_memory(layer, mode, n, args.memory_batch, device))
        print(f"## Memory vs steps (batch {args.memory_batch}, state {STATE}, width {WIDTH}; ODE rk4, SDE euler)\n")
        print(memory_table(memory, low, high) + "\n")

    elapsed = time.perf_counter() - started
    mismatches = [f"{r['layer']} {r['method']} {r['mode']} B={r['batch']}" for r in rows if not r["check"]["ok"]]
    print(f"Total time {elapsed:.0f} s.")
    result = {
        "date": date,
        "machine": info,
        "settings": {"repeats": repeats, "warmup": warmup, "batches": batches, "steps": steps, "state": STATE,
                     "width": WIDTH, "cde_input_channels": CDE_INPUT, "tolerance": TOLERANCE,
                     "memory_steps": [low, high], "memory_batch": args.memory_batch, "quick": args.quick,
                     "argv": sys.argv[1:]},
        "overhead": rows,
        "memory": memory,
        "mismatches": mismatches,
        "elapsed_s": elapsed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"Wrote {args.out}.")
    if mismatches:
        print("\nMISMATCH: ours and the raw peer-library call computed different results for: "
              + "; ".join(mismatches) + ". Their timings do not compare like with like.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
