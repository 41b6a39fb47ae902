"""The TPP model zoo: one module per model over :class:`tpp.models.base.TPPModel`."""

from tpp.models.base import CONVENTIONS, Convention, LogLikelihood, TPPModel, gauss_legendre_compensator
from tpp.models.registry import MODEL_NAMES, get_model_class

__all__ = ["CONVENTIONS", "MODEL_NAMES", "Convention", "LogLikelihood", "TPPModel", "gauss_legendre_compensator",
           "get_model_class"]
