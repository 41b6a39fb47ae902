"""`nde tsdiff train` and `nde tsdiff forecast` on a small CSV, and their errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nde.cli.main import main
from nde.cli.tsdiff import normalize_freq
from nde.tsdiff import TSDiff

TINY = ["--hidden", "8", "--blocks", "1", "--state", "4", "--batch-size", "8", "--batches-per-epoch", "3",
        "--no-progress"]


def _hourly_csv(path: Path, n_series: int = 3, length: int = 150) -> Path:
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-03-04", periods=length, freq="h")
    frames = []
    for i in range(n_series):
        values = 10 + i + 3 * np.sin(2 * np.pi * np.arange(length) / 24) + 0.3 * rng.normal(size=length)
        values[40 + i] = np.nan
        frames.append(pd.DataFrame({"item_id": f"s{i}", "timestamp": stamps, "target": values}))
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_train_and_forecast_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _hourly_csv(tmp_path / "data.csv")
    model_dir = tmp_path / "model"
    code = main(["tsdiff", "train", "--data", str(data), "--freq", "H", "--context", "36", "--prediction", "12",
                 "--epochs", "2", "--seed", "0", "--device", "cpu", "--out", str(model_dir), *TINY])
    assert code == 0
    model = TSDiff.load(model_dir)
    # 'auto' keeps TSDiff's hourly lags that fit: a window (48) plus the lag within 150 - 12 - 12 points.
    assert model.config.lags == (24, 48, 72) and model.config.freq == "h"
    assert model.config.context_length == 36 and model.config.prediction_length == 12
    assert model.metadata["test_windows"] == 1 and model.metadata["train"]["monitor"] == "val_loss"
    assert len((model_dir / "train" / "metrics.jsonl").read_text().splitlines()) == 2
    out = tmp_path / "fc"
    code = main(["tsdiff", "forecast", "--model", str(model_dir), "--data", str(data), "--guidance", "quantile",
                 "--scale", "4", "--sampler", "dpmpp", "--steps", "4", "--samples", "8", "--baseline",
                 "seasonal_naive", "--baseline", "linear", "--plot-series", "2", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"crps", "mean_wql", "mase", "coverage_90", "seconds"} <= set(metrics)
    assert metrics["n_points"] == 3 * 12 and metrics["sampler"] == "dpmpp" and metrics["steps"] == 4
    assert set(metrics["baselines"]) == {"seasonal_naive", "linear"}
    # The seasonal naive forecast of this daily sine is close to the truth (noise 0.3): CRPS about 0.3-0.5.
    assert 0.1 < metrics["baselines"]["seasonal_naive"]["crps"] < 0.8
    frame = pd.read_csv(out / "forecasts.csv")
    assert len(frame) == 36 and list(frame["item_id"].unique()) == ["s0", "s1", "s2"]
    quantiles = frame[[c for c in frame.columns if c.startswith("q")]].to_numpy()
    assert quantiles.shape[1] == 11 and (np.diff(quantiles, axis=1) >= 0).all()
    truth = pd.read_csv(data).groupby("item_id")["target"].apply(lambda v: v.to_numpy()[-12:])
    assert np.allclose(frame["target"].to_numpy(), np.concatenate(truth.to_list()))
    assert (out / "forecast.png").stat().st_size > 1000
    assert "| seasonal_naive |" in capsys.readouterr().out


def test_cli_errors_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _hourly_csv(tmp_path / "data.csv", n_series=1, length=60)
    bad = tmp_path / "bad.csv"
    pd.read_csv(data).rename(columns={"target": "value"}).to_csv(bad, index=False)
    common = ["--prediction", "12", "--epochs", "1", "--out", str(tmp_path / "m"), *TINY]
    assert main(["tsdiff", "train", "--data", str(bad), "--context", "24", *common]) == 2
    assert "missing column(s) ['target']" in capsys.readouterr().err
    assert main(["tsdiff", "train", "--data", str(data), "--context", "100", *common]) == 2
    assert "needs at least 112" in capsys.readouterr().err
    assert main(["tsdiff", "train", "--data", str(data), "--context", "0", *common]) == 2
    assert "--context must be >= 1" in capsys.readouterr().err
    assert main(["tsdiff", "train", "--data", str(data), "--context", "24", "--lags", "24,x", *common]) == 2
    assert "--lags must be" in capsys.readouterr().err
    assert main(["tsdiff", "forecast", "--model", str(tmp_path / "none"), "--data", str(data),
                 "--out", str(tmp_path / "o")]) == 2
    assert "not a saved TSDiff model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["tsdiff", "forecast", "--model", "m", "--data", str(data), "--sampler", "euler", "--out", "o"])
    assert exit_info.value.code == 2 and "invalid choice: 'euler'" in capsys.readouterr().err


def test_normalize_freq() -> None:
    assert normalize_freq("H") == "h" and normalize_freq("2H") == "2h" and normalize_freq("30min") == "30min"
    assert normalize_freq("T") == "min" and normalize_freq(None) is None
    with pytest.raises(ValueError, match="invalid frequency 'Q7X'"):
        normalize_freq("Q7X")
