"""TSDiff-Q and TSDiff-MS guidance: gradients on hand cases, levels, and guided forecasting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nde.diffusion import SAMPLERS, DiffusionInputError
from nde.tsdiff import (
    SAMPLER_NAMES,
    MeanSquareGuidance,
    QuantileGuidance,
    TSDiff,
    TSDiffConfig,
    forecast,
    pinball,
    sample_quantile_levels,
)


def _zero_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def test_pinball_and_levels() -> None:
    error = torch.tensor([2.0, -2.0, 0.0])
    assert pinball(error, torch.tensor(0.9)).tolist() == pytest.approx([1.8, 0.2, 0.0])
    assert pinball(error, torch.tensor(0.1)).tolist() == pytest.approx([0.2, 1.8, 0.0])
    assert sample_quantile_levels(4).tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert set(SAMPLER_NAMES.values()) <= set(SAMPLERS)


def test_quantile_guidance_gradient_is_the_pinball_derivative() -> None:
    # With eps = 0, x0_hat = x / alpha, so eps_hat = -s sigma ∇_x log p = -(s sigma / alpha) ∂/∂x0 (-Σ m ρ_q(y - x0)),
    # and ∂/∂x0 (-ρ_q(y - x0)) = q where y > x0, q - 1 where y < x0.
    alpha, sigma, scale = torch.tensor(0.5), torch.tensor(0.8), 3.0
    x = torch.tensor([[[0.0], [1.0], [2.0]], [[0.0], [1.0], [2.0]]])  # x0_hat = 0, 2, 4
    observed = torch.tensor([[[1.0], [1.0], [float("nan")]], [[1.0], [3.0], [5.0]]])
    q = torch.tensor([0.25, 0.9])
    guidance = QuantileGuidance(observed, q, scale=scale)
    eps_hat = guidance(_zero_eps, x, torch.zeros(2), alpha, sigma)
    factor = -scale * 0.8 / 0.5
    expected = torch.tensor([[[0.25], [0.25 - 1], [0.0]],  # y > x0, y < x0, missing
                             [[0.9], [0.9], [0.9]]]) * factor  # y > x0 everywhere
    assert torch.allclose(eps_hat, expected)
    assert torch.allclose(guidance.log_likelihood(x / alpha),
                          -torch.tensor([0.25 * 1 + 0.75 * 1, 0.9 * (1 + 1 + 1)]))


def test_mean_square_guidance_gradient() -> None:
    # log p = -Σ m (y - x0)²: ∂/∂x0 = 2 (y - x0).
    alpha, sigma, scale = torch.tensor(0.5), torch.tensor(0.8), 2.0
    x = torch.tensor([[[0.5], [1.0]]])  # x0_hat = 1, 2
    observed = torch.tensor([[[3.0], [float("nan")]]])
    eps_hat = MeanSquareGuidance(observed, scale=scale)(_zero_eps, x, torch.zeros(1), alpha, sigma)
    assert torch.allclose(eps_hat, torch.tensor([[[-scale * 0.8 / 0.5 * 2 * (3.0 - 1.0)], [0.0]]]))


def test_guidance_input_errors() -> None:
    observed = torch.zeros(2, 3, 1)
    with pytest.raises(DiffusionInputError, match="quantiles must be"):
        QuantileGuidance(observed, torch.tensor([0.5]))
    with pytest.raises(DiffusionInputError, match=r"lie in \(0, 1\)"):
        QuantileGuidance(observed, torch.tensor([0.5, 1.0]))
    with pytest.raises(DiffusionInputError, match="NaN at a masked"):
        QuantileGuidance(torch.full((2, 3, 1), float("nan")), torch.tensor([0.5, 0.5]),
                         mask=torch.ones(2, 3, 1, dtype=torch.bool))
    with pytest.raises(DiffusionInputError, match="scale"):
        QuantileGuidance(observed, torch.tensor([0.5, 0.5]), scale=-1.0)


@pytest.fixture(scope="module")
def tiny_model() -> TSDiff:
    torch.manual_seed(0)
    return TSDiff(TSDiffConfig(context_length=10, prediction_length=3, lags=(2,), hidden_dim=8, num_blocks=1,
                               state_dim=4, step_embedding_dim=8, num_steps=10))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_guidance_pulls_the_context_towards_the_observations(tiny_model: TSDiff, sampler: str) -> None:
    # An untrained model's samples ignore the context; strong guidance makes their context part follow it.
    from nde.tsdiff.forecast import forecast_inputs

    history = [np.sin(np.arange(10.0)) + 3]
    observed, _ = forecast_inputs(tiny_model, history)
    errors = {}
    for scale in (0.0, 20.0):
        rule = QuantileGuidance(observed.expand(8, -1, -1), torch.full((8,), 0.5), scale=scale)
        engine = {"ddpm": "ddpm", "ddim": "ddim", "dpmpp": "dpm_solver_pp_2m"}[sampler]
        from nde.diffusion import make_sampler

        x = make_sampler(engine, tiny_model.schedule).sample(tiny_model, (8, 13, 2), 10, rule,
                                                             generator=torch.Generator().manual_seed(0))
        errors[scale] = float((x[:, :10, 0] - observed[0, :10, 0]).abs().mean())
    assert errors[20.0] < 0.5 * errors[0.0], errors


def test_forecast_with_missing_context_values(tiny_model: TSDiff) -> None:
    history = np.sin(np.arange(15.0)) + 3
    history[-4] = np.nan
    samples = forecast(tiny_model, [history, history + 1], num_samples=5, sampler="dpmpp", steps=4, scale=1.0)
    assert samples.shape == (5, 2, 3) and np.isfinite(samples).all()
    with pytest.raises(ValueError, match="every context value is missing"):
        forecast(tiny_model, [np.full(12, np.nan)], num_samples=2, steps=2)
    with pytest.raises(ValueError, match="fewer than the context length"):
        forecast(tiny_model, [np.ones(5)], num_samples=2, steps=2)
    with pytest.raises(ValueError, match="unknown sampler"):
        forecast(tiny_model, [history], sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown guidance"):
        forecast(tiny_model, [history], guidance="l1")  # type: ignore[arg-type]


def test_clipped_guidance_bounds_the_data_prediction() -> None:
    from nde.tsdiff import ClippedGuidance, clip_bounds

    observed = torch.tensor([[[1.0], [2.0], [float("nan")]], [[0.5], [0.5], [0.5]]])
    lower, upper = clip_bounds(observed, 1.0)  # widths 1 + 1 and 0 + 1
    assert lower.tolist() == [-1.0, -0.5] and upper.tolist() == [4.0, 1.5]
    alpha, sigma = torch.tensor(0.6), torch.tensor(0.8)
    inner = MeanSquareGuidance(observed, scale=0.0)  # plain eps = 0: x0_hat = x / alpha
    rule = ClippedGuidance(inner, lower, upper)
    x = torch.tensor([[[6.0], [0.3], [-3.0]], [[0.3], [0.6], [0.9]]])  # x0_hat 10, 0.5, -5 | 0.5, 1, 1.5
    eps = rule(_zero_eps, x, torch.zeros(2), alpha, sigma)
    x0 = (x - sigma * eps) / alpha
    assert torch.allclose(x0, torch.tensor([[[4.0], [0.5], [-1.0]], [[0.5], [1.0], [1.5]]]))
    assert torch.allclose(eps[1], torch.zeros(3, 1), atol=1e-6)  # inside the bounds nothing changes
    with pytest.raises(DiffusionInputError, match="lower <= upper"):
        ClippedGuidance(inner, upper, lower)
