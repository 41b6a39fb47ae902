"""Neural CDE models: a hidden state driven by the interpolated data (Kidger et al., 2020).

:class:`NeuralCDEClassifier` is the bare network over precomputed coefficients; :class:`NeuralCDEModel` is
the ``fit``/``predict`` model (``name = "ncde"``) for classification and for forecasting (the Neural CDE
regressor: its final state starts a Neural ODE whose state is read out as a Gaussian at the target times).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from nde.irregular.base import GaussianForecastNetwork, IrregularModel, Task, decode_ode_on_grid, positive_std
from nde.irregular.data import IrregularBatch, cde_controls
from nde.layers import MLPVectorField, NeuralCDE
from nde.layers.cde import Interpolation
from nde.metrics import binary_auroc
from nde.solvers import AdjointMode

__all__ = ["NeuralCDEClassifier", "NeuralCDEModel", "classification_metrics", "controls_from_inputs"]


class NeuralCDEClassifier(nn.Module):
    """Logits ``[B, K] = W z(T) + b`` where ``z`` solves the Neural CDE driven by the data path.

    Args:
        input_channels: channels of the control (time included).
        hidden_channels: size of the CDE state.
        n_classes: ``K``.
        interpolation, width, depth, method, step_size, adjoint: passed to :class:`nde.layers.NeuralCDE`.
    """

    def __init__(self, input_channels: int, hidden_channels: int, n_classes: int, *,
                 interpolation: Interpolation = "cubic", width: int = 64, depth: int = 2, method: str = "rk4",
                 step_size: float | None = None, adjoint: AdjointMode = "direct") -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
        self.cde = NeuralCDE(input_channels, hidden_channels, interpolation=interpolation, width=width,
                             depth=depth, method=method, step_size=step_size, adjoint=adjoint)
        self.readout = nn.Linear(hidden_channels, n_classes)

    def coefficients(self, values: Tensor, times: Tensor | None = None) -> Tensor:
        """Interpolation coefficients of ``values [B, L, C]`` (compute once, before training)."""
        return self.cde.coefficients(values, times)

    def forward(self, coeffs: Tensor) -> Tensor:
        """``coeffs`` from :meth:`coefficients` -> logits ``[B, K]``."""
        return self.readout(self.cde(coeffs)[:, -1])


@torch.no_grad()
def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Cross-entropy, accuracy and (for two classes) the area under the ROC curve.

    Args:
        logits: ``[N, K]``.
        labels: ``[N]`` class indices.
    """
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    metrics = {"loss": loss, "accuracy": accuracy}
    if logits.shape[-1] == 2:
        metrics["auroc"] = binary_auroc(logits[:, 1] - logits[:, 0], labels)
    return metrics


def controls_from_inputs(inputs: dict[str, Tensor], prefix: str = "", count_scale: float = 1.0) -> Tensor:
    """:func:`~nde.irregular.cde_controls` (time, filled values, scaled observation counts) of standard inputs."""
    batch = IrregularBatch(times=inputs[f"{prefix}times"], values=inputs[f"{prefix}values"],
                           mask=inputs[f"{prefix}mask"] > 0, lengths=inputs[f"{prefix}lengths"], labels=None)
    return cde_controls(batch, count_scale=count_scale)


class _NCDENetwork(nn.Module):
    """Encoder shared by both tasks: the CDE over the control of the (context) observations.

    The control is parameterised by the observation index ``0 .. L-1`` (time is one of its channels, so
    nothing is lost); each series' state is read at its own last index, so padding changes nothing.
    """

    def __init__(self, n_channels: int, hidden: int, width: int, depth: int, interpolation: Interpolation,
                 method: str, step_size: float, backend: Literal["torchdiffeq", "native"],
                 count_scale: float = 1.0) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.count_scale = count_scale
        self.cde = NeuralCDE(1 + 2 * n_channels, hidden, interpolation=interpolation, width=width, depth=depth,
                             method=method, step_size=step_size, backend=backend)
        # The final state grows with the path's length (the count channels rise by one per observation):
        # normalising it keeps the heads' inputs on one scale for short and long series alike.
        self.norm = nn.LayerNorm(hidden)

    def extra_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"coeffs": self.cde.coefficients(controls_from_inputs(inputs, count_scale=self.count_scale))}

    def encode(self, inputs: dict[str, Tensor]) -> Tensor:
        # Read each series at its own last observation: with cubic Hermite interpolation the padded
        # stretch after it is not flat (the path overshoots and returns), so the final state is not.
        coeffs, lengths = inputs["coeffs"], inputs["lengths"]
        knots = torch.arange(inputs["times"].shape[1], dtype=coeffs.dtype, device=coeffs.device)
        states = self.cde(coeffs, output_times=knots)  # [B, L, H]
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
        return self.norm(states.gather(1, last).squeeze(1))


