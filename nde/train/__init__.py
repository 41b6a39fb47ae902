"""The training loop shared by every model of ``nde``, with checkpoints, early stopping and DDP.

Typical use::

    from nde.train import TrainConfig, train

    result = train(model, dataset, loss_fn, config=TrainConfig(epochs=50, batch_size=64, out_dir="runs/x"))
"""

from nde.train.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from nde.train.device import DeviceUnavailableError, resolve_device
from nde.train.distributed import DistEnv, DistributedSetupError, get_dist_env
from nde.train.loop import (
    BEST_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    LossFn,
    NonFiniteLossError,
    TrainConfig,
    TrainConfigError,
    TrainResult,
    ValidateFn,
    move_to_device,
    train,
)

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "CheckpointError",
    "DeviceUnavailableError",
    "DistEnv",
    "DistributedSetupError",
    "LossFn",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "ValidateFn",
    "atomic_write_bytes",
    "atomic_write_text",
    "get_dist_env",
    "load_checkpoint",
    "move_to_device",
    "resolve_device",
    "save_checkpoint",
    "train",
]
