"""Shipped data sets and their loaders."""

from nde.data.registry import UnknownDatasetError, available_datasets, dataset_path
from nde.data.spirals import DataFormatError, SpiralsData, load_spirals, split_indices

__all__ = [
    "DataFormatError",
    "SpiralsData",
    "UnknownDatasetError",
    "available_datasets",
    "dataset_path",
    "load_spirals",
    "split_indices",
]
