"""Test-split metrics of a TPP model: log-likelihood per event in both conventions, next-event RMSE and accuracy.

Log-likelihood (see :mod:`tpp.models.base`): EasyTPP's convention always; the full one when every sequence's
observation window is known (``EventSequences.windows``, e.g. from ``truth.json``).

Next-event prediction: for every event ``j`` of a sequence but the last, the model predicts event ``j + 1``
from the history up to and including ``j``: the time as the mean of ``n_samples`` exact draws of the gap
(:meth:`TPPModel.sample_next`), the mark as the most frequent mark among the draws (the most probable mark of
the next event, up to Monte Carlo error). RMSE is over the gaps, in the data's time unit; accuracy is the
share of marks predicted right. Each observed event is predicted once, from its own past only: the first
event of a sequence is not predicted (it has no past in the data) and the last event is never the target of
a prediction made after it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tpp.data.batch import TimeScaler, batches
from tpp.data.sequences import EventSequences
from tpp.models.base import TPPModel
from tpp.train import evaluate_log_likelihood

__all__ = ["evaluate_model", "next_event_predictions"]


@torch.no_grad()
def next_event_predictions(model: TPPModel, seqs: EventSequences, *, n_samples: int = 100, batch_size: int = 64,
                           seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    """Predicted and true gaps and marks of every event but the first of each sequence.

    Returns ``{"predicted_gap", "true_gap", "predicted_mark", "true_mark", "infinite_draws"}``, each
    ``[Σ (N_i - 1)]``, in the order of the sequences and their events. Draws are made with the global torch RNG
    seeded by ``seed`` (restored afterwards). A model whose next event may never come draws infinite gaps:
    the predicted time is then the mean of the finite draws (the time given that an event comes), and
    ``infinite_draws`` is the share of infinite ones (infinite when all are).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {"predicted_gap": [], "true_gap": [], "predicted_mark": [], "true_mark": [],
                                        "infinite_draws": []}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in batches(seqs, batch_size, dtype=dtype, device=device):
            gaps, marks = model.sample_next(batch, n_samples)  # [S, B, L]
            gaps = gaps.double()
            finite = torch.isfinite(gaps)
            # A model may give the next event a probability below 1 (RMTPP with a decaying intensity): its
            # "never" draws are infinite. The prediction is the mean of the finite draws, i.e. of the time
            # given that an event comes; the share of infinite draws is reported beside it.
            predicted_gap = torch.where(finite, gaps, 0.0).sum(0) / finite.sum(0).clamp_min(1)
            predicted_gap = torch.where(finite.any(0), predicted_gap, torch.inf)  # [B, L]
            out["infinite_draws"].append((~finite).double().mean(0)[:, :-1][batch.mask[:, 1:]].cpu().numpy())
            counts = torch.zeros(*marks.shape[1:], model.num_marks, device=marks.device)
            # Draws with no next event (infinite gap; mark -1 by convention) do not vote for a mark.
            counts.scatter_add_(-1, marks.long().clamp(0, model.num_marks - 1).permute(1, 2, 0),
                                finite.to(counts.dtype).permute(1, 2, 0))
            predicted_mark = counts.argmax(-1)  # [B, L]
            # Position j predicts event j + 1: valid where event j + 1 exists.
            target = batch.mask[:, 1:]
            out["predicted_gap"].append(predicted_gap[:, :-1][target].cpu().numpy())
            out["true_gap"].append((batch.times[:, 1:] - batch.times[:, :-1])[target].double().cpu().numpy())
            out["predicted_mark"].append(predicted_mark[:, :-1][target].cpu().numpy())
            out["true_mark"].append(batch.marks[:, 1:][target].cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def evaluate_model(model: TPPModel, seqs: EventSequences, *, n_samples: int = 100, batch_size: int = 64,
                   seed: int = 0, dtype: torch.dtype = torch.float32,
                   time_scaler: TimeScaler | None = None) -> dict[str, Any]:
    """``test_ll_per_event_easytpp``, ``test_ll_per_event`` (full; None without windows), ``rmse``,
    ``type_accuracy``, ``infinite_draw_share`` (see :func:`next_event_predictions`), ``n_events``,
    ``n_predictions`` on ``seqs``.

    ``time_scaler``: the model was trained on times divided by ``c = time_scaler.scale``; ``seqs`` are in the
    data's units. They are rescaled for the model, and every metric is reported in the data's units: a
    log-density per event in rescaled time is ``log c`` higher than in the original one, so ``log c`` is
    subtracted from each per-event log-likelihood, and the RMSE is multiplied by ``c``.
    """
    if time_scaler is not None:
        scores = evaluate_model(model, time_scaler.transform(seqs), n_samples=n_samples, batch_size=batch_size,
                                seed=seed, dtype=dtype)
        for key in ("test_ll_per_event_easytpp", "test_ll_per_event"):
            if scores[key] is not None:
                scores[key] = float(time_scaler.inverse_log_density(scores[key]))
        scores["rmse"] = float(time_scaler.inverse_times(scores["rmse"]))
        scores["time_scale"] = time_scaler.scale
        return scores
    easytpp = evaluate_log_likelihood(model, seqs, "easytpp", batch_size=batch_size, dtype=dtype)
    full = (evaluate_log_likelihood(model, seqs, "full", batch_size=batch_size, dtype=dtype)
            if seqs.windows is not None else None)
    predictions = next_event_predictions(model, seqs, n_samples=n_samples, batch_size=batch_size, seed=seed,
                                         dtype=dtype)
    errors = predictions["predicted_gap"] - predictions["true_gap"]
    hits = predictions["predicted_mark"] == predictions["true_mark"]
    n = len(errors)
    return {
        "test_ll_per_event_easytpp": float(easytpp.per_event()),
        "test_ll_per_event": None if full is None else float(full.per_event()),
        "rmse": float(math.sqrt(np.mean(errors**2))) if n else float("nan"),
        "type_accuracy": float(np.mean(hits)) if n else float("nan"),
        "infinite_draw_share": float(np.mean(predictions["infinite_draws"])) if n else 0.0,
        "n_events": seqs.num_events,
        "n_predictions": n,
        "n_samples": n_samples,
    }
