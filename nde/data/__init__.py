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
from nde.data.spirals import DataFormatError, SpiralsData, load_spirals, split_indices

__all__ = [
    "JAPANESE_VOWELS_CHANNELS",
    "JAPANESE_VOWELS_COLUMNS",
    "OU_COLUMNS",
    "OU_PARAMETERS",
    "DataFormatError",
    "SpiralsData",
    "UnknownDatasetError",
    "available_datasets",
    "dataset_path",
    "drop_observations",
    "forecast_context_mask",
    "forecast_cutoff",
    "gaussian_crps",
    "load_japanese_vowels",
    "load_ou",
    "load_spirals",
    "ou_oracle_forecast_scores",
    "ou_transition",
    "split_indices",
]
