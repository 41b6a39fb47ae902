"""Proper scores from sample ensembles, interval coverage, and ranking scores of classifiers."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["binary_auroc", "crps_from_samples", "interval_coverage", "macro_auroc"]


def crps_from_samples(samples: Tensor, observed: Tensor) -> Tensor:
    """CRPS of the empirical distribution of ``samples [S, ...]`` at ``observed [...]``, elementwise.

    ``CRPS(F, y) = E|X - y| - E|X - X'| / 2`` with ``X, X'`` independent draws of ``F``; for the empirical
    distribution of ``S`` samples this is exactly
    ``(1/S) Σ_i |x_i - y| - (1/S²) Σ_i (2i - S - 1) x_(i)`` with ``x_(i)`` sorted ascending (the same
    convention as ``properscoring.crps_ensemble``). Lower is better; it is in the units of ``y``.
    """
    if samples.ndim < 1 or samples.shape[1:] != observed.shape:
        raise ValueError(f"samples must have shape [S, *observed.shape], got {list(samples.shape)} "
                         f"and observed {list(observed.shape)}")
    s = samples.shape[0]
    if s < 1:
        raise ValueError("crps_from_samples needs at least one sample")
    spread_to_obs = (samples - observed.unsqueeze(0)).abs().mean(0)
    ordered = samples.sort(dim=0).values
    rank = torch.arange(1, s + 1, dtype=samples.dtype, device=samples.device)
    weight = (2 * rank - s - 1).view(-1, *([1] * observed.ndim))
    spread_between = (weight * ordered).sum(0) / (s * s)
    return spread_to_obs - spread_between


def interval_coverage(samples: Tensor, observed: Tensor, level: float = 0.9) -> Tensor:
    """Boolean ``[...]``: ``observed`` lies in the central ``level`` interval of ``samples [S, ...]``.

    The interval runs between the empirical ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (linear
    interpolation, as :func:`torch.quantile`); its mean over points is the coverage.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = torch.quantile(samples, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype,
                                                  device=samples.device), dim=0)
    return (observed >= lo) & (observed <= hi)


def binary_auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: the probability that a positive outscores a negative (ties count 1/2).

    NaN when ``labels`` holds only one class.
    """
    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def macro_auroc(probabilities: Tensor, labels: Tensor) -> float:
    """One-vs-rest AUROC averaged over the classes that occur with both outcomes; binary AUROC for ``K = 2``.

    Args:
        probabilities: ``[N, K]`` class probabilities (or any scores, larger meaning more likely).
        labels: ``[N]`` class indices.
    """
    k = probabilities.shape[-1]
    if k == 2:
        return binary_auroc(probabilities[:, 1] - probabilities[:, 0], labels)
    values = [binary_auroc(probabilities[:, c], (labels == c).long()) for c in range(k)]
    values = [v for v in values if v == v]
    return float(sum(values) / len(values)) if values else float("nan")
