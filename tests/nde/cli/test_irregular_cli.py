"""`nde fit` and `nde predict` on the shipped data and on a user's own CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nde.cli.main import main
from nde.data import dataset_path, load_ou


def _trend_csv(path: Path, n_series: int = 80, seed: int = 0) -> Path:
    """A user's file: timestamps, a text id, NaN gaps, and a rising/falling label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_series):
        label = "up" if i % 2 else "down"
        hours = np.sort(rng.choice(np.arange(48), size=rng.integers(6, 14), replace=False))
        for h in hours:
            value = (0.3 if label == "up" else -0.3) * h + rng.normal()
            other = rng.normal() if rng.random() < 0.7 else np.nan
            stamp = pd.Timestamp("2026-01-01") + pd.Timedelta(hours=int(h))
            rows.append((f"patient-{i}", stamp.isoformat(), value, other, label))
    pd.DataFrame(rows, columns=["pid", "when", "hr", "temp", "outcome"]).to_csv(path, index=False)
    return path


def test_fit_and_predict_classification_on_a_users_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _trend_csv(tmp_path / "mine.csv")
    out = tmp_path / "run"
    code = main(["fit", "--data", str(data), "--id-col", "pid", "--time-col", "when", "--label-col", "outcome",
                 "--task", "classify", "--model", "gru", "--epochs", "8", "--batch-size", "8", "--seed", "0",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.8 and metrics["auroc"] >= 0.85, metrics
    assert {"accuracy", "auroc", "log_loss", "best_epoch", "n_test"} <= set(metrics)
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == metrics["n_test"]
    assert list(predictions.columns) == ["series_id", "predicted", "p_down", "p_up", "label"]
    assert (out / "model" / "config.json").is_file() and (out / "train" / "metrics.jsonl").is_file()
    # The same command with more epochs continues from the checkpoint instead of starting over.
    assert main(["fit", "--data", str(data), "--id-col", "pid", "--time-col", "when", "--label-col", "outcome",
                 "--task", "classify", "--model", "gru", "--epochs", "9", "--batch-size", "8", "--seed", "0",
                 "--out", str(out), "--no-progress"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(9))
    # Predict on new data without labels: the saved model remembers the column names.
    frame = pd.read_csv(data).drop(columns=["outcome"])
    frame.iloc[:60].to_csv(tmp_path / "new.csv", index=False)
    code = main(["predict", "--model", str(out / "model"), "--data", str(tmp_path / "new.csv"),
                 "--out", str(tmp_path / "preds.csv")])
    assert code == 0
    again = pd.read_csv(tmp_path / "preds.csv")
    assert "label" not in again.columns and set(again["predicted"]) <= {"up", "down"}
    assert np.allclose(again["p_up"] + again["p_down"], 1.0)


def test_fit_forecast_on_the_shipped_ou_set_then_forecast_the_future(tmp_path: Path) -> None:
    out = tmp_path / "ou"
    small = load_ou()
    small = small[small["series_id"].isin(small["series_id"].unique()[:120])]
    small.to_csv(tmp_path / "ou_small.csv", index=False)
    code = main(["fit", "--data", str(tmp_path / "ou_small.csv"), "--id-col", "series_id", "--time-col", "time",
                 "--task", "forecast", "--model", "gru", "--epochs", "4", "--seed", "1", "--out", str(out),
                 "--plot", "--no-progress", "--samples", "200"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mse", "crps", "coverage_90", "coverage_50"} <= set(metrics)
    # The OU process is stationary with variance sigma^2 / (2 theta) = 0.64: a forecast that learned
    # nothing but the marginal law has a CRPS near 0.8 * 0.467 = 0.37; the oracle's is about 0.36.
    assert 0.3 < metrics["crps"] < 0.5 and 0.75 < metrics["coverage_90"] < 0.99, metrics
    assert (out / "forecast.png").stat().st_size > 10_000
    table = pd.read_csv(out / "predictions.csv")
    assert (table["q05"] <= table["q50"]).all() and (table["q50"] <= table["q95"]).all()
    code = main(["predict", "--model", str(out / "model"), "--data", str(tmp_path / "ou_small.csv"),
                 "--out", str(tmp_path / "future.csv"), "--horizon", "2", "--steps", "4"])
    assert code == 0
    future = pd.read_csv(tmp_path / "future.csv")
    assert len(future) == 120 * 4 and future["observed"].isna().all()
    ends = small.groupby("series_id")["time"].max()
    first = future.groupby("series_id")["time"].min()
    np.testing.assert_allclose(first - ends.loc[first.index], 0.5, rtol=1e-9)


def test_fit_and_predict_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spirals = str(dataset_path("spirals") / "spirals.csv")
    assert main(["fit", "--data", spirals, "--id-col", "series_id", "--time-col", "time", "--task", "classify",
                 "--out", str(tmp_path / "a")]) == 2
    assert "--label-col" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "missing.csv"), "--id-col", "a", "--time-col", "b",
                 "--task", "forecast", "--out", str(tmp_path / "b")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["fit", "--data", spirals, "--id-col", "nope", "--time-col", "time", "--task", "forecast",
                 "--out", str(tmp_path / "c")]) == 2
    assert "missing column(s) ['nope']" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "no_model"), "--data", spirals,
                 "--out", str(tmp_path / "p.csv")]) == 2
    assert "not a saved model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--data", spirals, "--id-col", "series_id", "--time-col", "time", "--task", "forecast",
              "--model", "transformer", "--out", str(tmp_path / "d")])
