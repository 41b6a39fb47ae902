"""Refinement of base forecasts, checked against closed forms of a Gaussian window distribution.

The model is the exact denoiser of Gaussian windows ``x ~ N(m, S)`` (:class:`nde.diffusion.GaussianData`). At
step ``i`` with ``a = ā_i``, ``α = sqrt(a)``, ``σ = sqrt(1 - a)``, ``C = a S + σ² I`` and ``A = σ C⁻¹`` it returns
``eps*(x_t) = A (x_t - α m)``, so with ``x_t = α x + σ ε`` the one-draw energy is

    E(x; ε) = ‖α A (x - m) + (σ A - I) ε‖²,   ∇_x E = H (x - m) + 2 α A (σ A - I) ε,   H = 2 a A²,

and every iteration of the refinement of the free values ``y = x_f`` (the context ``x_c`` is fixed) with the
Gaussian prior ``λ ‖y - ŷ‖²`` is linear: ``y ← M y + c + noise`` with ``M = I - η (H_ff + 2 λ I)``,
``c = η (H_ff m_f - H_fc (x_c - m_c) + 2 λ ŷ)`` and noise covariance ``Q = η² G Gᵀ + 2 η γ² I``,
``G = 2 α [A (σ A - I)]_f``. After ``n`` iterations from ``y_0`` the law of ``y`` has the exact mean
``μ* + Mⁿ (y_0 - μ*)`` and covariance ``Σ_{k<n} M^k Q M^kᵀ``, with ``μ* = (H_ff + 2 λ I)⁻¹ (H_ff m_f - H_fc (x_c - m_c)
+ 2 λ ŷ)`` the minimiser of the expected energy plus the prior (the product of the two Gaussians).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from nde.diffusion import GaussianData
from nde.tsdiff import TSDiff, TSDiffConfig, lagged_windows
from nde.tsdiff.refine import (
    _series_of,
    _window_index,
    diffusion_step_losses,
    refine_forecast,
    representative_step,
)

C, P = 4, 2
MEAN = torch.tensor([1.0, 1.2, 0.9, 1.1, 1.3, 0.8], dtype=torch.float64)
COV = 0.3 * 0.7 ** (torch.arange(6)[:, None] - torch.arange(6)[None, :]).abs().to(torch.float64)
DATA = GaussianData(MEAN, COV)
CONTEXT = torch.tensor([1.2, 0.8, 1.1, 0.9], dtype=torch.float64)  # mean |y| = 1
LEVEL = 5.0  # the data are LEVEL times the scaled windows: the refinement must scale and unscale exactly


class GaussianTSDiff(TSDiff):
    """A TSDiff (no lags) whose epsilon model is the exact denoiser of windows ``N(MEAN, COV)`` in float64."""

    def __init__(self, num_steps: int = 100) -> None:
        super().__init__(TSDiffConfig(context_length=C, prediction_length=P, hidden_dim=4, num_blocks=1,
                                      state_dim=2, step_embedding_dim=4, num_steps=num_steps))
        self.double()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return DATA.epsilon(self.schedule, x[..., 0], t)[..., None]


def _linear_chain(model: TSDiff, step: int, base: Tensor, reg_weight: float, step_size: float,
                  noise_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(M, c, Q)`` of one refinement iteration (module docstring), float64."""
    a = float(model.schedule.alpha_bars[step - 1])
    alpha, sigma = math.sqrt(a), math.sqrt(1 - a)
    eye = torch.eye(6, dtype=torch.float64)
    big_a = sigma * torch.linalg.inv(a * COV + (1 - a) * eye)
    hess = 2 * a * big_a @ big_a
    f, c = slice(C, C + P), slice(0, C)
    m = eye[:P, :P] - step_size * (hess[f, f] + 2 * reg_weight * eye[:P, :P])
    shift = step_size * (hess[f, f] @ MEAN[f] - hess[f, c] @ (CONTEXT - MEAN[c]) + 2 * reg_weight * base)
    g = 2 * alpha * (big_a @ (sigma * big_a - eye))[f]
    q = step_size**2 * g @ g.T + 2 * step_size * noise_scale**2 * eye[:P, :P]
    return m, shift, q


