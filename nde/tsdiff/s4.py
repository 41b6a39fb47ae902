"""A diagonal structured state space layer (S4D; Gu, Gupta, Goel & Ré, 2022) in plain torch, bidirectional.

One S4D layer maps ``H`` input channels to ``H`` output channels; every channel ``h`` has its own linear
time-invariant state space model with a complex diagonal state matrix of ``N/2`` modes (``N = d_state``
counts the real state size: each complex mode stands for a conjugate pair)::

    x'(τ) = A x(τ) + B u(τ),   y(τ) = 2 Re(C x(τ)) + D u(τ),   A = diag(a_1, ..., a_{N/2}),  Re a_n < 0.

Discretisation with step ``Δ_h`` by zero-order hold (ZOH, the input held constant over a step)::

    Ā = exp(Δ A),   B̄ = (exp(Δ A) - 1) / A · B,
    x_k = Ā x_{k-1} + B̄ u_k,   y_k = 2 Re(C x_k) + D u_k,   x_{-1} = 0,

so ``y_k = Σ_{j<=k} K[k - j] u_j + D u_k`` with the convolution kernel

    K[l] = 2 Re( Σ_n C_n B̄_n Ā_n^l ),   l = 0 .. L-1,

computed as the product of ``C B̄`` with the Vandermonde matrix ``V[n, l] = exp(l Δ a_n)`` (``O(H N L)``), and
the convolution by FFT of length ``2L`` (zero padding makes the circular convolution linear).
``B = 1`` is fixed: only the products ``C_n B_n`` matter for a diagonal system.

Bidirectional (as the S4 layer that TSDiff uses): a second kernel ``K_b`` (its own ``C``, shared ``A`` and
``Δ``) runs over the reversed sequence; with the forward kernel ``K_f``,

    y_k = Σ_{j<=k} K_f[k - j] u_j + Σ_{j>k} K_b[j - k - 1] u_j + D u_k,

i.e. future inputs reach ``y_k`` only through ``K_b``, shifted by one step so that ``u_k`` itself is counted
once (by ``K_f[0]``). Both parts come from one FFT convolution with the two-sided kernel
``[K_f, reversed K_b]`` of length ``2L``.

Initialisation (S4D paper, Section 4): ``a_n = -1/2 + i π n`` (S4D-Lin) or
``a_n = -1/2 + i (N/π) (N/(2n + 1) - 1)`` (S4D-Inv), ``n = 0 .. N/2 - 1``; ``C ~ CN(0, 1)``;
``log Δ ~ U(log Δ_min, log Δ_max)``, ``Δ ∈ [0.001, 0.1]``; ``D ~ N(0, 1)``. ``Re a_n = -exp(θ_n)`` stays
negative (a stable system) whatever the trained ``θ``.

Shapes: inputs and outputs ``[B, L, H]`` (batch, time, channels).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["S4DInit", "S4DKernel", "S4DLayer"]

#: ``"lin"``: S4D-Lin, ``"inv"``: S4D-Inv.
S4DInit = Literal["lin", "inv"]


def _init_imaginary(init: S4DInit, state_dim: int) -> Tensor:
    half = state_dim // 2
    n = torch.arange(half, dtype=torch.float64)
    if init == "lin":
        return math.pi * n
    if init == "inv":
        return state_dim / math.pi * (state_dim / (2 * n + 1) - 1)
    raise ValueError(f"unknown S4D initialisation {init!r}; choose 'lin' or 'inv'")


class S4DKernel(nn.Module):
    """The discretised S4D convolution kernels of ``H`` channels and ``directions`` directions (1 or 2).

    Parameters: ``log_dt [H]`` (``Δ = exp(log_dt)``), ``log_neg_real [H, N/2]`` (``Re a = -exp(.)``),
    ``imag [H, N/2]`` (``Im a``) and ``c [directions, H, N/2, 2]`` (``C`` as real and imaginary parts).
    """

    def __init__(self, channels: int, state_dim: int = 128, directions: int = 2, init: S4DInit = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        if channels < 1 or state_dim < 2 or state_dim % 2:
            raise ValueError(f"need channels >= 1 and an even state_dim >= 2, got {channels}, {state_dim}")
        if directions not in (1, 2):
            raise ValueError(f"directions must be 1 or 2, got {directions}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        half = state_dim // 2
        imag = _init_imaginary(init, state_dim).to(torch.float32)
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_neg_real = nn.Parameter(torch.full((channels, half), math.log(0.5)))
        self.imag = nn.Parameter(imag.repeat(channels, 1))
        # CN(0, 1): real and imaginary parts each N(0, 1/2), as torch.randn of a complex dtype.
        self.c = nn.Parameter(torch.randn(directions, channels, half, 2) * math.sqrt(0.5))

    @property
    def directions(self) -> int:
        return self.c.shape[0]

    def discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(dt_a, a_bar, c_b_bar)``: ``Δ a [H, N/2]``, ``Ā = exp(Δ a) [H, N/2]``, ``C B̄ [dirs, H, N/2]`` (complex).

        For inspection and tests; :meth:`forward` uses the same quantities in real arithmetic.
        """
        a = torch.complex(-torch.exp(self.log_neg_real), self.imag)
        dt_a = a * torch.exp(self.log_dt)[:, None]
        a_bar = torch.exp(dt_a)
        b_bar = (a_bar - 1) / a  # ZOH with B = 1
        return dt_a, a_bar, torch.view_as_complex(self.c.contiguous()) * b_bar

    def forward(self, length: int) -> Tensor:
        """``[directions, H, length]``: ``K[l] = 2 Re(Σ_n C_n B̄_n exp(l Δ a_n))``.

        Written in real arithmetic (``exp(l Δa) = e^{l Δ Re a} (cos(l Δ Im a) + i sin(l Δ Im a))``): torch's
        complex ``exp`` on CPU is some 50 times slower than the real ``exp``, ``cos`` and ``sin`` it needs.
        """
        dt = torch.exp(self.log_dt)[:, None]
        re_a, im_a = -torch.exp(self.log_neg_real), self.imag
        re_dt_a, im_dt_a = re_a * dt, im_a * dt  # [H, N/2]
        # B̄ = (Ā - 1) / a with Ā = exp(Δ a), as (p + i q) / (re_a + i im_a).
        decay = torch.exp(re_dt_a)
        p, q = decay * torch.cos(im_dt_a) - 1, decay * torch.sin(im_dt_a)
        norm = re_a.square() + im_a.square()
        re_b, im_b = (p * re_a + q * im_a) / norm, (q * re_a - p * im_a) / norm
        re_c, im_c = self.c[..., 0], self.c[..., 1]  # [dirs, H, N/2]
        re_cb, im_cb = re_c * re_b - im_c * im_b, re_c * im_b + im_c * re_b
        steps = torch.arange(length, device=dt.device, dtype=dt.dtype)
        magnitude = torch.exp(re_dt_a[:, :, None] * steps)  # [H, N/2, L]
        angle = im_dt_a[:, :, None] * steps
        re_v, im_v = magnitude * torch.cos(angle), magnitude * torch.sin(angle)
        return 2 * (torch.einsum("dhn,hnl->dhl", re_cb, re_v) - torch.einsum("dhn,hnl->dhl", im_cb, im_v))


