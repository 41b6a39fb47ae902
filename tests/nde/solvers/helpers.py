"""Shared pieces of the solver and layer tests: the devices to run on and small closed-form systems."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

#: Every device-parametrised test runs on the CPU, and again on CUDA where there is one (marked ``gpu``).
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]


def rel_err(got: Tensor, want: Tensor) -> float:
    """``‖got - want‖ / ‖want‖`` as a float."""
    return float((got - want).norm() / want.norm())


def flat_grads(tensors: list[Tensor]) -> Tensor:
    """The ``.grad`` of every tensor, flattened and concatenated (a missing gradient is an error)."""
    for t in tensors:
        assert t.grad is not None, "a tensor received no gradient"
    return torch.cat([t.grad.flatten() for t in tensors])


class LinearField(nn.Module):
    """``f(t, y) = y @ A.T``: the ODE ``dy/dt = A y`` with solution ``y0 @ matrix_exp(A t).T``."""

    def __init__(self, matrix: Tensor) -> None:
        super().__init__()
        self.matrix = nn.Parameter(matrix.clone())

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return y @ self.matrix.T


class LinearCDEField(nn.Module):
    """``f(t, z)[b, h, c] = Σ_k M[h, c, k] z[b, k]``: a CDE vector field linear in the state, ``[B, H] -> [B, H, C]``.

    Along a control with ``dX/dt = a`` (``a [B, C]``) the CDE is the linear ODE ``dz/dt = N_b z`` with
    ``N_b = Σ_c a[b, c] M[:, c, :]``.
    """

    def __init__(self, tensor: Tensor) -> None:
        super().__init__()
        self.tensor = nn.Parameter(tensor.clone())

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return torch.einsum("hck,bk->bhc", self.tensor, z)

    def along(self, direction: Tensor) -> Tensor:
        """``N_b = Σ_c direction[b, c] M[:, c, :]``, shape ``[B, H, H]``."""
        return torch.einsum("hck,bc->bhk", self.tensor, direction)


def linear_ode_solution(y0: Tensor, matrix: Tensor, times: Tensor) -> Tensor:
    """``y(t) = y0 @ matrix_exp(A (t - t0)).T`` at ``times``; ``matrix`` is ``[C, C]`` or per batch ``[B, C, C]``.

    Returns ``[B, T, C]``.
    """
    dts = (times - times[0]).reshape(-1, *([1] * matrix.ndim))
    props = torch.linalg.matrix_exp(matrix.unsqueeze(0) * dts)  # [T, (B,) C, C]
    if matrix.ndim == 2:
        return torch.einsum("tij,bj->bti", props, y0)
    return torch.einsum("tbij,bj->bti", props, y0)
