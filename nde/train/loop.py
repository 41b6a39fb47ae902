"""The one training loop every model of ``nde`` is trained with.

:func:`train` runs AdamW over a map-style :class:`~torch.utils.data.Dataset` for a number of epochs, with
global-norm gradient clipping, per-epoch validation, early stopping, atomic checkpoints that make an
interrupted run resumable to the bit, and data parallelism under torchrun.

Epochs are numbered from 0: ``epoch`` in the metrics, ``best_epoch`` and the checkpoint all use the index
of the epoch, so a run with ``epochs=4`` has epochs 0, 1, 2 and 3.

Files written when ``TrainConfig.out_dir`` is set (by rank 0 only):

``checkpoint.pt``
    after every epoch: ``model`` and ``optimizer`` state dicts, ``epoch`` (index of the last finished
    epoch), ``best_metric``, ``best_epoch``, ``epochs_without_improvement``, ``history`` (the list of
    per-epoch metric dicts) and ``config`` (the :class:`TrainConfig` as a plain dict).
``best.pt``
    ``model`` (state dict of the best epoch so far), ``epoch`` and ``metric``.
``metrics.jsonl``
    one JSON object per finished epoch: ``epoch``, ``train_loss``, every validation metric, ``lr`` and
    ``epoch_time_s`` (wall-clock seconds of the epoch, validation included).

Reproducibility: the data order of epoch ``e`` comes from a generator seeded with ``seed + e`` and the
global RNG (dropout, noise) is re-seeded with ``seed * 100003 + e`` at the start of epoch ``e``, so a run
interrupted after epoch ``k`` and resumed ends with exactly the parameters of an uninterrupted run (on
deterministic hardware and kernels, as on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset
from tqdm.auto import tqdm

from nde.train.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from nde.train.device import check_device_spec, resolve_device
from nde.train.distributed import (
    DistEnv,
    all_reduce_sum,
    barrier,
    broadcast_object,
    destroy_distributed,
    get_dist_env,
    init_distributed,
    wrap_ddp,
)

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "LossFn",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "ValidateFn",
    "move_to_device",
    "train",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
METRICS_FILE = "metrics.jsonl"

#: Bumped when the checkpoint layout changes, so that an old file is refused with a clear message.
_CHECKPOINT_FORMAT = 1

#: Keys the loop puts into every metrics record; a validation metric may not reuse them.
_RESERVED_KEYS = frozenset({"epoch", "train_loss", "lr", "epoch_time_s"})

#: Config fields that change the trajectory of training: resuming with other values cannot reproduce
#: the uninterrupted run, which is worth a warning.
_TRAJECTORY_FIELDS = ("batch_size", "lr", "weight_decay", "grad_clip", "seed")

#: ``loss_fn(model, batch) -> scalar loss``; ``model`` is the DDP wrapper when distributed.
LossFn = Callable[[nn.Module, Any], Tensor]
#: ``validate(model) -> {metric name: value}``; ``model`` is the unwrapped module, in eval mode.
ValidateFn = Callable[[nn.Module], Mapping[str, float | Tensor]]


class TrainConfigError(ValueError):
    """Raised by :class:`TrainConfig` for a field with a wrong type or an out-of-range value."""


class NonFiniteLossError(RuntimeError):
    """Raised when the loss (or the gradient norm) of a training step is NaN or infinite.

    The message names the epoch and the step (0-based batch index within the epoch). The optimiser step
    of the failing batch is not taken, and the checkpoint of the last finished epoch stays on disk.
    """


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but epochs=True is a bug, not a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Settings of one :func:`train` run.

    Attributes:
        epochs: total number of epochs (≥ 1), counting those done before a resume.
        batch_size: samples per optimiser step *per process*; under torchrun the effective batch is
            ``batch_size * WORLD_SIZE``.
        lr: AdamW learning rate (> 0).
        weight_decay: AdamW decoupled weight decay (≥ 0).
        grad_clip: maximum global L2 norm of the gradient of all parameters; ``None`` disables clipping.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :func:`~nde.train.resolve_device`).
        seed: base seed (≥ 0) of the data order and of the per-epoch global RNG.
        patience: stop after this many consecutive epochs without improvement of ``monitor``;
            ``None`` never stops early.
        monitor: metric that selects the best epoch and drives early stopping: ``"train_loss"`` or a key
            of the dict returned by ``validate``. Without ``validate`` only ``"train_loss"`` exists, and
            the default ``"val_loss"`` is then read as ``"train_loss"``.
        mode: ``"min"`` if a lower ``monitor`` is better, ``"max"`` if higher is better.
        out_dir: directory for ``checkpoint.pt``, ``best.pt`` and ``metrics.jsonl``; ``None`` writes
            nothing (and cannot resume).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists. With ``False`` an earlier run's
            files in ``out_dir`` are deleted and training starts over.
        progress: show a tqdm progress bar (rank 0 only).
        num_workers: DataLoader worker processes (0 loads in the training process).
    """

    epochs: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float | None = 1.0
    device: str = "auto"
    seed: int = 0
    patience: int | None = None
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    out_dir: str | Path | None = None
    resume: bool = True
    progress: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise TrainConfigError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        if not _is_int(self.epochs) or self.epochs < 1:
            fail("epochs", "an int >= 1")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            fail("batch_size", "an int >= 1")
        if not _is_real(self.lr) or self.lr <= 0:
            fail("lr", "a finite number > 0")
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            fail("weight_decay", "a finite number >= 0")
        if self.grad_clip is not None and (not _is_real(self.grad_clip) or self.grad_clip <= 0):
            fail("grad_clip", "None or a finite number > 0")
        try:
            check_device_spec(self.device)
        except ValueError as err:
            raise TrainConfigError(f"TrainConfig.device: {err}") from None
        if not _is_int(self.seed) or self.seed < 0:
            fail("seed", "an int >= 0")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            fail("patience", "None or an int >= 1")
        if not isinstance(self.monitor, str) or not self.monitor:
            fail("monitor", "a non-empty metric name")
        if self.mode not in ("min", "max"):
            fail("mode", "'min' or 'max'")
        if self.out_dir is not None and (
            not isinstance(self.out_dir, str | os.PathLike) or not str(self.out_dir)
        ):
            fail("out_dir", "None or a non-empty path")
        if not isinstance(self.resume, bool):
            fail("resume", "a bool")
        if not isinstance(self.progress, bool):
            fail("progress", "a bool")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            fail("num_workers", "an int >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (``out_dir`` as a string) that a ``weights_only`` load accepts."""
        plain = dataclasses.asdict(self)
        if plain["out_dir"] is not None:
            plain["out_dir"] = str(plain["out_dir"])
        return plain


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        best_epoch: index of the epoch with the best monitored metric (the weights left in the model).
        best_metric: the monitored metric at ``best_epoch``.
        epochs_run: number of finished epochs, including those finished before a resume.
        stopped_early: whether early stopping ended the run before ``config.epochs``.
        history: one metrics record per finished epoch (as written to ``metrics.jsonl``).
    """

    best_epoch: int
    best_metric: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Progress:
    """Mutable state of a run that a checkpoint must carry to resume it exactly."""

    next_epoch: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # CPU copy of the best weights, so that loading them at the end needs no file (out_dir may be None).
    best_state: dict[str, Tensor] | None = None


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move the tensors of ``batch`` to ``device``.

    Tensors, and tensors nested in lists, tuples (named tuples keep their type) and mappings (returned
    as ``dict``), are moved; any other leaf is returned unchanged.
    """
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device, non_blocking) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(item, device, non_blocking) for item in batch))
    if isinstance(batch, list | tuple):
        moved = [move_to_device(item, device, non_blocking) for item in batch]
        return moved if isinstance(batch, list) else tuple(moved)
    return batch


