"""Vector fields as ``torch.nn.Module``s that take the time as an input.

Every field is called as ``field(t, y)`` with ``t`` a scalar tensor and ``y [B, C]``, the signature of
the solver fronts in :mod:`nde.solvers`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "AdditiveDiffusion",
    "CDEVectorField",
    "DiagonalDiffusion",
    "GeneralDiffusion",
    "MLPVectorField",
]

_ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU}


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


def mlp(in_features: int, out_features: int, width: int, depth: int, activation: str = "tanh") -> nn.Sequential:
    """A multilayer perceptron with ``depth`` hidden layers of ``width`` units."""
    if min(in_features, out_features, width) < 1 or depth < 0:
        raise ValueError(
            f"mlp sizes must be positive (in={in_features}, out={out_features}, width={width}, depth={depth})."
        )
    act = _activation(activation)
    layers: list[nn.Module] = []
    size = in_features
    for _ in range(depth):
        layers += [nn.Linear(size, width), act()]
        size = width
    layers.append(nn.Linear(size, out_features))
    return nn.Sequential(*layers)


def _with_time(t: Tensor, y: Tensor) -> Tensor:
    """``[B, C]`` -> ``[B, C + 1]`` with the time as the last column."""
    return torch.cat([y, t.to(y.dtype).expand(y.shape[0], 1)], dim=-1)


class MLPVectorField(nn.Module):
    """``f(t, y) = MLP([y, t])``: an autonomous or time-dependent ODE vector field ``[B, C] -> [B, C]``.

    Args:
        channels: state size ``C``.
        width, depth: hidden layer size and count.
        activation: ``"tanh"`` (default), ``"softplus"``, ``"relu"``, ``"silu"`` or ``"elu"``.
        time_input: feed ``t`` as an extra input (default True).
        final_activation: optional activation applied to the output (e.g. ``"tanh"`` to bound it).
    """

    def __init__(self, channels: int, width: int = 64, depth: int = 2, activation: str = "tanh",
                 time_input: bool = True, final_activation: str | None = None) -> None:
        super().__init__()
        self.time_input = time_input
        self.net = mlp(channels + int(time_input), channels, width, depth, activation)
        self.final = _activation(final_activation)() if final_activation else nn.Identity()

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        x = _with_time(t, y) if self.time_input else y
        return self.final(self.net(x))


class CDEVectorField(nn.Module):
    """``f(t, z) = tanh(MLP([z, t]))`` reshaped to ``[B, H, C]``: the matrix multiplying ``dX/dt``.

    The final tanh bounds every entry in ``[-1, 1]`` so that the CDE's right-hand side grows at most
    linearly in the control's derivative and solves stay stable (Kidger et al., 2020).

    Args:
        hidden_channels: ``H``, the size of the hidden state ``z``.
        input_channels: ``C``, the number of channels of the control ``X``.
        width, depth, activation: of the MLP (softplus hidden activations by default, as in torchcde).
        time_input: feed ``t`` as an extra input (default False: the control usually carries time).
    """

    def __init__(self, hidden_channels: int, input_channels: int, width: int = 64, depth: int = 2,
                 activation: str = "softplus", time_input: bool = False) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.input_channels = input_channels
        self.time_input = time_input
        self.net = mlp(hidden_channels + int(time_input), hidden_channels * input_channels, width, depth, activation)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        x = _with_time(t, z) if self.time_input else z
        out = torch.tanh(self.net(x))
        return out.view(z.shape[0], self.hidden_channels, self.input_channels)


class DiagonalDiffusion(nn.Module):
    """Diagonal noise ``g_i(t, y) = σ_i(t, y_i)``: one small network per channel, ``[B, C] -> [B, C]``.

    Each ``g_i`` sees only ``y_i`` (and ``t``), which is what diagonal noise means and what Milstein's
    method and the diagonal-noise adjoint assume; a plain MLP over all of ``y`` would break that silently.
    The channels' networks are evaluated together as batched matrix products.

    Args:
        channels: state size ``C``.
        width: hidden size of each channel's network (one hidden layer).
        time_input: feed ``t`` as an extra input.
        final_activation: ``"sigmoid"`` (default; bounded positive noise), ``"softplus"`` or ``None``.
    """

    def __init__(self, channels: int, width: int = 16, time_input: bool = True,
                 final_activation: str | None = "sigmoid") -> None:
        super().__init__()
        if channels < 1 or width < 1:
            raise ValueError(f"channels and width must be positive, got {channels} and {width}.")
        self.time_input = time_input
        n_in = 1 + int(time_input)
        bound1, bound2 = 1 / math.sqrt(n_in), 1 / math.sqrt(width)
        self.w1 = nn.Parameter(torch.empty(channels, n_in, width).uniform_(-bound1, bound1))
        self.b1 = nn.Parameter(torch.empty(channels, 1, width).uniform_(-bound1, bound1))
        self.w2 = nn.Parameter(torch.empty(channels, width, 1).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.empty(channels, 1, 1).uniform_(-bound2, bound2))
        if final_activation not in (None, "sigmoid", "softplus"):
            raise ValueError(f"final_activation must be 'sigmoid', 'softplus' or None, got {final_activation!r}.")
        self.final_activation = final_activation

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        x = y.transpose(0, 1).unsqueeze(-1)  # [C, B, 1]
        if self.time_input:
            x = torch.cat([x, t.to(y.dtype).expand(x.shape[0], x.shape[1], 1)], dim=-1)
        h = torch.tanh(torch.baddbmm(self.b1, x, self.w1))
        out = torch.baddbmm(self.b2, h, self.w2).squeeze(-1).transpose(0, 1)  # [B, C]
        if self.final_activation == "sigmoid":
            return torch.sigmoid(out)
        if self.final_activation == "softplus":
            return nn.functional.softplus(out)
        return out


class GeneralDiffusion(nn.Module):
    """General noise ``g(t, y) = MLP([y, t])`` reshaped to ``[B, C, m]``.

    Args:
        channels: state size ``C``.
        noise_channels: number of Brownian motions ``m``.
        width, depth, activation: of the MLP.
        scale: the output is ``scale * tanh(.)``, bounding the noise.
    """

    def __init__(self, channels: int, noise_channels: int, width: int = 64, depth: int = 1,
                 activation: str = "tanh", scale: float = 1.0) -> None:
        super().__init__()
        self.channels, self.noise_channels, self.scale = channels, noise_channels, scale
        self.net = mlp(channels + 1, channels * noise_channels, width, depth, activation)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.scale * torch.tanh(self.net(_with_time(t, y)))
        return out.view(y.shape[0], self.channels, self.noise_channels)


class AdditiveDiffusion(nn.Module):
    """Additive noise ``g(t) = MLP(t)`` reshaped to ``[B, C, m]``, independent of the state.

    With ``time_dependent=False`` it is a learnable constant matrix.
    """

    def __init__(self, channels: int, noise_channels: int, width: int = 16, time_dependent: bool = True,
                 init_scale: float = 0.1) -> None:
        super().__init__()
        self.channels, self.noise_channels = channels, noise_channels
        self.time_dependent = time_dependent
        if time_dependent:
            self.net: nn.Module | None = mlp(1, channels * noise_channels, width, 1, "tanh")
        else:
            self.net = None
        self.matrix = nn.Parameter(init_scale * torch.randn(channels, noise_channels))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        matrix = self.matrix
        if self.net is not None:
            matrix = matrix + self.net(t.to(y.dtype).reshape(1, 1)).view(self.channels, self.noise_channels)
        return matrix.unsqueeze(0).expand(y.shape[0], -1, -1)
