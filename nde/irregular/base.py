"""One interface for every model of irregular time series: ``fit``, ``predict``, ``save``, ``load``.

A model (:class:`IrregularModel`) wraps a network (an ``nn.Module``) with what turns an
:class:`~nde.irregular.IrregularDataset` into the network's tensors and back: the per-channel
:class:`~nde.irregular.Standardizer` fitted on the training data, the class names, the channel names.

Two tasks:

``"classify"``
    one label per series. The network maps the standard inputs (below) to logits ``[B, K]``;
    :meth:`IrregularModel.predict` returns a :class:`ClassPrediction`.
``"forecast"``
    each series is cut in time (:func:`forecast_split`): the observations up to
    ``t_first + (1 - forecast_fraction) (t_last - t_first)`` are the context, the later ones the targets.
    The network has ``loss(inputs) -> scalar`` (its training objective, e.g. a negative ELBO) and
    ``sample(inputs, n_samples) -> [S, B, Q, C]`` (draws of the values at the target times, standardised
    units); :meth:`IrregularModel.predict` returns a :class:`ForecastPrediction` in the data's units.

Standard inputs (a dict of tensors, batch first, standardised values, times divided by the fitted time
scale and shifted so that each series starts at 0): ``times [B, L]``, ``values [B, L, C]`` (0 where
unobserved), ``mask [B, L, C]`` (1.0 where observed, else 0.0), ``lengths [B]``; for classification
``labels [B]``; for forecasting ``target_times [B, Q]``, ``target_values [B, Q, C]`` (0 where unknown),
``target_mask [B, Q, C]`` and ``target_lengths [B]``. Padding repeats the last time of a series and has
mask 0. A network may add precomputed tensors in ``extra_inputs(inputs) -> dict`` (e.g. a Neural CDE's
interpolation coefficients), computed once per data set rather than per step.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from nde.data.forecast import forecast_cutoff
from nde.irregular.data import IrregularBatch, IrregularDataError, IrregularDataset, Standardizer
from nde.metrics import crps_from_samples, interval_coverage, macro_auroc
from nde.solvers import solve_ode
from nde.train import TrainConfig, TrainResult, atomic_write_text, train
from nde.train.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "ClassPrediction",
    "ForecastPrediction",
    "GaussianForecastNetwork",
    "IrregularModel",
    "ModelFileError",
    "Task",
    "TensorDictDataset",
    "decode_ode_on_grid",
    "forecast_split",
    "gaussian_nll",
    "interpolate_path",
    "positive_std",
]

Task = Literal["classify", "forecast"]
TASKS: tuple[Task, ...] = ("classify", "forecast")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
_FORMAT = 1


class ModelFileError(ValueError):
    """A saved model directory is missing, incomplete or was written by an incompatible version."""


# --------------------------------------------------------------------------- helpers for the networks
def interpolate_path(grid: Tensor, path: Tensor, query: Tensor) -> Tensor:
    """Linear interpolation of ``path [..., B, G, H]`` given on ``grid [G]`` (increasing) at ``query [B, Q]``.

    Queries outside ``[grid[0], grid[-1]]`` are clamped to the ends. Returns ``[..., B, Q, H]``. Used to
    read a latent path solved once on a shared fixed grid at each series' own observation times.
    """
    g = grid.shape[0]
    q = query.clamp(grid[0], grid[-1])
    right = torch.searchsorted(grid, q.contiguous(), right=True).clamp(1, g - 1)  # [B, Q]
    left = right - 1
    t0, t1 = grid[left], grid[right]
    w = ((q - t0) / (t1 - t0)).unsqueeze(-1)  # [B, Q, 1]
    h = path.shape[-1]
    lead = path.shape[:-3]
    idx_l = left.unsqueeze(-1).expand(*left.shape, h).expand(*lead, *left.shape, h)
    idx_r = right.unsqueeze(-1).expand(*right.shape, h).expand(*lead, *right.shape, h)
    return torch.gather(path, -2, idx_l) * (1 - w) + torch.gather(path, -2, idx_r) * w


def decode_ode_on_grid(vector_field: nn.Module, z0: Tensor, query: Tensor, steps: int = 20,
                       method: str = "rk4") -> Tensor:
    """Solve ``dz/dτ = f(τ, z)`` from ``z0 [B, H]`` and read it at ``query [B, Q]`` (``τ >= 0``) -> ``[B, Q, H]``.

    One fixed-step solve (``steps`` steps of ``method``, native backend) on a grid shared by the batch,
    ``0 .. max(query)``, then linear interpolation to each series' own query times: one solve for
    a batch whose series are observed at different times.
    """
    horizon = query.max().clamp_min(1e-3)
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=z0.dtype, device=z0.device) * horizon
    path = solve_ode(vector_field, z0, grid, method=method, backend="native").ys  # [B, G, H]
    return interpolate_path(grid, path, query)


def gaussian_nll(mean: Tensor, std: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """Mean negative Gaussian log density over the observed entries (``mask`` 1) of ``values``."""
    z = (values - mean) / std
    nll = 0.5 * z * z + std.log() + 0.5 * math.log(2 * math.pi)
    return (nll * mask).sum() / mask.sum().clamp_min(1.0)


#: ``softplus(SOFTPLUS_INV_1) = 1``: a head output of 0 means a standard deviation of 1 at initialisation,
#: which keeps the first steps' Gaussian likelihood tame (a floor of 1e-3 there made it reach 1e6).
SOFTPLUS_INV_1 = 0.5413


def positive_std(raw: Tensor, floor: float = 1e-2) -> Tensor:
    """``softplus(raw + SOFTPLUS_INV_1) + floor``: a standard deviation that is 1 (plus the floor) at ``raw = 0``."""
    return nn.functional.softplus(raw + SOFTPLUS_INV_1) + floor


class GaussianForecastNetwork(nn.Module):
    """Base of forecast networks with independent Gaussian marginals at the target times.

    Subclasses implement ``distribution(inputs) -> (mean, std)``, each ``[B, Q, C]``; the training loss is
    the Gaussian negative log-likelihood per observed target entry and draws are ``mean + std * ε``.
    """

    def distribution(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def loss(self, inputs: dict[str, Tensor]) -> Tensor:
        mean, std = self.distribution(inputs)
        return gaussian_nll(mean, std, inputs["target_values"], inputs["target_mask"])

    def sample(self, inputs: dict[str, Tensor], n_samples: int) -> Tensor:
        mean, std = self.distribution(inputs)
        return mean + std * torch.randn((n_samples, *mean.shape), dtype=mean.dtype, device=mean.device)


def forecast_split(data: IrregularDataset, forecast_fraction: float) -> tuple[IrregularDataset, IrregularDataset]:
    """Cut every series into a context and its forecast targets.

    The context holds the observations at times ``t <= t_first + (1 - forecast_fraction)(t_last - t_first)``,
    the targets the later ones (:func:`nde.data.forecast_cutoff`, the rule of
    :func:`nde.data.forecast_context_mask` too). Raises :class:`IrregularDataError` (naming the series)
    for a series with fewer than two observation times.
    """
    if not 0 < forecast_fraction < 1:
        raise ValueError(f"forecast_fraction must be in (0, 1), got {forecast_fraction}")
    ctx_t, ctx_v, tgt_t, tgt_v = [], [], [], []
    for sid, t, v in zip(data.series_ids, data._times, data._values, strict=True):
        if len(t) < 2:
            raise IrregularDataError(f"{data.source}: series {sid!r}: forecasting needs at least 2 observation "
                                     f"times (one of context, one to forecast), got {len(t)}")
        cut = forecast_cutoff(t[0], t[-1], forecast_fraction)
        k = int(np.searchsorted(t, cut, side="right"))
        k = min(max(k, 1), len(t) - 1)
        ctx_t.append(t[:k])
        ctx_v.append(v[:k])
        tgt_t.append(t[k:])
        tgt_v.append(v[k:])
    return data._replace(ctx_t, ctx_v), data._replace(tgt_t, tgt_v)


class TensorDictDataset(Dataset[dict[str, Tensor]]):
    """Map-style data set over a dict of tensors that share their first dimension ``N``."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors must share their first dimension, got {sizes}")
        self.tensors = tensors
        self.n = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def batches(self, batch_size: int, device: torch.device | None = None):
        """Consecutive batches (no shuffling), each a dict of tensors on ``device``."""
        for start in range(0, self.n, batch_size):
            yield {k: v[start:start + batch_size].to(device) for k, v in self.tensors.items()}


