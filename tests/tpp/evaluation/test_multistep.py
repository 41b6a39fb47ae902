"""Multi-step generation: the incremental states, the law of the continuations, and :func:`evaluate_multistep`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from tpp.data.batch import TimeScaler, make_batch
from tpp.data.sequences import EventSequences
from tpp.data.simulators import HawkesProcess
from tpp.evaluation.multistep import Continuations, evaluate_multistep, generate, sample_continuations, split_histories
from tpp.models.base import HistoryState, TPPModel
from tpp.models.hawkes import HawkesModel
from tpp.models.intensity_free import IntensityFree
from tpp.models.nhp import NHP
from tpp.models.rmtpp import RMTPP
from tpp.models.sahp import SAHP, SAHPCache
from tpp.models.thp import THP, THPWithBaseline, TransformerCache
from tpp.models.time_mark import LogNormMixTimeMark, RMTPPTimeMark, THPTimeMark

PROCESS = HawkesProcess([0.3, 0.2], [[0.5, 0.3], [0.2, 0.4]], [[2.0, 1.0], [1.5, 2.5]])


def history_seqs() -> EventSequences:
    """Two histories: one ending in a burst of mark-0 events (strong excitation at the cut), one quiet."""
    times = [np.array([0.3, 2.0, 5.1, 5.4, 5.5, 5.6]), np.array([0.5, 1.1, 4.0])]
    marks = [np.array([1, 0, 0, 0, 0, 0]), np.array([0, 1, 1])]
    return EventSequences(times, marks, 2, np.array([[0.0, 5.6], [0.0, 6.0]]))


def oracle_continuations(process: HawkesProcess, times: np.ndarray, marks: np.ndarray, n_events: int,
                         n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: Ogata thinning of ``n_events`` events after the history, vectorised over samples,
    the intensity summed directly over all past events (no recursion): ``(gaps [S, N], marks [S, N])``."""
    rng = np.random.default_rng(seed)
    mu, alpha, beta = process.mu, process.alpha, process.beta
    ev_t = np.tile(times, (n_samples, 1))
    ev_m = np.tile(marks, (n_samples, 1))
    gaps, out_m = np.zeros((n_samples, n_events)), np.zeros((n_samples, n_events), dtype=np.int64)

    def intensity(t: np.ndarray, strictly_before: bool) -> np.ndarray:
        lag = t[:, None] - ev_t                                                     # [S, n]
        past = lag > 0 if strictly_before else lag >= 0
        a, b = alpha[:, ev_m], beta[:, ev_m]                                        # [K, S, n]
        terms = a * b * np.exp(-b * np.where(past, lag, 0.0))
        return mu + np.where(past, terms, 0.0).sum(-1).T                            # [S, K]

    for k in range(n_events):
        last = ev_t[:, -1].copy()
        now = last.copy()
        done = np.zeros(n_samples, dtype=bool)
        new_t, new_m = np.zeros(n_samples), np.zeros(n_samples, dtype=np.int64)
        while not done.all():
            bound = intensity(now, strictly_before=False).sum(-1)                   # non-increasing afterwards
            cand = now + rng.standard_exponential(n_samples) / bound
            lam = intensity(cand, strictly_before=True)
            cum = lam.cumsum(-1)
            u = rng.random(n_samples) * bound
            mark = (cum <= u[:, None]).sum(-1)
            accept = ~done & (mark < len(mu))
            new_t[accept], new_m[accept] = cand[accept], mark[accept]
            done |= accept
            now = np.where(done, now, cand)
        gaps[:, k], out_m[:, k] = new_t - last, new_m
        ev_t = np.concatenate([ev_t, new_t[:, None]], axis=1)
        ev_m = np.concatenate([ev_m, new_m[:, None]], axis=1)
    return gaps, out_m


def chi2_marks(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """p-value of the chi-square test that two samples of marks in [0, k) share one law."""
    table = np.stack([np.bincount(a, minlength=k), np.bincount(b, minlength=k)])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table)[1])


# ----------------------------------------------------------------------------------------------- Hawkes vs oracle


