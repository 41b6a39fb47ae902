"""ODE-RNN (Rubanova, Chen & Duvenaud, 2019): a GRU whose hidden state follows a Neural ODE between observations.

Between two observation times the hidden state evolves by ``dh/dt = f(h)`` (an MLP with tanh activations);
at an observation it jumps by a GRU cell whose input is ``[values, mask]`` (values 0 where unobserved).
:class:`ODERNNEncoder` is the recurrence (also the encoder of :class:`~nde.irregular.latent_ode.LatentODEModel`,
run backward in time there); :class:`ODERNNModel` is the ``fit``/``predict`` model (``name = "ode_rnn"``):

- ``classify``: logits from a linear head on the final hidden state;
- ``forecast``: the final hidden state of the context keeps evolving by the same ODE to the target times,
  where a linear head gives a Gaussian mean and standard deviation per channel, trained by the negative
  log-likelihood of the observed targets (mean per observed target entry).

The batch is vectorised over series with different times by solving, at each observation position
``i = 0 .. L-1``, ``dh/ds = Δt_b f(h)`` for ``s ∈ [0, 1]`` (``Δt_b`` the gap of series ``b`` since its
previous observation, 0 at padding) with a few fixed native steps of :func:`nde.solvers.solve_ode`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nde.irregular.base import GaussianForecastNetwork, IrregularModel, Task, decode_ode_on_grid, positive_std
from nde.layers import MLPVectorField
from nde.solvers import solve_ode

__all__ = ["FIXED_STEP_METHODS", "GapScaledField", "ODERNNEncoder", "ODERNNModel", "check_hyperparameters"]

#: The native fixed-step methods the recurrences may use between observations.
FIXED_STEP_METHODS: tuple[str, ...] = ("euler", "midpoint", "rk4")



def check_hyperparameters(model: str, positive: dict[str, Any], nonnegative: dict[str, Any] | None = None,
                          method: str | None = None) -> None:
    """``ValueError`` naming ``model`` and the setting for a non-int / out-of-range size or an unknown method."""
    for name, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{model}: {name} must be an int >= 1, got {value!r}")
    for name, value in (nonnegative or {}).items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{model}: {name} must be an int >= 0, got {value!r}")
    if method is not None and method not in FIXED_STEP_METHODS:
        raise ValueError(f"{model}: method must be one of {list(FIXED_STEP_METHODS)}, got {method!r}")


class GapScaledField(nn.Module):
    """``F(s, h) = Δt_b · f(s, h)``: the field ``f`` on each series' own gap rescaled to ``s ∈ [0, 1]``.

    Set :attr:`dt` (``[B, 1]``) before each solve; solving ``F`` over ``[0, 1]`` moves series ``b`` by
    ``Δt_b`` time units of ``dh/dt = f(h)``, and a gap of 0 leaves its state exactly unchanged.
    """

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.dt: Tensor | None = None

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        assert self.dt is not None, "set GapScaledField.dt before solving"
        return self.dt * self.field(t, h)


class ODERNNEncoder(nn.Module):
    """The ODE-RNN recurrence over padded, irregular observations; returns the hidden state after the last one.

    Args:
        n_channels: ``C``, value channels (the GRU input is ``[values, mask]``, ``2C``).
        hidden: size of the hidden state ``h`` (starts at 0).
        width, depth: of the MLP ``f`` (tanh activations; ``depth=0`` is a linear field).
        method: native fixed-step method between observations (``"euler"``, ``"midpoint"``, ``"rk4"``).
        ode_steps: steps per gap (every gap, short or long, gets this many steps of its unit interval).

    Attributes:
        field: ``f(t, h)``, autonomous (no time input); the forecast decoder of the ODE-RNN reuses it.
        cell: the ``nn.GRUCell`` of the jumps.
    """

    def __init__(self, n_channels: int, hidden: int, width: int, depth: int, method: str = "rk4",
                 ode_steps: int = 1) -> None:
        super().__init__()
        check_hyperparameters("ODE-RNN", {"n_channels": n_channels, "hidden": hidden, "width": width,
                                          "ode_steps": ode_steps}, {"depth": depth}, method)
        self.n_channels, self.hidden = n_channels, hidden
        self.method, self.ode_steps = method, ode_steps
        self.field = MLPVectorField(hidden, width=width, depth=depth, activation="tanh", time_input=False)
        self.scaled = GapScaledField(self.field)
        self.cell = nn.GRUCell(2 * n_channels, hidden)

    def evolve(self, h: Tensor, dt: Tensor) -> Tensor:
        """``h [B, H]`` moved by ``dt [B]`` time units of ``dh/dt = f(h)`` (``ode_steps`` native steps)."""
        self.scaled.dt = dt.unsqueeze(-1).to(h.dtype)
        unit = torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
        try:
            ys = solve_ode(self.scaled, h, unit, method=self.method, step_size=1.0 / self.ode_steps,
                           backend="native").ys
        finally:
            self.scaled.dt = None
        return ys[:, -1]

    def forward(self, times: Tensor, values: Tensor, mask: Tensor, reverse: bool = False,
                h0: Tensor | None = None) -> Tensor:
        """Final hidden state ``[B, H]`` after all observations of ``times [B, L]``, ``values``/``mask [B, L, C]``.

        A position with no observed channel (padding) changes nothing: no gap is integrated and no jump
        is made, and the next gap is measured from the last real observation. With ``reverse=True`` the
        positions are visited from ``L-1`` to ``0`` (time running backward), so the state ends at the
        first observation.
        """
        if values.ndim != 3 or values.shape[-1] != self.n_channels:
            raise ValueError(f"values must have shape [B, L, {self.n_channels}], got {list(values.shape)}")
        if times.shape != values.shape[:2] or mask.shape != values.shape:
            raise ValueError(f"times {list(times.shape)} and mask {list(mask.shape)} do not match values "
                             f"{list(values.shape)}")
        b, length, _ = values.shape
        h = values.new_zeros(b, self.hidden) if h0 is None else h0
        mask = mask.to(values.dtype)
        observed = mask.amax(-1) > 0  # [B, L]
        inputs = torch.cat([values * mask, mask], dim=-1)  # [B, L, 2C]
        positions = range(length - 1, -1, -1) if reverse else range(length)
        t_prev = times[:, -1 if reverse else 0]
        for i in positions:
            obs = observed[:, i]
            gap = (times[:, i] - t_prev).abs() * obs
            if bool((gap > 0).any()):
                h = self.evolve(h, gap)
            jumped = self.cell(inputs[:, i], h)
            h = torch.where(obs.unsqueeze(-1), jumped, h)
            t_prev = torch.where(obs, times[:, i], t_prev)
        return h


class _ODERNNClassifierNetwork(nn.Module):
    def __init__(self, n_channels: int, n_classes: int, **encoder: Any) -> None:
        super().__init__()
        self.encoder = ODERNNEncoder(n_channels, **encoder)
        self.readout = nn.Linear(self.encoder.hidden, n_classes)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.readout(self.encoder(inputs["times"], inputs["values"], inputs["mask"]))


class _ODERNNForecastNetwork(GaussianForecastNetwork):
    """Gaussian forecasts ``N(mean(τ), std(τ)²)`` per channel from the context's final state evolved by ``f``."""

    def __init__(self, n_channels: int, decoder_steps: int, **encoder: Any) -> None:
        super().__init__()
        self.encoder = ODERNNEncoder(n_channels, **encoder)
        self.head = nn.Linear(self.encoder.hidden, 2 * n_channels)
        self.decoder_steps = decoder_steps

    def distribution(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation ``[B, Q, C]`` at ``inputs["target_times"]``."""
        h = self.encoder(inputs["times"], inputs["values"], inputs["mask"])
        tau = (inputs["target_times"] - inputs["times"][:, -1:]).clamp_min(0.0)
        path = decode_ode_on_grid(self.encoder.field, h, tau, self.decoder_steps, self.encoder.method)
        mean, raw = self.head(path).chunk(2, dim=-1)
        return mean, positive_std(raw)


class ODERNNModel(IrregularModel):
    """ODE-RNN classifier and forecaster (Rubanova et al., 2019).

    ``h`` starts at 0 before the first observation. Between observations ``dh/dt = f(h)``; at an observation
    ``h ← GRU([x ⊙ m, m], h)``. Classification: ``logits = W h_L + b``. Forecasting: ``h(T + τ)`` solves the same
    ODE from the context's final state (one fixed-step solve on a grid shared by the batch, read at each
    series' horizons ``τ``), and ``[μ, ρ] = W h(T + τ) + b`` gives ``N(μ, (softplus(ρ + 0.5413) + 0.01)²)``
    per channel (standard deviation 1 at ``ρ = 0``).

    Args:
        task, forecast_fraction: see :class:`~nde.irregular.IrregularModel`.
        hidden: size of the hidden state. width, depth: of the ODE's MLP.
        method: native fixed-step method (``"euler"``, ``"midpoint"``, ``"rk4"``).
        ode_steps: solver steps per gap between two observations.
        decoder_steps: steps of the forecast solve over the batch's longest horizon.
    """

    name = "ode_rnn"
    tasks = ("classify", "forecast")

    def __init__(self, task: Task = "classify", forecast_fraction: float = 0.2, *, hidden: int = 32,
                 width: int = 64, depth: int = 2, method: str = "rk4", ode_steps: int = 1,
                 decoder_steps: int = 20) -> None:
        check_hyperparameters(self.name, {"hidden": hidden, "width": width, "ode_steps": ode_steps,
                                          "decoder_steps": decoder_steps}, {"depth": depth}, method)
        super().__init__(task, forecast_fraction, hidden=hidden, width=width, depth=depth, method=method,
                         ode_steps=ode_steps, decoder_steps=decoder_steps)

    def build_network(self, n_channels: int, n_classes: int | None) -> nn.Module:
        h = dict(self.hyper)
        encoder = {"hidden": h["hidden"], "width": h["width"], "depth": h["depth"], "method": h["method"],
                   "ode_steps": h["ode_steps"]}
        if self.task == "classify":
            assert n_classes is not None
            return _ODERNNClassifierNetwork(n_channels, n_classes, **encoder)
        return _ODERNNForecastNetwork(n_channels, h["decoder_steps"], **encoder)
