"""Training TSDiff on random windows of the training part of each series, through :func:`nde.train.train`.

**Windows.** A training window of a series ``y`` (its training part, ``T`` points) starts at ``s`` and holds
``y_s .. y_{s+L-1}`` (``L = C + P``) with the lagged copies ``y_{s+t-lag}`` (:func:`nde.tsdiff.model.lagged_windows`).
The start is constrained to ``max(lags) <= s <= T - L``, so that every lag of every point lies inside the
series (as the reference's instance splitter, whose ``min_past`` is ``C + max(lags)``): no window is padded.
A series shorter than ``max(lags) + L`` gives no window; if no series gives one, training fails with a
message naming the needed length. Windows whose context has no observed value are left out (their mean scale
is undefined).

Each item of an epoch is one window drawn uniformly from all valid windows of all series, so an epoch is
``batches_per_epoch`` batches of ``batch_size`` random windows whatever the data size (the reference trains
128 batches of 64 per epoch). The draw of item ``k`` uses a NumPy generator seeded with
``(k, torch.initial_seed())``; :func:`nde.train.train` re-seeds torch per epoch from the run's seed, so the
draws repeat with the seed, differ between epochs, survive a resume, and differ between DDP ranks (which
receive different ``k``).

**Missing values** (NaN) inside a window are filled with 0 after scaling and left out of the loss (the
loss is the mean over observed entries).

**Validation.** The last ``P`` points of each training part are held out as validation targets: the
validation window of a series is its last window, ``s = T - L`` (its context overlaps the training data, as in
the reference's ``split(offset=-P)``), and training windows come from the first ``T - P`` points only. The
validation loss is the diffusion loss on those windows at ``val_draws`` fixed steps spread evenly over
``1 .. N`` with noise from a fixed seed, so it is comparable from epoch to epoch. Series too short for a
validation window are only trained on; without any, the loop monitors the training loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from nde.train import TrainConfig, TrainResult, train
from nde.tsdiff.model import TSDiff, TSDiffConfig

__all__ = ["TrainingWindows", "fit_tsdiff", "validation_loss", "validation_windows", "window_arrays"]


def _as_series(series: Sequence[Any] | np.ndarray) -> list[np.ndarray]:
    if isinstance(series, np.ndarray) and series.ndim == 1:
        series = [series]
    out = [np.asarray(v, dtype=np.float64).ravel() for v in series]
    if not out:
        raise ValueError("no series given")
    for i, v in enumerate(out):
        if np.isinf(v).any():
            raise ValueError(f"series {i} contains infinite values (use NaN for missing values)")
    return out


def window_arrays(values: np.ndarray, start: int, config: TSDiffConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The scaled window of ``values`` starting at ``start``: ``(x [L, 1 + K] float32, mask [L, 1 + K] bool)``.

    ``x`` holds ``y_{start+t-lag} / scale`` (lag 0 first) with missing values set to 0 and ``mask`` False
    there; ``scale`` is the mean of ``|y|`` over the observed context values, floored at ``min_scale``.
    ``start`` must satisfy ``start >= max(lags)`` and ``start + L <= len(values)``. Returns ``None`` when the
    context has no observed value.
    """
    length, reach = config.window_length, config.history_length
    if start < reach or start + length > len(values):
        raise ValueError(f"window start {start} outside [{reach}, {len(values) - length}] for a series of "
                         f"{len(values)} points")
    context = values[start : start + config.context_length]
    observed = ~np.isnan(context)
    if not observed.any():
        return None
    scale = max(float(np.abs(context[observed]).mean()), config.min_scale)
    columns = [values[start : start + length]] + [values[start - lag : start - lag + length] for lag in config.lags]
    raw = np.stack(columns, axis=-1) / scale
    mask = ~np.isnan(raw)
    return np.where(mask, raw, 0.0).astype(np.float32), mask


def _valid_starts(values: np.ndarray, config: TSDiffConfig) -> np.ndarray:
    """All starts ``s`` in ``[max(lags), T - L]`` whose context has an observed value."""
    first, last = config.history_length, len(values) - config.window_length
    if last < first:
        return np.zeros(0, dtype=np.int64)
    observed = np.concatenate([[0], np.cumsum(~np.isnan(values))])
    starts = np.arange(first, last + 1)
    count = observed[starts + config.context_length] - observed[starts]
    return starts[count > 0]


