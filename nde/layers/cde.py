"""The Neural CDE layer (Kidger et al., 2020) and the interpolations that turn data into a control.

Data ``values [B, L, C]`` observed at ``times [L]`` become a continuous path ``X`` through torchcde:

- ``"linear"``: piecewise-linear interpolation (torchcde ``linear_interpolation_coeffs``);
- ``"rectilinear"``: first time, then the other channels move (``rectilinear=time_channel``); the
  control is then parametrised by step index ``0..2L-2``, as in torchcde, and ``values`` must hold the
  observation times in channel ``time_channel``;
- ``"cubic"``: Hermite cubic splines with backward differences, which are causal: the path up to an
  observation depends only on the observations so far (torchcde
  ``hermite_cubic_coefficients_with_backward_differences``).

NaN entries in ``values`` are treated as missing and filled by the interpolation, as torchcde does.
"""

from __future__ import annotations

from typing import Any, Literal

import torchcde
from torch import Tensor, nn

from nde.layers.vector_fields import CDEVectorField
from nde.solvers import AdjointMode, SolverInputError, SolveStats, solve_cde

__all__ = ["INTERPOLATIONS", "NeuralCDE", "interpolation_coefficients", "make_control"]

Interpolation = Literal["linear", "rectilinear", "cubic"]
INTERPOLATIONS: tuple[str, ...] = ("linear", "rectilinear", "cubic")


def _check_kind(kind: str) -> None:
    if kind not in INTERPOLATIONS:
        raise SolverInputError(f"unknown interpolation {kind!r}; choose one of {INTERPOLATIONS}.")


def interpolation_coefficients(values: Tensor, times: Tensor | None = None, kind: Interpolation = "cubic",
                               time_channel: int = 0) -> Tensor:
    """Coefficients of the control path through ``values [B, L, C]`` at ``times [L]``.

    ``times`` defaults to ``0, 1, ..., L-1`` and is ignored for ``"rectilinear"``. Computing the
    coefficients is preprocessing: do it once per data set, not per training step.

    Returns:
        the torchcde coefficient tensor ``[B, L', C']`` (its layout depends on ``kind``).
    """
    _check_kind(kind)
    if values.ndim != 3:
        raise ValueError(f"`values` must have shape [B, L, C], got {list(values.shape)}.")
    if values.shape[1] < 2:
        raise ValueError(f"a control path needs at least 2 observations, got L={values.shape[1]}.")
    if kind == "rectilinear":
        if not 0 <= time_channel < values.shape[2]:
            raise ValueError(f"time_channel={time_channel} is outside the {values.shape[2]} channels of `values`.")
        return torchcde.linear_interpolation_coeffs(values, rectilinear=time_channel)
    if kind == "linear":
        return torchcde.linear_interpolation_coeffs(values, t=times)
    return torchcde.hermite_cubic_coefficients_with_backward_differences(values, t=times)


def make_control(coeffs: Tensor, times: Tensor | None = None, kind: Interpolation = "cubic") -> Any:
    """The torchcde path object (``evaluate``, ``derivative``, ``interval``) for the coefficients."""
    _check_kind(kind)
    if kind == "cubic":
        return torchcde.CubicSpline(coeffs, t=times)
    return torchcde.LinearInterpolation(coeffs, t=None if kind == "rectilinear" else times)


class NeuralCDE(nn.Module):
    """``z(t) = ζ(X(t0)) + ∫ f(z(s)) dX(s)``: a hidden state driven continuously by the data path ``X``.

    Args:
        input_channels: ``C``, channels of the data (include time, and for irregular data the
            observation counts, as channels: a CDE sees the data only through its increments).
        hidden_channels: ``H``, size of the hidden state.
        vector_field: ``f(t, z)``, ``[B, H] -> [B, H, C]``; default a :class:`CDEVectorField` (bounded
            by tanh) of the given ``width`` and ``depth``.
        interpolation: ``"linear"``, ``"rectilinear"`` or ``"cubic"`` (Hermite, backward differences).
        method, step_size, rtol, atol, adjoint, backend: as in :func:`nde.solvers.solve_cde`.
        time_channel: the channel holding the time, for rectilinear interpolation.

    Attributes:
        initial: ``ζ``, the linear map from the first observation to ``z(t0)``.
        stats: :class:`nde.solvers.SolveStats` of the last forward call.
    """

    def __init__(self, input_channels: int, hidden_channels: int, vector_field: nn.Module | None = None, *,
                 interpolation: Interpolation = "cubic", width: int = 64, depth: int = 2, method: str = "rk4",
                 step_size: float | None = None, rtol: float = 1e-4, atol: float = 1e-6,
                 adjoint: AdjointMode = "direct", time_channel: int = 0,
                 backend: Literal["torchdiffeq", "native"] = "torchdiffeq") -> None:
        super().__init__()
        _check_kind(interpolation)
        self.input_channels, self.hidden_channels = input_channels, hidden_channels
        self.interpolation: Interpolation = interpolation
        self.initial = nn.Linear(input_channels, hidden_channels)
        self.vector_field = vector_field if vector_field is not None else CDEVectorField(
            hidden_channels, input_channels, width, depth)
        self.method, self.step_size, self.rtol, self.atol = method, step_size, rtol, atol
        self.adjoint: AdjointMode = adjoint
        self.time_channel = time_channel
        self.backend: Literal["torchdiffeq", "native"] = backend
        self.stats = SolveStats()

    def coefficients(self, values: Tensor, times: Tensor | None = None) -> Tensor:
        """This layer's interpolation of ``values [B, L, C]`` (see :func:`interpolation_coefficients`)."""
        if values.ndim != 3 or values.shape[-1] != self.input_channels:
            raise ValueError(
                f"`values` must have shape [B, L, {self.input_channels}], got {list(values.shape)}."
            )
        return interpolation_coefficients(values, times, self.interpolation, self.time_channel)

    def forward(self, coeffs: Tensor, times: Tensor | None = None, output_times: Tensor | None = None) -> Tensor:
        """Hidden states ``[B, T, H]`` at ``output_times`` (default: the two ends of the path).

        Args:
            coeffs: from :meth:`coefficients`.
            times: the observation times the coefficients were made with (``None`` for the default
                grid and for rectilinear interpolation).
            output_times: ``[T]`` inside the path's interval.
        """
        control = make_control(coeffs, times, self.interpolation)
        x0 = control.evaluate(control.interval[0])
        z0 = self.initial(x0)
        solution = solve_cde(self.vector_field, control, z0, output_times, method=self.method,
                             rtol=self.rtol, atol=self.atol, step_size=self.step_size, adjoint=self.adjoint,
                             backend=self.backend)
        self.stats = solution.stats
        return solution.ys
