"""Pieces the benchmark scripts share: the machine's description, device sync, torchsde's SDE object."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torchcde
import torchdiffeq
import torchsde
from torch import Tensor, nn

import nde


def machine_info(device: torch.device) -> dict[str, Any]:
    """Platform, CPU model, package versions, git commit, torch threads and device, for the JSON results."""
    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchdiffeq": torchdiffeq.__version__,
        "torchsde": torchsde.__version__,
        "torchcde": getattr(torchcde, "__version__", None),
        "nde": nde.__version__,
        "git_commit": commit,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings on CUDA are asynchronous otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchsdeSDE(nn.Module):
    """An Itô SDE with diagonal noise as torchsde wants it: ``f``/``g`` over given drift and diffusion modules."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift: nn.Module, diffusion: nn.Module) -> None:
        super().__init__()
        self.drift, self.diffusion = drift, diffusion

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self.drift(t, y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.diffusion(t, y)