def test_hawkes_continuations_match_the_oracle_in_law() -> None:
    """Exact Hawkes model (superposition, O(1) state) vs the independent thinning oracle: each of the first five
    gaps (KS), the marks of steps 1, 3, 5 (chi-square) and the number of events within 1.5 time units (chi-square),
    for a history ending in a burst. The same comparison rejects a continuation that forgets the burst."""
    torch.manual_seed(0)
    model = HawkesModel.from_process(PROCESS)
    seqs = history_seqs().subset([0])
    S, N = 3000, 5
    c = sample_continuations(model, make_batch(seqs, dtype=torch.float64), N, S)
    gaps, marks = c.gaps[:, 0].numpy(), c.marks[:, 0].numpy()
    ref_g, ref_m = oracle_continuations(PROCESS, seqs.times[0], seqs.marks[0], N, S, seed=1)
    for k in range(N):
        assert stats.ks_2samp(gaps[:, k], ref_g[:, k]).pvalue > 1e-3, k
    for k in (0, 2, 4):
        assert chi2_marks(marks[:, k], ref_m[:, k], 2) > 1e-3, k
    count = (np.cumsum(gaps, 1) < 1.5).sum(1)
    ref_count = (np.cumsum(ref_g, 1) < 1.5).sum(1)
    assert chi2_marks(count, ref_count, N + 1) > 1e-3
    assert 0.5 < count.mean() < N - 0.5                                          # the count is informative
    # power: the continuation that forgets the burst (only the last event is kept) is rejected
    forgetful = oracle_continuations(PROCESS, seqs.times[0][-1:], seqs.marks[0][-1:], 1, S, seed=2)[0]
    assert stats.ks_2samp(forgetful[:, 0], ref_g[:, 0]).pvalue < 1e-6


def test_first_predicted_event_is_after_the_cut() -> None:
    """Unlike EasyTPP's multi-step output, step 1 is a new event after the last observed one: its gap has the law
    of the next gap (not 0, not the last observed gap)."""
    torch.manual_seed(1)
    model = HawkesModel.from_process(PROCESS)
    seqs = history_seqs()
    c = sample_continuations(model, make_batch(seqs, dtype=torch.float64), 3, 500)
    assert (c.gaps > 0).all()
    assert torch.equal(c.start, torch.tensor([5.6, 4.0], dtype=torch.float64))
    assert (c.times[..., 0] > c.start).all()
    assert (torch.diff(c.times, dim=-1) > 0).all()


# ----------------------------------------------------------------------------------------------- fast == generic


def small_model(name: str) -> TPPModel:
    torch.manual_seed(4)
    if name == "nhp":
        model: TPPModel = NHP(2, hidden_size=8)
    elif name == "rmtpp":
        model = RMTPP(2, hidden_size=8, embedding_size=4)
        with torch.no_grad():
            model.w.fill_(0.3)
    elif name == "rmtpp_gru":
        model = RMTPP(2, hidden_size=8, embedding_size=4, cell="gru")
    elif name == "intensity_free":
        model = IntensityFree(2, hidden_size=8, embedding_size=4, num_components=3)
    elif name == "thp":
        model = THP(2, d_model=8, num_heads=2, num_layers=2)
    elif name == "lnm_tm":
        model = LogNormMixTimeMark(2, hidden_size=8, embedding_size=4, num_components=3)
    elif name == "rmtpp_tm":
        model = RMTPPTimeMark(2, hidden_size=8, embedding_size=4)
        with torch.no_grad():
            model.w.fill_(0.3)
    elif name == "thp_tm":
        model = THPTimeMark(2, d_model=8, num_heads=2, num_layers=2)
    elif name == "sahp":
        model = SAHP(2, d_model=8, num_heads=2, num_layers=2, layer_norm=True)
    elif name == "thp_baseline":
        model = THPWithBaseline(2, d_model=8, num_heads=2, num_layers=1, dim_feedforward=12)
    elif name == "hawkes_full":
        model = HawkesModel.from_process(PROCESS, decay="full")
    elif name == "hawkes_shared":
        model = HawkesModel.from_process(HawkesProcess([0.3, 0.2], [[0.5, 0.3], [0.2, 0.4]], 1.5))
    else:
        raise AssertionError(name)
    with torch.no_grad():                                           # move the weights away from their small init
        for p in model.parameters():
            if p.dim() > 1 and not isinstance(model, HawkesModel):
                p.mul_(3.0)
    return model.double().eval()


FAST = ["nhp", "rmtpp", "rmtpp_gru", "intensity_free", "thp", "thp_baseline", "thp_tm", "lnm_tm",
        "rmtpp_tm", "sahp", "hawkes_full", "hawkes_shared"]