def standard_inputs(batch: IrregularBatch, prefix: str = "") -> dict[str, Tensor]:
    mask = batch.mask.to(batch.values.dtype)
    return {
        f"{prefix}times": batch.times,
        f"{prefix}values": torch.nan_to_num(batch.values, nan=0.0) * mask,
        f"{prefix}mask": mask,
        f"{prefix}lengths": batch.lengths,
    }


class _Objective(nn.Module):
    """The training loss of a network as a module's forward: ``net.loss(batch)`` when the network has a
    ``loss`` method (forecasters; classifiers with an objective of their own), else the cross-entropy of
    ``net(batch)`` against ``batch["labels"]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        loss = getattr(self.net, "loss", None)
        if loss is not None:
            return loss(batch)
        return nn.functional.cross_entropy(self.net(batch), batch["labels"])


def _call(module: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return module(batch)


# --------------------------------------------------------------------------- predictions
@dataclass
class ClassPrediction:
    """Class probabilities ``[N, K]`` for ``N`` series, with the true labels when the data had them."""

    series_ids: list[str]
    probabilities: Tensor
    classes: list[Any]
    labels: Tensor | None

    @property
    def predicted(self) -> Tensor:
        """``[N]`` index of the most probable class."""
        return self.probabilities.argmax(-1)

    def metrics(self) -> dict[str, float]:
        """``accuracy``, ``auroc`` (binary, or macro one-vs-rest) and ``log_loss`` against the true labels."""
        if self.labels is None:
            raise ValueError("these series have no labels to score against")
        p = self.probabilities.clamp_min(1e-12)
        return {
            "accuracy": float((self.predicted == self.labels).double().mean()),
            "auroc": macro_auroc(self.probabilities, self.labels),
            "log_loss": float(-p.log().gather(1, self.labels[:, None]).mean()),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per series: ``series_id``, ``predicted`` (class name), ``p_<class>`` and ``label``."""
        frame = pd.DataFrame({"series_id": self.series_ids,
                              "predicted": [self.classes[i] for i in self.predicted.tolist()]})
        for k, name in enumerate(self.classes):
            frame[f"p_{name}"] = self.probabilities[:, k].numpy()
        if self.labels is not None:
            frame["label"] = [self.classes[i] for i in self.labels.tolist()]
        return frame


