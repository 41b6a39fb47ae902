"""The shipped Waghmare et al. (CIKM 2022) Hawkes sets: datasets/waghmare_hawkes_independent and _dependent.

Checked against the paper's settings (μ, the jump matrix J = their α, β; window 100; 60/20/20 split), this
repository's branching convention (α = J / β), the exact expected number of events of a Hawkes process started
empty (closed form of the mean intensity's linear ODE), the oracle log-likelihoods recomputed from the files, the
README's table, and make.sh (rebuilds the files byte for byte).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import expm

from nde.data import available_datasets, dataset_path
from tests.tpp.rebuilt_files import assert_same_json_files
from tpp.data import HawkesProcess
from tpp.evaluation.bench import load_benchmark_data

WINDOW = 100.0
MU = [0.1, 0.05]
# name: (jumps J = the paper's α, β, branching α = J / β in this repository's convention)
SETS = {
    "waghmare_hawkes_independent": ([[0.2, 0.0], [0.0, 0.4]], [[1.0, 1.0], [1.0, 2.0]], [[0.2, 0.0], [0.0, 0.2]]),
    "waghmare_hawkes_dependent": ([[0.2, 0.1], [0.2, 0.3]], [[1.0, 1.0], [1.0, 1.0]], [[0.2, 0.1], [0.2, 0.3]]),
}
SIZES = {"train": 1200, "dev": 400, "test": 400}


def expected_counts(mu: np.ndarray, jump: np.ndarray, beta: np.ndarray, window: float) -> np.ndarray:
    """``E N_k(window)`` of a Hawkes process started empty, for kernels ``J[k, j] e^{-β_k t}``: the non-zero
    kernels of a row share one decay ``β_k``.

    ``m(t) = E λ(t)`` solves ``m' = -B (m - μ) + J m`` (``B = diag(β_k)``, each excitation decays at its row's
    rate), so with ``A = B - J``: ``m(t) = m∞ + e^{-A t} (μ - m∞)``, ``m∞ = A⁻¹ B μ``, and
    ``E N(T) = m∞ T + A⁻¹ (I - e^{-A T}) (μ - m∞)``.
    """
    rates = []
    for k in range(len(mu)):
        used = np.unique(beta[k][jump[k] != 0])
        assert used.size <= 1, "the formula needs one decay per row"
        rates.append(used[0] if used.size else 1.0)
    b = np.diag(rates)
    a = b - jump
    m_inf = np.linalg.solve(a, b @ mu)
    return m_inf * window + np.linalg.solve(a, (np.eye(len(mu)) - expm(-a * window)) @ (mu - m_inf))


@pytest.mark.parametrize("name", list(SETS))
def test_parameters_splits_and_windows(name: str) -> None:
    assert name in available_datasets()
    jump, beta, alpha = SETS[name]
    splits, truth = load_benchmark_data(dataset_path(name))
    assert truth is not None and truth["process"] == "HawkesProcess" and truth["num_marks"] == 2
    params = truth["parameters"]
    np.testing.assert_allclose(params["mu"], MU, rtol=0, atol=1e-15)
    np.testing.assert_allclose(params["alpha"], alpha, rtol=0, atol=1e-15)
    np.testing.assert_allclose(params["beta"], beta, rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(params["alpha"]) * np.asarray(params["beta"]), jump, rtol=1e-15)
    assert truth["window"] == [0.0, WINDOW] and truth["empty_sequences_dropped"] == 0
    for split, seqs in splits.items():
        assert len(seqs) == SIZES[split] == truth["splits"][split]["sequences"]
        assert seqs.num_events == truth["splits"][split]["events"]
        assert seqs.num_marks == 2
        times = np.concatenate(seqs.times)
        assert times.min() >= 0.0 and times.max() <= WINDOW
        assert all(np.all(np.diff(t) >= 0) for t in seqs.times)


@pytest.mark.parametrize("name", list(SETS))
def test_event_counts_match_the_exact_expectation(name: str) -> None:
    # all 2,000 sequences: the mean number of events of each mark within 4 standard errors of its expectation
    jump, beta, _ = (np.asarray(x) for x in SETS[name])
    splits, _ = load_benchmark_data(dataset_path(name))
    counts = np.array([np.bincount(m, minlength=2) for s in splits.values() for m in s.marks])    # [N, 2]
    want = expected_counts(np.asarray(MU), jump, beta, WINDOW)
    stationary = HawkesProcess(MU, jump / beta, beta).stationary_rates * WINDOW
    assert np.all(want < stationary) and np.all(want > 0.95 * stationary)     # started empty: a little fewer
    se = counts.std(0, ddof=1) / np.sqrt(len(counts))
    assert np.all(np.abs(counts.mean(0) - want) < 4 * se), (counts.mean(0), want, se)


def test_expected_counts_formula_on_the_univariate_closed_form() -> None:
    # one mark: E N(T) = μ T / (1 - n) - μ n (1 - e^{-β (1 - n) T}) / (β (1 - n)²), n = J / β
    mu, j, b, t = 0.3, 0.8, 2.0, 7.0
    n = j / b
    want = mu * t / (1 - n) - mu * n * (1 - np.exp(-b * (1 - n) * t)) / (b * (1 - n) ** 2)
    got = expected_counts(np.array([mu]), np.array([[j]]), np.array([[b]]), t)
    np.testing.assert_allclose(got, [want], rtol=1e-12)


@pytest.mark.parametrize("name", list(SETS))
def test_oracle_log_likelihoods_and_readme(name: str) -> None:
    folder = dataset_path(name)
    splits, truth = load_benchmark_data(folder)
    assert truth is not None
    params = truth["parameters"]
    process = HawkesProcess(params["mu"], params["alpha"], params["beta"])
    readme = (folder / "README.md").read_text()
    assert "Apache-2.0" in readme and "CIKM 2022" in readme and "--alpha-convention jump" in readme
    for split, seqs in splits.items():
        for key, conv in (("ll_per_event", "full"), ("ll_per_event_easytpp", "easytpp")):
            assert truth["oracle"][split][key] == pytest.approx(process.log_likelihood_per_event(seqs, conv),
                                                               rel=1e-12)
        info, oracle = truth["splits"][split], truth["oracle"][split]
        row = (rf"\| {split} \| {info['sequences']} \| {info['events']:,} \| "
               rf"−{-oracle['ll_per_event']:.4f} \| −{-oracle['ll_per_event_easytpp']:.4f} \|")
        assert re.search(row, readme), row


@pytest.mark.parametrize("name", list(SETS))
def test_make_sh_rebuilds_the_files(name: str, tmp_path: Path) -> None:
    shipped = dataset_path(name)
    copy = tmp_path / name
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("*.json"))
    script = (copy / "make.sh").read_text()
    assert "--alpha-convention jump" in script and "--window 100" in script and "--split 0.6,0.2,0.2" in script
    nde = Path(sys.executable).with_name("nde")
    subprocess.run(["sh", str(copy / "make.sh")], check=True, capture_output=True,
                   env={"PATH": f"{nde.parent}:/usr/bin:/bin"})
    assert_same_json_files(copy, shipped)
