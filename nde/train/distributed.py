"""Helpers for data-parallel training under torchrun (``torch.distributed.run``).

torchrun starts one process per device and tells each its place through environment variables:
``WORLD_SIZE`` (number of processes), ``RANK`` (global index) and ``LOCAL_RANK`` (index on this node).
A run counts as distributed when ``WORLD_SIZE`` > 1. The training loop then

- joins the process group (backend ``"nccl"`` on CUDA, ``"gloo"`` on CPU) unless the caller already did,
- wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`,
- lets only rank 0 write files and draw the progress bar,
- destroys the process group at the end only if it created it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistEnv",
    "DistributedSetupError",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "destroy_distributed",
    "get_dist_env",
    "init_distributed",
    "wrap_ddp",
]


class DistributedSetupError(RuntimeError):
    """Raised when the torchrun environment variables are inconsistent or missing."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global process index, 0 ≤ rank < world_size.
        local_rank: index of the process on its node; selects the GPU under CUDA.
        world_size: number of processes; 1 means not distributed.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the only process that writes files and shows progress."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise DistributedSetupError(
            f"WORLD_SIZE > 1 but the environment variable {name} is not set; start the script with "
            "torchrun (python -m torch.distributed.run), which sets RANK, LOCAL_RANK and WORLD_SIZE"
        )
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from None


def get_dist_env() -> DistEnv:
    """Read the torchrun environment variables.

    Returns:
        ``DistEnv()`` (rank 0 of 1) when ``WORLD_SIZE`` is unset or ≤ 1, else the values torchrun set.

    Raises:
        DistributedSetupError: ``WORLD_SIZE`` > 1 but ``RANK``/``LOCAL_RANK`` are missing or out of range.
    """
    if "WORLD_SIZE" not in os.environ:
        return DistEnv()
    world_size = _env_int("WORLD_SIZE")
    if world_size <= 1:
        return DistEnv()
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size or not 0 <= local_rank < world_size:
        raise DistributedSetupError(
            f"inconsistent torchrun environment: RANK={rank}, LOCAL_RANK={local_rank}, "
            f"WORLD_SIZE={world_size}"
        )
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size)


def init_distributed(env: DistEnv, device: torch.device) -> bool:
    """Join the default process group if the run is distributed and no group exists yet.

    Args:
        env: from :func:`get_dist_env`.
        device: this process's device; CUDA selects the ``"nccl"`` backend, anything else ``"gloo"``.

    Returns:
        ``True`` when this call created the process group (so the caller must destroy it), ``False``
        when the run is single-process or the group was already initialised by the caller.
    """
    if not env.is_distributed:
        return False
    if dist.is_initialized():
        if dist.get_world_size() != env.world_size:
            raise DistributedSetupError(
                f"an existing process group has {dist.get_world_size()} processes but WORLD_SIZE="
                f"{env.world_size}"
            )
        return False
    if device.type == "cuda":
        # NCCL binds to the current device; without this every rank would talk through cuda:0.
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    # MASTER_ADDR/MASTER_PORT come from torchrun through the default env:// init method.
    dist.init_process_group(backend=backend)
    return True


def destroy_distributed(created: bool) -> None:
    """Destroy the default process group if ``created`` (as returned by :func:`init_distributed`)."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``model`` (already on ``device``) in DistributedDataParallel.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from the same
    weights even if the models were initialised differently. ``device_ids`` is given only for CUDA, as
    DDP requires it to be ``None`` for CPU modules.
    """
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (no-op when not distributed) and return it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (``obj`` itself when not distributed).

    ``obj`` must be picklable; it travels between the processes of one run only, never through a file.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
