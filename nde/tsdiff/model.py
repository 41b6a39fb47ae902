"""The TSDiff denoiser (Kollovieh et al., NeurIPS 2023), its inputs (lags, mean scaling) and its files.

TSDiff is an *unconditional* diffusion model of fixed-length windows of ``L = C + P`` time points (``C`` the
context length, ``P`` the prediction length): it learns the distribution of whole windows, and forecasts
come from guiding its sampler towards the observed context (:mod:`nde.tsdiff.forecast`).

**Inputs.** A window of a series ``y`` starting at position ``s`` is the ``[L, 1 + K]`` array

    x[t, 0] = y_{s+t} / scale,   x[t, k] = y_{s+t-lag_k} / scale   (k = 1..K),

i.e. the series and ``K`` lagged copies of it as extra channels (lags by frequency: for hourly data the same
hour 1..7, 14, 21 and 28 days earlier, :func:`nde.data.timeseries.lags_for_frequency`). The diffusion runs
on all ``1 + K`` channels; only channel 0 is the forecast. Mean scaling (GluonTS's ``MeanScaler``) divides
the window by ``scale = max(Σ_{t<C} m_t |y_{s+t}| / Σ_{t<C} m_t, min_scale)`` over the observed (``m_t = 1``)
context values, so the model sees values of order one whatever the series' level.

**Denoiser** (the reference's ``BackboneModel`` with S4 residual blocks, ``init_skip=False``), for
``x [B, L, 1 + K]`` and the diffusion step ``i = t N``:

    e = SiLU(W_2 SiLU(W_1 sinusoidal(i)))                                   step embedding [B, d]
    h = ReLU(W_in x)                                                        [B, L, d]
    per block b = 1..n_blocks:
        z = h + W_t^b e                           (broadcast over time)
        z = z + S4D(LayerNorm(z))                 (bidirectional S4D layer, pre-norm residual)
        g = tanh(z) ⊙ sigmoid(z)
        h = h + W_res^b g,   skip_b = W_skip^b g
    eps = W_out2 ReLU(W_out1 Σ_b skip_b)                                     [B, L, 1 + K]

The paper's small configuration: ``d = 64``, 3 blocks, S4 state size 128, step embedding 128, and
``N = 100`` diffusion steps with betas linear from ``1e-4`` to ``0.1``. The reference uses the full
(DPLR, HiPPO-LegS) S4 kernel; here the kernel is diagonal (S4D, :mod:`nde.tsdiff.s4`).

The denoiser is an epsilon model on the :mod:`nde.diffusion` interface: ``model(x, t) -> eps`` with ``t [B]``
the continuous time ``i / N`` of discrete step ``i``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nde.diffusion import DiscreteSchedule, linear_schedule
from nde.train import atomic_write_text, load_checkpoint, save_checkpoint
from nde.tsdiff.s4 import S4DInit, S4DLayer

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "TSDiff",
    "TSDiffConfig",
    "TSDiffDenoiser",
    "TSDiffModelError",
    "lagged_windows",
    "mean_scale",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
#: Bumped when the saved layout changes, so that an old folder is refused with a clear message.
_FORMAT = 1


class TSDiffModelError(ValueError):
    """A model folder that cannot be read, or a configuration that is not valid."""


@dataclass(frozen=True)
class TSDiffConfig:
    """Everything that defines a TSDiff model besides its weights (saved as JSON).

    Attributes:
        context_length: ``C``, the observed part of a window.
        prediction_length: ``P``, the forecast part; a window has ``L = C + P`` points.
        lags: lags (in time steps) fed as extra channels; empty for none.
        freq: the data's frequency (pandas alias), for the record and for the CLI.
        hidden_dim, num_blocks, state_dim, step_embedding_dim: the denoiser's width ``d``, its number of
            residual blocks, the S4D state size ``N`` and the width of the sinusoidal step embedding.
        s4_init: S4D initialisation, ``"lin"`` or ``"inv"``.
        dropout: dropout after each S4D layer's activation and block (0 in the paper).
        num_steps, beta_start, beta_end: the linear beta schedule of the diffusion.
        min_scale: floor of the mean scale (an all-zero context is scaled by it).
    """

    context_length: int
    prediction_length: int
    lags: tuple[int, ...] = ()
    freq: str | None = None
    hidden_dim: int = 64
    num_blocks: int = 3
    state_dim: int = 128
    step_embedding_dim: int = 128
    s4_init: S4DInit = "lin"
    dropout: float = 0.0
    num_steps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 0.1
    min_scale: float = 1e-10

    def __post_init__(self) -> None:
        object.__setattr__(self, "lags", tuple(int(v) for v in self.lags))
        for name in ("context_length", "prediction_length", "hidden_dim", "num_blocks", "state_dim",
                     "step_embedding_dim", "num_steps"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise TSDiffModelError(f"{name} must be a positive integer, got {value!r}")
        if self.state_dim % 2 or self.step_embedding_dim % 2 or self.step_embedding_dim < 4:
            raise TSDiffModelError("state_dim and step_embedding_dim must be even (step_embedding_dim >= 4)")
        if any(v < 1 for v in self.lags) or len(set(self.lags)) != len(self.lags):
            raise TSDiffModelError(f"lags must be distinct positive integers, got {list(self.lags)}")
        if self.s4_init not in ("lin", "inv"):
            raise TSDiffModelError(f"s4_init must be 'lin' or 'inv', got {self.s4_init!r}")
        if not 0 <= self.dropout < 1:
            raise TSDiffModelError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise TSDiffModelError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if not self.min_scale > 0:
            raise TSDiffModelError(f"min_scale must be > 0, got {self.min_scale}")

    @property
    def window_length(self) -> int:
        """``L = C + P``."""
        return self.context_length + self.prediction_length

    @property
    def channels(self) -> int:
        """``1 + K``: the series and its lagged copies."""
        return 1 + len(self.lags)

    @property
    def history_length(self) -> int:
        """Points before a window's first context value that its lags reach back to: ``max(lags)`` (0 without)."""
        return max(self.lags, default=0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lags"] = list(self.lags)
        return out


# --------------------------------------------------------------------------------------------------- inputs


def mean_scale(context: Tensor, min_scale: float = 1e-10) -> Tensor:
    """GluonTS mean scaling: ``[B, C] -> [B]``, ``max(mean of |y| over the observed (non-NaN) values, min_scale)``.

    Raises:
        ValueError: a row with no observed value (its scale is undefined).
    """
    observed = ~torch.isnan(context)
    count = observed.sum(-1)
    if bool((count == 0).any()):
        row = int(torch.nonzero(count == 0)[0, 0])
        raise ValueError(f"context row {row} has no observed value: its mean scale is undefined")
    total = torch.where(observed, context.abs(), torch.zeros_like(context)).sum(-1)
    return (total / count).clamp_min(min_scale)


def lagged_windows(history: Tensor, length: int, lags: Sequence[int]) -> Tensor:
    """The last ``length`` points of ``history [B, T]`` with their lagged copies, ``[B, length, 1 + K]``.

    ``out[b, t, 0] = history[b, T - length + t]`` and ``out[b, t, k] = history[b, T - length + t - lags[k-1]]``;
    positions before the start of ``history`` are NaN (unobserved), as is any NaN in ``history``. To build
    a forecast window, pass the history up to the origin followed by ``P`` NaN (the unknown future).

    Raises:
        ValueError: ``length`` larger than ``T``.
    """
    if history.ndim != 2 or not 1 <= length <= history.shape[1]:
        raise ValueError(f"history must be [B, T] with T >= length={length}, got {list(history.shape)}")
    reach = max(lags, default=0)
    padded = torch.cat([history.new_full((history.shape[0], reach), float("nan")), history], dim=1)
    end = padded.shape[1]
    columns = [padded[:, end - length : end]]
    columns += [padded[:, end - length - lag : end - lag] for lag in lags]
    return torch.stack(columns, dim=-1)


# ------------------------------------------------------------------------------------------------ denoiser


def sinusoidal_embedding(steps: Tensor, dim: int) -> Tensor:
    """``[B] -> [B, dim]``: ``[sin(i f_j), cos(i f_j)]``, ``f_j = 10000^{-j/(dim/2 - 1)}``, ``j < dim/2``."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=steps.device, dtype=steps.dtype) * (-math.log(10000) / (half - 1)))
    angles = steps[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _ResidualBlock(nn.Module):
    """One S4 residual block: step embedding added, pre-norm S4D residual, gated activation, residual + skip."""

    def __init__(self, hidden_dim: int, state_dim: int, s4_init: S4DInit, dropout: float) -> None:
        super().__init__()
        self.time_linear = nn.Linear(hidden_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.s4 = S4DLayer(hidden_dim, state_dim, bidirectional=True, init=s4_init, dropout=dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.residual_linear = nn.Linear(hidden_dim, hidden_dim)
        self.skip_linear = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, h: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        """``h [B, L, d]``, ``step [B, d]`` -> (next ``h``, skip), both ``[B, L, d]``."""
        z = h + self.time_linear(step)[:, None, :]
        z = z + self.dropout(self.s4(self.norm(z)))
        gated = torch.tanh(z) * torch.sigmoid(z)
        return h + self.residual_linear(gated), self.skip_linear(gated)


class TSDiffDenoiser(nn.Module):
    """The epsilon network: ``(x [B, L, c], step [B]) -> eps [B, L, c]`` (see the module docstring)."""

    def __init__(self, channels: int, hidden_dim: int = 64, num_blocks: int = 3, state_dim: int = 128,
                 step_embedding_dim: int = 128, s4_init: S4DInit = "lin", dropout: float = 0.0) -> None:
        super().__init__()
        self.channels = channels
        self.step_embedding_dim = step_embedding_dim
        self.input_linear = nn.Linear(channels, hidden_dim)
        self.step_mlp = nn.Sequential(nn.Linear(step_embedding_dim, hidden_dim), nn.SiLU(),
                                      nn.Linear(hidden_dim, hidden_dim), nn.SiLU())
        self.blocks = nn.ModuleList(_ResidualBlock(hidden_dim, state_dim, s4_init, dropout)
                                    for _ in range(num_blocks))
        self.output = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, channels))

    def forward(self, x: Tensor, step: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"denoiser input must be [B, L, {self.channels}], got {list(x.shape)}")
        if step.shape != (x.shape[0],):
            raise ValueError(f"step must be [B] = [{x.shape[0]}], got {list(step.shape)}")
        h = torch.relu(self.input_linear(x))  # [B, L, d]
        e = self.step_mlp(sinusoidal_embedding(step.to(x.dtype), self.step_embedding_dim))
        skip: Tensor | None = None
        for block in self.blocks:
            h, s = block(h, e)
            skip = s if skip is None else skip + s
        assert skip is not None  # num_blocks >= 1
        return self.output(skip)


class TSDiff(nn.Module):
    """A TSDiff model: configuration, denoiser and diffusion schedule; an epsilon model ``model(x, t) -> eps``.

    ``x [B, L, 1 + K]`` is a scaled, lag-augmented window (:func:`lagged_windows` divided by
    :func:`mean_scale`), ``t [B]`` the diffusion time ``i / N``; the denoiser receives the step ``i = t N``.
    """

    def __init__(self, config: TSDiffConfig) -> None:
        super().__init__()
        if not isinstance(config, TSDiffConfig):
            raise TypeError(f"config must be a TSDiffConfig, got {type(config).__name__}")
        self.config = config
        #: Free-form facts saved with the model (the CLI keeps the data's columns and its split here).
        self.metadata: dict[str, Any] = {}
        self.denoiser = TSDiffDenoiser(config.channels, config.hidden_dim, config.num_blocks, config.state_dim,
                                       config.step_embedding_dim, config.s4_init, config.dropout)

    @property
    def schedule(self) -> DiscreteSchedule:
        """The linear beta schedule of ``num_steps`` steps the model is trained on."""
        c = self.config
        return linear_schedule(c.num_steps, c.beta_start, c.beta_end)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.denoiser(x, t * self.config.num_steps)

    def diffusion_loss(self, x0: Tensor, mask: Tensor | None = None, *, steps: Tensor | None = None,
                       noise: Tensor | None = None) -> Tensor:
        """Mean ``‖eps - eps_θ(sqrt(ā_i) x0 + sqrt(1 - ā_i) eps, i/N)‖²`` over the observed entries.

        Args:
            x0: ``[B, L, 1 + K]`` clean scaled windows (missing entries filled with any finite value).
            mask: ``[B, L, 1 + K]`` bool, True where ``x0`` is observed; ``None``: all.
            steps: ``[B]`` int steps ``i`` in ``1..N``; default uniform draws from torch's global generator.
            noise: ``[B, L, 1 + K]``; default standard normal draws from the global generator.

        Returns:
            The 0-d loss.
        """
        n = self.config.num_steps
        if steps is None:
            steps = torch.randint(1, n + 1, (x0.shape[0],), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        a_bar = self.schedule.alpha_bars.to(device=x0.device, dtype=x0.dtype)[steps - 1][:, None, None]
        x_t = a_bar.sqrt() * x0 + (1 - a_bar).sqrt() * noise
        err = (self(x_t, steps.to(x0.dtype) / n) - noise).square()
        if mask is None:
            return err.mean()
        mask = mask.to(err.dtype)
        return (err * mask).sum() / mask.sum().clamp_min(1.0)

    # ---- persistence
    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (config, format, metadata) and ``weights.pt`` atomically; returns the folder.

        ``metadata`` (default: ``self.metadata``) is any JSON-serialisable dict kept with the model.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        save_checkpoint(out / WEIGHTS_FILE, {"format": _FORMAT, "model": state})
        document = {"format": _FORMAT, "model": "tsdiff", "config": self.config.to_dict(),
                    "metadata": dict(self.metadata if metadata is None else metadata)}
        atomic_write_text(out / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> TSDiff:
        """Rebuild a model written by :meth:`save` (weights loaded with ``weights_only=True``), in eval mode.

        ``model.metadata`` holds the saved metadata.

        Raises:
            TSDiffModelError: the folder lacks a file, the JSON is malformed or of another format.
        """
        path = Path(directory)
        config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise TSDiffModelError(f"{path}: not a saved TSDiff model (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            document = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise TSDiffModelError(f"{config_path}: not valid JSON ({err})") from None
        if not isinstance(document, dict) or document.get("model") != "tsdiff":
            raise TSDiffModelError(f"{config_path}: not a TSDiff model folder")
        if document.get("format") != _FORMAT:
            raise TSDiffModelError(f"{config_path}: format {document.get('format')!r}, this version reads {_FORMAT}")
        try:
            config = TSDiffConfig(**document["config"])
        except (KeyError, TypeError) as err:
            raise TSDiffModelError(f"{config_path}: bad config ({err})") from None
        model = cls(config)
        state = load_checkpoint(weights_path, map_location="cpu")
        if state.get("format") != _FORMAT or "model" not in state:
            raise TSDiffModelError(f"{weights_path}: not a TSDiff weights file of format {_FORMAT}")
        model.load_state_dict(state["model"])
        model.metadata = dict(document.get("metadata") or {})
        return model.to(device).eval()
