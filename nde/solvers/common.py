"""What the three solver fronts share: the error type, the statistics record, input checks.

Conventions of the solver layer:

- states are batch first: an initial state has shape ``[B, C]`` (batch, channels);
- ``times`` is one 1-D tensor ``[T]`` shared by the whole batch, strictly increasing;
- solutions are returned batch first, ``ys [B, T, C]``, with ``ys[:, 0] == y0``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "AdjointMode",
    "Solution",
    "SolveStats",
    "SolverInputError",
    "check_initial_state",
    "check_modules_for_adjoint",
    "check_times",
]

#: How gradients are computed: ``"direct"`` backpropagates through the solver's operations (memory grows
#: with the number of steps), ``"adjoint"`` solves the adjoint equation backwards in time (memory flat in
#: the number of steps, gradients exact up to the solver tolerance), ``"reversible_heun"`` (SDEs only) uses
#: the algebraically reversible Heun method, whose adjoint reproduces the forward pass exactly;
#: ``"checkpoint"`` (native backend only) keeps each step's state and recomputes one step at a time.
AdjointMode = Literal["direct", "adjoint", "reversible_heun", "checkpoint"]


class SolverInputError(ValueError):
    """Raised before solving when an argument of a solver front is malformed.

    The message says which argument is wrong, what was found and how to fix it.
    """


@dataclass
class SolveStats:
    """Counters of one solve.

    ``nfe_backward`` and the ``backward_*`` counters are filled in while ``loss.backward()`` runs, so read
    them after the backward pass. Under ``adjoint="direct"`` they stay 0: autograd replays the recorded
    graph and calls no vector field.

    Attributes:
        nfe_forward: vector-field (or drift/diffusion) evaluations during the forward solve.
        nfe_backward: evaluations during the adjoint (backward) solve.
        steps_accepted: solver steps taken (fixed-step methods: every step).
        steps_rejected: steps rejected by the adaptive step-size controller (always 0 for fixed steps).
        backward_steps_accepted: steps accepted by the adjoint solve.
        backward_steps_rejected: steps rejected by the adjoint solve.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    backward_steps_accepted: int = 0
    backward_steps_rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Solution:
    """The result of a solve.

    Attributes:
        ys: the solution at ``times``, batch first: ``[B, T, C]`` (``[B, T, H]`` for a CDE).
        times: the output times ``[T]``.
        stats: counters, see :class:`SolveStats`.
    """

    ys: Tensor
    times: Tensor
    stats: SolveStats = field(default_factory=SolveStats)


def check_times(times: Tensor, like: Tensor, name: str = "times") -> None:
    """Check that ``times`` is a finite, strictly increasing 1-D float tensor on ``like``'s device."""
    if not isinstance(times, Tensor):
        raise SolverInputError(f"`{name}` must be a torch.Tensor of shape [T], got {type(times).__name__}.")
    if times.ndim != 1:
        raise SolverInputError(
            f"`{name}` must be 1-D with shape [T] (shared by the whole batch), got shape {list(times.shape)}."
        )
    if times.numel() < 2:
        raise SolverInputError(f"`{name}` needs at least 2 entries (start and end), got {times.numel()}.")
    if not times.is_floating_point():
        raise SolverInputError(
            f"`{name}` must be a floating-point tensor, got {times.dtype}; convert with `.to({like.dtype})`."
        )
    if times.device != like.device:
        raise SolverInputError(
            f"`{name}` is on {times.device} but the initial state is on {like.device}; move both to one device."
        )
    if not bool(torch.isfinite(times).all()):
        raise SolverInputError(f"`{name}` contains NaN or infinite values.")
    gaps = times[1:] - times[:-1]
    if not bool((gaps > 0).all()):
        i = int(torch.nonzero(gaps <= 0)[0, 0])
        raise SolverInputError(
            f"`{name}` must be strictly increasing, but {name}[{i}]={times[i].item()!r} >= "
            f"{name}[{i + 1}]={times[i + 1].item()!r}. Sort the times and drop duplicates; to integrate "
            "backwards in time, reverse time inside the vector field instead."
        )


