"""One typed front over torchdiffeq, torchsde and torchcde.

Models call :func:`solve_ode`, :func:`solve_sde` and :func:`solve_cde`, never the three libraries
directly. Each front checks its input before solving, returns the solution batch first together with
counters of the work done (:class:`SolveStats`), and lets the caller choose how gradients are computed
(``adjoint=``).
"""

from nde.solvers.cde import Control, solve_cde
from nde.solvers.common import AdjointMode, Solution, SolverInputError, SolveStats
from nde.solvers.ode import ODE_METHODS, ODEMethod, solve_ode
from nde.solvers.sde import NOISE_TYPES, SDE_METHODS, SDEMethod, solve_sde

__all__ = [
    "NOISE_TYPES",
    "ODE_METHODS",
    "SDE_METHODS",
    "AdjointMode",
    "Control",
    "ODEMethod",
    "SDEMethod",
    "Solution",
    "SolveStats",
    "SolverInputError",
    "solve_cde",
    "solve_ode",
    "solve_sde",
]
