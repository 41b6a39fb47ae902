"""DDP under torchrun on CPU (gloo), the torchrun environment parsing and the device choice under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nde.train import DeviceUnavailableError, DistEnv, DistributedSetupError, get_dist_env, resolve_device
from nde.train.checkpoint import load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("ddp_worker.py")
N_SAMPLES = 256  # must match ddp_worker.N_SAMPLES
EPOCHS = 30  # must match ddp_worker.EPOCHS


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """Run the worker with two processes once; return the output dir and the two rank records."""
    out_dir = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    # Variables of an outer torchrun would make the worker think it has other ranks.
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(out_dir),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    for rank in (0, 1):
        assert (out_dir / f"rank{rank}.pt").is_file(), f"rank {rank} wrote no result"
    return out_dir, load_checkpoint(out_dir / "rank0.pt"), load_checkpoint(out_dir / "rank1.pt")


def test_ddp_ranks_end_with_identical_parameters(ddp_run: tuple[Path, dict, dict]) -> None:
    _, r0, r1 = ddp_run
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    # The ranks started from different random initialisations (different losses before training).
    assert r0["initial_loss"] != r1["initial_loss"]


def test_ddp_training_reduces_the_loss(ddp_run: tuple[Path, dict, dict]) -> None:
    _, r0, r1 = ddp_run
    assert r0["final_loss"] < r0["initial_loss"] / 20
    assert r0["train_loss"][-1] < r0["train_loss"][0] / 20
    assert r0["final_loss"] == r1["final_loss"]


def test_ddp_ranks_see_disjoint_shards_covering_the_data(ddp_run: tuple[Path, dict, dict]) -> None:
    _, r0, r1 = ddp_run
    i0, i1 = r0["epoch0_indices"], r1["epoch0_indices"]
    assert len(i0) == len(i1) == N_SAMPLES // 2
    assert i0.sum().item() != i1.sum().item()
    assert torch.equal(torch.cat([i0, i1]).sort().values, torch.arange(N_SAMPLES))


def test_ddp_loop_details(ddp_run: tuple[Path, dict, dict]) -> None:
    out_dir, r0, r1 = ddp_run
    # loss_fn got the DDP wrapper; the loop destroyed the process group it created.
    assert r0["all_wrapped"] and r1["all_wrapped"]
    assert r0["group_destroyed"] and r1["group_destroyed"]
    # Metrics (hence the best epoch and early-stopping decisions) are identical on both ranks.
    assert r0["val_loss"] == r1["val_loss"] and r0["train_loss"] == r1["train_loss"]
    assert r0["best_epoch"] == r1["best_epoch"]
    assert r0["epochs_run"] == r1["epochs_run"] == EPOCHS
    # Only rank 0 wrote: one metrics line per epoch, not one per rank.
    lines = (out_dir / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(EPOCHS))
    ckpt = load_checkpoint(out_dir / "run" / "checkpoint.pt")
    assert ckpt["epoch"] == EPOCHS - 1
    assert not any(name.startswith("module.") for name in ckpt["model"])


def _set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_get_dist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_env(monkeypatch)
    assert get_dist_env() == DistEnv(0, 0, 1)
    assert not get_dist_env().is_distributed and get_dist_env().is_main
    _set_env(monkeypatch, WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
    assert not get_dist_env().is_distributed
    _set_env(monkeypatch, WORLD_SIZE="4", RANK="3", LOCAL_RANK="1")
    env = get_dist_env()
    assert (env.rank, env.local_rank, env.world_size) == (3, 1, 4)
    assert env.is_distributed and not env.is_main


@pytest.mark.parametrize(
    "values",
    [
        {"WORLD_SIZE": "2", "LOCAL_RANK": "0"},  # RANK missing
        {"WORLD_SIZE": "2", "RANK": "0"},  # LOCAL_RANK missing
        {"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"},  # rank out of range
        {"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"},
    ],
)
def test_get_dist_env_rejects_inconsistent_variables(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str]
) -> None:
    _set_env(monkeypatch, **values)
    with pytest.raises(DistributedSetupError):
        get_dist_env()


def test_resolve_device_under_torchrun_uses_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend to be rank 1 of 2 on a machine with two GPUs; nothing touches a real GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _set_env(monkeypatch, WORLD_SIZE="2", RANK="1", LOCAL_RANK="1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    _set_env(monkeypatch, WORLD_SIZE="4", RANK="3", LOCAL_RANK="3")
    with pytest.raises(DeviceUnavailableError, match="only 2 CUDA device"):
        resolve_device("auto")
