"""Generate the irregularly sampled 2-D spirals data set (``spirals.csv``).

Two balanced classes of noisy 2-D spirals: clockwise (label 0) and anticlockwise (label 1).
Each series is first simulated on a regular grid of ``--n-points`` times on ``[0, T]``::

    x(t) = r(t) cos(s ω t + φ),   y(t) = r(t) sin(s ω t + φ),   r(t) = a + b t,

with ``s = -1`` (clockwise) or ``s = +1`` (anticlockwise), random start phase ``φ``, angular
speed ``ω``, initial radius ``a`` and radial growth rate ``b`` (negative for inward spirals),
plus independent Gaussian observation noise on ``x`` and ``y``. Then ``--drop`` of the rows of
every series are removed at random, so each series keeps the same number of irregular times.

Because the start phase is uniform, the distribution of any single observation is the same for
both classes: the label is the rotation direction and can only be read from several points.

The output is a long-format CSV with columns ``series_id,time,x,y,label`` (one row per observed
point, series in order, times increasing), floats written with 6 significant digits. The script
depends on NumPy only and is deterministic given ``--seed``::

    python datasets/spirals/make_spirals.py --seed 0 --n-series 1000 --out datasets/spirals/spirals.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

T_END = 10.0  # length of the time window [0, T]
OMEGA_RANGE = (0.6, 1.2)  # angular speed (rad / time unit): ωT in [6, 12] rad, i.e. about 1-2 turns
RADIUS0_RANGE = (0.5, 1.5)  # initial radius a
GROWTH_RANGE = (-0.04, 0.1)  # radial growth b; r(T) = a + bT stays >= 0.1
NOISE_STD = 0.05  # standard deviation of the Gaussian observation noise on x and y


def _fmt(v: float) -> str:
    """Format a float with 6 significant digits, without a negative zero."""
    s = f"{v:.6g}"
    return "0" if s == "-0" else s


def make_spirals(
    seed: int = 0, n_series: int = 1000, n_points: int = 100, drop: float = 0.3
) -> list[tuple[str, float, float, float, int]]:
    """Simulate the data set and return its rows ``(series_id, time, x, y, label)``.

    Returns ``n_series * round((1 - drop) * n_points)`` rows, grouped by series, times increasing.
    """
    if n_series < 2 or n_series % 2:
        raise ValueError(f"n_series must be an even number >= 2, got {n_series}")
    n_keep = round((1.0 - drop) * n_points)
    if not 2 <= n_keep <= n_points:
        raise ValueError(f"drop={drop} with n_points={n_points} leaves {n_keep} points per series")

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.array([0, 1]), n_series // 2))  # exactly balanced
    phase = rng.uniform(0.0, 2.0 * np.pi, n_series)
    omega = rng.uniform(*OMEGA_RANGE, n_series)
    radius0 = rng.uniform(*RADIUS0_RANGE, n_series)
    growth = rng.uniform(*GROWTH_RANGE, n_series)

    t = np.linspace(0.0, T_END, n_points)  # [L]
    sign = np.where(labels == 1, 1.0, -1.0)  # +1 anticlockwise, -1 clockwise
    angle = sign[:, None] * omega[:, None] * t[None, :] + phase[:, None]  # [N, L]
    radius = radius0[:, None] + growth[:, None] * t[None, :]  # [N, L]
    x = radius * np.cos(angle) + NOISE_STD * rng.standard_normal((n_series, n_points))
    y = radius * np.sin(angle) + NOISE_STD * rng.standard_normal((n_series, n_points))

    width = max(4, len(str(n_series - 1)))
    rows: list[tuple[str, float, float, float, int]] = []
    for i in range(n_series):
        keep = np.sort(rng.choice(n_points, size=n_keep, replace=False))
        sid = f"s{i:0{width}d}"
        rows.extend((sid, float(t[k]), float(x[i, k]), float(y[i, k]), int(labels[i])) for k in keep)
    return rows


def write_csv(rows: list[tuple[str, float, float, float, int]], out: Path) -> None:
    """Write rows to ``out`` as ``series_id,time,x,y,label`` with ``\\n`` line endings."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["series_id,time,x,y,label"]
    lines.extend(f"{sid},{_fmt(t)},{_fmt(x)},{_fmt(y)},{lab}" for sid, t, x, y, lab in rows)
    out.write_bytes(("\n".join(lines) + "\n").encode("ascii"))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--n-series", type=int, default=1000, help="number of series, even (default: 1000)")
    parser.add_argument(
        "--n-points",
        type=int,
        default=100,
        help="regular grid points per series before dropping (default: 100)",
    )
    parser.add_argument(
        "--drop", type=float, default=0.3, help="fraction of rows dropped per series (default: 0.3)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "spirals.csv",
        help="output CSV (default: spirals.csv next to this script)",
    )
    args = parser.parse_args(argv)
    rows = make_spirals(seed=args.seed, n_series=args.n_series, n_points=args.n_points, drop=args.drop)
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