class TrainingWindows(Dataset[dict[str, Tensor]]):
    """``samples_per_epoch`` random training windows (uniform over all valid windows of all series).

    Item ``k``: ``{"x": [L, 1 + K] float32, "mask": [L, 1 + K] bool}`` from :func:`window_arrays`; see the module
    docstring for how the draw is seeded.

    Raises:
        ValueError: no series has a valid window (the message gives the needed length).
    """

    def __init__(self, series: Sequence[np.ndarray], config: TSDiffConfig, samples_per_epoch: int) -> None:
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.series = _as_series(series)
        self.config = config
        self.samples_per_epoch = int(samples_per_epoch)
        self.starts = [_valid_starts(v, config) for v in self.series]
        counts = np.array([len(s) for s in self.starts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        if self.offsets[-1] == 0:
            need = config.history_length + config.window_length
            longest = max(len(v) for v in self.series)
            raise ValueError(
                f"no training window: a window needs max(lags) {config.history_length} + context "
                f"{config.context_length} + prediction {config.prediction_length} = {need} points of a series' "
                f"training part (with an observed context value), the longest has {longest}; use a shorter "
                "context, fewer or shorter lags, or longer series"
            )

    @property
    def num_windows(self) -> int:
        """Number of distinct valid windows."""
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng((int(index), torch.initial_seed() % (2**63)))
        k = int(rng.integers(self.num_windows))
        i = int(np.searchsorted(self.offsets, k, side="right")) - 1
        window = window_arrays(self.series[i], int(self.starts[i][k - self.offsets[i]]), self.config)
        assert window is not None  # valid starts have an observed context value
        return {"x": torch.from_numpy(window[0]), "mask": torch.from_numpy(window[1])}


def validation_windows(series: Sequence[np.ndarray], config: TSDiffConfig) -> dict[str, Tensor] | None:
    """The last window of each series (``{"x": [M, L, 1 + K], "mask": ...}``), ``None`` if no series has one."""
    xs, masks = [], []
    for values in _as_series(series):
        start = len(values) - config.window_length
        if start < config.history_length:
            continue
        window = window_arrays(values, start, config)
        if window is not None:
            xs.append(window[0])
            masks.append(window[1])
    if not xs:
        return None
    return {"x": torch.from_numpy(np.stack(xs)), "mask": torch.from_numpy(np.stack(masks))}


class _DiffusionObjective(nn.Module):
    """Wraps the model so that the loss is computed in ``forward`` (DDP synchronises gradients there)."""

    def __init__(self, model: TSDiff) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model.diffusion_loss(batch["x"], batch["mask"])


def _loss(objective: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return objective(batch)


@torch.no_grad()
def validation_loss(model: TSDiff, windows: dict[str, Tensor], draws: int = 16, batch_size: int = 256,
                    seed: int = 0) -> float:
    """Mean diffusion loss over ``windows`` at ``draws`` fixed steps ``1..N`` (evenly spread), fixed noise.

    Every window is noised at every one of the ``draws`` steps, with noise from a generator seeded by
    ``seed``; the result is the mean over observed entries.
    """
    device = next(model.parameters()).device
    n = model.config.num_steps
    steps = torch.round(1 + (n - 1) * (torch.arange(draws, dtype=torch.float64) + 0.5) / draws).long()
    x, mask = windows["x"], windows["mask"]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((draws, *x.shape), generator=generator)
    total, count = 0.0, 0.0
    for d in range(draws):
        for lo in range(0, len(x), batch_size):
            xb, mb = x[lo : lo + batch_size].to(device), mask[lo : lo + batch_size].to(device)
            nb = noise[d, lo : lo + batch_size].to(device)
            step = torch.full((len(xb),), int(steps[d]), device=device)
            weight = float(mb.sum())
            total += float(model.diffusion_loss(xb, mb, steps=step, noise=nb)) * weight
            count += weight
    return total / max(count, 1.0)


def fit_tsdiff(
    series: Sequence[Any] | np.ndarray,
    config: TSDiffConfig,
    *,
    epochs: int = 100,
    batch_size: int = 64,
    batches_per_epoch: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    grad_clip: float | None = 0.5,
    seed: int = 0,
    device: str = "auto",
    out_dir: str | Path | None = None,
    resume: bool = True,
    patience: int | None = None,
    validation: bool = True,
    val_draws: int = 16,
    progress: bool = True,
    model: TSDiff | None = None,
) -> tuple[TSDiff, TrainResult]:
    """Train a TSDiff model on the training parts ``series`` (``N`` arrays ``[T_i]``, NaN = missing).

    Defaults follow the reference's training configuration (Adam without weight decay, lr ``1e-3``, gradient
    norm clipped at 0.5, 128 batches of 64 windows per epoch). The weights of the epoch with the lowest
    validation loss (the training loss without validation windows) are kept.

    Args:
        series: the training part of each series (nothing of the test windows).
        config: the model's configuration (context/prediction lengths, lags, sizes, schedule).
        epochs, batch_size, batches_per_epoch, lr, weight_decay, grad_clip, seed, device, patience,
            progress: as :class:`nde.train.TrainConfig` (an epoch is ``batches_per_epoch`` batches).
        out_dir: folder for the loop's ``checkpoint.pt``, ``best.pt`` and ``metrics.jsonl``; ``None``: none.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        validation: hold out the last ``P`` points of each series for the validation loss (module docstring).
        val_draws: diffusion steps per validation window.
        model: a model to continue training (default: a new one, initialised from ``seed``).

    Returns:
        ``(model, result)``: the trained model (best epoch's weights, in eval mode) and the loop's summary.

    Raises:
        ValueError: no training window (see :class:`TrainingWindows`), bad settings.
    """
    data = _as_series(series)
    val = validation_windows(data, config) if validation else None
    train_part = [v[: len(v) - config.prediction_length] for v in data] if val is not None else data
    windows = TrainingWindows(train_part, config, batches_per_epoch * batch_size)
    if model is None:
        torch.manual_seed(seed)
        model = TSDiff(config)
    elif model.config != config:
        raise ValueError("model.config differs from config")
    objective = _DiffusionObjective(model)
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                               grad_clip=grad_clip, device=device, seed=seed, patience=patience,
                               monitor="val_loss" if val is not None else "train_loss", out_dir=out_dir,
                               resume=resume, progress=progress)

    validate = None
    if val is not None:
        val_windows = val

        def validate(module: nn.Module) -> dict[str, float]:
            assert isinstance(module, _DiffusionObjective)
            return {"val_loss": validation_loss(module.model, val_windows, draws=val_draws)}

    result = train(objective, windows, _loss, config=train_config, validate=validate)
    return model.eval(), result
