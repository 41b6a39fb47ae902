"""Latent ODE with an ODE-RNN encoder (Rubanova, Chen & Duvenaud, 2019).

Generative model: ``z0 ~ N(0, I)``, ``dz/dt = g(z)`` from the first context time ``t = 0``, and at every
observation time ``x(t) ~ N(W z(t) + b, diag σ²)`` with a learned per-channel observation standard deviation
``σ``. Recognition model: an :class:`~nde.irregular.ode_rnn.ODERNNEncoder` run backward in time over the
context (from its last observation to its first) gives ``q(z0) = N(μ, diag s²)``.

Training maximises the ELBO of the observed context (reconstruction) *and* targets (extrapolation), so that
the prior dynamics learn to forecast; :class:`LatentODEModel` (``name = "latent_ode"``) reports it as the
negative ELBO per observed entry. Classification reads a linear head on the posterior mean ``μ``, trained
jointly with the negative ELBO of the context ("Latent ODE + classification" in the paper).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from nde.irregular.base import IrregularModel, Task, interpolate_path, positive_std
from nde.irregular.ode_rnn import ODERNNEncoder, check_hyperparameters
from nde.layers import MLPVectorField
from nde.layers.vector_fields import mlp
from nde.solvers import solve_ode

__all__ = ["LatentODEModel", "LatentODENetwork", "gaussian_kl_standard"]

_LOG_2PI = math.log(2 * math.pi)
_SOFTPLUS_INV_01 = -2.2522  # softplus(-2.2522) = 0.1: the posterior standard deviation at initialisation


def gaussian_kl_standard(mean: Tensor, std: Tensor) -> Tensor:
    """``KL(N(mean, diag std²) || N(0, I))`` in closed form, summed over the last dimension."""
    return 0.5 * (std.square() + mean.square() - 1.0 - 2.0 * std.log()).sum(-1)


class LatentODENetwork(nn.Module):
    """The Latent ODE's networks: encoder, posterior map, latent dynamics, readout (and a classifier head).

    Args:
        n_channels: ``C``.
        latent: size of ``z``. hidden: of the encoder's GRU state. width, depth: of the ODEs' MLPs.
        method: native fixed-step method of both ODEs. ode_steps: encoder steps per gap between observations.
        decoder_step_size: step of the latent solve, in standardised time units, on the grid
            ``0, δ, 2δ, ...`` shared by the batch (so a time is decoded the same way in every batch).
        train_samples: ``K`` posterior draws per series in :meth:`loss` (plain Monte Carlo, no IWAE).
        kl_warmup_steps: the KL weight rises linearly from ``1/kl_warmup_steps`` to 1 over the first
            ``kl_warmup_steps`` training evaluations of the objective (0: no warm-up); 1 outside training.
        n_classes: adds the classifier head ``logits = V μ + c`` when given.
        elbo_weight: weight of the negative ELBO in :meth:`classification_loss`.

    The posterior standard deviation starts at 0.1 (the paper's encoder starts small too) and the observation
    standard deviation at 1.
    """

    def __init__(self, n_channels: int, *, latent: int, hidden: int, width: int, depth: int, method: str,
                 ode_steps: int, decoder_step_size: float, train_samples: int, kl_warmup_steps: int = 0,
                 n_classes: int | None = None, elbo_weight: float = 1.0) -> None:
        super().__init__()
        self.n_channels, self.latent, self.method = n_channels, latent, method
        self.decoder_step_size, self.train_samples, self.elbo_weight = decoder_step_size, train_samples, elbo_weight
        self.encoder = ODERNNEncoder(n_channels, hidden, width, depth, method, ode_steps)
        self.to_posterior = mlp(hidden, 2 * latent, width, 1, "tanh")
        self.dynamics = MLPVectorField(latent, width=width, depth=depth, activation="tanh", time_input=False)
        self.readout = nn.Linear(latent, n_channels)
        self.raw_obs_std = nn.Parameter(torch.zeros(n_channels))
        self.classifier = None if n_classes is None else nn.Linear(latent, n_classes)
        self.kl_warmup_steps = kl_warmup_steps
        self.register_buffer("kl_steps", torch.zeros((), dtype=torch.long))

    # ---- pieces
    @property
    def obs_std(self) -> Tensor:
        """``[C]`` observation noise standard deviation (1 at initialisation)."""
        return positive_std(self.raw_obs_std, floor=1e-3)

    def posterior(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation ``[B, D]`` of ``q(z0 | context)`` (encoder run backward in time)."""
        h = self.encoder(inputs["times"], inputs["values"], inputs["mask"], reverse=True)
        mean, raw = self.to_posterior(h).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw + _SOFTPLUS_INV_01) + 1e-4

    def decode(self, z0: Tensor, query: Tensor) -> Tensor:
        """Observation means ``[K, B, Q, C]`` at ``query [B, Q]`` (times >= 0) from ``z0 [K, B, D]``.

        One native fixed-step solve of ``dz/dt = g(z)`` for all ``K·B`` initial states on the grid
        ``0, δ, ..., nδ`` (``nδ >= max(query)``), read at each series' own times by linear interpolation.
        """
        k, b, d = z0.shape
        step = self.decoder_step_size
        n = max(1, math.ceil(float(query.max()) / step - 1e-6))
        grid = torch.arange(n + 1, dtype=z0.dtype, device=z0.device) * step
        path = solve_ode(self.dynamics, z0.reshape(k * b, d), grid, method=self.method, backend="native").ys
        z = interpolate_path(grid, path.reshape(k, b, n + 1, d), query)  # [K, B, Q, D]
        return self.readout(z)

    def negative_elbo(self, inputs: dict[str, Tensor], eps: Tensor | None = None,
                      with_targets: bool = True) -> Tensor:
        """``-ELBO / N_obs``: Monte-Carlo ``-E_q log p(x_obs | z0)`` plus the closed-form ``KL(q(z0) || N(0, I))``
        (summed over the batch), divided by the number ``N_obs`` of observed entries in the batch.

        The likelihood covers the context and, when ``with_targets`` and the inputs have them, the targets.
        ``eps [K, B, D]`` fixes the standard normal draws (default: ``train_samples`` fresh draws).
        """
        mean, std = self.posterior(inputs)
        if eps is None:
            eps = torch.randn((self.train_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        z0 = mean + std * eps
        query, values, mask = inputs["times"], inputs["values"], inputs["mask"]
        if with_targets and "target_times" in inputs:
            query = torch.cat([query, inputs["target_times"]], dim=1)
            values = torch.cat([values, inputs["target_values"]], dim=1)
            mask = torch.cat([mask, inputs["target_mask"]], dim=1)
        pred = self.decode(z0, query)  # [K, B, Q, C]
        sigma = self.obs_std
        z = (values - pred) / sigma
        nll = (0.5 * z * z + sigma.log() + 0.5 * _LOG_2PI) * mask
        n_obs = mask.sum().clamp_min(1.0)
        return (nll.sum() / eps.shape[0] + self.kl_weight() * gaussian_kl_standard(mean, std).sum()) / n_obs

    def kl_weight(self) -> float:
        """The KL term's weight: 1, except in training mode during the warm-up, where the ``k``-th training
        evaluation (counted in the ``kl_steps`` buffer, saved with the weights) gets ``k / kl_warmup_steps``."""
        if not self.training or self.kl_warmup_steps == 0:
            return 1.0
        self.kl_steps += 1
        return min(1.0, float(self.kl_steps) / self.kl_warmup_steps)

    # ---- the network protocol
    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Class logits ``[B, K]`` from the posterior mean of ``z0``."""
        if self.classifier is None:
            raise RuntimeError("this Latent ODE network has no classifier head (built for forecasting)")
        return self.classifier(self.posterior(inputs)[0])

    def classification_loss(self, inputs: dict[str, Tensor]) -> Tensor:
        """Cross-entropy (mean per series) + ``elbo_weight`` × negative ELBO of the context per observed entry."""
        if self.classifier is None:
            raise RuntimeError("this Latent ODE network has no classifier head (built for forecasting)")
        mean, _ = self.posterior(inputs)
        ce = nn.functional.cross_entropy(self.classifier(mean), inputs["labels"])
        if self.elbo_weight == 0:
            return ce
        return ce + self.elbo_weight * self.negative_elbo(inputs, with_targets=False)

    def loss(self, inputs: dict[str, Tensor]) -> Tensor:
        """The training objective: negative ELBO per observed entry (forecasting), or :meth:`classification_loss`."""
        if self.classifier is not None:
            return self.classification_loss(inputs)
        return self.negative_elbo(inputs)

    def sample(self, inputs: dict[str, Tensor], n_samples: int) -> Tensor:
        """``[S, B, Q, C]`` draws at ``inputs["target_times"]``: ``z0 ~ q`` per draw, decoded, plus obs. noise."""
        mean, std = self.posterior(inputs)
        z0 = mean + std * torch.randn((n_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        pred = self.decode(z0, inputs["target_times"])
        return pred + self.obs_std * torch.randn_like(pred)


class LatentODEModel(IrregularModel):
    """Latent ODE forecaster and classifier with an ODE-RNN encoder (Rubanova et al., 2019).

    Forecasting: the objective is the negative ELBO per observed entry of the context *and* the targets
    (the decoder solves ``dz/dt = g(z)`` from ``t = 0`` over both); forecasts draw ``z0 ~ q(z0 | context)``,
    decode at the target times and add the observation noise. Classification: logits ``V μ + c`` from the
    posterior mean, trained on cross-entropy plus ``elbo_weight`` × the context's negative ELBO per observed
    entry (``elbo_weight=0``: cross-entropy only, the decoder is then unused).

    Args:
        task, forecast_fraction: see :class:`~nde.irregular.IrregularModel`.
        latent: size of ``z``. hidden: of the encoder's state. width, depth: of the ODEs' MLPs (tanh).
        method: native fixed-step method (``"euler"``, ``"midpoint"``, ``"rk4"``) of both ODEs.
        ode_steps: encoder solver steps per gap between observations.
        decoder_step_size: step of the latent solve in standardised time (1 = the mean series duration).
        train_samples: posterior draws per series in the training objective.
        kl_warmup_steps: optimiser steps over which the KL weight of the training objective rises linearly
            to 1 (0: no warm-up; validation losses and saved models always use the full ELBO).
        elbo_weight: weight of the negative ELBO in the classification objective (>= 0).
    """

    name = "latent_ode"
    interpolates = True
    tasks = ("forecast", "classify")

    def __init__(self, task: Task = "forecast", forecast_fraction: float = 0.2, *, latent: int = 16,
                 hidden: int = 32, width: int = 64, depth: int = 2, method: str = "rk4", ode_steps: int = 1,
                 decoder_step_size: float = 0.02, train_samples: int = 3, kl_warmup_steps: int = 100,
                 elbo_weight: float = 1.0) -> None:
        check_hyperparameters(self.name, {"latent": latent, "hidden": hidden, "width": width,
                                          "ode_steps": ode_steps, "train_samples": train_samples},
                              {"depth": depth, "kl_warmup_steps": kl_warmup_steps}, method)
        for name, value, low in (("decoder_step_size", decoder_step_size, None), ("elbo_weight", elbo_weight, 0.0)):
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or (value < low if low is not None else value <= 0):
                bound = ">= 0" if low is not None else "> 0"
                raise ValueError(f"{self.name}: {name} must be a finite number {bound}, got {value!r}")
        super().__init__(task, forecast_fraction, latent=latent, hidden=hidden, width=width, depth=depth,
                         method=method, ode_steps=ode_steps, decoder_step_size=float(decoder_step_size),
                         train_samples=train_samples, kl_warmup_steps=kl_warmup_steps,
                         elbo_weight=float(elbo_weight))

    def build_network(self, n_channels: int, n_classes: int | None) -> nn.Module:
        return LatentODENetwork(n_channels, n_classes=n_classes if self.task == "classify" else None, **self.hyper)