class _NCDEClassifierNetwork(_NCDENetwork):
    def __init__(self, n_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.readout = nn.Linear(self.cde.hidden_channels, n_classes)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.readout(self.encode(inputs))


class _NCDEForecastNetwork(_NCDENetwork, GaussianForecastNetwork):
    def __init__(self, decoder_steps: int, **kwargs) -> None:
        super().__init__(**kwargs)
        hidden, width = self.cde.hidden_channels, kwargs["width"]
        self.decoder = MLPVectorField(hidden, width=width, depth=kwargs["depth"], time_input=False)
        self.head = nn.Linear(hidden, 2 * self.n_channels)
        self.decoder_steps = decoder_steps

    def distribution(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        z = self.encode(inputs)
        tau = (inputs["target_times"] - inputs["times"][:, -1:]).clamp_min(0.0)
        path = decode_ode_on_grid(self.decoder, z, tau, self.decoder_steps)
        mean, raw = self.head(path).chunk(2, dim=-1)
        return mean, positive_std(raw)


class NeuralCDEModel(IrregularModel):
    """Neural CDE classifier (logits from the final state) and regressor (forecasts from the final state).

    The control holds the time, the values filled forward and the cumulative observation count of each
    channel (informative missingness), interpolated by ``interpolation``. For forecasting, the final
    state ``z(T)`` of the context starts an autonomous Neural ODE ``dz/dτ = g(z)``; at ``τ = t - T`` a
    linear head gives the mean and standard deviation of a Gaussian per channel, trained by its negative
    log-likelihood on the targets.

    Args:
        task, forecast_fraction: see :class:`~nde.irregular.IrregularModel`.
        hidden: CDE state size. width, depth: of the vector fields' MLPs.
        interpolation: ``"cubic"`` (Hermite with backward differences), ``"linear"`` or ``"rectilinear"``.
        method, step_size: solver and step in units of observation index (1 = one step per observation).
        backend: ``"torchdiffeq"`` or ``"native"``.
        decoder_steps: fixed RK4 steps of the forecast decoder over the batch's longest horizon.
    """

    name = "ncde"

    def __init__(self, task: Task = "classify", forecast_fraction: float = 0.2, *, hidden: int = 32,
                 width: int = 64, depth: int = 2, interpolation: Interpolation = "cubic", method: str = "rk4",
                 step_size: float = 1.0, backend: Literal["torchdiffeq", "native"] = "torchdiffeq",
                 decoder_steps: int = 20) -> None:
        super().__init__(task, forecast_fraction, hidden=hidden, width=width, depth=depth,
                         interpolation=interpolation, method=method, step_size=step_size, backend=backend,
                         decoder_steps=decoder_steps)

    def build_network(self, n_channels: int, n_classes: int | None) -> nn.Module:
        h = dict(self.hyper)
        common = {"n_channels": n_channels, "hidden": h["hidden"], "width": h["width"], "depth": h["depth"],
                  "interpolation": h["interpolation"], "method": h["method"], "step_size": h["step_size"],
                  "backend": h["backend"],
                  # Counts divided by the mean number of observations reach about 1 at a series' end.
                  "count_scale": 1.0 / max(self.data_stats.get("mean_observations", 1.0), 1.0)}
        if self.task == "classify":
            assert n_classes is not None
            return _NCDEClassifierNetwork(n_classes, **common)
        return _NCDEForecastNetwork(h["decoder_steps"], **common)
