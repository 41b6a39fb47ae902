"""Temporal point processes: EasyTPP-compatible data, models, simulators and evaluation."""

from nde import __version__

__all__ = ["__version__"]
