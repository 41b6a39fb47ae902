"""Noise schedules of diffusion models: discrete (DDPM) schedules and continuous SDEs (Song et al., 2021).

Every noising process here has Gaussian marginals of one form: given data ``x0``,

    x_t = alpha(t) x0 + sigma(t) eps,   eps ~ N(0, I),

and :meth:`marginal` returns ``(alpha(t), sigma(t))``. Denoisers predict ``eps`` (the *epsilon model*); its
relation to the score of the noised data is ``score(x, t) = -eps(x, t) / sigma(t)``.

Time convention, shared by every sampler in :mod:`nde.diffusion`: time is continuous, ``t`` in ``[0, T]`` with
``T = 1`` (``0.9946`` for the cosine VP-SDE, see :class:`CosineVPSDE`). A discrete schedule of ``N`` steps
places its step ``i`` (1-based: ``x_i`` has ``alpha_bar_i``) at time ``t = i / N``, and ``t = 0`` is the data.

Discrete schedules (:class:`DiscreteSchedule`), ``N`` betas in ``(0, 1)``::

    alpha_i = 1 - beta_i,   alpha_bar_i = prod_{j <= i} alpha_j,   alpha(t_i) = sqrt(alpha_bar_i),
    sigma(t_i) = sqrt(1 - alpha_bar_i)

with ``linear`` betas (Ho et al., 2020) or the ``cosine`` schedule (Nichol & Dhariwal, 2021),
``alpha_bar_i = f(i/N) / f(0)``, ``f(u) = cos²((u + s)/(1 + s) · π/2)``, betas clipped at ``max_beta``.

Continuous SDEs (:class:`DiffusionSDE`), ``dx = f(x, t) dt + g(t) dW``:

- :class:`VPSDE` (variance preserving): ``f = -β(t) x / 2``, ``g = sqrt(β(t))``, ``β(t) = β_min + t (β_max -
  β_min)``; ``alpha(t) = exp(-∫_0^t β / 2)``, ``sigma(t)² = 1 - alpha(t)²``. It is the limit of the linear
  discrete schedule with ``β_min = N β_1``, ``β_max = N β_N`` (:meth:`DiscreteSchedule.to_sde`).
- :class:`CosineVPSDE`: the VP-SDE whose ``alpha(t)²`` is the cosine schedule's ``f(t) / f(0)``, so
  ``β(t) = π tan((t + s)/(1 + s) · π/2) / (1 + s)``; equal to the discrete cosine schedule at its steps.
- :class:`SubVPSDE`: ``f = -β(t) x / 2``, ``g = sqrt(β(t) (1 - alpha(t)⁴))`` with the linear β; same ``alpha``,
  ``sigma(t) = 1 - alpha(t)²`` (never above the VP-SDE's).
- :class:`VESDE` (variance exploding): ``f = 0``, ``g = σ(t) sqrt(2 log(σ_max/σ_min))``, ``σ(t) = σ_min
  (σ_max/σ_min)^t``; ``alpha = 1``, ``sigma(t)² = σ(t)² - σ_min²`` (exact; Song et al. use ``σ(t)``).

The prior at ``T`` is ``N(0, I)`` (VP, sub-VP) or ``N(0, σ_max² I)`` (VE).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = [
    "SCHEDULES",
    "SDES",
    "VESDE",
    "VPSDE",
    "CosineVPSDE",
    "DiffusionInputError",
    "DiffusionSDE",
    "DiscreteSchedule",
    "NoiseProcess",
    "SubVPSDE",
    "cosine_schedule",
    "linear_schedule",
    "make_schedule",
    "make_sde",
]


class DiffusionInputError(ValueError):
    """Raised when an argument of :mod:`nde.diffusion` is malformed; the message names it and says why."""


class NoiseProcess(Protocol):
    """Anything with Gaussian marginals ``x_t = alpha(t) x0 + sigma(t) eps``: schedules and SDEs alike."""

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))``, each shaped like ``t``."""
        ...


