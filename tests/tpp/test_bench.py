"""`nde tpp bench`: models trained and scored on EasyTPP splits, next to the true process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nde.cli.main import main


@pytest.fixture(scope="module")
def hawkes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "h2"
    assert main(["tpp", "generate", "hawkes", "--dim", "2", "--mu", "0.3,0.2", "--alpha", "0.3,0.1;0.2,0.3",
                 "--beta", "2", "--n-seqs", "60", "--window", "60", "--seed", "4", "--out", str(out)]) == 0
    return out


def test_bench_scores_models_next_to_the_oracle(hawkes_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["tpp", "bench", "--data", str(hawkes_dir), "--models", "hawkes,intensity_free", "--epochs", "3",
                 "--samples", "100", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train_convention"] == "full" and set(results["models"]) == {"hawkes", "intensity_free"}
    truth = json.loads((hawkes_dir / "truth.json").read_text())
    oracle = results["oracle"]
    # The oracle row is the true process scoring the test split: the same numbers as truth.json.
    assert oracle["test_ll_per_event"] == pytest.approx(truth["oracle"]["test"]["ll_per_event"], rel=1e-9)
    assert oracle["test_ll_per_event_easytpp"] == pytest.approx(truth["oracle"]["test"]["ll_per_event_easytpp"],
                                                                rel=1e-9)
    hawkes = results["models"]["hawkes"]
    # A correctly specified model fitted by maximum likelihood on 48 sequences: close to the oracle on test.
    assert abs(hawkes["test_ll_per_event"] - oracle["test_ll_per_event"]) < 0.05
    for scores in results["models"].values():
        assert {"test_ll_per_event", "test_ll_per_event_easytpp", "rmse", "type_accuracy", "train_seconds",
                "eval_seconds", "epochs"} <= set(scores)
        assert 0 < scores["rmse"] < 10 and 0.3 < scores["type_accuracy"] <= 1
    assert (out / "intensity_hawkes.png").stat().st_size > 10_000
    assert "oracle (true process)" in (out / "results.md").read_text()
    assert "results.json" in capsys.readouterr().out


def test_bench_errors(hawkes_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tpp", "bench", "--data", str(hawkes_dir), "--models", "hawkes,wavenet", "--out",
                 str(tmp_path / "x")]) == 2
    assert "unknown model(s) ['wavenet']" in capsys.readouterr().err
    assert main(["tpp", "bench", "--data", str(tmp_path / "nowhere"), "--models", "hawkes", "--out",
                 str(tmp_path / "y")]) == 2
    assert main(["tpp", "bench", "--data", str(hawkes_dir), "--models", "hawkes", "--window", "5,1", "--out",
                 str(tmp_path / "z")]) == 2
    assert "--window" in capsys.readouterr().err


def test_bench_resumes_the_same_run_and_restarts_a_different_one(hawkes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    args = ["tpp", "bench", "--data", str(hawkes_dir), "--models", "rmtpp", "--epochs", "2", "--no-plots",
            "--out", str(out)]
    assert main([*args, "--seed", "0"]) == 0
    first = json.loads((out / "results.json").read_text())["models"]["rmtpp"]
    log = out / "checkpoints" / "rmtpp" / "metrics.jsonl"
    assert len(log.read_text().splitlines()) == 2
    assert main([*args, "--seed", "0"]) == 0  # the same run: nothing left to train, same scores
    again = json.loads((out / "results.json").read_text())["models"]["rmtpp"]
    assert again["test_ll_per_event"] == first["test_ll_per_event"]
    assert len(log.read_text().splitlines()) == 2
    assert main([*args, "--seed", "1"]) == 0  # other settings: the old checkpoint is not resumed
    other = json.loads((out / "results.json").read_text())["models"]["rmtpp"]
    assert other["test_ll_per_event"] != first["test_ll_per_event"]
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [0, 1]
