"""Vectorised root finding for sampling by inversion: ``F(τ) = e`` for increasing ``F`` (a compensator).

:func:`invert_increasing` is Newton's method safeguarded by bisection ("rtsafe"): every evaluation gives
``F(x)`` and its slope ``F'(x)`` (the total intensity, which the models compute with ``F``), moves one end of
the bracket ``[lo, hi] ∋ τ*`` to ``x``, and the next point is the Newton step ``x - (F(x) - e) / F'(x)`` when it
falls strictly inside the bracket, else the midpoint. Newton's steps approach the root from one side, which
would leave the other end of the bracket where it was; so once a step is shorter than a quarter of the
tolerance it is lengthened by that quarter, in its own direction, to land just across the root and close the
bracket from the other side. The iteration stops, per entry, when ``hi - lo <= rtol · (offset + hi)``
(``offset`` the absolute time of the bracket's origin) and returns the midpoint, whose error is then at most
``rtol / 2 · (offset + hi)`` — the same guarantee as plain bisection, which it falls back to wherever Newton
fails (a zero or non-finite slope, a step outside the bracket). For smooth ``F`` it takes about 5
evaluations where bisection to ``rtol = 1e-6`` takes about 20.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["invert_increasing"]

LevelAndSlope = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def invert_increasing(level_and_slope: LevelAndSlope, e: Tensor, lo: Tensor, hi: Tensor, *, rtol: float,
                      max_rounds: int, offset: Tensor | None = None, start: Tensor | None = None,
                      name: str = "inversion") -> Tensor:
    """The ``τ`` in ``[lo, hi]`` with ``F(τ) = e``, entrywise, to ``|τ - τ*| <= rtol / 2 · (offset + hi)``.

    Args:
        level_and_slope: ``(rows [M] int64, x [M]) -> (F(x) [M], F'(x) [M])`` for the entries ``rows``; called
            only with the entries not yet done.
        e: ``[N]`` levels.
        lo, hi: ``[N]`` a bracket: ``F(lo) <= e <= F(hi)`` (not checked; ``F`` increasing).
        rtol: relative tolerance of the result, in ``(0, 1)``.
        max_rounds: cap on the evaluations per entry.
        offset: ``[N]`` absolute time of the origin of ``τ`` (the tolerance is relative to ``offset + hi``);
            default 0.
        start: ``[N]`` first point (default: the midpoint); moved to the midpoint where outside ``(lo, hi)``.
        name: prefix of the error message.

    Returns:
        ``[N]`` the midpoints of the final brackets.

    Raises:
        RuntimeError: an entry is still open after ``max_rounds`` evaluations.
    """
    lo, hi = lo.clone(), hi.clone()
    base = torch.zeros_like(e) if offset is None else offset
    x = (lo + hi) / 2 if start is None else torch.where((start > lo) & (start < hi), start, (lo + hi) / 2)
    open_ = (hi - lo > rtol * (base + hi)).nonzero(as_tuple=True)[0]
    for _ in range(max_rounds):
        if open_.numel() == 0:
            return (lo + hi) / 2
        xo, lo_o, hi_o = x[open_], lo[open_], hi[open_]
        level, slope = level_and_slope(open_, xo)
        diff = level - e[open_]
        lo_o = torch.where(diff < 0, xo, lo_o)
        hi_o = torch.where(diff > 0, xo, hi_o)
        exact = diff == 0
        lo_o, hi_o = torch.where(exact, xo, lo_o), torch.where(exact, xo, hi_o)
        quarter = rtol / 4 * (base[open_] + hi_o)
        step = -diff / slope
        step = torch.where(step.abs() < quarter, step + torch.sign(step) * quarter, step)
        nxt = xo + step
        nxt = torch.where(torch.isfinite(nxt) & (nxt > lo_o) & (nxt < hi_o), nxt, (lo_o + hi_o) / 2)
        lo[open_], hi[open_], x[open_] = lo_o, hi_o, nxt
        still = (hi_o - lo_o > rtol * (base[open_] + hi_o)) & (nxt > lo_o) & (nxt < hi_o)
        open_ = open_[still]
    if open_.numel():
        raise RuntimeError(f"{name}: {open_.numel()} root(s) unfinished after {max_rounds} evaluations")
    return (lo + hi) / 2
