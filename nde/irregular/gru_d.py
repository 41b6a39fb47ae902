"""GRU-D: the discrete-time baseline, a GRU that sees time gaps and masks (Che et al., Sci. Rep. 2018).

No differential equation: the hidden state jumps once per observation time, and the time between
observations enters only through learned exponential decays. Per channel ``d`` and position ``l``,

* ``δ_l^d`` is the time since channel ``d`` was last observed *before* position ``l``
  (``δ_0 = 0``; ``δ_l = t_l - t_{l-1}`` after an observation at ``l-1``, else ``t_l - t_{l-1} + δ_{l-1}``);
* the input decay ``γ_x = exp(-max(0, w_x ⊙ δ + b_x))`` (diagonal) pulls the last observed value
  ``x_last`` towards the training mean (0 after standardisation):
  ``x̂ = m ⊙ x + (1 - m) ⊙ (γ_x ⊙ x_last + (1 - γ_x) ⊙ 0)`` (``x_last = 0`` before a first observation);
* the hidden decay ``γ_h = exp(-max(0, W_h δ + b_h))`` shrinks the state before each step:
  ``h_l = GRUCell([x̂_l, m_l (, δ_l)], γ_h(δ_l) ⊙ h_{l-1})``; padding positions keep ``h`` unchanged.

:class:`GRUDModel` (``name = "gru"``) classifies with a linear head on the final state and forecasts by
decaying the final state to each target time (``δ = τ + δ_end``, ``τ`` the gap after the last context
time, ``δ_end`` each channel's time since its last context observation) and reading a Gaussian per
channel with a small MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nde.irregular.base import GaussianForecastNetwork, IrregularModel, Task, positive_std
from nde.layers.vector_fields import mlp

__all__ = ["GRUD", "GRUDModel", "grud_deltas", "grud_features"]


def _check_inputs(times: Tensor, mask: Tensor) -> None:
    if times.ndim != 2 or mask.ndim != 3 or mask.shape[:2] != times.shape:
        raise ValueError(f"expected times [B, L] and mask [B, L, C], got {list(times.shape)} and {list(mask.shape)}")


def grud_features(times: Tensor, values: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """The GRU-D bookkeeping of a padded batch, vectorised over batch and positions.

    Args:
        times: ``[B, L]`` (padding repeats the last time).
        values: ``[B, L, C]`` (any value where unobserved).
        mask: ``[B, L, C]``, nonzero where observed (zero at padding).

    Returns:
        ``delta [B, L, C]``: time since the channel's last observation strictly before each position,
        ``t_l - t_0`` while there was none (so ``δ_0 = 0``); ``x_last [B, L, C]``: the value of that
        observation (0 while there was none); ``delta_end [B, C]`` and ``x_end [B, C]``: the same after the
        last position (its own observation included), the state a forecast starts from.
    """
    _check_inputs(times, mask)
    B, L, C = mask.shape
    observed = mask > 0
    pos = torch.arange(L, device=times.device).view(1, L, 1).expand(B, L, C)
    last_incl = torch.where(observed, pos, torch.full_like(pos, -1)).cummax(dim=1).values  # last obs at <= l
    last_prev = torch.cat([torch.full_like(last_incl[:, :1], -1), last_incl[:, :-1]], dim=1)  # at < l
    t = times.unsqueeze(-1).expand(B, L, C)
    values = torch.where(observed, values, torch.zeros_like(values))  # NaN-safe

    def since(last: Tensor, t_now: Tensor) -> tuple[Tensor, Tensor]:
        # No observation yet (-1) reads index 0: δ = t - t_0, and the value is zeroed.
        idx = last.clamp_min(0)
        x = torch.where(last >= 0, values.gather(1, idx), torch.zeros_like(t_now))
        return t_now - t.gather(1, idx), x

    delta, x_last = since(last_prev, t)
    delta_end, x_end = since(last_incl[:, -1:], t[:, -1:])
    return {"delta": delta, "x_last": x_last, "delta_end": delta_end[:, 0], "x_end": x_end[:, 0]}


def grud_deltas(times: Tensor, mask: Tensor) -> Tensor:
    """``δ [B, L, C]`` of :func:`grud_features` alone."""
    return grud_features(times, torch.zeros_like(mask, dtype=times.dtype), mask)["delta"]


class _Decay(nn.Module):
    """``γ = exp(-max(0, W δ + b))``: diagonal (``C -> C``) or dense (``C -> H``)."""

    def __init__(self, in_features: int, out_features: int, diagonal: bool) -> None:
        super().__init__()
        self.diagonal = diagonal
        # Nonnegative initial rates so that every decay starts active (max(0, .) passes gradients) and
        # shrinks over about one time scale (a series' mean duration is 1 after standardisation).
        if diagonal:
            self.weight = nn.Parameter(torch.ones(in_features))
        else:
            self.weight = nn.Parameter(torch.rand(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, delta: Tensor) -> Tensor:
        rate = delta * self.weight if self.diagonal else nn.functional.linear(delta, self.weight)
        return torch.exp(-torch.relu(rate + self.bias))


class GRUD(nn.Module):
    """The GRU-D encoder: standard inputs -> final hidden state ``[B, H]`` (and the features it used).

    Args:
        n_channels: ``C``. hidden: ``H``.
        delta_input: also feed ``δ`` to the GRU (input ``[x̂, m, δ]`` instead of ``[x̂, m]``).
    """

    def __init__(self, n_channels: int, hidden: int, delta_input: bool = False) -> None:
        super().__init__()
        self.n_channels, self.hidden, self.delta_input = n_channels, hidden, delta_input
        self.input_decay = _Decay(n_channels, n_channels, diagonal=True)
        self.hidden_decay = _Decay(n_channels, hidden, diagonal=False)
        self.cell = nn.GRUCell((3 if delta_input else 2) * n_channels, hidden)

    def forward(self, inputs: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        times, values, mask, lengths = inputs["times"], inputs["values"], inputs["mask"], inputs["lengths"]
        feats = grud_features(times, values, mask)
        delta = feats["delta"].to(values.dtype)
        m = (mask > 0).to(values.dtype)
        gamma_x = self.input_decay(delta)
        x_hat = m * torch.where(mask > 0, values, torch.zeros_like(values)) + (1 - m) * gamma_x * feats["x_last"]
        parts = [x_hat, m, delta] if self.delta_input else [x_hat, m]
        cell_in = torch.cat(parts, dim=-1)  # [B, L, 2C or 3C]
        gamma_h = self.hidden_decay(delta)  # [B, L, H], all positions at once
        B, L, _ = values.shape
        valid = (torch.arange(L, device=values.device)[None, :] < lengths.to(values.device)[:, None]).unsqueeze(-1)
        h = values.new_zeros(B, self.hidden)
        for l in range(L):
            h_new = self.cell(cell_in[:, l], gamma_h[:, l] * h)
            h = torch.where(valid[:, l], h_new, h)
        return h, feats


class _GRUDClassifierNetwork(nn.Module):
    def __init__(self, n_channels: int, n_classes: int, hidden: int, delta_input: bool) -> None:
        super().__init__()
        self.encoder = GRUD(n_channels, hidden, delta_input)
        self.readout = nn.Linear(hidden, n_classes)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.readout(self.encoder(inputs)[0])


class _GRUDForecastNetwork(GaussianForecastNetwork):
    """Gaussian forecasts from the decayed final state.

    At a target time ``t_q`` (gap ``τ_q = t_q - t_last``), channel ``d`` has gone ``δ_q^d = τ_q + δ_end^d``
    unobserved. The head reads ``[γ_h(δ_q) ⊙ h_T, γ_x(δ_q) ⊙ x_end]`` (the decayed state and GRU-D's own
    imputation of the inputs at ``t_q``) and returns a mean and ``std = softplus(raw + 0.5413) + 0.01``
    (1 at ``raw = 0``) per channel. The loss is the mean Gaussian NLL per observed target entry.
    """

    def __init__(self, n_channels: int, hidden: int, delta_input: bool, width: int, depth: int) -> None:
        super().__init__()
        self.encoder = GRUD(n_channels, hidden, delta_input)
        self.head = mlp(hidden + n_channels, 2 * n_channels, width, depth)

    def distribution(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        h, feats = self.encoder(inputs)
        tau = (inputs["target_times"] - inputs["times"][:, -1:]).clamp_min(0.0)  # [B, Q]
        delta = tau.unsqueeze(-1) + feats["delta_end"].unsqueeze(1)  # [B, Q, C]
        h_q = self.encoder.hidden_decay(delta) * h.unsqueeze(1)  # [B, Q, H]
        x_q = self.encoder.input_decay(delta) * feats["x_end"].unsqueeze(1)  # [B, Q, C]
        mean, raw = self.head(torch.cat([h_q, x_q], dim=-1)).chunk(2, dim=-1)
        return mean, positive_std(raw)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class GRUDModel(IrregularModel):
    """GRU-D (Che et al. 2018): a GRU over the observation times with learned input and hidden decays.

    Classification: logits from a linear head on the final hidden state. Forecasting: the final state
    decayed by ``γ_h`` to each target time, with the inputs imputed there by ``γ_x``, read by an MLP as a
    Gaussian per channel (trained by its negative log-likelihood on the targets).

    Args:
        task, forecast_fraction: see :class:`~nde.irregular.IrregularModel`.
        hidden: GRU state size.
        delta_input: also feed the gaps ``δ`` to the GRU.
        width, depth: of the forecast head's MLP (unused when classifying).
    """

    name = "gru"

    def __init__(self, task: Task = "classify", forecast_fraction: float = 0.2, *, hidden: int = 64,
                 delta_input: bool = False, width: int = 64, depth: int = 1) -> None:
        _positive_int("hidden", hidden)
        _positive_int("width", width)
        _positive_int("depth", depth, minimum=0)
        if not isinstance(delta_input, bool):
            raise ValueError(f"delta_input must be a bool, got {delta_input!r}")
        super().__init__(task, forecast_fraction, hidden=hidden, delta_input=delta_input, width=width, depth=depth)

    def build_network(self, n_channels: int, n_classes: int | None) -> nn.Module:
        h = self.hyper
        if self.task == "classify":
            assert n_classes is not None
            return _GRUDClassifierNetwork(n_channels, n_classes, h["hidden"], h["delta_input"])
        return _GRUDForecastNetwork(n_channels, h["hidden"], h["delta_input"], h["width"], h["depth"])