def check_initial_state(y0: Tensor, name: str = "y0") -> None:
    """Check that the initial state is a finite floating-point tensor of shape ``[B, C]``."""
    if not isinstance(y0, Tensor):
        raise SolverInputError(f"`{name}` must be a torch.Tensor of shape [B, C], got {type(y0).__name__}.")
    if y0.ndim != 2:
        raise SolverInputError(
            f"`{name}` must have shape [B, C] (batch, channels), got shape {list(y0.shape)}; "
            "for a single trajectory use y0.unsqueeze(0)."
        )
    if y0.shape[0] == 0 or y0.shape[1] == 0:
        raise SolverInputError(f"`{name}` is empty: shape {list(y0.shape)}.")
    if not y0.is_floating_point():
        raise SolverInputError(f"`{name}` must be floating point (float32 or float64), got {y0.dtype}.")
    if not bool(torch.isfinite(y0).all()):
        bad = torch.nonzero(~torch.isfinite(y0))[0].tolist()
        raise SolverInputError(f"`{name}` has a NaN or infinite entry at index {bad}; the solve would be NaN.")


def check_output_shape(got: Tensor, expected: tuple[int, ...], what: str) -> None:
    """Check a vector field's output shape on its first evaluation."""
    if not isinstance(got, Tensor):
        raise SolverInputError(f"the {what} must return a torch.Tensor, got {type(got).__name__}.")
    if tuple(got.shape) != tuple(expected):
        raise SolverInputError(
            f"the {what} returned shape {list(got.shape)}, expected {list(expected)}; "
            "batch and channel sizes must match the initial state."
        )


def _captures_trainables(fn: object) -> bool:
    """Whether a plain function visibly holds trainable tensors: in its closure, the module globals it
    names, or as a bound method's owner."""
    held = [getattr(fn, "__self__", None)]
    held += [cell.cell_contents for cell in (getattr(fn, "__closure__", None) or ()) if _cell_filled(cell)]
    code, module_globals = getattr(fn, "__code__", None), getattr(fn, "__globals__", {})
    if code is not None:
        held += [module_globals[name] for name in code.co_names if name in module_globals]
    for obj in held:
        if isinstance(obj, torch.nn.Module) and any(p.requires_grad for p in obj.parameters()):
            return True
        if isinstance(obj, Tensor) and obj.requires_grad:
            return True
    return False


def _cell_filled(cell: object) -> bool:
    try:
        _ = cell.cell_contents  # type: ignore[attr-defined]
    except ValueError:  # an empty cell
        return False
    return True


def check_modules_for_adjoint(adjoint: str, **fields: object) -> None:
    """Refuse functions that hold trainable tensors where gradients come from a second pass.

    The adjoint, reversible-Heun and checkpointed backward passes differentiate only the parameters they
    are handed, which are those of ``torch.nn.Module`` arguments; a function's captured parameters would
    silently get no gradient. A function without trainable tensors (gradients only for the initial state
    or the control) is fine.
    """
    if adjoint == "direct":
        return
    for name, fn in fields.items():
        if not isinstance(fn, torch.nn.Module) and _captures_trainables(fn):
            raise SolverInputError(
                f"adjoint={adjoint!r} differentiates the parameters of the {name} in a second pass, but the "
                f"{name} is a plain {type(fn).__name__} holding trainable tensors, which would get no gradient. "
                "Pass a torch.nn.Module, or use adjoint='direct'."
            )


def check_positive(value: float | None, name: str, required: bool = False) -> None:
    if value is None:
        if required:
            raise SolverInputError(f"`{name}` is required here: pass a positive step size.")
        return
    if not (float(value) > 0 and float(value) < float("inf")):
        raise SolverInputError(f"`{name}` must be a positive finite number, got {value!r}.")
