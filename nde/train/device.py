"""Choose the torch device a training run uses.

The accepted specifications are ``"auto"``, ``"cpu"``, ``"cuda"`` and ``"cuda:N"``. Under torchrun
(``WORLD_SIZE`` > 1) each process must own one GPU, so ``"auto"`` and ``"cuda"`` resolve to
``cuda:LOCAL_RANK`` rather than to the current device.
"""

from __future__ import annotations

import os
import re

import torch

__all__ = ["ALLOWED_DEVICE_SPECS", "DeviceUnavailableError", "check_device_spec", "resolve_device"]

#: Human-readable list of what :func:`resolve_device` accepts, used in error messages.
ALLOWED_DEVICE_SPECS = ("auto", "cpu", "cuda", "cuda:N")

_CUDA_INDEXED = re.compile(r"cuda:(\d+)")


class DeviceUnavailableError(ValueError):
    """Raised when a well-formed device specification names hardware this machine does not have."""


def check_device_spec(spec: str) -> None:
    """Check the syntax of a device specification without looking at the hardware.

    Raises:
        ValueError: ``spec`` is not one of ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N >= 0).
    """
    if not isinstance(spec, str):
        raise ValueError(f"device must be a string, one of {', '.join(ALLOWED_DEVICE_SPECS)}; got {spec!r}")
    if spec in ("auto", "cpu", "cuda") or _CUDA_INDEXED.fullmatch(spec):
        return
    raise ValueError(
        f"unknown device {spec!r}: allowed values are {', '.join(ALLOWED_DEVICE_SPECS)} "
        "(N a non-negative GPU index)"
    )


def _torchrun_local_rank() -> int | None:
    """``LOCAL_RANK`` when this process is one of several started by torchrun, else ``None``."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world_size <= 1 or "LOCAL_RANK" not in os.environ:
        return None
    return int(os.environ["LOCAL_RANK"])


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a device specification into a :class:`torch.device`.

    Args:
        spec: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The device. Under torchrun with CUDA, ``"auto"`` and ``"cuda"`` give ``cuda:LOCAL_RANK``; an
        explicit ``"cuda:N"`` is taken as given.

    Raises:
        ValueError: ``spec`` is not one of the allowed values.
        DeviceUnavailableError: (a ``ValueError``) CUDA is asked for but not available, or ``cuda:N``
            names a GPU index this machine does not have.
    """
    check_device_spec(spec)
    if spec == "cpu":
        return torch.device("cpu")
    cuda_available = torch.cuda.is_available()
    if spec == "auto" and not cuda_available:
        return torch.device("cpu")
    if not cuda_available:
        raise DeviceUnavailableError(
            f"device {spec!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda is not None}); "
            "use device='cpu' or device='auto'"
        )
    count = torch.cuda.device_count()
    if spec in ("auto", "cuda"):
        local_rank = _torchrun_local_rank()
        index = local_rank if local_rank is not None else torch.cuda.current_device()
    else:
        index = int(spec.split(":", 1)[1])
    if index >= count:
        raise DeviceUnavailableError(
            f"device {spec!r} resolves to cuda:{index}, but only {count} CUDA device(s) are visible "
            "(check CUDA_VISIBLE_DEVICES and --nproc_per_node)"
        )
    return torch.device("cuda", index)
