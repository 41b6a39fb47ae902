"""Models and data for irregularly sampled time series built on the layers of :mod:`nde.layers`."""

from nde.irregular.base import (
    ClassPrediction,
    ForecastPrediction,
    IrregularModel,
    ModelFileError,
    forecast_split,
)
from nde.irregular.data import (
    IrregularBatch,
    IrregularDataError,
    IrregularDataset,
    IrregularSeries,
    Standardizer,
    cde_controls,
)
from nde.irregular.gru_d import GRUDModel
from nde.irregular.latent_ode import LatentODEModel
from nde.irregular.latent_sde import LatentSDEModel
from nde.irregular.ncde import NeuralCDEClassifier, NeuralCDEModel, classification_metrics
from nde.irregular.ode_rnn import ODERNNModel
from nde.irregular.registry import MODEL_NAMES, get_model_class

__all__ = [
    "MODEL_NAMES",
    "ClassPrediction",
    "ForecastPrediction",
    "GRUDModel",
    "IrregularBatch",
    "IrregularDataError",
    "IrregularDataset",
    "IrregularModel",
    "IrregularSeries",
    "LatentODEModel",
    "LatentSDEModel",
    "ModelFileError",
    "NeuralCDEClassifier",
    "NeuralCDEModel",
    "ODERNNModel",
    "Standardizer",
    "cde_controls",
    "classification_metrics",
    "forecast_split",
    "get_model_class",
]
