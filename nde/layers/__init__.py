"""Neural ODE, CDE and SDE layers and the vector fields they are built from."""

from nde.layers.cde import INTERPOLATIONS, NeuralCDE, interpolation_coefficients, make_control
from nde.layers.ode import NeuralODE
from nde.layers.sde import NeuralSDE
from nde.layers.vector_fields import (
    AdditiveDiffusion,
    CDEVectorField,
    DiagonalDiffusion,
    GeneralDiffusion,
    MLPVectorField,
)

__all__ = [
    "INTERPOLATIONS",
    "AdditiveDiffusion",
    "CDEVectorField",
    "DiagonalDiffusion",
    "GeneralDiffusion",
    "MLPVectorField",
    "NeuralCDE",
    "NeuralODE",
    "NeuralSDE",
    "interpolation_coefficients",
    "make_control",
]
