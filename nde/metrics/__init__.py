"""Scores of probabilistic forecasts and classifiers, shared by every model family of ``nde``."""

from nde.metrics.probabilistic import (
    binary_auroc,
    crps_from_samples,
    interval_coverage,
    macro_auroc,
)

__all__ = ["binary_auroc", "crps_from_samples", "interval_coverage", "macro_auroc"]
