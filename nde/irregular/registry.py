"""The models of :mod:`nde.irregular` by the name the command line and saved model folders use.

Classes are imported on first use (``nde.irregular`` also exports them), so that the base module can name
them without importing them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nde.irregular.base import IrregularModel

__all__ = ["MODEL_NAMES", "get_model_class"]

_MODEL_PATHS: dict[str, str] = {
    "ncde": "nde.irregular.ncde:NeuralCDEModel",
    "ode_rnn": "nde.irregular.ode_rnn:ODERNNModel",
    "latent_ode": "nde.irregular.latent_ode:LatentODEModel",
    "latent_sde": "nde.irregular.latent_sde:LatentSDEModel",
    "gru": "nde.irregular.gru_d:GRUDModel",
}

#: Registered model names, in the order the documentation lists them.
MODEL_NAMES: tuple[str, ...] = tuple(_MODEL_PATHS)


def get_model_class(name: str) -> type[IrregularModel]:
    """The model class registered as ``name``; a ``ValueError`` lists the known names otherwise."""
    if name not in _MODEL_PATHS:
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    module, cls = _MODEL_PATHS[name].split(":")
    return getattr(importlib.import_module(module), cls)
