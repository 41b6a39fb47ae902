"""Exact simulators and log-likelihoods of tpp.data.simulators, each checked against an independent truth.

Truths: brute-force O(n²) sums of the intensity, scipy quadrature of the compensator, the time-rescaling
theorem (Kolmogorov–Smirnov against Exp(1)), the stationary rates (I - α)^{-1} μ, Poisson counts.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import integrate, stats

from tpp.data import EventSequences, TPPDataError
from tpp.data.simulators import HawkesProcess, PoissonProcess, SelfCorrectingProcess

MU = [0.4, 0.25]
ALPHA = [[0.3, 0.2], [0.25, 0.35]]           # spectral radius 0.55
BETA = [[1.5, 3.0], [0.8, 2.0]]


@pytest.fixture(scope="module")
def hawkes() -> HawkesProcess:
    return HawkesProcess(MU, ALPHA, BETA)


@pytest.fixture(scope="module")
def short_seqs(hawkes: HawkesProcess) -> EventSequences:
    # A window that starts away from 0 and sequences short enough for quadrature.
    return hawkes.simulate(6, (2.0, 32.0), seed=3)


# ----------------------------------------------------------------------------------------------- references


def brute_intensity(h: HawkesProcess, s: float, t: np.ndarray, m: np.ndarray) -> np.ndarray:
    """[K] intensity at s from the events t_j < s, by a direct sum."""
    lam = h.mu.copy()
    for tj, mj in zip(t, m, strict=True):
        if tj < s:
            lam += h.alpha[:, mj] * h.beta[:, mj] * np.exp(-h.beta[:, mj] * (s - tj))
    return lam


def brute_compensator(h: HawkesProcess, a: float, b: float, t: np.ndarray, m: np.ndarray) -> float:
    """∫_a^b Σ_k λ_k in closed form, summing over every event before b (O(n) per call)."""
    total = h.mu.sum() * (b - a)
    for tj, mj in zip(t, m, strict=True):
        if tj < b:
            lo = max(a, tj)
            total += np.sum(h.alpha[:, mj] * (np.exp(-h.beta[:, mj] * (lo - tj)) - np.exp(-h.beta[:, mj] * (b - tj))))
    return float(total)


def brute_hawkes_ll(h: HawkesProcess, t: np.ndarray, m: np.ndarray, start: float, end: float, convention: str
                    ) -> float:
    logs = [np.log(brute_intensity(h, t[i], t, m)[m[i]]) for i in range(len(t))]   # O(n²)
    if convention == "full":
        return float(np.sum(logs)) - brute_compensator(h, start, end, t, m)
    return float(np.sum(logs[1:])) - brute_compensator(h, t[0], t[-1], t, m)


def quad_compensator(intensity, a: float, b: float, breaks: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """∫_a^b intensity by adaptive quadrature, piece by piece between the events (where it jumps)."""
    edges = np.unique(np.concatenate([[a], breaks[(breaks > a) & (breaks < b)], [b]]))
    return float(sum(integrate.quad(intensity, lo, hi, epsabs=1e-12, epsrel=1e-12)[0]
                     for lo, hi in itertools.pairwise(edges)))


def rescaled_increments(process, seqs: EventSequences, per_mark: bool) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Compensator increments between consecutive events (per mark, or of the ground process): Exp(1).

    Exactly so in an infinite window; in a finite one the last, censored increment is missing, which biases the
    pooled complete increments towards small values by O(1 / events per sequence): use few long sequences.
    """
    out = []
    for comp, m in zip(process.compensator(seqs), seqs.marks, strict=True):
        if per_mark:
            for k in range(process.num_marks):
                out.append(np.diff(np.concatenate([[0.0], comp[m == k, k]])))
        else:
            out.append(np.diff(np.concatenate([[0.0], comp.sum(axis=1)])))
    return np.concatenate(out)


# ----------------------------------------------------------------------------------------------- Hawkes likelihood


