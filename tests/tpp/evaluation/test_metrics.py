"""Next-event metrics and log-likelihood per event against a homogeneous Poisson model, where all are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tpp.data import PoissonProcess
from tpp.data.batch import EventBatch
from tpp.evaluation import evaluate_model, next_event_predictions
from tpp.models.base import LogLikelihood, TPPModel, check_convention, scored_events


class ExactPoisson(TPPModel):
    """λ_k(t) = μ_k: gaps Exp(Σμ), marks with probabilities μ / Σμ, independent of everything."""

    name = "exact_poisson"
    exact_compensator = True

    def __init__(self, mu: list[float]) -> None:
        super().__init__(len(mu))
        self.log_mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64).log())

    def log_likelihood(self, batch: EventBatch, convention: str = "easytpp") -> LogLikelihood:
        convention = check_convention(convention, batch)
        mu = self.log_mu.exp().to(batch.times.dtype)
        scored = scored_events(batch, convention)
        event = (mu.log()[batch.marks] * scored).sum(1)
        last = batch.times.gather(1, (batch.lengths - 1).unsqueeze(1)).squeeze(1)
        start, end = (batch.times[:, 0], last) if convention == "easytpp" else (batch.window_start, batch.window_end)
        return LogLikelihood(event, mu.sum() * (end - start), scored.sum(1))

    def intensity(self, batch: EventBatch, query_times: Tensor) -> Tensor:
        return self.log_mu.exp().to(query_times.dtype).expand(*query_times.shape, self.num_marks)

    def sample_next(self, batch: EventBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        mu = self.log_mu.exp()
        shape = (n_samples, *batch.times.shape)
        gaps = torch.empty(shape, dtype=batch.times.dtype).exponential_() / mu.sum()
        marks = torch.multinomial(mu / mu.sum(), math.prod(shape), replacement=True).view(shape)
        return gaps, marks


def test_metrics_of_the_true_poisson_model_match_their_closed_forms() -> None:
    mu = [0.2, 0.5, 1.3]
    process = PoissonProcess(mu)
    seqs = process.simulate(200, (0.0, 50.0), seed=0)
    model = ExactPoisson(mu)
    metrics = evaluate_model(model, seqs, n_samples=400, dtype=torch.float64)
    total = sum(mu)
    # Log-likelihood per event: the model is the process, so both conventions equal the simulator's.
    assert metrics["test_ll_per_event"] == pytest.approx(process.log_likelihood_per_event(seqs, "full"), rel=1e-10)
    assert metrics["test_ll_per_event_easytpp"] == pytest.approx(process.log_likelihood_per_event(seqs, "easytpp"),
                                                                 rel=1e-10)
    # RMSE of the mean of 400 draws: the gap is Exp(total), so RMSE^2 = Var + (MC error of the mean)^2
    # = (1 + 1/400) / total^2.
    n = metrics["n_predictions"]
    assert n == seqs.num_events - len(seqs)
    expected = math.sqrt(1 + 1 / 400) / total
    assert metrics["rmse"] == pytest.approx(expected, rel=4 * math.sqrt(2 / n) + 0.01)
    # The most probable mark is mark 2 (1.3 / 2.0): accuracy is its share of the events.
    assert metrics["type_accuracy"] == pytest.approx(1.3 / total, abs=4 * math.sqrt(0.65 * 0.35 / n))


def test_predictions_are_aligned_with_the_events_they_predict() -> None:
    seqs = PoissonProcess([1.0, 1.0]).simulate(5, (0.0, 10.0), seed=1)
    predictions = next_event_predictions(ExactPoisson([1.0, 1.0]), seqs, n_samples=10)
    true_gaps = np.concatenate([np.diff(t) for t in seqs.times])
    true_marks = np.concatenate([m[1:] for m in seqs.marks])
    np.testing.assert_allclose(predictions["true_gap"], true_gaps, atol=1e-5)  # float32 times up to 10
    np.testing.assert_array_equal(predictions["true_mark"], true_marks)
    with pytest.raises(ValueError, match="n_samples"):
        next_event_predictions(ExactPoisson([1.0]), PoissonProcess([1.0]).simulate(2, 5.0, seed=0), n_samples=0)


def test_full_convention_is_reported_only_with_windows() -> None:
    seqs = PoissonProcess([1.0]).simulate(10, (0.0, 10.0), seed=2)
    seqs.windows = None
    metrics = evaluate_model(ExactPoisson([1.0]), seqs, n_samples=20)
    assert metrics["test_ll_per_event"] is None and metrics["test_ll_per_event_easytpp"] < 0


def test_time_rescaling_is_undone_in_every_metric() -> None:
    """A Poisson(μ) process on times divided by c is Poisson(μ c): the model trained there, scored through the
    scaler, gives the process's own log-likelihood and the unscaled model's RMSE and accuracy."""
    from tpp.data.batch import TimeScaler

    mu = [0.2, 0.5, 1.3]
    seqs = PoissonProcess(mu).simulate(50, (0.0, 40.0), seed=2)
    scaler = TimeScaler().fit(seqs)
    assert scaler.scale == pytest.approx(0.5, rel=0.1)          # mean gap 1 / Σμ = 0.5
    plain = evaluate_model(ExactPoisson(mu), seqs, n_samples=100, dtype=torch.float64, seed=3)
    scaled = evaluate_model(ExactPoisson([m * scaler.scale for m in mu]), seqs, n_samples=100,
                            dtype=torch.float64, seed=3, time_scaler=scaler)
    for key in ("test_ll_per_event", "test_ll_per_event_easytpp", "rmse"):
        assert scaled[key] == pytest.approx(plain[key], rel=1e-9), key
    assert scaled["type_accuracy"] == plain["type_accuracy"] and scaled["time_scale"] == scaler.scale
