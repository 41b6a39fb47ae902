"""Training windows (where they may start, how they are drawn), validation windows, and a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nde.tsdiff import TrainingWindows, TSDiff, TSDiffConfig, fit_tsdiff, validation_loss, validation_windows


def _config(**overrides: object) -> TSDiffConfig:
    settings: dict[str, object] = {"context_length": 16, "prediction_length": 8, "lags": (8, 16), "hidden_dim": 16,
                                   "num_blocks": 1, "state_dim": 8, "step_embedding_dim": 16, "num_steps": 20}
    settings.update(overrides)
    return TSDiffConfig(**settings)  # type: ignore[arg-type]


def test_windows_start_after_the_longest_lag_and_are_scaled_by_their_context() -> None:
    config = _config()
    # Two ramps of slope 1 (values tell the position) and a series too short for any window.
    series = [np.arange(1.0, 61.0), 1000 + np.arange(50.0), np.ones(30)]
    windows = TrainingWindows(series, config, samples_per_epoch=200)
    # Starts s in [max(lags), T - L] = [16, T - 24]: 21 + 11 + 0 windows.
    assert windows.num_windows == (60 - 24 - 16 + 1) + (50 - 24 - 16 + 1) and len(windows) == 200
    torch.manual_seed(5)
    seen = set()
    for k in range(200):
        item = windows[k]
        x, mask = item["x"].double(), item["mask"]
        assert x.shape == (24, 3) and bool(mask.all())
        step = float(x[1, 0] - x[0, 0])  # the slope 1 divided by the window's scale
        first = float(x[0, 0]) / step  # the unscaled first value names the series and the start
        series_id, start = (1, round(first - 1000)) if first >= 1000 else (0, round(first - 1))
        seen.add((series_id, start))
        assert 16 <= start <= (60 if series_id == 0 else 50) - 24
        # Lag channels are the series 8 and 16 points back.
        assert torch.allclose(x[:, 1], x[:, 0] - 8 * step, atol=1e-4)
        assert torch.allclose(x[:, 2], x[:, 0] - 16 * step, atol=1e-4)
        # Mean scaling: the context's mean absolute value is 1 after scaling.
        assert abs(float(x[:16, 0].abs().mean()) - 1) < 1e-5
    assert len(seen) >= 28 and {s for s, _ in seen} == {0, 1}  # 200 draws reach nearly all 32 windows


def test_draws_are_reproducible_and_depend_on_the_epoch_seed() -> None:
    windows = TrainingWindows([np.arange(1.0, 200.0)], _config(), samples_per_epoch=50)
    torch.manual_seed(1)
    first = [windows[k]["x"] for k in range(50)]
    torch.manual_seed(1)
    assert all(torch.equal(a, windows[k]["x"]) for k, a in enumerate(first))
    torch.manual_seed(2)
    assert sum(torch.equal(a, windows[k]["x"]) for k, a in enumerate(first)) < 10


def test_missing_values_and_too_short_series() -> None:
    config = _config(lags=())
    values = np.arange(1.0, 41.0)
    values[:16] = np.nan  # the context of start 0 is all missing
    values[20] = np.nan
    windows = TrainingWindows([values], config, samples_per_epoch=40)
    # Starts 0..16 exist (T - L = 16); start 0's context is all missing, so it is left out.
    assert windows.num_windows == 16
    torch.manual_seed(0)
    masks = [windows[k]["mask"] for k in range(40)]
    assert any(not bool(m.all()) for m in masks)
    for k in range(40):
        item = windows[k]
        assert bool((item["x"][~item["mask"]] == 0).all())
    with pytest.raises(ValueError, match=r"no training window: .* = 40 points .* the longest has 30"):
        TrainingWindows([np.ones(30)], _config(), samples_per_epoch=4)


def test_validation_windows_are_the_last_window_of_each_series() -> None:
    config = _config()
    val = validation_windows([np.arange(1.0, 61.0), np.ones(20)], config)
    assert val is not None and val["x"].shape == (1, 24, 3)
    scale = np.abs(np.arange(37.0, 53.0)).mean()  # context of the last window: values 37..52
    assert torch.allclose(val["x"][0, :, 0].double(), torch.arange(37.0, 61.0, dtype=torch.float64) / scale,
                          atol=1e-6)
    assert validation_windows([np.ones(20)], config) is None


def test_a_short_training_run_lowers_the_loss(tmp_path: object) -> None:
    # Noisy sines with random phase and amplitude: after 90 steps the denoising loss on the validation windows
    # is well below that of the initial weights (about 0.3 of it for seeds 0, 1, 2).
    rng = np.random.default_rng(0)
    t = np.arange(160.0)
    series = [(2 + rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * t / 8 + rng.uniform(0, 2 * np.pi))
               + 0.05 * rng.normal(size=t.size)) for _ in range(6)]
    config = _config()
    torch.manual_seed(0)
    initial = TSDiff(config)
    val = validation_windows(series, config)
    assert val is not None
    before = validation_loss(initial, val, draws=8)
    model, result = fit_tsdiff(series, config, epochs=6, batch_size=16, batches_per_epoch=15, lr=3e-3, seed=0,
                               device="cpu", progress=False, val_draws=8)
    assert result.epochs_run == 6 and "val_loss" in result.history[0]
    after = validation_loss(model, val, draws=8)
    assert after == pytest.approx(result.best_metric, rel=1e-5)
    assert after < 0.5 * before, (before, after)
    assert result.history[-1]["train_loss"] < 0.6 * result.history[0]["train_loss"]
