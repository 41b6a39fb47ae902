"""Neural differential equations and stochastic-process models for time series, on PyTorch."""

__version__ = "0.1.0"