@dataclass
class ForecastPrediction:
    """Forecast draws at the query times of ``N`` series, in the data's units.

    Attributes:
        series_ids: ``N`` identifiers.
        times: ``[N, Q]`` query times (padding repeats the last one; see ``valid``).
        samples: ``[S, N, Q, C]`` draws.
        observed: ``[N, Q, C]`` the held-out values (NaN where not observed or unknown).
        valid: ``[N, Q]`` bool, True at real query times.
        channel_names: the ``C`` channel names.
    """

    series_ids: list[str]
    times: Tensor
    samples: Tensor
    observed: Tensor
    valid: Tensor
    channel_names: list[str]

    def quantiles(self, levels: Sequence[float]) -> Tensor:
        """``[len(levels), N, Q, C]`` empirical quantiles of the draws."""
        q = torch.tensor(list(levels), dtype=self.samples.dtype)
        return torch.quantile(self.samples, q, dim=0)

    def metrics(self) -> dict[str, float]:
        """Scores over the observed target entries: ``mse`` of the sample mean, ``crps`` (mean over points,
        exact for the ensemble), ``coverage_90`` and ``coverage_50`` of the central intervals, ``n_points``."""
        hit = ~torch.isnan(self.observed) & self.valid.unsqueeze(-1)
        if not hit.any():
            raise ValueError("no observed target values to score against")
        y = torch.nan_to_num(self.observed)
        mean = self.samples.mean(0)
        return {
            "mse": float(((mean - y) ** 2)[hit].mean()),
            "crps": float(crps_from_samples(self.samples, y)[hit].mean()),
            "coverage_90": float(interval_coverage(self.samples, y, 0.9)[hit].double().mean()),
            "coverage_50": float(interval_coverage(self.samples, y, 0.5)[hit].double().mean()),
            "n_points": int(hit.sum()),
        }

    def to_frame(self) -> pd.DataFrame:
        """Long table: ``series_id, time, channel, observed, mean, q05, q25, q50, q75, q95``, valid rows only."""
        qs = self.quantiles([0.05, 0.25, 0.5, 0.75, 0.95])
        mean = self.samples.mean(0)
        n, q, c = self.observed.shape
        sel = self.valid.unsqueeze(-1).expand(n, q, c)
        frame = pd.DataFrame({
            "series_id": np.repeat(np.asarray(self.series_ids, dtype=object), q * c).reshape(n, q, c)[sel.numpy()],
            "time": self.times.unsqueeze(-1).expand(n, q, c)[sel].numpy(),
            "channel": np.tile(np.asarray(self.channel_names, dtype=object), n * q).reshape(n, q, c)[sel.numpy()],
            "observed": self.observed[sel].numpy(),
            "mean": mean[sel].numpy(),
        })
        for name, level in zip(("q05", "q25", "q50", "q75", "q95"), qs, strict=True):
            frame[name] = level[sel].numpy()
        return frame


