"""The `nde` command: help, version, and the quickstart end to end on the shipped data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nde
from nde.cli.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nde {nde.__version__}"


def test_help_lists_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "nde.cli.main", "--help"], capture_output=True, text=True,
                            check=True)
    assert "quickstart" in result.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "quickstart" in capsys.readouterr().out


# The quickstart's forecast and point-process parts have their own test.
CLASSIFIER_ONLY = ("--forecast-epochs", "0", "--tpp-epochs", "0", "--tsdiff-epochs", "0")


def test_quickstart_learns_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--epochs", "1", *CLASSIFIER_ONLY, "--no-progress"]) == 0
    first = json.loads((out / "metrics.json").read_text())
    # The class is the rotation direction, which a CDE reads from the path's Lévy area: one epoch
    # already separates the classes far better than chance (0.5).
    assert first["test_accuracy"] > 0.9
    assert first["n_train"] + first["n_val"] + first["n_test"] == 1000
    assert "accuracy" in capsys.readouterr().out
    # A second call with more epochs continues from the checkpoint instead of starting over.
    assert main(["quickstart", "--out", str(out), "--epochs", "2", *CLASSIFIER_ONLY, "--no-progress"]) == 0
    lines = (out / "ncde" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]


def test_quickstart_bad_device_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["quickstart", "--out", str(tmp_path), "--epochs", "1", *CLASSIFIER_ONLY, "--device", "tpu",
                 "--no-progress"])
    assert code == 2
    assert "device" in capsys.readouterr().err


def test_quickstart_on_a_users_file(tmp_path: Path) -> None:
    import pandas as pd

    from nde.data import dataset_path

    shipped = pd.read_csv(dataset_path("spirals") / "spirals.csv")
    keep = sorted(shipped["series_id"].unique())[:80]
    own = tmp_path / "mine.csv"
    shipped[shipped["series_id"].isin(keep)].to_csv(own, index=False)
    out = tmp_path / "out"
    assert main(["quickstart", "--data", str(own), "--out", str(out), "--epochs", "1", *CLASSIFIER_ONLY,
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 80


def test_quickstart_forecast_is_scored_against_the_exact_ou_forecast(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--epochs", "1", "--forecast-epochs", "3", "--tpp-epochs", "1",
                 "--tsdiff-epochs", "6", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The oracle is the exact conditional law of the OU process: a model can approach its CRPS, not beat it
    # by more than the test set's sampling noise.
    assert metrics["forecast_crps"] > 0.95 * metrics["forecast_oracle_crps"]
    assert metrics["forecast_crps_ratio"] < 1.5 and 0.7 < metrics["forecast_coverage_90"] <= 1.0
    assert (out / "forecast.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "exact OU forecast" in printed and "forecast.png" in printed
    # The point-process part: the Hawkes MLE is the true model class, so it lands next to the oracle.
    tpp = metrics["tpp"]
    assert abs(tpp["models"]["hawkes"]["test_ll_per_event"] - tpp["oracle"]["test_ll_per_event"]) < 0.01
    assert "oracle (true process)" in printed
    # The TSDiff part: scored against the exact seasonal AR forecast, which it cannot beat beyond noise.
    tsdiff = metrics["tsdiff"]
    assert 0.95 < tsdiff["crps"] / tsdiff["oracle_crps"] < 2.0
    assert tsdiff["seasonal_naive_crps"] == pytest.approx(1.384, abs=1e-3)
    assert (out / "tsdiff" / "forecast" / "forecast.png").stat().st_size > 10_000


def test_quickstart_on_a_malformed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("series_id,time,x,y,label\na,0.0,1,2,0\na,0.0,1,2,0\n")
    assert main(["quickstart", "--data", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv: series 'a', line 3: duplicate time: t=0.0 follows t=0.0" in err
