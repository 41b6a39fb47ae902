"""Generate the simulated hourly seasonal AR data set (``seasonal_ar.csv`` and ``parameters.json``).

Each of the 16 series is ``y_t = μ(t) + x_t`` on 1344 hours (8 weeks) from Monday 2024-01-01 00:00, with

    μ(t) = 20 + 4 sin(2π (h - 6) / 24) + 1.5 cos(4π h / 24) - 2 · 1{Saturday or Sunday},   h = t mod 24,
    (1 - 0.8 L)(1 - 0.5 L^24) x_t = ε_t,   ε_t ~ N(0, 1),

simulated by :func:`nde.data.seasonal_ar.simulate_seasonal_ar` (2400 burn-in steps from ``x = 0``, one
``numpy.random.default_rng(seed)`` stream). Values are written with 4 decimals. Deterministic given
``--seed``; the defaults reproduce the shipped files byte for byte::

    python datasets/seasonal_ar/make.py --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from nde.data.seasonal_ar import SEASONAL_AR_DATASET, SeasonalARParameters, simulate_seasonal_ar


def _fmt(v: float, decimals: int) -> str:
    """Fixed decimals, without a negative zero."""
    s = f"{v:.{decimals}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def make_lines(seed: int) -> list[str]:
    """The CSV lines (header first) of the data set simulated with ``seed``."""
    spec = SEASONAL_AR_DATASET
    params = SeasonalARParameters()
    values = simulate_seasonal_ar(spec["n_series"], spec["length"], seed, params, burn_in=spec["burn_in"])
    stamps = pd.date_range(spec["start"], periods=spec["length"], freq=spec["freq"]).strftime("%Y-%m-%d %H:%M")
    width = max(2, len(str(spec["n_series"] - 1)))
    lines = ["item_id,timestamp,target"]
    for i, row in enumerate(values):
        item = f"s{i:0{width}d}"
        lines.extend(f"{item},{t},{_fmt(float(v), spec['decimals'])}" for t, v in zip(stamps, row, strict=True))
    return lines


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEASONAL_AR_DATASET["seed"], help="random seed (default: 0)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "seasonal_ar.csv",
                        help="output CSV (default: seasonal_ar.csv next to this script); parameters.json beside it")
    args = parser.parse_args(argv)
    lines = make_lines(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    params = {**SEASONAL_AR_DATASET, "seed": args.seed,
              "process": "y_t = mu(t) + x_t, (1 - phi L)(1 - seasonal_phi L^24) x_t = eps_t, eps_t ~ N(0, sigma^2)"}
    (args.out.parent / "parameters.json").write_bytes((json.dumps(params, indent=2) + "\n").encode("ascii"))
    print(f"wrote {len(lines) - 1} rows to {args.out}")


if __name__ == "__main__":
    main()