def _as_time(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


# ------------------------------------------------------------------------------------------ discrete schedules


@dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """A discrete noise schedule of ``N = len(betas)`` steps.

    Attributes:
        betas: ``[N]`` float64, each in ``(0, 1)``; step ``i`` (1-based) sits at time ``t = i / N``.
        name: ``"linear"``, ``"cosine"`` or ``"custom"``; with ``params`` it picks the continuous counterpart.
        params: the constructor's parameters (``beta_start``/``beta_end`` or ``s``/``max_beta``).
    """

    betas: Tensor
    name: str = "custom"
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        betas = self.betas
        if not isinstance(betas, Tensor) or betas.ndim != 1 or betas.numel() == 0:
            raise DiffusionInputError(f"betas must be a non-empty 1-D tensor [N], got {_describe(betas)}")
        if not betas.is_floating_point() or not bool(((betas > 0) & (betas < 1)).all()):
            raise DiffusionInputError("betas must be floating point with every entry in (0, 1)")
        object.__setattr__(self, "betas", betas.detach().to(dtype=torch.float64, device="cpu"))

    @property
    def num_steps(self) -> int:
        """``N``, the number of noising steps."""
        return self.betas.numel()

    @property
    def alphas(self) -> Tensor:
        """``[N]``: ``alpha_i = 1 - beta_i``."""
        return 1.0 - self.betas

    @property
    def alpha_bars(self) -> Tensor:
        """``[N]``: ``alpha_bar_i = prod_{j <= i} alpha_j``, decreasing."""
        return torch.cumprod(self.alphas, 0)

    @property
    def times(self) -> Tensor:
        """``[N]`` float64: the time ``i / N`` of each step ``i = 1..N``."""
        return torch.arange(1, self.num_steps + 1, dtype=torch.float64) / self.num_steps

    def index(self, t: Tensor | float) -> Tensor:
        """The step ``i = round(t N)`` (int64, ``0`` for the data) of times on the grid ``{0, 1/N, ..., 1}``.

        Raises:
            DiffusionInputError: if a time is off the grid by more than ``1e-3`` of a step.
        """
        t = _as_time(t)
        scaled = t.detach().to(torch.float64) * self.num_steps
        index = scaled.round()
        if bool(((scaled - index).abs() > 1e-3).any()) or bool(((index < 0) | (index > self.num_steps)).any()):
            raise DiffusionInputError(
                f"time {t.flatten()[:4].tolist()} is not on the grid i/N, i = 0..{self.num_steps}, of this "
                "discrete schedule; continuous times need a continuous SDE (DiscreteSchedule.to_sde())"
            )
        return index.long()

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """``alpha_bar`` at grid times ``t`` (``1`` at ``t = 0``), float64 on ``t``'s device, shaped like ``t``."""
        t = _as_time(t)
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars]).to(t.device)
        return padded[self.index(t).to(t.device)]

    def marginal(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """``(sqrt(alpha_bar), sqrt(1 - alpha_bar))`` at grid times ``t``, in ``t``'s floating dtype."""
        t = _as_time(t)
        a_bar = self.alpha_bar(t)
        dtype = t.dtype if t.is_floating_point() else torch.float64
        return a_bar.sqrt().to(dtype), (1.0 - a_bar).sqrt().to(dtype)

    def to_sde(self) -> VPSDE:
        """The continuous VP-SDE of this schedule (Song et al., 2021, Appendix B).

        Linear: ``β(t) = β_min + t (β_max - β_min)`` with ``β_min = N β_1``, ``β_max = N β_N`` (its
        ``alpha_bar(i/N)`` differs from the discrete ``alpha_bar_i`` by ``O(β²)`` per step). Cosine: the
        :class:`CosineVPSDE` with the same ``s``, equal to the discrete schedule wherever no beta was clipped.
        """
        if self.name == "linear":
            n = self.num_steps
            return VPSDE(beta_min=n * float(self.betas[0]), beta_max=n * float(self.betas[-1]))
        if self.name == "cosine":
            return CosineVPSDE(s=self.params.get("s", 0.008))
        raise DiffusionInputError(
            f"a {self.name!r} schedule has no continuous counterpart; build one with linear_schedule or "
            "cosine_schedule, or make the SDE directly (VPSDE(beta_min, beta_max))"
        )


def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiscreteSchedule:
    """Betas spaced evenly from ``beta_start`` to ``beta_end`` (Ho et al., 2020; TSDiff: 100, 1e-4, 0.1)."""
    num_steps = _positive_int(num_steps, "num_steps")
    if not 0 < beta_start <= beta_end < 1:
        raise DiffusionInputError(f"need 0 < beta_start <= beta_end < 1, got {beta_start!r}, {beta_end!r}")
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return DiscreteSchedule(betas, "linear", {"beta_start": beta_start, "beta_end": beta_end})


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteSchedule:
    """``alpha_bar_i = f(i/N) / f(0)``, ``f(u) = cos²((u + s)/(1 + s) · π/2)``, betas clipped at ``max_beta``
    (Nichol & Dhariwal, 2021)."""
    num_steps = _positive_int(num_steps, "num_steps")
    if not s > 0 or not 0 < max_beta < 1:
        raise DiffusionInputError(f"need s > 0 and 0 < max_beta < 1, got s={s!r}, max_beta={max_beta!r}")
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    a_bar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - a_bar[1:] / a_bar[:-1]).clamp(min=1e-12, max=max_beta)
    return DiscreteSchedule(betas, "cosine", {"s": s, "max_beta": max_beta})


SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule}


def make_schedule(name: str, num_steps: int = 1000, **params: float) -> DiscreteSchedule:
    """A discrete schedule by name: ``"linear"`` or ``"cosine"``, with its constructor's ``params``."""
    if name not in SCHEDULES:
        raise DiffusionInputError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](num_steps, **params)


# ----------------------------------------------------------------------------------------------- continuous SDEs


