"""Generate the irregularly observed Ornstein-Uhlenbeck forecasting data set (``ou.csv``).

Each series is one path of the stationary Ornstein-Uhlenbeck process

    dX = θ (μ - X) dt + σ dW,        θ = 0.5, μ = 1.0, σ = 0.8,

observed without noise at the points of a Poisson process of rate 4 on ``[0, 10]`` (a series with
fewer than 5 points is drawn again). The simulation is exact, with no time discretisation:
``X(t_0) ~ N(μ, σ²/(2θ))`` (the stationary law) and, for a gap ``Δ = t_{k+1} - t_k``,

    X(t_{k+1}) | X(t_k) ~ N(μ + (X(t_k) - μ) e^{-θΔ},  σ²/(2θ) (1 - e^{-2θΔ})).

Times are rounded to 6 decimals *before* the path is simulated, so the written times are the ones the
path was simulated at; a series whose rounded times are not all distinct is drawn again (as are
series with too few points). Values are written with 6 significant digits.

The output is a long-format CSV with columns ``series_id,time,x`` (series in order, times
increasing) and, beside it, ``parameters.json`` with the parameters and the seed. NumPy only;
deterministic given ``--seed`` (the defaults reproduce the shipped files byte for byte)::

    python datasets/ou/make_ou.py --seed 0 --n-series 600 --out datasets/ou/ou.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

THETA = 0.5  # mean-reversion rate θ
MU = 1.0  # long-run mean μ
SIGMA = 0.8  # diffusion σ; stationary variance σ²/(2θ) = 0.64
WINDOW = (0.0, 10.0)  # observation window [0, T]
RATE = 4.0  # Poisson rate of the observation times (expected 40 points per series)
MIN_POINTS = 5  # a series with fewer points is drawn again
TIME_DECIMALS = 6  # times are rounded to this many decimals before simulating


def _fmt(v: float) -> str:
    """Format a float with 6 significant digits, without a negative zero."""
    s = f"{v:.6g}"
    return "0" if s == "-0" else s


def _fmt_time(t: float) -> str:
    """Format a time rounded to ``TIME_DECIMALS`` decimals, without trailing zeros."""
    s = f"{t:.{TIME_DECIMALS}f}".rstrip("0").rstrip(".")
    return s or "0"


def _draw_times(rng: np.random.Generator) -> np.ndarray:
    """Sorted, distinct observation times (rounded) of one series, at least ``MIN_POINTS`` of them."""
    lo, hi = WINDOW
    while True:
        n = int(rng.poisson(RATE * (hi - lo)))
        if n < MIN_POINTS:
            continue
        t = np.sort(rng.uniform(lo, hi, n))
        t = np.array([float(_fmt_time(v)) for v in t])  # the times exactly as written
        if np.all(np.diff(t) > 0):
            return t


def simulate_ou(
    times: np.ndarray, rng: np.random.Generator, theta: float = THETA, mu: float = MU, sigma: float = SIGMA
) -> np.ndarray:
    """Exact draw of a stationary OU path at increasing ``times`` ``[n]``; returns ``x [n]``."""
    var_stat = sigma**2 / (2.0 * theta)
    z = rng.standard_normal(len(times))
    x = np.empty(len(times))
    x[0] = mu + np.sqrt(var_stat) * z[0]
    decay = np.exp(-theta * np.diff(times))
    step_std = np.sqrt(var_stat * (1.0 - decay**2))
    for k in range(1, len(times)):
        x[k] = mu + (x[k - 1] - mu) * decay[k - 1] + step_std[k - 1] * z[k]
    return x


def make_ou(seed: int = 0, n_series: int = 600) -> list[tuple[str, float, float]]:
    """Simulate the data set and return its rows ``(series_id, time, x)``, grouped by series."""
    if n_series < 1:
        raise ValueError(f"n_series must be >= 1, got {n_series}")
    rng = np.random.default_rng(seed)
    width = max(4, len(str(n_series - 1)))
    rows: list[tuple[str, float, float]] = []
    for i in range(n_series):
        t = _draw_times(rng)
        x = simulate_ou(t, rng)
        sid = f"s{i:0{width}d}"
        rows.extend((sid, float(tk), float(xk)) for tk, xk in zip(t, x, strict=True))
    return rows


def parameters(seed: int, n_series: int) -> dict[str, object]:
    """The contents of ``parameters.json``."""
    return {
        "process": "Ornstein-Uhlenbeck dX = theta (mu - X) dt + sigma dW, stationary start, exact simulation",
        "theta": THETA,
        "mu": MU,
        "sigma": SIGMA,
        "stationary_variance": round(SIGMA**2 / (2.0 * THETA), 12),
        "window": list(WINDOW),
        "rate": RATE,
        "min_points": MIN_POINTS,
        "time_decimals": TIME_DECIMALS,
        "observation_noise": 0.0,
        "n_series": n_series,
        "seed": seed,
    }


def write_files(rows: list[tuple[str, float, float]], out: Path, params: dict[str, object]) -> Path:
    """Write ``out`` (``series_id,time,x``, ``\\n`` line endings) and ``parameters.json`` beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["series_id,time,x"]
    lines.extend(f"{sid},{_fmt_time(t)},{_fmt(x)}" for sid, t, x in rows)
    out.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    params_path = out.parent / "parameters.json"
    params_path.write_bytes((json.dumps(params, indent=2) + "\n").encode("ascii"))
    return params_path


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--n-series", type=int, default=600, help="number of series (default: 600)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "ou.csv",
        help="output CSV (default: ou.csv next to this script); parameters.json is written beside it",
    )
    args = parser.parse_args(argv)
    rows = make_ou(seed=args.seed, n_series=args.n_series)
    params_path = write_files(rows, args.out, parameters(args.seed, args.n_series))
    print(f"wrote {len(rows)} rows to {args.out} and {params_path}")


if __name__ == "__main__":
    main()