@pytest.mark.parametrize("convention", ["full", "easytpp"])
def test_hawkes_loglik_matches_bruteforce(hawkes: HawkesProcess, short_seqs: EventSequences, convention: str) -> None:
    ll = hawkes.log_likelihood(short_seqs, convention)
    assert ll.shape == (len(short_seqs),)
    for i, (t, m) in enumerate(zip(short_seqs.times, short_seqs.marks, strict=True)):
        start, end = short_seqs.windows[i]
        assert ll[i] == pytest.approx(brute_hawkes_ll(hawkes, t, m, start, end, convention), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("convention", ["full", "easytpp"])
def test_hawkes_loglik_matches_quadrature(hawkes: HawkesProcess, short_seqs: EventSequences, convention: str) -> None:
    ll = hawkes.log_likelihood(short_seqs, convention)
    for i, (t, m) in enumerate(zip(short_seqs.times, short_seqs.marks, strict=True)):
        start, end = short_seqs.windows[i]

        def total(s: float, t: np.ndarray = t, m: np.ndarray = m) -> float:
            return float(brute_intensity(hawkes, s, t, m).sum())

        events = np.log([brute_intensity(hawkes, t[j], t, m)[m[j]] for j in range(len(t))])
        if convention == "full":
            expected = events.sum() - quad_compensator(total, start, end, t)
        else:
            expected = events[1:].sum() - quad_compensator(total, t[0], t[-1], t)
        assert ll[i] == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_hawkes_compensator_and_intensity_match_quadrature(hawkes: HawkesProcess, short_seqs: EventSequences) -> None:
    t, m = short_seqs.times[0], short_seqs.marks[0]
    start = short_seqs.windows[0, 0]
    comp = hawkes.compensator(short_seqs)[0]
    assert comp.shape == (len(t), 2)
    for j in [0, len(t) // 2, len(t) - 1]:
        for k in range(2):
            expected = quad_compensator(lambda s, k=k: brute_intensity(hawkes, s, t, m)[k], start, t[j], t)
            assert comp[j, k] == pytest.approx(expected, rel=1e-8)
    grid = np.linspace(start, short_seqs.windows[0, 1], 37)
    np.testing.assert_allclose(hawkes.intensity(grid, (t, m)), [brute_intensity(hawkes, s, t, m) for s in grid],
                               rtol=1e-12)


def test_easytpp_convention_drops_first_event_and_survival_terms(hawkes: HawkesProcess,
                                                                 short_seqs: EventSequences) -> None:
    # full - easytpp = log λ_{m_1}(t_1) - Λ(start, t_1) - Λ(t_n, end): EasyTPP scores no first event and no
    # survival before the first or after the last event.
    full, easy = hawkes.log_likelihood(short_seqs, "full"), hawkes.log_likelihood(short_seqs, "easytpp")
    for i, (t, m) in enumerate(zip(short_seqs.times, short_seqs.marks, strict=True)):
        start, end = short_seqs.windows[i]
        first = np.log(hawkes.mu[m[0]])                                # nothing before the first event
        head = hawkes.mu.sum() * (t[0] - start)
        tail = brute_compensator(hawkes, t[-1], end, t, m)
        assert tail > 0
        assert full[i] - easy[i] == pytest.approx(first - head - tail, rel=1e-10, abs=1e-10)
    n = short_seqs.lengths
    assert hawkes.log_likelihood_per_event(short_seqs, "easytpp") == pytest.approx(easy.sum() / (n - 1).sum())
    assert hawkes.log_likelihood_per_event(short_seqs, "full") == pytest.approx(full.sum() / n.sum())


def test_full_convention_needs_windows_easytpp_does_not(hawkes: HawkesProcess, short_seqs: EventSequences) -> None:
    bare = EventSequences(short_seqs.times, short_seqs.marks, 2, source="bare.json")
    with pytest.raises(TPPDataError, match=r"bare\.json.*windows"):
        hawkes.log_likelihood(bare, "full")
    np.testing.assert_allclose(hawkes.log_likelihood(bare, "easytpp"), hawkes.log_likelihood(short_seqs, "easytpp"))
    with pytest.raises(ValueError, match="convention"):
        hawkes.log_likelihood(short_seqs, "easy")
    with pytest.raises(TPPDataError, match="marks"):
        HawkesProcess([1.0, 1.0, 1.0], np.zeros((3, 3)), 1.0).log_likelihood(short_seqs)


def test_true_parameters_score_higher_than_perturbed(hawkes: HawkesProcess) -> None:
    seqs = hawkes.simulate(200, (0.0, 100.0), seed=11)
    true = hawkes.log_likelihood_per_event(seqs)
    for alpha in (np.array(ALPHA) * 0.6, np.array(ALPHA) * 1.3):
        assert HawkesProcess(MU, alpha, BETA).log_likelihood_per_event(seqs) < true
    assert HawkesProcess(MU, ALPHA, 1.0).log_likelihood_per_event(seqs) < true


# ----------------------------------------------------------------------------------------------- Hawkes simulation


def test_hawkes_time_rescaling_is_exp1(hawkes: HawkesProcess) -> None:
    long = hawkes.simulate(3, (0.0, 2000.0), seed=5)
    for per_mark in (True, False):
        inc = rescaled_increments(hawkes, long, per_mark)
        assert inc.size > 3000
        assert stats.kstest(inc, "expon").pvalue > 0.01
    # The test has power: the compensator of a wrong model is far from Exp(1).
    wrong = HawkesProcess(MU, np.array(ALPHA) * 0.5, BETA)
    assert stats.kstest(rescaled_increments(wrong, long, True), "expon").pvalue < 1e-4


def test_hawkes_mean_counts_match_stationary_rates(hawkes: HawkesProcess) -> None:
    burn, end, n = 40.0, 340.0, 200
    seqs = hawkes.simulate(n, (0.0, end), seed=7)
    counts = np.array([[np.sum((t > burn) & (m == k)) for k in range(2)]
                       for t, m in zip(seqs.times, seqs.marks, strict=True)])
    expected = hawkes.stationary_rates * (end - burn)
    se = counts.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(counts.mean(axis=0) - expected) < 4 * se), (counts.mean(axis=0), expected, se)


def test_thinning_bound_is_never_exceeded(hawkes: HawkesProcess, short_seqs: EventSequences) -> None:
    rng = np.random.default_rng(0)
    t, m = short_seqs.times[0], short_seqs.marks[0]
    start, end = short_seqs.windows[0]
    nxt = np.append(t, end)
    for _ in range(300):
        s = rng.uniform(start, end) if rng.random() < 0.5 else rng.choice(t)   # also exactly at events
        bound = hawkes.intensity_upper_bound(s, (t, m))
        later = nxt[nxt > s]
        stop = later[0] if later.size else end
        for u in np.linspace(s, stop, 7)[1:]:                          # up to (the left limit at) the next event
            assert hawkes.intensity(u, (t[t <= s], m[t <= s])).sum() <= bound * (1 + 1e-12)
    # The simulator's own check at every candidate (raises AssertionError otherwise); same draws as without.
    checked = hawkes.simulate(50, (0.0, 40.0), seed=2, check_bound=True)
    plain = hawkes.simulate(50, (0.0, 40.0), seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(checked.times, plain.times, strict=True))


def test_hawkes_univariate_scalar_parameters() -> None:
    h = HawkesProcess(0.5, 0.6, 2.0)
    assert h.num_marks == 1 and h.stationary_rates == pytest.approx([1.25])
    seqs = h.simulate(20, 50.0, seed=0)
    assert seqs.num_marks == 1 and np.all(seqs.windows == [0.0, 50.0])
    t = seqs.times[0]
    assert h.intensity(t[-1] + 1.0, t)[0] == pytest.approx(brute_intensity(h, t[-1] + 1.0, t, 0 * seqs.marks[0])[0])


def test_hawkes_jump_size_parameterisation_and_unused_zero_decays() -> None:
    # EasyTPP-style parameters: the intensity jumps by alpha, and beta is 0 where alpha is 0.
    jump, beta = np.array([[0.4, 0.0], [0.0, 8.0]]), np.array([[1.0, 0.0], [0.0, 20.0]])
    h = HawkesProcess.from_jump_sizes([0.2, 0.2], jump, beta)
    np.testing.assert_allclose(h.alpha, [[0.4, 0.0], [0.0, 0.4]])
    t, m = np.array([1.0, 1.5]), np.array([0, 1])
    np.testing.assert_allclose(h.intensity(2.0, (t, m)), [0.2 + 0.4 * np.exp(-1.0), 0.2 + 8.0 * np.exp(-10.0)])
    seqs = h.simulate(5, 20.0, seed=0)
    assert np.all(np.isfinite(h.log_likelihood(seqs)))
    with pytest.raises(ValueError, match="beta"):
        HawkesProcess([0.2, 0.2], [[0.4, 0.1], [0.0, 0.4]], beta)


# ----------------------------------------------------------------------------------------------- Poisson


def test_poisson_counts_times_and_loglik() -> None:
    mu, (start, end), n = np.array([0.5, 1.5]), (1.0, 21.0), 400
    p = PoissonProcess(mu)
    seqs = p.simulate(n, (start, end), seed=4)
    counts = np.array([[np.sum(m == k) for k in range(2)] for m in seqs.marks])
    for k in range(2):
        lam = mu[k] * (end - start)
        assert abs(counts[:, k].mean() - lam) < 4 * np.sqrt(lam / n)
        dispersion = ((counts[:, k] - counts[:, k].mean()) ** 2).sum() / counts[:, k].mean()   # ~ χ²(n - 1)
        assert stats.chi2.sf(dispersion, n - 1) > 0.01 and stats.chi2.cdf(dispersion, n - 1) > 0.01
    assert stats.kstest((np.concatenate(seqs.times) - start) / (end - start), "uniform").pvalue > 0.01
    expected = [np.log(mu[m]).sum() - mu.sum() * (end - start) for m in seqs.marks]
    np.testing.assert_allclose(p.log_likelihood(seqs), expected, rtol=1e-12)
    expected_easy = [np.log(mu[m[1:]]).sum() - mu.sum() * (t[-1] - t[0]) for t, m in zip(seqs.times, seqs.marks,
                                                                                          strict=True)]
    np.testing.assert_allclose(p.log_likelihood(seqs, "easytpp"), expected_easy, rtol=1e-10)
    long = p.simulate(2, (0.0, 2000.0), seed=4)
    assert stats.kstest(rescaled_increments(p, long, per_mark=True), "expon").pvalue > 0.01


# ----------------------------------------------------------------------------------------------- self-correcting


def test_self_correcting_time_rescaling_and_rate() -> None:
    sc = SelfCorrectingProcess(mu=1.0, alpha=0.5)
    seqs = sc.simulate(3, (0.0, 800.0), seed=8)
    inc = rescaled_increments(sc, seqs, per_mark=False)
    assert inc.size > 3000
    assert stats.kstest(inc, "expon").pvalue > 0.01
    # Long-run rate μ / α, and more regular than Poisson: inter-event times' coefficient of variation below 1.
    gaps = np.concatenate([np.diff(t[t > 10]) for t in seqs.times])
    assert gaps.mean() == pytest.approx(sc.alpha / sc.mu, rel=0.05) and gaps.std() / gaps.mean() < 0.9
    wrong = SelfCorrectingProcess(mu=1.0, alpha=0.4)
    assert stats.kstest(rescaled_increments(wrong, seqs, per_mark=False), "expon").pvalue < 1e-4


@pytest.mark.parametrize("convention", ["full", "easytpp"])
def test_self_correcting_loglik_matches_quadrature(convention: str) -> None:
    probs = np.array([0.3, 0.7])
    sc = SelfCorrectingProcess(mu=0.8, alpha=0.6, mark_probs=probs)
    seqs = sc.simulate(4, (0.5, 12.0), seed=9)
    ll = sc.log_likelihood(seqs, convention)
    for i, (t, m) in enumerate(zip(seqs.times, seqs.marks, strict=True)):
        start, end = seqs.windows[i]

        def ground(s: float, t: np.ndarray = t) -> float:
            return float(np.exp(sc.mu * s - sc.alpha * np.sum(t < s)))

        events = np.array([sc.mu * t[j] - sc.alpha * j + np.log(probs[m[j]]) for j in range(len(t))])
        if convention == "full":
            expected = events.sum() - quad_compensator(ground, start, end, t)
        else:
            expected = events[1:].sum() - quad_compensator(ground, t[0], t[-1], t)
        assert ll[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(np.log(sc.intensity(t, t)[np.arange(len(t)), m]), events, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- common


@pytest.mark.parametrize("process", [PoissonProcess([1.0, 2.0]), HawkesProcess(MU, ALPHA, BETA),
                                     SelfCorrectingProcess(1.0, 0.5, [0.5, 0.5])], ids=repr)
def test_reproducible_by_seed(process) -> None:  # type: ignore[no-untyped-def]
    a = process.simulate(30, (0.0, 30.0), seed=123)
    b = process.simulate(30, (0.0, 30.0), seed=123)
    c = process.simulate(30, (0.0, 30.0), seed=124)
    d = process.simulate(30, (0.0, 30.0), seed=np.random.default_rng(123))
    for x in (b, d):
        assert all(np.array_equal(s, t) for s, t in zip(a.times, x.times, strict=True))
        assert all(np.array_equal(s, t) for s, t in zip(a.marks, x.marks, strict=True))
    assert not all(len(s) == len(t) and np.array_equal(s, t) for s, t in zip(a.times, c.times, strict=True))
    assert a.windows.shape == (30, 2) and np.all(a.windows == [0.0, 30.0])


@pytest.mark.parametrize(("make", "name"), [
    (lambda: PoissonProcess([1.0, -1.0]), "mu"),
    (lambda: PoissonProcess([0.0, 0.0]), "mu"),
    (lambda: HawkesProcess([1.0, np.nan], np.zeros((2, 2)), 1.0), "mu"),
    (lambda: HawkesProcess([1.0, 1.0], np.zeros((3, 3)), 1.0), "alpha"),
    (lambda: HawkesProcess([1.0, 1.0], -0.1 * np.ones((2, 2)), 1.0), "alpha"),
    (lambda: HawkesProcess([1.0, 1.0], 0.1 * np.ones((2, 2)), 0.0), "beta"),
    (lambda: HawkesProcess([1.0, 1.0], np.zeros((2, 2)), np.ones(2)), "beta"),
    (lambda: HawkesProcess([1.0, 1.0], [[0.6, 0.5], [0.5, 0.6]], 1.0), "spectral radius"),
    (lambda: SelfCorrectingProcess(mu=0.0), "mu"),
    (lambda: SelfCorrectingProcess(alpha=-1.0), "alpha"),
    (lambda: SelfCorrectingProcess(mark_probs=[0.5, 0.6]), "mark_probs"),
    (lambda: PoissonProcess(1.0).simulate(0, 1.0, seed=0), "n_seqs"),
    (lambda: PoissonProcess(1.0).simulate(2, (1.0, 1.0), seed=0), "window"),
    (lambda: PoissonProcess(1.0).simulate(2, 1.0, seed=None), "seed"),
    (lambda: HawkesProcess(1.0, 0.5, 1.0).simulate(2, 1.0, seed=0, max_events=0), "max_events"),
])
def test_parameter_validation(make, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=name):
        make()


def test_nonstationary_hawkes_warns_on_request_and_max_events() -> None:
    with pytest.warns(RuntimeWarning, match="spectral radius"):
        h = HawkesProcess(1.0, 1.2, 5.0, allow_nonstationary=True)
    with pytest.raises(ValueError, match="stationary"):
        _ = h.stationary_rates
    with pytest.raises(RuntimeError, match="max_events"):
        h.simulate(3, 100.0, seed=0, max_events=200)


def test_empty_sequences_raise_or_are_dropped_and_counted() -> None:
    p = PoissonProcess(0.05)
    with pytest.raises(TPPDataError, match="no event"):
        p.simulate(50, 5.0, seed=0)
    with pytest.warns(UserWarning, match=r"dropped \d+ of 50"):
        seqs = p.simulate(50, 5.0, seed=0, drop_empty=True)
    assert 0 < len(seqs) < 50 and seqs.ids == sorted(seqs.ids) and seqs.ids[-1] < 50
