"""Shipped data sets and their loaders."""

from nde.data.dropping import drop_observations
from nde.data.forecast import forecast_context_mask, forecast_cutoff
from nde.data.japanese_vowels import (
    JAPANESE_VOWELS_CHANNELS,
    JAPANESE_VOWELS_COLUMNS,
    load_japanese_vowels,
)
from nde.data.ou import (
    OU_COLUMNS,
    OU_PARAMETERS,
    gaussian_crps,
    load_ou,
    ou_oracle_forecast_scores,
    ou_transition,
)
from nde.data.registry import UnknownDatasetError, available_datasets, dataset_path
from nde.data.seasonal_ar import (
    SeasonalARParameters,
    load_seasonal_ar,
    seasonal_ar_oracle_crps,
    seasonal_ar_oracle_forecast,
    seasonal_ar_oracle_scores,
    simulate_seasonal_ar,
)
from nde.data.spirals import DataFormatError, SpiralsData, load_spirals, split_indices
from nde.data.timeseries import (
    RegularTimeSeries,
    RollingWindows,
    lags_for_frequency,
    load_time_series,
    read_time_series,
    rolling_test_windows,
    seasonality_for_frequency,
)

__all__ = [
    "JAPANESE_VOWELS_CHANNELS",
    "JAPANESE_VOWELS_COLUMNS",
    "OU_COLUMNS",
    "OU_PARAMETERS",
    "DataFormatError",
    "RegularTimeSeries",
    "RollingWindows",
    "SeasonalARParameters",
    "SpiralsData",
    "UnknownDatasetError",
    "available_datasets",
    "dataset_path",
    "drop_observations",
    "forecast_context_mask",
    "forecast_cutoff",
    "gaussian_crps",
    "lags_for_frequency",
    "load_japanese_vowels",
    "load_ou",
    "load_seasonal_ar",
    "load_spirals",
    "load_time_series",
    "ou_oracle_forecast_scores",
    "ou_transition",
    "read_time_series",
    "rolling_test_windows",
    "seasonal_ar_oracle_crps",
    "seasonal_ar_oracle_forecast",
    "seasonal_ar_oracle_scores",
    "seasonality_for_frequency",
    "simulate_seasonal_ar",
    "split_indices",
]