def _resolve_monitor(config: TrainConfig, validate: ValidateFn | None) -> str:
    if validate is not None:
        return config.monitor
    if config.monitor in ("train_loss", "val_loss"):
        if config.mode != "min":
            raise TrainConfigError(
                "without a validate function the monitored metric is 'train_loss', which needs mode='min'"
            )
        return "train_loss"
    raise TrainConfigError(
        f"monitor={config.monitor!r} needs a validate function returning it; without validate only "
        "'train_loss' is available"
    )


def _is_better(value: float, best: float | None, mode: str) -> bool:
    # NaN is never an improvement, but any number improves on a NaN best (possible at epoch 0).
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


def _clean_metrics(raw: Any, epoch: int) -> dict[str, float]:
    """Check the dict returned by ``validate`` and turn its values into Python floats."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"validate must return a dict of metric name -> float, got {type(raw).__name__}")
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise TypeError(f"validate returned a non-string metric name {key!r}")
        if key in _RESERVED_KEYS:
            raise ValueError(
                f"validate returned the metric {key!r}, a name the loop reserves "
                f"({', '.join(sorted(_RESERVED_KEYS))}); rename it"
            )
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"validate metric {key!r} is a tensor of shape {tuple(value.shape)}, not a scalar"
                )
            value = value.item()
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"validate metric {key!r} at epoch {epoch} is {value!r}, which is not a number"
            ) from None
    return metrics


def _make_loader(
    data: Dataset[Any],
    config: TrainConfig,
    epoch: int,
    env: DistEnv,
    device: torch.device,
    collate_fn: Callable[[list[Any]], Any] | None,
) -> DataLoader[Any]:
    """A fresh DataLoader whose order depends only on ``config.seed`` and ``epoch``.

    Building it per epoch from a generator seeded with ``seed + epoch`` (instead of drawing from one
    long-lived generator) is what makes the order of epoch ``e`` the same in a resumed run. The same
    generator also seeds the worker processes, so data loading never consumes the global RNG.
    """
    generator = torch.Generator()
    generator.manual_seed(config.seed + epoch)
    if hasattr(data, "set_epoch"):
        # A dataset that regroups its items per epoch (e.g. batches of similar lengths) gets the epoch's seed.
        data.set_epoch(config.seed + epoch)
    common: dict[str, Any] = {
        "batch_size": config.batch_size,
        "collate_fn": collate_fn,
        "num_workers": config.num_workers,
        "pin_memory": device.type == "cuda",
        "generator": generator,
    }
    if env.is_distributed:
        # The sampler shuffles with seed + epoch as well, identically on all ranks, then gives each rank
        # a disjoint strided shard (padded by repetition to equal length so all ranks take equal steps).
        sampler = DistributedSampler(
            data, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)
        return DataLoader(data, sampler=sampler, **common)
    return DataLoader(data, shuffle=True, **common)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def _train_one_epoch(
    ddp_model: nn.Module,
    loader: DataLoader[Any],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    config: TrainConfig,
    device: torch.device,
    epoch: int,
) -> tuple[float, int]:
    """One pass over ``loader``; returns (sum of the per-step losses, number of steps)."""
    loss_sum, steps = 0.0, 0
    non_blocking = device.type == "cuda"
    for step, batch in enumerate(loader):
        batch = move_to_device(batch, device, non_blocking)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(ddp_model, batch)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar (0-d) tensor, got {shape} at epoch {epoch}")
        if not loss.requires_grad:
            raise ValueError(
                f"the loss at epoch {epoch}, step {step} does not require grad: loss_fn must compute it "
                "from the model's trainable parameters (and not under torch.no_grad())"
            )
        loss.backward()
        # float64 so that the logged loss keeps all the precision of a float64 model.
        checks = [loss.detach().double()]
        if config.grad_clip is not None:
            # Under DDP the gradients are already all-reduced here, so every rank clips identically.
            checks.append(torch.nn.utils.clip_grad_norm_(params, config.grad_clip).double())
        # One host sync per step, for both checks: the price of naming the step that went wrong.
        values = torch.stack(checks).tolist()
        if not math.isfinite(values[0]):
            raise NonFiniteLossError(
                f"non-finite loss ({values[0]}) at epoch {epoch}, step {step}; lower the learning rate, "
                "tighten grad_clip or check the data and the model for overflow"
            )
        if len(values) > 1 and not math.isfinite(values[1]):
            # Under DDP a NaN loss on one rank poisons the all-reduced gradients of all ranks, so the
            # other ranks stop here at the same step instead of waiting forever for the failed one.
            raise NonFiniteLossError(
                f"non-finite gradient norm ({values[1]}) at epoch {epoch}, step {step} (loss {values[0]})"
            )
        optimizer.step()
        loss_sum += values[0]
        steps += 1
    return loss_sum, steps


def _restore(
    out_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    monitor: str,
    device: torch.device,
) -> _Progress:
    """Load ``out_dir/checkpoint.pt`` (and ``best.pt``) into the model, the optimiser and a progress."""
    path = out_dir / CHECKPOINT_FILE
    ckpt = load_checkpoint(path, map_location=device)
    required = {
        "format",
        "model",
        "optimizer",
        "epoch",
        "best_metric",
        "best_epoch",
        "epochs_without_improvement",
        "history",
        "monitor",
        "config",
    }
    missing = required - ckpt.keys()
    if missing or ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a training checkpoint of format {_CHECKPOINT_FORMAT} "
            f"(missing keys: {sorted(missing)}); delete it or set resume=False"
        )
    saved = ckpt["config"]
    if ckpt["monitor"] != monitor or saved.get("mode") != config.mode:
        # The stored best metric and patience counter mean nothing for another metric or direction.
        raise ValueError(
            f"cannot resume {path}: it was monitoring {ckpt['monitor']!r} ({saved.get('mode')}), this "
            f"run monitors {monitor!r} ({config.mode}); use another out_dir or resume=False"
        )
    changed = [name for name in _TRAJECTORY_FIELDS if saved.get(name) != getattr(config, name)]
    if changed:
        warnings.warn(
            f"resuming {path} with different {', '.join(changed)} than the checkpointed run; the result "
            "will differ from an uninterrupted run",
            stacklevel=3,
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    progress = _Progress(
        next_epoch=int(ckpt["epoch"]) + 1,
        best_metric=float(ckpt["best_metric"]),
        best_epoch=int(ckpt["best_epoch"]),
        bad_epochs=int(ckpt["epochs_without_improvement"]),
        history=[dict(record) for record in ckpt["history"]],
    )
    if progress.best_epoch == int(ckpt["epoch"]):
        # checkpoint.pt is written before best.pt, so after a crash between the two the checkpoint holds
        # the newest best weights and best.pt an older epoch's.
        progress.best_state = {
            key: value.detach().to("cpu", copy=True) for key, value in ckpt["model"].items()
        }
    else:
        best = load_checkpoint(out_dir / BEST_FILE, map_location="cpu")
        if int(best.get("epoch", -1)) != progress.best_epoch:
            raise CheckpointError(
                f"{out_dir / BEST_FILE} holds epoch {best.get('epoch')} but {path} says the best epoch is "
                f"{progress.best_epoch}; the directory mixes two runs: delete it or set resume=False"
            )
        progress.best_state = best["model"]
    return progress


def _start_fresh(out_dir: Path) -> None:
    """Delete an earlier run's files so that a crash in epoch 0 cannot resume from them later."""
    for name in (CHECKPOINT_FILE, BEST_FILE):
        (out_dir / name).unlink(missing_ok=True)
    atomic_write_text(out_dir / METRICS_FILE, "")


