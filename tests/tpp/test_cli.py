"""`nde tpp generate`: EasyTPP splits and truth.json, reproducible, consistent with the process."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nde.cli.main import build_parser, main
from nde.data import dataset_path
from tests.tpp.rebuilt_files import assert_same_json_files
from tpp.data import HawkesProcess, read_easytpp_dir


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.json"))}


def test_generate_hawkes_writes_splits_and_an_exact_truth(tmp_path: Path) -> None:
    out = tmp_path / "h"
    args = ["tpp", "generate", "hawkes", "--dim", "2", "--mu", "0.2,0.1", "--alpha", "0.3,0.1;0.2,0.4",
            "--beta", "1.5", "--n-seqs", "50", "--window", "50", "--seed", "3", "--out", str(out)]
    assert main(args) == 0
    truth = json.loads((out / "truth.json").read_text())
    splits = read_easytpp_dir(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "dev": 5, "test": 5}
    process = HawkesProcess(truth["parameters"]["mu"], truth["parameters"]["alpha"], truth["parameters"]["beta"])
    np.testing.assert_allclose(process.alpha, [[0.3, 0.1], [0.2, 0.4]])
    for name, seqs in splits.items():
        assert truth["splits"][name] == {"sequences": len(seqs), "events": seqs.num_events}
        # The JSON has no window: score with the one truth.json records, as the benchmark will.
        seqs.windows = np.tile(truth["window"], (len(seqs), 1))
        for key, convention in (("ll_per_event", "full"), ("ll_per_event_easytpp", "easytpp")):
            assert truth["oracle"][name][key] == pytest.approx(process.log_likelihood_per_event(seqs, convention),
                                                               rel=1e-12)
    first = _digest(out)
    assert main(args) == 0
    assert _digest(out) == first  # same seed, same bytes


def test_generate_poisson_and_self_correcting(tmp_path: Path) -> None:
    assert main(["tpp", "generate", "poisson", "--dim", "3", "--mu", "0.5", "--n-seqs", "20", "--window", "20",
                 "--out", str(tmp_path / "p")]) == 0
    truth = json.loads((tmp_path / "p" / "truth.json").read_text())
    events = sum(s["events"] for s in truth["splits"].values())
    # 20 sequences of Poisson(3 * 0.5 * 20 = 30) events: 600 expected, standard deviation sqrt(600).
    assert abs(events - 600) < 4 * np.sqrt(600)
    assert main(["tpp", "generate", "self_correcting", "--mu", "1", "--alpha", "0.5", "--n-seqs", "10",
                 "--window", "20", "--out", str(tmp_path / "s")]) == 0
    assert read_easytpp_dir(tmp_path / "s")["train"].num_marks == 1


def test_generate_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["tpp", "generate", "hawkes", "--dim", "2", "--beta", "1", "--n-seqs", "10", "--out", str(tmp_path)]
    assert main([*base, "--mu", "0.1,0.2,0.3", "--alpha", "0.1"]) == 2
    assert "--mu: expected 1 or 2 numbers" in capsys.readouterr().err
    assert main([*base, "--mu", "0.1", "--alpha", "0.1,0.2,0.3"]) == 2
    assert "--alpha: expected 1 or 2x2=4 numbers" in capsys.readouterr().err
    assert main([*base, "--mu", "0.1", "--alpha", "0.7"]) == 2
    assert "not stationary" in capsys.readouterr().err
    assert main([*base, "--mu", "0.1", "--alpha", "0.1", "--split", "0.5,0.5"]) == 2
    assert "--split" in capsys.readouterr().err
    assert main([*base, "--mu", "x", "--alpha", "0.1"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["hawkes_1d", "hawkes_5d"])
def test_shipped_hawkes_sets_are_rebuilt_by_their_script(name: str, tmp_path: Path) -> None:
    shipped = dataset_path(name)
    copy = tmp_path / name
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("*.json"))
    nde = Path(sys.executable).with_name("nde")
    env_path = f"{nde.parent}:/usr/bin:/bin"
    subprocess.run(["sh", str(copy / "make.sh")], check=True, capture_output=True, env={"PATH": env_path})
    assert_same_json_files(copy, shipped)


def test_bench_parser_horizon_default_and_type(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["tpp", "bench", "--data", "d", "--out", "o"])
    assert args.horizon == 0 and args.max_train_seqs is None and not args.keep_going  # multi-step off by default
    assert parser.parse_args(["tpp", "bench", "--data", "d", "--out", "o", "--horizon", "10"]).horizon == 10
    for bad in ("ten", "2.5", ""):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["tpp", "bench", "--data", "d", "--out", "o", "--horizon", bad])
        assert exit_info.value.code == 2
        assert "--horizon: invalid int value" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--horizon", "-1", "--horizon must be >= 0 (0: no multi-step evaluation), got -1"),
    ("--max-train-seqs", "0", "--max-train-seqs must be >= 1, got 0"),
    ("--samples", "0", "--samples must be >= 1, got 0"),
])
def test_bench_rejects_bad_counts_before_reading_data(option: str, value: str, message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The data folder does not exist: the option is checked first, so its message is the one reported.
    assert main(["tpp", "bench", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), option,
                 value]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
