"""Models for irregularly sampled time series built on the layers of :mod:`nde.layers`."""

from nde.irregular.ncde import NeuralCDEClassifier, classification_metrics

__all__ = ["NeuralCDEClassifier", "classification_metrics"]