def _metrics_text(history: list[dict[str, float]]) -> str:
    return "".join(json.dumps(record) + "\n" for record in history)


def _append_metrics(path: Path, record: dict[str, float]) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def train(
    model: nn.Module,
    train_data: Dataset[Any],
    loss_fn: LossFn,
    *,
    config: TrainConfig,
    validate: ValidateFn | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place with AdamW and return a summary.

    Each epoch: re-seed the global RNG, iterate over a shuffled DataLoader built from ``train_data``,
    take one optimiser step per batch (gradients clipped to ``config.grad_clip`` in global L2 norm),
    then call ``validate`` and record the metrics. After the last epoch (or an early stop) the weights of
    the best epoch are loaded into ``model``; the model's train/eval flag is restored to what it was.
    The global RNG is seeded with ``config.seed`` at the start and re-seeded at every epoch, so the
    caller's RNG state is changed.

    Under torchrun (``WORLD_SIZE`` > 1) the process group is created if needed (and then destroyed at
    the end), the model is wrapped in DistributedDataParallel, each rank reads its own shard of
    ``train_data``, the mean train loss is averaged over all ranks, and every rank calls ``validate``
    (so a ``validate`` that itself communicates works) but the metrics of rank 0 are broadcast to all
    ranks, so that the best epoch and the early-stopping decision are identical on every rank even if
    floating point differs. Only rank 0 writes files; ``out_dir`` must be visible to all ranks to resume.
    DDP is used with its defaults, so every trainable parameter must receive a gradient at every step.

    Args:
        model: the module to train; moved to the resolved device.
        train_data: map-style dataset; items are collated by ``collate_fn`` (default: PyTorch's
            ``default_collate``) into batches of tensors, or tuples/lists/dicts of tensors, which are moved
            to the device recursively. A dataset with a ``set_epoch(seed)`` method is called with
            ``config.seed + epoch`` before each epoch's loader is built (e.g. to regroup its items).
        loss_fn: ``loss_fn(model, batch) -> loss``, a 0-d tensor; ``model`` is the DDP wrapper when
            distributed (the forward pass must go through it for the gradients to be synchronised).
        config: the run's settings.
        validate: ``validate(model) -> {name: float}``, called after each epoch with the unwrapped model
            in eval mode. Gradients are *not* disabled (an adjoint solve may need them): wrap the body in
            ``torch.no_grad()`` when they are not needed. Metric names must not be ``epoch``,
            ``train_loss``, ``lr`` or ``epoch_time_s``.
        collate_fn: passed to the DataLoader.

    Returns:
        A :class:`TrainResult`. ``history`` holds the per-epoch metrics, including those of epochs
        finished before a resume.

    Raises:
        TrainConfigError: the monitored metric cannot exist (``validate`` missing).
        ValueError: ``validate`` does not return the monitored metric, ``loss_fn`` returns no scalar, or a
            checkpoint to resume was written with another monitor/mode.
        NonFiniteLossError: a step's loss or gradient norm is NaN/inf (the message names epoch and step).
        DeviceUnavailableError: ``config.device`` asks for CUDA on a machine without it.
        CheckpointError: the checkpoint to resume from is unreadable or inconsistent.
        KeyboardInterrupt: re-raised after closing the progress bar; the checkpoint of the last finished
            epoch is on disk, and calling ``train`` again with ``resume=True`` continues from it.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(train_data, IterableDataset):
        raise TypeError("train_data must be a map-style Dataset (with __len__ and __getitem__), not iterable")
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise ValueError("train_data is empty")
    monitor = _resolve_monitor(config, validate)
    env = get_dist_env()
    device = resolve_device(config.device)
    created_group = init_distributed(env, device)
    was_training = model.training
    try:
        return _run(model, train_data, loss_fn, config, validate, collate_fn, monitor, env, device)
    finally:
        model.train(was_training)
        destroy_distributed(created_group)


def _run(
    model: nn.Module,
    train_data: Dataset[Any],
    loss_fn: LossFn,
    config: TrainConfig,
    validate: ValidateFn | None,
    collate_fn: Callable[[list[Any]], Any] | None,
    monitor: str,
    env: DistEnv,
    device: torch.device,
) -> TrainResult:
    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    writes = out_dir is not None and env.is_main
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    if out_dir is not None and config.resume and (out_dir / CHECKPOINT_FILE).exists():
        progress = _restore(out_dir, model, optimizer, config, monitor, device)
        if writes:
            # Drops lines of epochs after the checkpoint (a crash between the two writes) and any torn line.
            atomic_write_text(out_dir / METRICS_FILE, _metrics_text(progress.history))
        if progress.next_epoch > config.epochs:
            warnings.warn(
                f"the checkpoint in {out_dir} has {progress.next_epoch} epochs, more than epochs="
                f"{config.epochs}; nothing to train",
                stacklevel=2,
            )
    else:
        progress = _Progress()
        if writes:
            assert out_dir is not None
            _start_fresh(out_dir)
    # No rank may start (and reach rank 0's first write) while another still reads the old files.
    barrier()

    ddp_model = wrap_ddp(model, device) if env.is_distributed else model
    stopped_early = config.patience is not None and progress.bad_epochs >= config.patience
    bar = tqdm(
        total=config.epochs,
        initial=min(progress.next_epoch, config.epochs),
        desc="train",
        unit="epoch",
        disable=not (config.progress and env.is_main),
        dynamic_ncols=True,
    )
    try:
        for epoch in range(progress.next_epoch, config.epochs):
            if stopped_early:
                break
            start = time.perf_counter()
            # Re-seeding per epoch makes dropout/noise of epoch e independent of whether the run resumed.
            torch.manual_seed(config.seed * 100003 + epoch)
            model.train()
            loader = _make_loader(train_data, config, epoch, env, device, collate_fn)
            loss_sum, steps = _train_one_epoch(
                ddp_model, loader, loss_fn, optimizer, params, config, device, epoch
            )
            totals = all_reduce_sum(torch.tensor([loss_sum, steps], dtype=torch.float64, device=device))
            record: dict[str, float] = {"epoch": epoch, "train_loss": (totals[0] / totals[1]).item()}
            if validate is not None:
                model.eval()
                record.update(_clean_metrics(validate(model), epoch))
                model.train()
            record = broadcast_object(record)
            if monitor not in record:
                raise ValueError(
                    f"the monitored metric {monitor!r} is not among the metrics of epoch {epoch} "
                    f"({', '.join(record)}); set TrainConfig.monitor to one of them"
                )
            record["lr"] = float(optimizer.param_groups[0]["lr"])
            value = record[monitor]
            improved = _is_better(value, progress.best_metric, config.mode)
            if improved:
                progress.best_metric, progress.best_epoch, progress.bad_epochs = value, epoch, 0
                progress.best_state = _cpu_state(model)
            else:
                progress.bad_epochs += 1
            record["epoch_time_s"] = time.perf_counter() - start
            progress.history.append(record)
            progress.next_epoch = epoch + 1
            if writes:
                assert out_dir is not None
                _write_epoch(out_dir, model, optimizer, config, monitor, progress, improved, record)
            bar.update(1)
            postfix = {"train_loss": f"{record['train_loss']:.4g}"}
            if monitor != "train_loss":
                postfix[monitor] = f"{value:.4g}"
            postfix["best_epoch"] = str(progress.best_epoch)
            bar.set_postfix(postfix)
            if config.patience is not None and progress.bad_epochs >= config.patience:
                stopped_early = True
                break
    except KeyboardInterrupt:
        if writes and progress.history:
            logger.warning(
                "training interrupted; %s holds epoch %d, resume with the same out_dir",
                out_dir,
                progress.next_epoch - 1,
            )
        raise
    finally:
        bar.close()

    if progress.best_state is None:
        raise RuntimeError("no epoch was trained or restored")  # unreachable: epochs >= 1
    model.load_state_dict(progress.best_state)
    assert progress.best_metric is not None
    return TrainResult(
        best_epoch=progress.best_epoch,
        best_metric=progress.best_metric,
        epochs_run=len(progress.history),
        stopped_early=stopped_early,
        history=progress.history,
    )


def _write_epoch(
    out_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    monitor: str,
    progress: _Progress,
    improved: bool,
    record: dict[str, float],
) -> None:
    """Persist one finished epoch: checkpoint first, then best weights, then the metrics line.

    The order matters for resuming after a crash between the writes: the checkpoint is the source of
    truth, ``best.pt`` is only trusted when its epoch matches, and ``metrics.jsonl`` is rewritten from
    the checkpoint's history.
    """
    save_checkpoint(
        out_dir / CHECKPOINT_FILE,
        {
            "format": _CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": progress.next_epoch - 1,
            "best_metric": progress.best_metric,
            "best_epoch": progress.best_epoch,
            "epochs_without_improvement": progress.bad_epochs,
            "monitor": monitor,
            "history": progress.history,
            "config": config.to_dict(),
        },
    )
    if improved:
        save_checkpoint(
            out_dir / BEST_FILE,
            {"model": model.state_dict(), "epoch": progress.best_epoch, "metric": progress.best_metric},
        )
    _append_metrics(out_dir / METRICS_FILE, record)