# --------------------------------------------------------------------------- the model interface
class IrregularModel(ABC):
    """Base of every irregular-time-series model: builds its network on first :meth:`fit`.

    Subclasses set ``name`` and ``tasks``, take their hyperparameters as keyword arguments of
    ``__init__`` (passing them on in ``super().__init__(task, forecast_fraction, **hyperparameters)`` so
    that :meth:`save` records them), and implement :meth:`build_network`.

    Args:
        task: ``"classify"`` or ``"forecast"``.
        forecast_fraction: for forecasting, the share of each series' time span held out as targets.
        **hyperparameters: the subclass's own settings (JSON-serialisable), kept in ``self.hyper``.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[Task, ...]] = TASKS
    #: Whether :meth:`interpolate` works: the network's latent path runs through the observation window.
    interpolates: ClassVar[bool] = False

    def __init__(self, task: Task = "classify", forecast_fraction: float = 0.2, **hyperparameters: Any) -> None:
        if task not in self.tasks:
            raise ValueError(f"model {self.name!r} supports tasks {list(self.tasks)}, not {task!r}")
        if not 0 < forecast_fraction < 1:
            raise ValueError(f"forecast_fraction must be in (0, 1), got {forecast_fraction}")
        self.task: Task = task
        self.forecast_fraction = float(forecast_fraction)
        self.hyper: dict[str, Any] = dict(hyperparameters)
        self.net: nn.Module | None = None
        self.scaler: Standardizer | None = None
        self.classes: list[Any] | None = None
        self.channel_names: list[str] = []
        self.train_result: TrainResult | None = None
        #: Optimiser steps per epoch of the fit in progress (0 before any); ``build_network`` may use it, e.g. to
        #: turn a KL warm-up given in epochs into steps.
        self.steps_per_epoch = 0
        #: Statistics of the training data that shape the network (``mean_observations``: mean number of
        #: observation times per series); set by :meth:`fit`, saved with the model.
        self.data_stats: dict[str, float] = {}
        #: Free-form JSON-able notes saved with the model (the command line keeps the CSV's column names here).
        self.metadata: dict[str, Any] = {}

    # ---- to implement
    @abstractmethod
    def build_network(self, n_channels: int, n_classes: int | None) -> nn.Module:
        """The network for ``n_channels`` value channels (and ``n_classes`` classes when classifying)."""

    # ---- data -> tensors
    def _check_data(self, data: IrregularDataset) -> None:
        if not isinstance(data, IrregularDataset):
            raise TypeError(f"expected an IrregularDataset, got {type(data).__name__}")
        if self.channel_names and data.channel_names != self.channel_names:
            raise IrregularDataError(f"{data.source}: channels {data.channel_names} differ from the "
                                     f"{self.channel_names} the model was fitted on")

    def _scaled(self, data: IrregularDataset) -> IrregularDataset:
        assert self.scaler is not None
        scaled = self.scaler.transform(data)
        return scaled._replace([t - t[0] for t in scaled._times], scaled._values)

    def prepare(self, data: IrregularDataset, *, with_labels: bool = True) -> dict[str, Tensor]:
        """The network's inputs for every series of ``data`` (standardised, padded, extra inputs added)."""
        self._check_data(data)
        if self.net is None:
            raise RuntimeError("the model has no network yet: call fit(...) or load(...) first")
        scaled = self._scaled(data)
        if self.task == "classify":
            batch = scaled.batch()
            inputs = standard_inputs(batch)
            if with_labels:
                if batch.labels is None:
                    raise IrregularDataError(f"{data.source}: classification needs labels (a label column)")
                inputs["labels"] = batch.labels
        else:
            context, target = forecast_split(scaled, self.forecast_fraction)
            inputs = standard_inputs(context.batch())
            inputs.update(standard_inputs(target.batch(), prefix="target_"))
        return self._with_extra(inputs)

    def _with_extra(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        extra = getattr(self.net, "extra_inputs", None)
        if extra is not None:
            with torch.no_grad():
                inputs.update(extra(inputs))
        return inputs

    # ---- training
    def _setup(self, data: IrregularDataset) -> None:
        self.channel_names = list(data.channel_names)
        n_classes = None
        if self.task == "classify":
            if data.labels is None or data.classes is None:
                raise IrregularDataError(f"{data.source}: classification needs labels (a label column)")
            self.classes = list(data.classes)
            n_classes = len(self.classes)
            if n_classes < 2:
                raise IrregularDataError(f"{data.source}: classification needs at least 2 classes, got {self.classes}")
        self.net = self.build_network(len(self.channel_names), n_classes)

    def _loss(self, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The training objective of ``net`` on ``batch`` (see :class:`_Objective`)."""
        return _Objective(net)(batch)

    def fit(self, train_data: IrregularDataset, val_data: IrregularDataset | None = None, *, epochs: int = 30,
            batch_size: int = 32, lr: float = 1e-2, weight_decay: float = 1e-4, patience: int | None = None,
            seed: int = 0, device: str = "auto", out_dir: str | Path | None = None, resume: bool = True,
            progress: bool = False) -> TrainResult:
        """Fit the standardiser on ``train_data``, build the network and train it with :func:`nde.train.train`.

        With ``val_data`` the best epoch by validation loss is kept (and ``patience`` stops early);
        without it, the last epoch's weights by training loss. ``out_dir`` keeps checkpoints and
        ``metrics.jsonl`` so that an interrupted fit resumes where it stopped.
        """
        self._check_data(train_data)
        if val_data is not None:
            self._check_data(val_data)
        self.scaler = Standardizer().fit(train_data)
        self.steps_per_epoch = math.ceil(len(train_data) / batch_size) if batch_size > 0 else 0
        self.data_stats = {"mean_observations": float(train_data.lengths.double().mean())}
        torch.manual_seed(seed)
        self._setup(train_data)
        assert self.net is not None
        train_inputs = self.prepare(train_data)
        validate = None
        if val_data is not None:
            val_inputs = self.prepare(val_data)

            def validate(net: nn.Module) -> dict[str, float]:
                return {"val_loss": self._evaluate_loss(net, val_inputs, batch_size)}

        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, device=device,
                             seed=seed, patience=patience, monitor="val_loss", out_dir=out_dir, resume=resume,
                             progress=progress)
        # The objective is the module trained, so that under DDP the loss itself runs through the wrapper's
        # forward (which is what synchronises the gradients), whichever method of the network computes it.
        self.train_result = train(_Objective(self.net), TensorDictDataset(train_inputs), _call, config=config,
                                  validate=None if validate is None else lambda objective: validate(objective.net))
        self.net.eval()
        return self.train_result

    def _evaluate_loss(self, net: nn.Module, inputs: dict[str, Tensor], batch_size: int) -> float:
        device = next(net.parameters()).device
        total, count = 0.0, 0
        # A stochastic objective (an ELBO) is scored on the same noise every epoch.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(0)
            for batch in TensorDictDataset(inputs).batches(batch_size, device):
                n = next(iter(batch.values())).shape[0]
                total += float(self._loss(net, batch)) * n
                count += n
        return total / count

    # ---- prediction
    @torch.no_grad()
    def predict(self, data: IrregularDataset, *, n_samples: int = 100, batch_size: int = 256,
                seed: int = 0) -> ClassPrediction | ForecastPrediction:
        """Class probabilities, or forecast draws at each series' held-out target times (data units).

        For forecasting, each series is cut by :func:`forecast_split` with the model's
        ``forecast_fraction``; the targets' observed values are kept for scoring.
        """
        if self.task == "classify":
            inputs = self.prepare(data, with_labels=False)
            probs = torch.cat([nn.functional.softmax(out, -1).cpu().double()
                               for out in self._run_batches(inputs, batch_size, None)])
            return ClassPrediction(list(data.series_ids), probs, list(self.classes or []),
                                   None if data.labels is None else data.labels.clone())
        inputs = self.prepare(data)
        return self._forecast(data, inputs, n_samples, batch_size, seed)

    def forecast(self, data: IrregularDataset, future_times: Sequence[float] | np.ndarray | Tensor, *,
                 n_samples: int = 100, batch_size: int = 256, seed: int = 0) -> ForecastPrediction:
        """Forecast draws at ``future_times`` (``[Q]`` for all series, or ``[N, Q]``, in the data's time units)
        after the whole of each series; every future time must come after the series' last observation."""
        return self._predict_at(data, future_times, after_end=True, n_samples=n_samples, batch_size=batch_size,
                                seed=seed)

    def interpolate(self, data: IrregularDataset, times: Sequence[float] | np.ndarray | Tensor, *,
                    n_samples: int = 100, batch_size: int = 256, seed: int = 0) -> ForecastPrediction:
        """Draws of the values at ``times`` (``[Q]`` or ``[N, Q]``, increasing, not before each series' first
        observation) given the whole of each series: inside the observed window (interpolation) and after
        it. Only for models whose latent path runs through the observations (``interpolates = True``:
        ``latent_ode``, ``latent_sde``); the others summarise the series at its end."""
        if not self.interpolates:
            raise ValueError(f"model {self.name!r} does not interpolate (it reads the series only at its end); "
                             "latent_ode and latent_sde do")
        return self._predict_at(data, times, after_end=False, n_samples=n_samples, batch_size=batch_size,
                                seed=seed)

    @torch.no_grad()
    def _predict_at(self, data: IrregularDataset, query_times: Sequence[float] | np.ndarray | Tensor, *,
                    after_end: bool, n_samples: int, batch_size: int, seed: int) -> ForecastPrediction:
        if self.task != "forecast":
            raise ValueError("forecasts need a model fitted with task='forecast'")
        self._check_data(data)
        query = torch.as_tensor(np.asarray(query_times, dtype=np.float64))
        if query.ndim == 1:
            query = query.expand(len(data), -1)
        if query.ndim != 2 or query.shape[0] != len(data) or query.shape[1] == 0:
            raise ValueError(f"query times must have shape [Q] or [{len(data)}, Q], got {list(query.shape)}")
        for i, sid in enumerate(data.series_ids):
            row = query[i]
            if not bool(torch.isfinite(row).all()) or bool((row[1:] <= row[:-1]).any()):
                raise ValueError(f"series {sid!r}: query times must be finite and strictly increasing")
            first, last = float(data._times[i][0]), float(data._times[i][-1])
            if after_end and float(row[0]) <= last:
                raise ValueError(f"series {sid!r}: future time {float(row[0])} is not after the last observation "
                                 f"at {last}")
            if float(row[0]) < first:
                raise ValueError(f"series {sid!r}: time {float(row[0])} is before the first observation at {first}")
        unknown = [np.full((query.shape[1], data.n_channels), np.nan)] * len(data)
        target = data._replace([q.numpy() for q in query], unknown)
        context, scaled_target = self.scaler.transform(data), self.scaler.transform(target)  # type: ignore[union-attr]
        starts = [t[0] for t in context._times]
        context = context._replace([t - s for t, s in zip(context._times, starts, strict=True)], context._values)
        scaled_target = scaled_target._replace([t - s for t, s in zip(scaled_target._times, starts, strict=True)],
                                               scaled_target._values)
        inputs = standard_inputs(context.batch())
        inputs.update(standard_inputs(scaled_target.batch(), prefix="target_"))
        return self._forecast(data, self._with_extra(inputs), n_samples, batch_size, seed, target=target)

    def _forecast(self, data: IrregularDataset, inputs: dict[str, Tensor], n_samples: int, batch_size: int,
                  seed: int, target: IrregularDataset | None = None) -> ForecastPrediction:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        assert self.scaler is not None
        if target is None:
            _, target = forecast_split(data, self.forecast_fraction)
        device = next(self.net.parameters()).device  # type: ignore[union-attr]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            draws = torch.cat([s.cpu().double() for s in self._run_batches(inputs, batch_size, n_samples)], dim=1)
        samples = self.scaler.inverse_transform_values(draws)
        batch = target.batch(dtype=torch.float64)
        valid = torch.arange(batch.times.shape[1])[None, :] < inputs["target_lengths"][:, None]
        return ForecastPrediction(list(data.series_ids), batch.times, samples, batch.values, valid,
                                  list(self.channel_names))

    def _run_batches(self, inputs: dict[str, Tensor], batch_size: int, n_samples: int | None):
        assert self.net is not None
        self.net.eval()
        device = next(self.net.parameters()).device
        for batch in TensorDictDataset(inputs).batches(batch_size, device):
            yield self.net(batch) if n_samples is None else self.net.sample(batch, n_samples)

    # ---- persistence
    def config(self) -> dict[str, Any]:
        """Everything but the weights needed to rebuild the model (JSON-serialisable)."""
        if self.scaler is None:
            raise RuntimeError("the model is not fitted")
        return {"format": _FORMAT, "model": self.name, "task": self.task, "forecast_fraction": self.forecast_fraction,
                "hyperparameters": self.hyper, "channel_names": self.channel_names,
                "classes": self.classes, "scaler": self.scaler.to_dict(), "data_stats": self.data_stats,
                "metadata": self.metadata}

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``weights.pt`` (atomically) into ``directory``; returns it."""
        if self.net is None:
            raise RuntimeError("the model is not fitted: nothing to save")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        save_checkpoint(out / WEIGHTS_FILE, {"model": state})
        atomic_write_text(out / CONFIG_FILE, json.dumps(self.config(), indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> IrregularModel:
        """Rebuild a model saved by :meth:`save` (any registered model when called on the base class)."""
        from nde.irregular.registry import MODEL_NAMES, get_model_class

        path = Path(directory)
        cfg_path = path / CONFIG_FILE
        if not cfg_path.is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ModelFileError(f"{path}: not a saved model (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as err:
            raise ModelFileError(f"{cfg_path}: not valid JSON ({err})") from None
        if cfg.get("format") != _FORMAT:
            raise ModelFileError(f"{cfg_path}: format {cfg.get('format')!r}, this version reads {_FORMAT}")
        name = cfg.get("model")
        if name not in MODEL_NAMES:
            raise ModelFileError(f"{cfg_path}: unknown model {name!r}; known: {list(MODEL_NAMES)}")
        model_cls = get_model_class(name)
        if cls is not IrregularModel and not issubclass(model_cls, cls):
            raise ModelFileError(f"{cfg_path}: holds a {name!r} model, not a {cls.__name__}")
        model = model_cls(task=cfg["task"], forecast_fraction=cfg["forecast_fraction"], **cfg["hyperparameters"])
        model.channel_names = list(cfg["channel_names"])
        model.classes = cfg["classes"]
        model.scaler = Standardizer.from_dict(cfg["scaler"])
        model.metadata = dict(cfg.get("metadata") or {})
        model.data_stats = dict(cfg.get("data_stats") or {})
        model.net = model.build_network(len(model.channel_names),
                                        None if model.classes is None else len(model.classes))
        state = load_checkpoint(path / WEIGHTS_FILE, map_location="cpu")["model"]
        model.net.load_state_dict(state)
        model.net.to(device).eval()
        return model
