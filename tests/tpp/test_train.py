"""tpp.train: length-bucketed batches (a partition per epoch, regrouped by seed, less padding) and fitting
with them to the truth of a known process."""

from __future__ import annotations

import numpy as np
import pytest

from tpp.data import HawkesProcess
from tpp.models.hawkes import HawkesModel
from tpp.train import LengthBucketedBatches, evaluate_log_likelihood, fit_model


def test_buckets_partition_the_sequences_every_epoch_and_pad_less() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=503)
    buckets = LengthBucketedBatches(lengths, batch_size=16, pool=4)
    groupings = []
    for seed in (0, 1):
        buckets.set_epoch(seed)
        batches = [buckets[i] for i in range(len(buckets))]
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(503))                     # every sequence once
        assert len(buckets) == -(-503 // 16) and all(len(b) == 16 for b in batches[:-1])
        # within each pool of 4 batches the lengths are sorted
        for p in range(0, len(batches), 4):
            pool_lengths = np.concatenate([lengths[b] for b in batches[p:p + 4]])
            assert (np.diff(pool_lengths) >= 0).all()
        groupings.append({tuple(sorted(b)) for b in batches})
        padded = sum(len(b) * lengths[b].max() for b in batches)
        random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(rng.permutation(503), len(batches)))
        assert padded < 0.8 * random_padded
    assert groupings[0] != groupings[1]                                       # regrouped per epoch


def test_fit_with_buckets_reaches_the_truth() -> None:
    process = HawkesProcess([0.3, 0.2], [[0.3, 0.1], [0.2, 0.2]], 1.2)
    train = process.simulate(40, (0.0, 40.0), seed=0)
    dev = process.simulate(10, (0.0, 40.0), seed=1)
    model = HawkesModel(2)
    result = fit_model(model, train, dev, convention="full", epochs=15, batch_size=10, lr=0.05, device="cpu",
                       bucket_by_length=True)
    assert result.epochs_run == 15
    after = float(evaluate_log_likelihood(model, dev, "full").per_event())
    assert after == pytest.approx(process.log_likelihood_per_event(dev, "full"), abs=0.03)