def _exact_law(m: Tensor, shift: Tensor, q: Tensor, start: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(fixed point μ*, mean, covariance)`` of ``y_n`` for ``y_{k+1} = M y_k + c + N(0, Q)`` from ``y_0 = start``."""
    fixed = torch.linalg.solve(torch.eye(P, dtype=torch.float64) - m, shift)
    mean, cov, power = start.clone(), torch.zeros(P, P, dtype=torch.float64), torch.eye(P, dtype=torch.float64)
    for _ in range(n):
        mean = m @ mean + shift
        cov = cov + power @ q @ power.T
        power = m @ power
    return fixed, mean, cov


def _history(rows: int = 1) -> np.ndarray:
    return np.tile(LEVEL * CONTEXT.numpy(), (rows, 1))


def test_ml_refinement_converges_to_the_product_of_gaussians() -> None:
    model = GaussianTSDiff()
    base = torch.tensor([1.4, 0.5], dtype=torch.float64)  # scaled units
    step, reg, eta, n, paths = 30, 0.5, 0.1, 80, 400
    out = refine_forecast(model, _history(), LEVEL * base[None].numpy(), method="ml", prior="gaussian", steps=n,
                          step_size=eta, reg_weight=reg, diffusion_step=step, num_samples=paths, seed=1)
    assert out.shape == (paths, 1, P)
    y = torch.from_numpy(out[:, 0]) / LEVEL
    fixed, mean, cov = _exact_law(*_linear_chain(model, step, base, reg, eta, 0.0), base, n)
    # After 80 iterations the mean has converged to the closed-form minimiser ...
    assert torch.allclose(mean, fixed, atol=1e-4)
    # ... which differs clearly from both the base forecast and the model's own conditional minimiser.
    assert float((fixed - base).abs().min()) > 0.05
    # The paths' mean matches it within 4 standard errors of the exact spread of the noisy gradient descent.
    tolerance = 4 * (cov.diagonal() / paths).sqrt()
    assert bool(((y.mean(0) - mean).abs() < tolerance).all()), (y.mean(0), mean, tolerance)
    assert torch.allclose(y.std(0), cov.diagonal().sqrt(), rtol=0.2)


@pytest.mark.parametrize("noise_scale", [1.0, 0.1])
def test_langevin_samples_have_the_exact_law_of_the_chain(noise_scale: float) -> None:
    model = GaussianTSDiff()
    base = torch.tensor([0.6, 1.5], dtype=torch.float64)
    step, reg, eta, n, paths = 50, 1.0, 0.1, 20, 4000
    out = refine_forecast(model, _history(), LEVEL * base[None].numpy(), method="langevin", prior="gaussian",
                          steps=n, step_size=eta, reg_weight=reg, noise_scale=noise_scale, diffusion_step=step,
                          num_samples=paths, batch_size=1000, seed=2)
    y = torch.from_numpy(out[:, 0]) / LEVEL
    _, mean, cov = _exact_law(*_linear_chain(model, step, base, reg, eta, noise_scale), base, n)
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, (y - mean).T, upper=False).T  # standard normal under the exact law
    assert float(z.mean(0).abs().max()) < 4 / math.sqrt(paths)
    assert float((torch.cov(z.T) - torch.eye(P, dtype=torch.float64)).abs().max()) < 4 * math.sqrt(2 / paths)


def test_quantile_ml_refinement_shifts_each_path_by_its_level() -> None:
    # Far below the base forecast the pinball prior λ ρ_q(ŷ - y) has the constant gradient -λ q, so the
    # minimiser is the model's conditional minimiser plus λ q H_ff⁻¹ 1 for path level q = j / (S + 1).
    model = GaussianTSDiff()
    step, reg, eta, n, rows = 40, 0.3, 0.1, 300, 100
    zero = torch.zeros(P, dtype=torch.float64)
    chain = _linear_chain(model, step, zero, 0.0, eta, 0.0)  # the model's energy alone
    hess_ff = (torch.eye(P, dtype=torch.float64) - chain[0]) / eta
    model_fixed, _, cov = _exact_law(*chain, zero, n)  # the pinball term only shifts the mean
    base = model_fixed + 3.0
    samples = np.broadcast_to(LEVEL * base.numpy(), (2, rows, P))  # S = 2 paths per series: q = 1/3, 2/3
    out = refine_forecast(model, _history(rows), samples, method="ml", prior="quantile", steps=n, step_size=eta,
                          reg_weight=reg, diffusion_step=step, seed=3)
    y = torch.from_numpy(out) / LEVEL  # [2, rows, P]
    for j, q in enumerate((1 / 3, 2 / 3)):
        expected = model_fixed + torch.linalg.solve(hess_ff, torch.full((P,), reg * q, dtype=torch.float64))
        assert bool((expected < base).all())  # the smooth branch of the pinball loss, as assumed
        tolerance = 4 * (cov.diagonal() / rows).sqrt()
        assert bool(((y[j].mean(0) - expected).abs() < tolerance).all()), (j, y[j].mean(0), expected, tolerance)
    assert float((expected - model_fixed).abs().min()) > 0.1  # the prior's pull is well resolved


def test_adam_reaches_the_same_minimiser() -> None:
    model = GaussianTSDiff()
    base = torch.tensor([1.4, 0.5], dtype=torch.float64)
    out = refine_forecast(model, _history(), LEVEL * base[None].numpy(), method="ml", optimizer="adam", steps=300,
                          step_size=0.01, reg_weight=0.5, diffusion_step=30, num_samples=200, seed=4)
    fixed, _, _ = _exact_law(*_linear_chain(model, 30, base, 0.5, 0.1, 0.0), base, 1)
    assert torch.allclose(torch.from_numpy(out[:, 0]).mean(0) / LEVEL, fixed, atol=0.02)


def test_diffusion_step_losses_match_the_gaussian_mmse() -> None:
    # For the exact denoiser E‖eps* - ε‖² = tr(I - σ² C⁻¹): the posterior variance of ε given x_t.
    model = GaussianTSDiff()
    windows = DATA.sample(3000, generator=torch.Generator().manual_seed(5))[..., None]
    losses = diffusion_step_losses(model, windows, generator=torch.Generator().manual_seed(6))
    a = model.schedule.alpha_bars
    eye = torch.eye(6, dtype=torch.float64)
    exact = torch.stack([1 - (1 - ai) * torch.linalg.inv(ai * COV + (1 - ai) * eye).diagonal().mean() for ai in a])
    assert torch.allclose(losses, exact, rtol=0.05)
    assert abs(representative_step(losses) - representative_step(exact)) <= 3
    assert representative_step([3.0, 1.0, 2.0, 0.0]) == 2  # mean 1.5: |1 - 1.5| = |2 - 1.5|, the first wins


def test_windows_rebuilt_from_the_series_equal_lagged_windows() -> None:
    # The refinement's window (one underlying series, lag channels pointing into the forecast range carry
    # the forecast values) equals lagged_windows of the history followed by the forecast.
    config = TSDiffConfig(context_length=5, prediction_length=3, lags=(2, 7), hidden_dim=4, num_blocks=1,
                          state_dim=2, step_embedding_dim=4)
    model = TSDiff(config)
    rng = np.random.default_rng(0)
    full = torch.from_numpy(rng.standard_normal((2, 15)))
    full[0, 3] = float("nan")
    expected = lagged_windows(full, config.window_length, config.lags)
    index = _window_index(model)
    series = _series_of(expected, index, config.history_length + config.window_length)
    assert torch.equal(series[:, index].isnan(), expected.isnan())
    assert torch.equal(torch.nan_to_num(series[:, index]), torch.nan_to_num(expected))


def test_refinement_of_a_network_with_lags_and_missing_values() -> None:
    torch.manual_seed(0)
    config = TSDiffConfig(context_length=12, prediction_length=4, lags=(3, 6), hidden_dim=8, num_blocks=1,
                          state_dim=4, step_embedding_dim=8, num_steps=10)
    model = TSDiff(config)
    rng = np.random.default_rng(0)
    history = 10 + rng.standard_normal((3, 20))
    history[0, 15] = np.nan
    base = 10 + rng.standard_normal((5, 3, 4))
    for method in ("langevin", "ml"):
        for prior in ("gaussian", "quantile"):
            out = refine_forecast(model, history, base, method=method, prior=prior, steps=3)
            assert out.shape == (5, 3, 4) and np.isfinite(out).all()
            again = refine_forecast(model, history, base, method=method, prior=prior, steps=3)
            assert np.array_equal(out, again)  # seeded
    # No iteration (a tiny step, no noise) leaves the base forecast; the quantile prior sorts it first.
    still = refine_forecast(model, history, base, method="langevin", prior="quantile", steps=1, step_size=1e-12,
                            noise_scale=0.0)
    assert np.allclose(still, np.sort(base, axis=0), rtol=1e-6, atol=1e-5)
    assert refine_forecast(model, history, base[0], num_samples=2, diffusion_step="random", steps=2).shape == (2, 3, 4)


def test_bad_inputs() -> None:
    model = GaussianTSDiff(num_steps=10)
    history, base = _history(2), np.ones((2, P))
    cases = [
        ({"method": "hmc"}, "unknown method"),
        ({"prior": "laplace"}, "unknown prior"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"step_size": 0.0}, "step_size must be a finite number > 0"),
        ({"step_size": float("nan")}, "step_size"),
        ({"reg_weight": -1.0}, "reg_weight must be a finite number >= 0"),
        ({"noise_scale": float("inf")}, "noise_scale"),
        ({"diffusion_step": 0}, "diffusion_step must be"),
        ({"diffusion_step": 11}, "diffusion_step must be"),
        ({"diffusion_step": "mean"}, "diffusion_step must be"),
        ({"diffusion_step": True}, "diffusion_step must be"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_samples": 0}, "num_samples"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            refine_forecast(model, history, base, **kwargs)
    with pytest.raises(ValueError, match="N = 2 series and P = 2"):
        refine_forecast(model, history, np.ones((3, P)))
    with pytest.raises(ValueError, match="N = 2 series and P = 2"):
        refine_forecast(model, history, np.ones((4, 2, P + 1)))
    with pytest.raises(ValueError, match=r"point forecast \[N, P\] or samples"):
        refine_forecast(model, history, np.ones(P))
    with pytest.raises(ValueError, match="NaN or infinite"):
        refine_forecast(model, history, np.full((2, P), np.nan))
    with pytest.raises(ValueError, match="differs from the 3 base samples"):
        refine_forecast(model, history, np.ones((3, 2, P)), num_samples=4)
    with pytest.raises(ValueError, match="fewer than the context length"):
        refine_forecast(model, [np.ones(C - 1)] * 2, base)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        representative_step([])
