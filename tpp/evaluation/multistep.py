"""Multi-step generation: ``S`` sampled continuations of ``N`` events after each history, and their evaluation.

**Generation** (:func:`sample_continuations`). Each history (a sequence cut after some event) is encoded once
(:meth:`TPPModel.encode`), its state repeated ``S`` times (:meth:`TPPModel.repeat_state`), and the ``B·S`` entries
advance together for ``N`` steps: an exact draw of the next event from the state
(:meth:`TPPModel.sample_from_state`), then the state after it (:meth:`TPPModel.advance`). Every draw conditions
on the history and on the entry's own earlier draws, so each continuation is a draw of the model's law of the
next ``N`` events (ancestral sampling of a sequential model). The events predicted are only those *after* the cut:
step 1 is the first event after the last observed one. An entry whose draw has no next event (a model whose
intensity decays to 0) ends: its later steps are gap ``inf``, mark ``-1``. Recurrent models (NHP, RMTPP,
IntensityFree, LNM-TM, RMTPP-TM, Hawkes, FullyNN, ODE-TPP, S2P2) update their state in ``O(1)`` per step; THP,
THP-TM and SAHP extend a key-value cache by one attention column per step (``O(L)``); the others use the generic
default, which re-encodes the extended histories at every step (``incremental=False`` forces it for any model).

EasyTPP 0.3.0's ``predict_multi_step_since_last_event`` (``easy_tpp/model/basemodel.py``) differs in three ways:
it returns ``num_step + 1`` "predictions" whose first entry is the last *observed* event, copied (lines 261, 321-325:
``time_delta_seq[:, -num_step - 1:]`` against ``time_delta_seq_group[:, length - num_step - 1:length]``), so any
error averaged over its output counts one exact, free prediction per sequence; it appends the *mean* of the
thinning draws and the argmax mark at every step (lines 296-313), a single deterministic path rather than draws of
the model's law (the mean of a multi-step law is not reached by feeding back means); and its thinning returns
``dtime_max`` for every draw it did not accept within its fixed number of proposals (``thinning.py`` line 163).

**Evaluation** (:func:`evaluate_multistep`). Each sequence with at least ``N + 1`` events is cut before its last
``N`` events: the history is the rest, the targets those ``N``. Point predictions from the ``S`` draws, per step
``k``: the time since the cut is the mean over the draws that have a ``k``-th event (the mean minimises the
expected squared error, so it is the right point for an RMSE), the mark the most frequent one (it maximises the
expected accuracy). The point-prediction sequence (those ``N`` times after the cut, with their modal marks) is
scored by OTD against the targets (``otd_point``, comparable with HoTPP's and EasyTPP's OTD of one predicted
sequence). OTD is also averaged over the draws (``otd_mean``: the expected distance of one draw of the model's law;
it sees what a point summary hides, e.g. the per-step means of a bursty law are a path no draw resembles, but it is
not a proper score: a law less dispersed than the truth can have a lower ``otd_mean``; on ``hawkes_5d``'s test
split a Poisson process of the true rates scores 26.7 against the true Hawkes process's 27.2). T-mAP scores the
per-step predictions with, as scores, the share of the ``S`` draws whose ``k``-th event has mark ``c``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tpp.data.batch import EventBatch, TimeScaler, make_batch
from tpp.data.sequences import EventSequences
from tpp.evaluation.sequence_metrics import otd_batch, step_errors, tmap
from tpp.models.base import TPPModel

__all__ = ["Continuations", "evaluate_multistep", "generate", "point_predictions", "sample_continuations",
           "split_histories"]


@dataclass
class Continuations:
    """``S`` sampled continuations of ``B`` histories, ``N`` events each.

    Attributes:
        gaps: ``[S, B, N]`` time from the previous event (the last history event for step 1); ``inf`` once the
            continuation has ended.
        marks: ``[S, B, N]`` int64 marks; ``-1`` once ended.
        start: ``[B]`` the time of each history's last event (the cut).
    """

    gaps: Tensor
    marks: Tensor
    start: Tensor

    @property
    def times(self) -> Tensor:
        """``[S, B, N]`` absolute event times (``inf`` once ended)."""
        return self.start.unsqueeze(-1) + self.gaps.cumsum(-1)

    @property
    def elapsed(self) -> Tensor:
        """``[S, B, N]`` time since the cut."""
        return self.gaps.cumsum(-1)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


@torch.no_grad()
def sample_continuations(model: TPPModel, batch: EventBatch, n_events: int, n_samples: int, *,
                         incremental: bool = True) -> Continuations:
    """``n_samples`` draws of the ``n_events`` events after the last event of each sequence of ``batch``.

    Vectorised over sequences and samples (``B·S`` entries advance together); one loop over the steps. Uses the
    global torch RNG of the model's device.

    Args:
        model: any :class:`TPPModel`.
        batch: the histories (``B`` sequences).
        n_events: ``N >= 1``.
        n_samples: ``S >= 1``.
        incremental: use the model's own :meth:`~TPPModel.encode` / :meth:`~TPPModel.advance` (True), or the
            generic default of :class:`TPPModel` that re-encodes the histories every step (False).
    """
    n_events = _check_int("n_events", n_events, 1)
    n_samples = _check_int("n_samples", n_samples, 1)
    if not isinstance(model, TPPModel):
        raise ValueError(f"model must be a TPPModel, got {type(model).__name__}")
    if incremental:
        encode, draw, advance = model.encode, model.sample_from_state, model.advance
    else:
        encode, draw, advance = (partial(TPPModel.encode, model), partial(TPPModel.sample_from_state, model),
                                 partial(TPPModel.advance, model))
    state = model.repeat_state(encode(batch), n_samples)
    B = batch.batch_size
    gaps_out: list[Tensor] = []
    marks_out: list[Tensor] = []
    alive: Tensor | None = None
    for step in range(n_events):
        gaps, marks = draw(state)
        ended = ~torch.isfinite(gaps) if alive is None else ~torch.isfinite(gaps) | ~alive
        gaps = torch.where(ended, torch.full_like(gaps, math.inf), gaps)
        marks = torch.where(ended, torch.full_like(marks, -1), marks)
        gaps_out.append(gaps)
        marks_out.append(marks)
        alive = ~ended
        if step + 1 < n_events:
            if not bool(alive.any()):
                gaps_out.extend(gaps_out[-1:] * (n_events - step - 1))
                marks_out.extend(marks_out[-1:] * (n_events - step - 1))
                break
            # Ended entries carry a harmless filler event (their later draws are discarded).
            fill_gaps, fill_marks = torch.where(alive, gaps, 0.0), marks.clamp_min(0)
            state = advance(state, fill_gaps, fill_marks)
    g = torch.stack(gaps_out, dim=-1).view(B, n_samples, n_events).transpose(0, 1)
    m = torch.stack(marks_out, dim=-1).view(B, n_samples, n_events).transpose(0, 1)
    rows = torch.arange(B, device=batch.times.device)
    start = batch.times[rows, batch.lengths - 1]
    return Continuations(g, m, start.to(device=g.device, dtype=g.dtype))


def generate(model: TPPModel, histories: EventSequences, n_events: int, n_samples: int, *, batch_size: int = 256,
             seed: int = 0, dtype: torch.dtype = torch.float32, incremental: bool = True) -> Continuations:
    """:func:`sample_continuations` over all ``histories`` in batches of ``batch_size`` sequences (CPU results).

    Draws use the global torch RNG seeded by ``seed`` (restored afterwards); the model runs on its device, in
    eval mode (restored afterwards).
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: list[Continuations] = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for lo in range(0, len(histories), batch_size):
                idx = np.arange(lo, min(lo + batch_size, len(histories)))
                batch = make_batch(histories, idx, dtype=dtype, device=device)
                c = sample_continuations(model, batch, n_events, n_samples, incremental=incremental)
                parts.append(Continuations(c.gaps.cpu(), c.marks.cpu(), c.start.cpu()))
    finally:
        model.train(was_training)
    return Continuations(torch.cat([p.gaps for p in parts], 1), torch.cat([p.marks for p in parts], 1),
                         torch.cat([p.start for p in parts]))


