"""Padding and masking of EventBatch, the batch iterator, and TimeScaler's unit corrections."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tpp.data import EventBatch, EventSequences, TimeScaler, TPPDataError, batches, make_batch


def three() -> EventSequences:
    return EventSequences([[0.5, 1.0, 2.5], [4.0], [1.0, 1.0 + 1e-9]], [[2, 0, 1], [1], [0, 2]], 3, ids=[5, 6, 7])


def test_make_batch_pads_and_masks() -> None:
    batch = make_batch(three())
    assert isinstance(batch, EventBatch)
    assert (batch.batch_size, batch.max_len, batch.num_events, batch.num_marks) == (3, 3, 6, 3)
    assert batch.times.dtype == batch.gaps.dtype == batch.window_start.dtype == torch.float32
    assert batch.marks.dtype == batch.lengths.dtype == batch.indices.dtype == torch.int64
    assert batch.mask.dtype == torch.bool
    assert batch.lengths.tolist() == [3, 1, 2] and batch.indices.tolist() == [0, 1, 2]
    assert batch.mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert torch.equal(batch.mask.sum(1), batch.lengths)
    # padding repeats the last time, has gap 0 and mark 0
    assert batch.times.tolist() == [[0.5, 1.0, 2.5], [4.0, 4.0, 4.0], [1.0, 1.0, 1.0]]
    assert batch.gaps[0].tolist() == [0.0, 0.5, 1.5]  # first gap 0: the window is unknown
    assert batch.gaps[1].tolist() == [0.0, 0.0, 0.0]
    assert batch.marks.tolist() == [[2, 0, 1], [1, 0, 0], [0, 2, 0]]
    assert torch.isnan(batch.window_start).all() and torch.isnan(batch.window_end).all() and not batch.has_windows
    # gaps are differences in float64, then cast: a 1e-9 gap at time 1 survives float32
    assert batch.gaps[2, 1].item() == pytest.approx(1e-9, rel=1e-6)
    assert (torch.diff(batch.times, dim=1) >= 0).all()


def test_padding_never_leaks_into_a_masked_sum() -> None:
    seqs = three()
    batch = make_batch(seqs)
    poisoned = batch.times.masked_fill(~batch.mask, float("nan"))
    assert not torch.isnan(poisoned[batch.mask]).any()
    per_seq = torch.where(batch.mask, batch.gaps, torch.zeros(())).sum(1)
    expected = [t[-1] - t[0] for t in seqs.times]
    assert per_seq.double().tolist() == pytest.approx(expected, rel=1e-6)


def test_make_batch_windows_indices_dtype_and_device() -> None:
    seqs = EventSequences([[0.5, 1.0, 2.5], [4.0]], [[2, 0, 1], [1]], 3, windows=[[0.0, 3.0], [1.0, 5.0]])
    batch = make_batch(seqs, indices=[1, 0, 1], dtype=torch.float64)
    assert batch.indices.tolist() == [1, 0, 1] and batch.lengths.tolist() == [1, 3, 1]
    assert batch.times.dtype == torch.float64 and batch.has_windows
    assert batch.window_start.tolist() == [1.0, 0.0, 1.0] and batch.window_end.tolist() == [5.0, 3.0, 5.0]
    assert batch.gaps[:, 0].tolist() == [3.0, 0.5, 3.0]  # time since the window start
    moved = batch.to("cpu", dtype=torch.float32)
    assert moved.times.dtype == torch.float32 and moved.marks.dtype == torch.int64 and moved.mask.dtype == torch.bool
    assert moved.num_marks == 3 and torch.equal(moved.lengths, batch.lengths)
    with pytest.raises(ValueError, match="at least one sequence"):
        make_batch(seqs, indices=[])
    with pytest.raises(IndexError, match="index 2 out of range for 2 sequences"):
        make_batch(seqs, indices=[0, 2])


def test_batches_cover_every_sequence_once() -> None:
    sizes = range(1, 11)
    seqs = EventSequences([np.arange(1.0, n + 1) for n in sizes], [np.zeros(n, dtype=int) for n in sizes], 1)
    plain = list(batches(seqs, 4))
    assert [b.batch_size for b in plain] == [4, 4, 2]
    assert torch.cat([b.indices for b in plain]).tolist() == list(range(10))
    shuffled = [b.indices.tolist() for b in batches(seqs, 4, shuffle=True, seed=3)]
    again = [b.indices.tolist() for b in batches(seqs, 4, shuffle=True, seed=3)]
    other = [b.indices.tolist() for b in batches(seqs, 4, shuffle=True, seed=4)]
    assert shuffled == again and shuffled != other
    assert sorted(i for batch in shuffled for i in batch) == list(range(10))
    assert [b.batch_size for b in batches(seqs, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(seqs, 0))


def test_time_scaler_fit_round_trip_and_state() -> None:
    seqs = EventSequences([[0.0, 2.0, 3.0], [1.0], [5.0, 11.0]], [[0, 0, 0], [0], [0, 0]], 1,
                          windows=[[0.0, 4.0], [0.0, 2.0], [4.0, 12.0]])
    scaler = TimeScaler().fit(seqs)
    assert scaler.scale == pytest.approx((2.0 + 1.0 + 6.0) / 3)  # gaps within sequences only
    scaled = scaler.transform(seqs)
    assert scaled.windows is not None and scaled.windows[2].tolist() == pytest.approx([4 / 3, 4.0])
    back = scaler.inverse_transform(scaled)
    for a, b in zip(seqs.times, back.times, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-15)
    np.testing.assert_allclose(back.windows, seqs.windows, rtol=1e-15)
    assert back.ids == seqs.ids and all(np.array_equal(a, b) for a, b in zip(seqs.marks, back.marks, strict=True))
    assert scaler.inverse_times(scaler.transform_times(7.0)) == pytest.approx(7.0)
    assert torch.allclose(scaler.inverse_times(torch.tensor([1.0, 2.0])), torch.tensor([3.0, 6.0]))
    restored = TimeScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored.scale == scaler.scale
    assert TimeScaler().transform(seqs).times[0].tolist() == [0.0, 2.0, 3.0]  # the default is the identity
    with pytest.raises(TPPDataError, match="no sequence has two events"):
        TimeScaler().fit(EventSequences([[1.0], [2.0]], [[0], [0]], 1))
    with pytest.raises(TPPDataError, match="every inter-event gap is 0"):
        TimeScaler().fit(EventSequences([[1.0, 1.0]], [[0, 0]], 1))
    with pytest.raises(ValueError, match="positive finite"):
        TimeScaler(0.0)
    with pytest.raises(ValueError, match="not a TimeScaler state"):
        TimeScaler.from_dict({"type": "Other", "scale": 1.0})


def poisson_loglik(n: int, rate: float, start: float, end: float) -> float:
    """Exact log-likelihood of n events of a homogeneous Poisson process of this rate on [start, end]."""
    return n * math.log(rate) - rate * (end - start)


def test_log_likelihood_correction_on_a_poisson_process() -> None:
    rate, horizon = 2.5, 40.0
    rng = np.random.default_rng(1)
    times = []
    for _ in range(5):
        n = rng.poisson(rate * horizon)
        times.append(np.sort(rng.uniform(0.0, horizon, max(n, 2))))
    seqs = EventSequences(times, [np.zeros(len(t), dtype=np.int64) for t in times], 1,
                          windows=[[0.0, horizon]] * len(times))
    scaler = TimeScaler().fit(seqs)
    c = scaler.scale
    assert c == pytest.approx(1 / rate, rel=0.2)  # the mean gap estimates 1 / rate
    scaled = scaler.transform(seqs)
    # compute both log-likelihoods from padded batches: padding must not count as events
    batch, batch_s = make_batch(seqs, dtype=torch.float64), make_batch(scaled, dtype=torch.float64)
    n = batch.mask.sum(1).double()
    ll = n * math.log(rate) - rate * (batch.window_end - batch.window_start)
    ll_s = n * math.log(rate * c) - rate * c * (batch_s.window_end - batch_s.window_start)  # rate λc in s = t / c
    for i, t in enumerate(times):
        assert ll[i].item() == pytest.approx(poisson_loglik(len(t), rate, 0.0, horizon), rel=1e-12)
    corrected = scaler.inverse_log_likelihood(ll_s, n)
    torch.testing.assert_close(corrected, ll, rtol=1e-12, atol=1e-9)
    assert not torch.allclose(ll_s, ll)  # the correction is not a no-op
    # per event: the exponential density of a gap, f_t(g) = λ exp(-λ g), and f_s(g / c) with rate λc
    g = batch.gaps[batch.mask][1:]
    log_f_t = math.log(rate) - rate * g
    log_f_s = math.log(rate * c) - rate * c * scaler.transform_times(g)
    torch.testing.assert_close(scaler.inverse_log_density(log_f_s), log_f_t, rtol=1e-12, atol=1e-12)
