"""TSDiff training and guided sampling on CUDA (skipped without a CUDA device).

Truths: the same weights and the same start state give the same deterministic DPM-Solver++ and DDIM samples on
the GPU as on the CPU (float32 round-off apart), and training on the GPU lowers the loss as on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nde.diffusion import make_sampler
from nde.tsdiff import QuantileGuidance, TSDiff, TSDiffConfig, fit_tsdiff, forecast
from nde.tsdiff.forecast import forecast_inputs
from nde.tsdiff.train import validation_loss, validation_windows

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CONFIG = TSDiffConfig(context_length=16, prediction_length=4, lags=(4,), hidden_dim=8, num_blocks=1, state_dim=4,
                      step_embedding_dim=8, num_steps=20)
SERIES = [np.sin(np.arange(200.0) * 2 * np.pi / 4) + 3 + 0.1 * np.random.default_rng(0).standard_normal(200)]


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver_pp_2m"])
def test_guided_deterministic_samples_match_the_cpu(sampler: str) -> None:
    torch.manual_seed(0)
    model = TSDiff(CONFIG).eval()
    observed, _ = forecast_inputs(model, [SERIES[0][:16]])
    x_T = torch.randn(6, 20, 2, generator=torch.Generator().manual_seed(1))
    out = {}
    for device in ("cpu", "cuda"):
        rule = QuantileGuidance(observed.expand(6, -1, -1).to(device), torch.linspace(0.1, 0.9, 6).to(device),
                                scale=4.0)
        out[device] = make_sampler(sampler, model.schedule).sample(model.to(device), (6, 20, 2), 10, rule,
                                                                   x_T=x_T.to(device)).cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-3)


def test_training_and_forecasting_on_cuda() -> None:
    # The fixed-noise validation loss of the initial weights (fit_tsdiff seeds its model the same way) against
    # that of the trained ones: the noisy per-epoch training loss of a few epochs need not fall.
    torch.manual_seed(0)
    windows = validation_windows(SERIES, CONFIG)
    before = validation_loss(TSDiff(CONFIG).to("cuda"), windows)
    model, result = fit_tsdiff(SERIES, CONFIG, epochs=30, batch_size=16, batches_per_epoch=8, device="cuda",
                               progress=False, seed=0)
    assert next(model.parameters()).device.type == "cuda"
    after = validation_loss(model, windows)
    assert np.isfinite([row["train_loss"] for row in result.history]).all()
    assert after < 0.8 * before, (before, after)
    samples = forecast(model, [SERIES[0][:150]], num_samples=8, sampler="dpmpp", steps=10, device="cuda")
    assert samples.shape == (8, 1, 4) and np.isfinite(samples).all()