def split_histories(seqs: EventSequences, n_events: int) -> tuple[EventSequences, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each sequence with at least ``n_events + 1`` events before its last ``n_events``.

    Returns:
        ``(histories, future_times [B, N], future_marks [B, N], kept [B])``: the histories (windows, when known,
        end at the cut: the last history event), the targets, and the positions in ``seqs`` of the sequences
        kept (shorter ones are left out; ``len(seqs) - B`` of them).

    Raises:
        ValueError: no sequence is long enough.
    """
    n_events = _check_int("n_events", n_events, 1)
    kept = np.flatnonzero(seqs.lengths > n_events)
    if kept.size == 0:
        raise ValueError(f"{seqs.source}: no sequence has more than n_events = {n_events} events (the longest has "
                         f"{int(seqs.lengths.max())})")
    times = [seqs.times[i][:-n_events] for i in kept]
    marks = [seqs.marks[i][:-n_events] for i in kept]
    windows = None
    if seqs.windows is not None:
        windows = np.stack([seqs.windows[kept, 0], np.array([t[-1] for t in times])], axis=1)
    histories = EventSequences(times, marks, seqs.num_marks, windows, seqs.source, [seqs.ids[i] for i in kept])
    future_t = np.stack([seqs.times[i][-n_events:] for i in kept])
    future_m = np.stack([seqs.marks[i][-n_events:] for i in kept])
    return histories, future_t, future_m, kept


def point_predictions(c: Continuations, num_marks: int) -> dict[str, np.ndarray]:
    """Per-step point predictions from the draws: ``elapsed [B, N]`` (mean over the draws that reach step ``k``;
    ``inf`` where none does), ``marks [B, N]`` (most frequent mark among them; ``-1`` where none),
    ``mark_share [B, N, K]`` (share of all ``S`` draws whose step-``k`` event has mark ``c``) and
    ``ended_share [B, N]`` (share of draws that ended before step ``k``)."""
    elapsed = c.elapsed.double().numpy()                                                   # [S, B, N]
    marks = c.marks.numpy()
    finite = np.isfinite(elapsed)
    count = finite.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, elapsed, 0.0).sum(0) / count
    mean = np.where(count > 0, mean, np.inf)
    share = np.stack([(marks == k).mean(0) for k in range(num_marks)], axis=-1)            # [B, N, K]
    mode = np.where(count > 0, share.argmax(-1), -1)
    return {"elapsed": mean, "marks": mode, "mark_share": share, "ended_share": 1.0 - count / elapsed.shape[0]}


def evaluate_multistep(model: TPPModel, seqs: EventSequences, *, horizon: int, n_samples: int = 100,
                       batch_size: int = 256, seed: int = 0, dtype: torch.dtype = torch.float32,
                       otd_cost: float | None = None, tmap_horizon: float | None = None,
                       tmap_deltas: Sequence[float] | None = None, incremental: bool = True,
                       time_scaler: TimeScaler | None = None) -> dict[str, Any]:
    """Long-horizon scores of ``model`` on ``seqs`` (see the module docstring), in the data's time unit.

    Args:
        model: a trained model (its time unit must be that of ``seqs``).
        seqs: the evaluation sequences; those with at most ``horizon`` events are left out (counted).
        horizon: ``N``, the number of future events predicted after each cut.
        n_samples: ``S`` continuations per history.
        batch_size, seed, dtype, incremental: see :func:`generate`.
        otd_cost: OTD's cost ``C`` of an unmatched event (default: the mean inter-event gap of the targets, so a
            time error of one typical gap costs as much as a missed event).
        tmap_horizon: T-mAP's ``H`` (default: the 10% quantile over sequences of the time from the cut to the
            ``N``-th target, so that for most sequences all targets within ``H`` are among the ``N`` known).
        tmap_deltas: T-mAP's tolerances (default: ``(0.5, 1, 2, 4)`` times the mean inter-event gap of the targets).
        time_scaler: the model was trained on times divided by ``c = time_scaler.scale``; ``seqs``, ``otd_cost``,
            ``tmap_horizon`` and ``tmap_deltas`` are in the data's units. The model sees rescaled times, and every
            time-valued result (RMSEs, OTDs, which are homogeneous of degree 1 in the times and ``C``, the
            horizon, the tolerances) is reported in the data's units; accuracies and T-mAP are unitless.

    Returns:
        ``rmse_by_step``, ``accuracy_by_step``, ``ended_share_by_step`` (lists of ``N``), ``rmse`` and
        ``accuracy`` (over all steps), ``otd_point``, ``otd_mean``, ``otd_cost``, ``tmap``, ``tmap_horizon``,
        ``tmap_deltas``, ``n_sequences``, ``n_left_out``, ``horizon``, ``n_samples``, ``generation_seconds``.
    """
    horizon = _check_int("horizon", horizon, 1)
    if time_scaler is not None:
        c = time_scaler.scale
        scores = evaluate_multistep(
            model, time_scaler.transform(seqs), horizon=horizon, n_samples=n_samples, batch_size=batch_size,
            seed=seed, dtype=dtype, otd_cost=None if otd_cost is None else otd_cost / c,
            tmap_horizon=None if tmap_horizon is None else tmap_horizon / c,
            tmap_deltas=None if tmap_deltas is None else [d / c for d in tmap_deltas], incremental=incremental)
        for key in ("rmse", "otd_point", "otd_mean", "otd_cost", "tmap_horizon"):
            scores[key] = scores[key] * c
        for key in ("rmse_by_step", "tmap_deltas"):
            scores[key] = [v * c for v in scores[key]]
        scores["time_scale"] = c
        return scores
    histories, future_t, future_m, kept = split_histories(seqs, horizon)
    start = time.perf_counter()
    c = generate(model, histories, horizon, n_samples, batch_size=batch_size, seed=seed, dtype=dtype,
                 incremental=incremental)
    seconds = time.perf_counter() - start
    cut = np.array([t[-1] for t in histories.times])
    true_elapsed = future_t - cut[:, None]
    mean_gap = float(np.mean(np.diff(np.concatenate([cut[:, None], future_t], axis=1), axis=1)))
    scale = mean_gap if mean_gap > 0 else 1.0
    cost = scale if otd_cost is None else otd_cost
    K = seqs.num_marks
    point = point_predictions(c, K)
    rmse, acc = step_errors(point["elapsed"], point["marks"], true_elapsed, future_m)
    errors = (point["elapsed"] - true_elapsed) ** 2
    otd_point = otd_batch(cut[:, None] + point["elapsed"], point["marks"], future_t, future_m, K, cost=cost)
    S, B, N = c.gaps.shape
    draws_t = c.times.double().numpy().reshape(S * B, N)
    otd_draws = otd_batch(draws_t, c.marks.numpy().reshape(S * B, N), np.tile(future_t, (S, 1)),
                          np.tile(future_m, (S, 1)), K, cost=cost).reshape(S, B)
    h = float(np.quantile(true_elapsed[:, -1], 0.1)) if tmap_horizon is None else tmap_horizon
    deltas = [scale * f for f in (0.5, 1.0, 2.0, 4.0)] if tmap_deltas is None else list(tmap_deltas)
    t_map = tmap(cut[:, None] + point["elapsed"], point["mark_share"], future_t, future_m, cut, horizon=h,
                 deltas=deltas)
    return {
        "rmse_by_step": rmse.tolist(),
        "accuracy_by_step": acc.tolist(),
        "ended_share_by_step": point["ended_share"].mean(0).tolist(),
        "rmse": float(np.sqrt(errors.mean())),
        "accuracy": float(np.mean(point["marks"] == future_m)),
        "otd_point": float(otd_point.mean()),
        "otd_mean": float(otd_draws.mean()),
        "otd_cost": float(cost),
        "tmap": t_map["tmap"],
        "tmap_horizon": h,
        "tmap_deltas": deltas,
        "n_sequences": len(kept),
        "n_left_out": int(len(seqs) - len(kept)),
        "horizon": horizon,
        "n_samples": n_samples,
        "generation_seconds": round(seconds, 3),
    }