class DiffusionSDE(ABC):
    """A forward noising SDE ``dx = f(x, t) dt + g(t) dW`` on ``[0, T]`` with Gaussian marginals.

    ``x`` is ``[B, ...]`` (batch first, any event shape); ``t`` is a scalar tensor or ``[B]``.
    """

    #: end time; the prior :meth:`prior_sample` approximates the marginal there.
    T: float = 1.0
    #: standard deviation of the prior ``N(0, prior_std² I)``.
    prior_std: float = 1.0

    @abstractmethod
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``f(x, t)``, shaped like ``x``."""

    @abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t)``, shaped like ``t``."""

    @abstractmethod
    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))``, shaped like ``t``: ``x_t | x0 ~ N(alpha x0, sigma² I)``."""

    def prior_sample(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """A draw ``[*shape]`` of the prior ``N(0, prior_std² I)``."""
        return self.prior_std * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """``[B]``: ``log N(x; 0, prior_std² I)`` summed over every non-batch dimension, in nats."""
        d = x[0].numel()
        flat = x.reshape(x.shape[0], -1)
        return (-0.5 * flat.square().sum(1) / self.prior_std**2
                - d * (0.5 * math.log(2 * math.pi) + math.log(self.prior_std)))


def _broadcast(coefficient: Tensor, x: Tensor) -> Tensor:
    """A scalar or ``[B]`` coefficient shaped ``[B, 1, ..., 1]`` (or ``[]``) to multiply ``x [B, ...]``."""
    if coefficient.ndim == 0:
        return coefficient
    return coefficient.reshape(coefficient.shape + (1,) * (x.ndim - coefficient.ndim))


class VPSDE(DiffusionSDE):
    """Variance-preserving SDE with linear ``β(t) = β_min + t (β_max - β_min)`` (DDPM's limit)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min <= beta_max:
            raise DiffusionInputError(f"need 0 < beta_min <= beta_max, got {beta_min!r}, {beta_max!r}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        """``β(t)``."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        """``log alpha(t) = -∫_0^t β(u) du / 2``."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * _broadcast(self.beta(t), x).to(x.dtype) * x

    def diffusion(self, t: Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = self.log_alpha(t)
        # -expm1 keeps sigma accurate near t = 0, where 1 - alpha² cancels; the clamp catches a rounding
        # of log alpha(0) to a tiny positive number.
        return log_alpha.exp(), (-torch.expm1(2 * log_alpha)).clamp(min=0).sqrt()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CosineVPSDE(VPSDE):
    """The VP-SDE of the cosine schedule: ``alpha(t)² = f(t) / f(0)``, ``f(u) = cos²((u + s)/(1 + s) · π/2)``.

    ``β(t) = π tan((t + s)/(1 + s) · π/2) / (1 + s)`` diverges at ``t = 1``, so the process ends at ``T``
    (default ``0.9946``, as in DPM-Solver, where ``alpha(T)² ≈ 7e-5``).
    """

    def __init__(self, s: float = 0.008, T: float = 0.9946) -> None:
        if not s > 0 or not 0 < T < 1:
            raise DiffusionInputError(f"need s > 0 and 0 < T < 1, got s={s!r}, T={T!r}")
        self.s, self.T = float(s), float(T)

    def _angle(self, t: Tensor | float) -> Tensor:
        return (_as_time(t) + self.s) / (1 + self.s) * (math.pi / 2)

    def beta(self, t: Tensor) -> Tensor:
        return math.pi / (1 + self.s) * torch.tan(self._angle(t))

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log(torch.cos(self._angle(t))) - math.log(math.cos(float(self._angle(0.0))))

    def __repr__(self) -> str:
        return f"CosineVPSDE(s={self.s}, T={self.T})"


class SubVPSDE(VPSDE):
    """Sub-VP SDE: the VP drift with ``g(t)² = β(t) (1 - alpha(t)⁴)``, so ``sigma(t) = 1 - alpha(t)²``."""

    def diffusion(self, t: Tensor) -> Tensor:
        return (self.beta(t) * -torch.expm1(4 * self.log_alpha(t))).sqrt()

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = self.log_alpha(t)
        return log_alpha.exp(), (-torch.expm1(2 * log_alpha)).clamp(min=0)


class VESDE(DiffusionSDE):
    """Variance-exploding SDE: ``dx = σ(t) sqrt(2 log(σ_max/σ_min)) dW``, ``σ(t) = σ_min (σ_max/σ_min)^t``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise DiffusionInputError(f"need 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio) * math.sqrt(2 * self._log_ratio)

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # Var(x_t | x0) = ∫_0^t g² = σ(t)² - σ_min²; expm1 keeps it accurate near t = 0.
        sigma = self.sigma_min * torch.expm1(2 * t * self._log_ratio).sqrt()
        return torch.ones_like(t), sigma

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


SDES: dict[str, type[DiffusionSDE]] = {"vp": VPSDE, "cosine_vp": CosineVPSDE, "subvp": SubVPSDE, "ve": VESDE}


def make_sde(name: str, **params: Any) -> DiffusionSDE:
    """A continuous SDE by name: ``"vp"``, ``"cosine_vp"``, ``"subvp"`` or ``"ve"``, with its parameters."""
    if name not in SDES:
        raise DiffusionInputError(f"unknown SDE {name!r}; choose one of {sorted(SDES)}")
    return SDES[name](**params)


# ----------------------------------------------------------------------------------------------------- checks


def _describe(value: object) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DiffusionInputError(f"{name} must be a positive int, got {value!r}")
    return value