def _close(a: Any, b: Any) -> None:
    if isinstance(a, TransformerCache | SAHPCache):
        # a cache advanced in place keeps the shorter rows' padding in the middle, a fresh encoding at the end:
        # compare the real positions; THP's first thinning horizon is a tuning choice, not part of the state
        for x, y in zip(a.keys + a.values, b.keys + b.values, strict=True):
            _close(x[~a.padding], y[~b.padding])
        _close(a.state, b.state)
        _close(a.last_time if isinstance(a, TransformerCache) else a.lengths,
               b.last_time if isinstance(b, TransformerCache) else b.lengths)
    elif isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    elif a is None:
        assert b is None
    else:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", FAST)
def test_fast_state_updates_equal_re_encoding(name: str) -> None:
    """``advance(encode(history), gap, mark)`` equals ``encode(history + event)`` (deterministic), and the generic
    history extension builds the same batch as :func:`make_batch` of the extended sequences."""
    model = small_model(name)
    seqs = history_seqs()
    batch = make_batch(seqs, dtype=torch.float64)
    gaps = torch.tensor([0.7, 0.05], dtype=torch.float64)
    marks = torch.tensor([1, 0])
    extended = EventSequences([np.append(t, t[-1] + g) for t, g in zip(seqs.times, gaps.tolist(), strict=True)],
                              [np.append(m, k) for m, k in zip(seqs.marks, marks.tolist(), strict=True)], 2,
                              np.array([[0.0, t[-1] + g] for t, g in zip(seqs.times, gaps.tolist(), strict=True)]))
    ext_batch = make_batch(extended, dtype=torch.float64)
    state = model.advance(model.encode(batch), gaps, marks)
    _close(state, model.encode(ext_batch))
    generic = TPPModel.advance(model, TPPModel.encode(model, batch), gaps, marks)
    assert isinstance(generic, HistoryState)
    for field in ("marks", "mask", "lengths"):
        assert torch.equal(getattr(generic.batch, field), getattr(ext_batch, field)), field
    for field in ("times", "gaps"):            # make_batch recomputes the new gap as (t + g) - t: rounding only
        torch.testing.assert_close(getattr(generic.batch, field), getattr(ext_batch, field), rtol=0, atol=1e-14)
    _close(model.encode(generic.batch), state)


@pytest.mark.parametrize("name", ["nhp", "rmtpp", "intensity_free", "thp", "thp_tm", "lnm_tm", "rmtpp_tm",
                                  "sahp", "hawkes_full"])
def test_fast_path_equals_generic_default_in_law(name: str) -> None:
    """The model's O(1) updates and the generic re-encoding give continuations of one law: KS on each of three
    gaps and chi-square on the step-3 marks, per history (different seeds: equality in law, not of draws)."""
    model = small_model(name)
    batch = make_batch(history_seqs(), dtype=torch.float64)
    S, N = 1500, 3
    torch.manual_seed(5)
    fast = sample_continuations(model, batch, N, S)
    torch.manual_seed(6)
    slow = sample_continuations(model, batch, N, S, incremental=False)
    for b in range(2):
        for k in range(N):
            assert stats.ks_2samp(fast.gaps[:, b, k].numpy(), slow.gaps[:, b, k].numpy()).pvalue > 1e-3, (b, k)
        assert chi2_marks(fast.marks[:, b, 2].numpy(), slow.marks[:, b, 2].numpy(), 2) > 1e-3


@pytest.mark.parametrize("name", ["nhp", "thp"])
def test_later_steps_pass_the_time_rescaling_test(name: str) -> None:
    """Step 3 of each continuation, given the history and that continuation's steps 1-2: its compensator is
    Exp(1) (the model's own 64-node quadrature of its intensity; KS). THP runs its key-value cache."""
    torch.manual_seed(7)
    model: Any = NHP(2, hidden_size=8) if name == "nhp" else THP(2, d_model=8, num_heads=2, num_layers=1)
    model = model.double().eval()
    seqs = history_seqs().subset([0])
    S, N = 1500, 3
    c = sample_continuations(model, make_batch(seqs, dtype=torch.float64), N, S)
    t = c.times[:, 0].numpy()
    hist_t, hist_m = seqs.times[0], seqs.marks[0]
    paths = EventSequences([np.concatenate([hist_t, row[:2]]) for row in t],
                           [np.concatenate([hist_m, row[:2]]) for row in c.marks[:, 0].numpy()], 2,
                           np.array([[0.0, float(row[1])] for row in t]))
    batch = make_batch(paths, dtype=torch.float64)
    gaps = torch.zeros(1, *batch.times.shape, dtype=torch.float64)
    gaps[0, :, -1] = c.gaps[:, 0, 2]
    comp = model.next_event_compensator(batch, gaps)[0, :, -1].numpy()
    assert stats.kstest(comp, "expon").pvalue > 1e-3
    # power: the step-3 gaps scaled by 2 are rejected
    gaps[0, :, -1] *= 2
    wrong = model.next_event_compensator(batch, gaps)[0, :, -1].numpy()
    assert stats.kstest(wrong, "expon").pvalue < 1e-6