class S4DLayer(nn.Module):
    """S4D sequence layer: SSM convolution, ``D`` skip, GELU, dropout and a pointwise linear map.

    ``z = W · dropout(GELU(ssm(u))) + b`` with ``ssm(u)_k`` as in the module docstring (bidirectional by
    default); input and output ``[B, L, H]`` (channels last, so the pointwise maps are plain matrix
    products). The raw convolution is :meth:`ssm`.
    """

    def __init__(self, channels: int, state_dim: int = 128, bidirectional: bool = True, init: S4DInit = "lin",
                 dropout: float = 0.0, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        self.channels = channels
        self.bidirectional = bidirectional
        self.kernel = S4DKernel(channels, state_dim, 2 if bidirectional else 1, init, dt_min, dt_max)
        self.d = nn.Parameter(torch.randn(channels))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = nn.Linear(channels, channels)

    def ssm(self, u: Tensor) -> Tensor:
        """``[B, L, H] -> [B, L, H]``: ``Σ_{j<=k} K_f[k-j] u_j (+ Σ_{j>k} K_b[j-k-1] u_j) + D u_k``."""
        if u.ndim != 3 or u.shape[-1] != self.channels:
            raise ValueError(f"S4D input must be [B, L, {self.channels}], got {list(u.shape)}")
        length = u.shape[1]
        k = self.kernel(length)  # [dirs, H, L]
        if self.bidirectional:
            # [K_f, 0...] + [0..., K_b reversed]: a two-sided kernel whose entry 2L - 1 - m is K_b[m].
            kernel = F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))
        else:
            kernel = k[0]
        n = 2 * length
        # FFTs along the last (contiguous) axis are about twice as fast as along the time axis of [B, L, H].
        spectrum = torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(kernel, n=n)
        return torch.fft.irfft(spectrum, n=n)[..., :length].transpose(1, 2) + self.d * u

    def forward(self, u: Tensor) -> Tensor:
        return self.output_linear(self.dropout(self.activation(self.ssm(u))))
