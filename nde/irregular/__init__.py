"""Models and data for irregularly sampled time series built on the layers of :mod:`nde.layers`."""

from nde.irregular.data import (
    IrregularBatch,
    IrregularDataError,
    IrregularDataset,
    IrregularSeries,
    Standardizer,
    cde_controls,
)
from nde.irregular.ncde import NeuralCDEClassifier, classification_metrics

__all__ = [
    "IrregularBatch",
    "IrregularDataError",
    "IrregularDataset",
    "IrregularSeries",
    "NeuralCDEClassifier",
    "Standardizer",
    "cde_controls",
    "classification_metrics",
]