def test_continuations_end_when_the_model_gives_no_next_event() -> None:
    """RMTPP with w < 0: P(no next event) = exp(-e^c / |w|); ended draws stay ended (inf, -1)."""
    torch.manual_seed(8)
    model = RMTPP(2, hidden_size=4, embedding_size=2).double().eval()
    with torch.no_grad():
        model.w.fill_(-1.5)
    seqs = history_seqs()
    batch = make_batch(seqs, dtype=torch.float64)
    S = 4000
    c = sample_continuations(model, batch, 4, S)
    with torch.no_grad():
        h, _ = model.encode(batch)
        p_end = torch.exp(-torch.exp(model.ground(h).squeeze(-1)) / 1.5).numpy()
    ended = ~torch.isfinite(c.gaps)
    share = ended[:, :, 0].double().mean(0).numpy()
    assert np.all(np.abs(share - p_end) < 4 * np.sqrt(p_end * (1 - p_end) / S) + 1e-3)
    assert 0.05 < p_end.min() and p_end.max() < 0.95                                     # a real test
    assert (ended[..., 1:] >= ended[..., :-1]).all()
    assert torch.equal(c.marks[ended], torch.full_like(c.marks[ended], -1))
    assert (c.marks[~ended] >= 0).all()


# ----------------------------------------------------------------------------------------------- evaluation


def test_evaluate_multistep_on_a_poisson_process_matches_closed_forms() -> None:
    """A Hawkes model with α ≈ 0 is a Poisson process of rate Λ = Σμ: the k-th event after the cut is Gamma(k, Λ),
    so the RMSE of the (mean) prediction at step k is sqrt(k) / Λ, and marks are i.i.d. with p ∝ μ, so the
    accuracy of the modal mark is max μ / Λ."""
    mu = np.array([0.6, 0.3, 0.1])
    process = HawkesProcess(mu, np.zeros((3, 3)), 1.0)
    seqs = process.simulate(400, 60.0, seed=3)
    model = HawkesModel.from_process(process)
    scores = evaluate_multistep(model, seqs, horizon=4, n_samples=200, seed=0, dtype=torch.float64)
    assert scores["n_sequences"] + scores["n_left_out"] == 400 and scores["n_sequences"] > 350
    steps = np.arange(1, 5)
    np.testing.assert_allclose(scores["rmse_by_step"], np.sqrt(steps) / mu.sum(), rtol=0.12)
    np.testing.assert_allclose(scores["accuracy_by_step"], mu.max() / mu.sum(), atol=0.08)
    assert scores["ended_share_by_step"] == [0.0] * 4
    # 4 predicted and 4 true events per sequence: OTD lies between 0 and 8 C (all deleted and inserted)
    assert 0 < scores["otd_point"] < 8 * scores["otd_cost"] and 0 < scores["otd_mean"] < 8 * scores["otd_cost"]
    assert 0 <= scores["tmap"] <= 1
    assert scores["otd_cost"] == pytest.approx(1 / mu.sum(), rel=0.1)            # the mean gap


def test_evaluate_multistep_true_model_beats_a_wrong_one() -> None:
    """Bursty data (self-excitation 0.7, decay 5): the true Hawkes model predicts the next marks (the mark of the
    burst) far better than a Poisson process of the same stationary rates, and places events within the T-mAP
    horizon, which the Poisson forecasts (one event per mean gap) miss."""
    bursty = HawkesProcess([0.1, 0.1], [[0.7, 0.1], [0.1, 0.7]], 5.0)
    seqs = bursty.simulate(200, 100.0, seed=4)
    true = evaluate_multistep(HawkesModel.from_process(bursty), seqs, horizon=5, n_samples=100, seed=0,
                              dtype=torch.float64)
    poisson = HawkesModel.from_process(HawkesProcess(bursty.stationary_rates, np.zeros((2, 2)), 1.0))
    wrong = evaluate_multistep(poisson, seqs, horizon=5, n_samples=100, seed=0, dtype=torch.float64,
                               otd_cost=true["otd_cost"], tmap_horizon=true["tmap_horizon"],
                               tmap_deltas=true["tmap_deltas"])
    assert true["accuracy_by_step"][0] > wrong["accuracy_by_step"][0] + 0.1
    assert true["tmap"] > wrong["tmap"] + 0.1
    assert sum(true["rmse_by_step"]) < sum(wrong["rmse_by_step"])


