"""The S4D layer against the discretised state space recurrence, run step by step (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from nde.tsdiff.s4 import S4DKernel, S4DLayer


def _recurrence(layer: S4DLayer, u: torch.Tensor, direction: int) -> torch.Tensor:
    """``y_k = 2 Re(C x_k)`` with ``x_k = Ā x_{k-1} + B̄ u_k``, ``x_{-1} = 0``: ``u [B, L, H] -> [B, L, H]``.

    Built from the continuous parameters (a, Δ, C) alone, not from the layer's kernel code.
    """
    kernel = layer.kernel
    a = torch.complex(-torch.exp(kernel.log_neg_real), kernel.imag)  # [H, N/2]
    dt = torch.exp(kernel.log_dt)[:, None]
    a_bar = torch.exp(dt * a)
    b_bar = (a_bar - 1) / a
    c = torch.view_as_complex(kernel.c[direction].contiguous())
    state = torch.zeros(u.shape[0], *a.shape, dtype=torch.complex128)
    out = []
    for k in range(u.shape[1]):
        state = a_bar * state + b_bar * u[:, k, :, None]
        out.append(2 * (c * state).sum(-1).real)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("init", ["lin", "inv"])
def test_convolution_equals_the_step_by_step_recurrence(init: str) -> None:
    torch.manual_seed(0)
    layer = S4DLayer(3, state_dim=8, bidirectional=True, init=init).double()
    u = torch.randn(2, 40, 3, dtype=torch.float64)
    forward = _recurrence(layer, u, 0)
    # The backward part is the recurrence on the reversed sequence, shifted so that u_k is not counted twice.
    backward = _recurrence(layer, u.flip(1), 1).flip(1)
    backward = torch.cat([backward[:, 1:], torch.zeros_like(backward[:, :1])], dim=1)
    expected = forward + backward + layer.d * u
    assert torch.allclose(layer.ssm(u), expected, atol=1e-12, rtol=0)
    # The kernel is the impulse response of the recurrence.
    impulse = torch.zeros(1, 40, 3, dtype=torch.float64)
    impulse[0, 0] = 1.0
    assert torch.allclose(layer.kernel(40)[0].T, _recurrence(layer, impulse, 0)[0], atol=1e-13, rtol=0)


def test_zero_order_hold_step_response_is_the_continuous_one() -> None:
    # With u = 1 held constant, x(τ) = (e^{aτ} - 1)/a exactly, so Σ_{l<=k} K[l] = 2 Re(C (e^{a(k+1)Δ} - 1)/a).
    torch.manual_seed(1)
    kernel = S4DKernel(2, state_dim=6, directions=1).double()
    k = kernel(25)[0]  # [H, L]
    a = torch.complex(-torch.exp(kernel.log_neg_real), kernel.imag)
    dt = torch.exp(kernel.log_dt)[:, None, None]
    tau = dt * torch.arange(1, 26, dtype=torch.float64)  # [H, 1, L]
    c = torch.view_as_complex(kernel.c[0].contiguous())
    exact = 2 * (c[:, :, None] * (torch.exp(a[:, :, None] * tau) - 1) / a[:, :, None]).sum(1).real
    assert torch.allclose(k.cumsum(-1), exact, atol=1e-12, rtol=0)


def test_future_inputs_reach_an_output_only_through_the_backward_kernel() -> None:
    torch.manual_seed(2)
    layer = S4DLayer(2, state_dim=4, bidirectional=True).double()
    length, t = 12, 5
    u = torch.randn(1, length, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(layer.ssm(u)[0, t, 0], u)
    k_f, k_b = layer.kernel(length)[:, 0]
    expected = torch.zeros(length, dtype=torch.float64)
    expected[: t + 1] = k_f[: t + 1].flip(0)  # u_s, s <= t: K_f[t - s]
    expected[t] += layer.d[0]
    expected[t + 1 :] = k_b[: length - t - 1]  # u_s, s > t: K_b[s - t - 1]
    assert torch.allclose(grad[0, :, 0], expected, atol=1e-13, rtol=0)
    assert torch.all(grad[0, :, 1] == 0)  # channels do not mix inside the SSM
    # Without the backward direction the layer is causal: the future has no influence (up to FFT round-off).
    causal = S4DLayer(2, state_dim=4, bidirectional=False).double()
    (grad,) = torch.autograd.grad(causal(u)[0, t].sum(), u)
    assert float(grad[0, t + 1 :].abs().max()) < 1e-15 and float(grad[0, : t + 1].abs().min()) > 1e-6


def test_initialisations_and_shapes() -> None:
    torch.manual_seed(3)
    lin = S4DKernel(4, state_dim=8, init="lin")
    assert torch.allclose(lin.imag[0], math.pi * torch.arange(4.0))
    inv = S4DKernel(4, state_dim=8, init="inv")
    n = torch.arange(4.0)
    assert torch.allclose(inv.imag[0], 8 / math.pi * (8 / (2 * n + 1) - 1))
    assert torch.allclose(torch.exp(lin.log_neg_real), torch.full((4, 4), 0.5))
    dt = torch.exp(lin.log_dt)
    assert bool(((dt >= 1e-3) & (dt <= 1e-1)).all())
    layer = S4DLayer(4, state_dim=8)
    assert layer(torch.randn(3, 17, 4)).shape == (3, 17, 4)
    with pytest.raises(ValueError, match=r"\[B, L, 4\]"):
        layer(torch.randn(3, 4, 17))
    with pytest.raises(ValueError, match="even state_dim"):
        S4DKernel(4, state_dim=7)
    with pytest.raises(ValueError, match="unknown S4D initialisation"):
        S4DKernel(4, state_dim=8, init="legs")  # type: ignore[arg-type]
