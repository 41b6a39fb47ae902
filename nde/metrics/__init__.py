"""Scores of probabilistic forecasts and classifiers, shared by every model family of ``nde``."""

from nde.metrics.forecast import (
    DEFAULT_QUANTILES,
    forecast_metrics,
    mase,
    mean_weighted_quantile_loss,
    normalized_deviation,
    nrmse,
    quantile_coverage,
    quantile_loss,
    sample_quantiles,
    seasonal_error,
    weighted_quantile_losses,
)
from nde.metrics.probabilistic import (
    binary_auroc,
    crps_from_samples,
    interval_coverage,
    macro_auroc,
)

__all__ = [
    "DEFAULT_QUANTILES",
    "binary_auroc",
    "crps_from_samples",
    "forecast_metrics",
    "interval_coverage",
    "macro_auroc",
    "mase",
    "mean_weighted_quantile_loss",
    "normalized_deviation",
    "nrmse",
    "quantile_coverage",
    "quantile_loss",
    "sample_quantiles",
    "seasonal_error",
    "weighted_quantile_losses",
]