def test_time_scaler_reports_in_data_units() -> None:
    """A Hawkes model of the rescaled process (μ c, α, β c) evaluated through ``time_scaler`` gives the numbers of
    the original model on the original data (same seed: the superposition draws scale exactly)."""
    c = 2.5
    seqs = PROCESS.simulate(60, 30.0, seed=5)
    scaled = HawkesProcess(PROCESS.mu * c, PROCESS.alpha, PROCESS.beta * c)
    kw: dict[str, Any] = dict(horizon=3, n_samples=30, seed=2, dtype=torch.float64, otd_cost=0.7,
                              tmap_horizon=1.5, tmap_deltas=[0.3, 0.9])
    direct = evaluate_multistep(HawkesModel.from_process(PROCESS), seqs, **kw)
    via = evaluate_multistep(HawkesModel.from_process(scaled), seqs, time_scaler=TimeScaler(c), **kw)
    for key in ("rmse", "otd_point", "otd_mean", "otd_cost", "tmap", "tmap_horizon", "accuracy"):
        assert via[key] == pytest.approx(direct[key], rel=1e-9), key
    np.testing.assert_allclose(via["rmse_by_step"], direct["rmse_by_step"], rtol=1e-9)
    np.testing.assert_allclose(via["tmap_deltas"], [0.3, 0.9], rtol=1e-12)
    assert via["time_scale"] == c


def test_split_histories_and_generate() -> None:
    seqs = history_seqs()
    hist, ft, fm, kept = split_histories(seqs, 3)
    assert kept.tolist() == [0]                                                   # the 3-event sequence is left out
    np.testing.assert_array_equal(hist.times[0], [0.3, 2.0, 5.1])
    np.testing.assert_array_equal(ft, [[5.4, 5.5, 5.6]])
    np.testing.assert_array_equal(fm, [[0, 0, 0]])
    assert hist.windows is not None and hist.windows[0].tolist() == [0.0, 5.1]
    with pytest.raises(ValueError, match="n_events"):
        split_histories(seqs, 6)
    model = small_model("nhp")
    a = generate(model, seqs, 2, 3, seed=11, batch_size=1, dtype=torch.float64)
    b = generate(model, seqs, 2, 3, seed=11, batch_size=1, dtype=torch.float64)
    assert isinstance(a, Continuations) and a.gaps.shape == (3, 2, 2)
    assert torch.equal(a.gaps, b.gaps) and torch.equal(a.marks, b.marks)        # seeded
    assert not model.training


def test_bad_arguments() -> None:
    model = small_model("hawkes_shared")
    batch = make_batch(history_seqs(), dtype=torch.float64)
    with pytest.raises(ValueError, match="n_events"):
        sample_continuations(model, batch, 0, 2)
    with pytest.raises(ValueError, match="n_samples"):
        sample_continuations(model, batch, 2, 0)
    with pytest.raises(ValueError, match="model"):
        sample_continuations(torch.nn.Linear(1, 1), batch, 2, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="horizon"):
        evaluate_multistep(model, history_seqs(), horizon=0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        model.repeat_state(model.encode(batch), 0)
    with pytest.raises(ValueError, match="marks"):
        sample_continuations(HawkesModel(3).double(), batch, 2, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["nhp", "rmtpp", "intensity_free", "hawkes_full"])
def test_generation_on_cuda(name: str) -> None:
    model = small_model(name).float().to("cuda")
    batch = make_batch(history_seqs(), device="cuda")
    torch.manual_seed(0)
    c = sample_continuations(model, batch, 3, 2000)
    assert c.gaps.device.type == "cuda" and c.gaps.shape == (2000, 2, 3)
    assert (c.gaps > 0).all() and (c.marks >= 0).all()
    slow = sample_continuations(model, batch, 3, 2000, incremental=False)
    for b in range(2):
        assert stats.ks_2samp(c.gaps[:, b, 2].cpu().numpy(), slow.gaps[:, b, 2].cpu().numpy()).pvalue > 1e-3
    cpu = model.to("cpu")
    assert math.isfinite(evaluate_multistep(cpu, history_seqs(), horizon=2, n_samples=10)["rmse"])
