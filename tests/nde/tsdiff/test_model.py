"""The denoiser's shapes, the lagged inputs, mean scaling, the config and the model files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nde.tsdiff import (
    TSDiff,
    TSDiffConfig,
    TSDiffModelError,
    forecast,
    forecast_inputs,
    lagged_windows,
    mean_scale,
    window_arrays,
)


def _tiny_config(**overrides: object) -> TSDiffConfig:
    settings: dict[str, object] = {"context_length": 12, "prediction_length": 4, "lags": (3, 7), "hidden_dim": 8,
                                   "num_blocks": 2, "state_dim": 4, "step_embedding_dim": 8, "num_steps": 10}
    settings.update(overrides)
    return TSDiffConfig(**settings)  # type: ignore[arg-type]


def test_denoiser_shapes_and_step_input() -> None:
    torch.manual_seed(0)
    model = TSDiff(_tiny_config())
    x = torch.randn(5, 16, 3)
    eps = model(x, torch.full((5,), 0.3))
    assert eps.shape == (5, 16, 3) and bool(torch.isfinite(eps).all())
    # The step embedding matters: another time gives another prediction; the batch rows are independent.
    assert not torch.allclose(eps, model(x, torch.full((5,), 0.9)))
    assert torch.allclose(model(x[:2], torch.full((2,), 0.3)), eps[:2], atol=1e-6)
    # The denoiser receives the step i = t N.
    assert torch.equal(model.denoiser(x, torch.full((5,), 3.0)), model(x, torch.full((5,), 0.3)))
    with pytest.raises(ValueError, match=r"\[B, L, 3\]"):
        model(torch.randn(5, 16, 2), torch.full((5,), 0.3))
    with pytest.raises(ValueError, match="step must be"):
        model(x, torch.full((4,), 0.3))
    assert model.config.channels == 3 and model.config.window_length == 16 and model.config.history_length == 7
    assert model.schedule.num_steps == 10 and math.isclose(float(model.schedule.betas[-1]), 0.1)


def test_lagged_windows_are_the_shifted_series() -> None:
    history = torch.arange(20, dtype=torch.float64).reshape(2, 10)  # row b holds 10 b + position
    out = lagged_windows(history, 6, [1, 5])
    assert out.shape == (2, 6, 3)
    for b in range(2):
        for t in range(6):
            position = 4 + t
            assert out[b, t, 0] == 10 * b + position
            assert out[b, t, 1] == 10 * b + position - 1
            if position - 5 >= 0:
                assert out[b, t, 2] == 10 * b + position - 5
            else:
                assert math.isnan(float(out[b, t, 2]))  # before the start of the history: unobserved
    with pytest.raises(ValueError, match="T >= length"):
        lagged_windows(history, 11, [1])


def test_training_and_forecast_windows_agree() -> None:
    # The window a model is trained on and the one it forecasts hold the same values where both are known.
    config = _tiny_config()
    rng = np.random.default_rng(0)
    values = 5 + rng.normal(size=60)
    values[45] = np.nan
    start = 40
    x, mask = window_arrays(values, start, config)  # type: ignore[misc]
    model = TSDiff(config)
    observed, scale = forecast_inputs(model, [values[: start + config.context_length]])
    context = values[start : start + config.context_length]
    assert np.isnan(context).sum() == 1
    assert math.isclose(float(scale[0]), float(np.nanmean(np.abs(context))), rel_tol=1e-12)
    known = ~torch.isnan(observed[0])
    assert torch.allclose(observed[0][known], torch.from_numpy(x)[known], atol=1e-6)
    # Channel 0 of the prediction part is unknown; lag 7 of the 4 future points points into the context (whose
    # value at position 45 is missing).
    assert not known[config.context_length :, 0].any()
    assert known[config.context_length :, 2].tolist() == [False, True, True, True]
    assert not known[config.context_length :, 1][3:].any()  # lag 3 of future point 3 is future point 0
    # The missing value at position 45 is masked in training and in forecasting, in each channel it reaches.
    for channel, lag in enumerate((0, 3, 7)):
        assert not mask[45 - start + lag, channel] and not known[45 - start + lag, channel]
    assert int((~mask).sum()) == 3 and x[~mask].tolist() == [0.0, 0.0, 0.0]


def test_mean_scaling_round_trip() -> None:
    context = torch.tensor([[1.0, -3.0, float("nan"), 2.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    scale = mean_scale(context, min_scale=1e-10)
    assert torch.allclose(scale, torch.tensor([2.0, 1e-10], dtype=torch.float64))
    scaled = context / scale[:, None]
    assert torch.allclose((scaled * scale[:, None])[0, [0, 1, 3]], context[0, [0, 1, 3]])
    with pytest.raises(ValueError, match="row 1 has no observed value"):
        mean_scale(torch.tensor([[1.0, 2.0], [float("nan"), float("nan")]]))
    # Forecasts come back in the data's units: a model scaled by 1000 x the data gives 1000 x the forecast.
    torch.manual_seed(0)
    model = TSDiff(_tiny_config(lags=()))
    history = [np.linspace(1, 2, 12)]
    a = forecast(model, history, num_samples=3, sampler="ddim", steps=4, scale=0.0, seed=1)
    b = forecast(model, [1000 * history[0]], num_samples=3, sampler="ddim", steps=4, scale=0.0, seed=1)
    assert a.shape == (3, 1, 4) and np.allclose(b, 1000 * a, rtol=1e-5)


def test_config_validation() -> None:
    with pytest.raises(TSDiffModelError, match="context_length must be a positive integer"):
        _tiny_config(context_length=0)
    with pytest.raises(TSDiffModelError, match="lags must be distinct"):
        _tiny_config(lags=(3, 3))
    with pytest.raises(TSDiffModelError, match="beta_start"):
        _tiny_config(beta_start=0.2, beta_end=0.1)
    with pytest.raises(TSDiffModelError, match="s4_init"):
        _tiny_config(s4_init="legs")


def test_save_load_round_trip_gives_identical_forecasts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TSDiff(_tiny_config())
    model.metadata = {"columns": {"item_col": "id"}}
    model.save(tmp_path / "m")
    loaded = TSDiff.load(tmp_path / "m")
    assert loaded.config == model.config and loaded.metadata == model.metadata
    rng = np.random.default_rng(1)
    history = [10 + rng.normal(size=30), 20 + rng.normal(size=25)]
    kwargs = {"num_samples": 4, "sampler": "ddpm", "steps": 5, "scale": 2.0, "seed": 7}
    first = forecast(model, history, **kwargs)  # type: ignore[arg-type]
    assert np.array_equal(first, forecast(loaded, history, **kwargs))  # type: ignore[arg-type]
    assert not np.array_equal(first, forecast(loaded, history, **{**kwargs, "seed": 8}))  # type: ignore[arg-type]
    document = json.loads((tmp_path / "m" / "config.json").read_text())
    assert document["config"]["lags"] == [3, 7] and document["config"]["context_length"] == 12


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(TSDiffModelError, match="not a saved TSDiff model"):
        TSDiff.load(tmp_path)
    TSDiff(_tiny_config()).save(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(TSDiffModelError, match="not valid JSON"):
        TSDiff.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model": "tsdiff", "format": 99, "config": {}}))
    with pytest.raises(TSDiffModelError, match="format 99"):
        TSDiff.load(tmp_path / "m")
