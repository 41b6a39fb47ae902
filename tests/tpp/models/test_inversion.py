"""invert_increasing against closed-form roots: Newton's steps with the bisection guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tpp.models.inversion import invert_increasing

F64 = torch.float64


def _cubic(a: torch.Tensor) -> tuple[object, list[int]]:
    """``F(τ) = a τ + τ³`` (slope ``a + 3 τ²``), counting the rows evaluated per call."""
    calls: list[int] = []

    def level_and_slope(rows: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(rows.numel())
        return a[rows] * x + x**3, a[rows] + 3 * x**2

    return level_and_slope, calls


def _cubic_root(a: float, e: float) -> float:
    """The real root of ``τ³ + a τ - e`` (Cardano; one real root for ``a > 0``)."""
    q = math.sqrt((e / 2) ** 2 + (a / 3) ** 3)
    return math.cbrt(e / 2 + q) + math.cbrt(e / 2 - q)


def test_roots_of_a_cubic_are_within_the_tolerance_in_few_evaluations() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 500
    a = torch.rand(n, generator=gen, dtype=F64) * 3 + 0.01
    e = torch.empty(n, dtype=F64).exponential_(generator=gen) * 5
    hi = torch.minimum(e / a, e ** (1 / 3))                            # F >= e at both
    f, calls = _cubic(a)
    rtol = 1e-10
    tau = invert_increasing(f, e, torch.zeros(n, dtype=F64), hi, rtol=rtol, max_rounds=200)
    exact = torch.tensor([_cubic_root(float(ai), float(ei)) for ai, ei in zip(a, e, strict=True)], dtype=F64)
    assert ((tau - exact).abs() <= rtol / 2 * hi * (1 + 1e-9)).all()
    # bisection would need log2(1 / rtol) ~ 33 halvings for every entry
    assert len(calls) <= 12, len(calls)
    assert sum(calls) <= 8 * n, sum(calls)


def test_a_useless_slope_falls_back_to_bisection() -> None:
    """Slopes 0 (Newton impossible) or negative (Newton steps out of the bracket): still the guarantee."""
    gen = torch.Generator().manual_seed(1)
    n = 50
    rate = torch.rand(n, generator=gen, dtype=F64) + 0.5
    e = torch.empty(n, dtype=F64).exponential_(generator=gen)
    for bad in (0.0, -1.0):
        rounds = []

        def f(rows: torch.Tensor, x: torch.Tensor, bad: float = bad,
              rounds: list[int] = rounds) -> tuple[torch.Tensor, torch.Tensor]:
            rounds.append(1)
            return rate[rows] * x, torch.full_like(x, bad)

        hi = 2 * e / rate
        tau = invert_increasing(f, e, torch.zeros(n, dtype=F64), hi, rtol=1e-8, max_rounds=100)
        assert ((tau - e / rate).abs() <= 1e-8 / 2 * hi * (1 + 1e-9)).all()
        assert 20 <= len(rounds) <= 40                                 # bisection: ~log2(1e8) halvings


def test_the_tolerance_is_relative_to_the_absolute_time() -> None:
    """With an offset the bracket may stop at ``rtol (offset + hi)``: a root near 0 after a late origin is found
    to that absolute accuracy, in fewer evaluations than the same root without the offset."""
    a = torch.tensor([1.0], dtype=F64)
    e = torch.tensor([1e-3], dtype=F64)
    f, calls = _cubic(a)
    tau = invert_increasing(f, e, torch.zeros(1, dtype=F64), torch.tensor([1.0], dtype=F64), rtol=1e-6,
                            max_rounds=100, offset=torch.tensor([1e3], dtype=F64))
    exact = _cubic_root(1.0, 1e-3)
    assert abs(float(tau) - exact) <= 1e-6 / 2 * (1e3 + 1.0)
    with_offset = len(calls)
    f, calls = _cubic(a)
    tau = invert_increasing(f, e, torch.zeros(1, dtype=F64), torch.tensor([1.0], dtype=F64), rtol=1e-6,
                            max_rounds=100)
    assert abs(float(tau) - exact) <= 1e-6 / 2 * 1.0
    assert with_offset <= len(calls)


def test_exact_hits_and_closed_brackets() -> None:
    """A start on the root ends at once; entries whose bracket is already closed are never evaluated."""
    a = torch.tensor([2.0, 2.0], dtype=F64)
    e = torch.tensor([3.0, 5.0], dtype=F64)                          # F(1) = 3 for a = 2
    f, calls = _cubic(a)
    lo = torch.tensor([0.0, 1.25], dtype=F64)
    hi = torch.tensor([2.0, 1.25], dtype=F64)                        # the second bracket is a point
    tau = invert_increasing(f, e, lo, hi, rtol=1e-12, max_rounds=10, start=torch.tensor([1.0, 9.0], dtype=F64))
    assert float(tau[0]) == 1.0 and float(tau[1]) == 1.25
    assert calls == [1]


def test_running_out_of_rounds_raises() -> None:
    a = torch.ones(3, dtype=F64)
    f, _ = _cubic(a)
    with pytest.raises(RuntimeError, match="my sampler: 3 root"):
        invert_increasing(f, torch.full((3,), 2.5, dtype=F64), torch.zeros(3, dtype=F64), torch.full((3,), 2.0,
                          dtype=F64), rtol=1e-12, max_rounds=2, name="my sampler")


def test_float32_roots() -> None:
    a = torch.tensor(np.linspace(0.1, 4.0, 64), dtype=torch.float32)
    e = torch.tensor(np.linspace(0.01, 20.0, 64), dtype=torch.float32)
    f, _ = _cubic(a)
    hi = e / a
    tau = invert_increasing(f, e, torch.zeros_like(e), hi, rtol=1e-5, max_rounds=100)
    exact = torch.tensor([_cubic_root(float(ai), float(ei)) for ai, ei in zip(a, e, strict=True)])
    assert ((tau - exact).abs() <= 1e-5 / 2 * hi + 1e-6 * exact).all()
