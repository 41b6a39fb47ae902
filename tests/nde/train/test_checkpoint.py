"""Atomic checkpoint writes and weights-only loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nde.train import CheckpointError, atomic_write_text, load_checkpoint, save_checkpoint


class Payload:
    """An arbitrary class: unpickling it is what weights_only loading must refuse."""

    def __init__(self) -> None:
        self.value = 42


def _state() -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        "model": {"weight": torch.randn(3, 4, generator=gen), "bias": torch.zeros(3)},
        "epoch": 7,
        "best_metric": 0.125,
        "name": "run",
        "history": [{"epoch": 0, "train_loss": 1.5}],
        "betas": (0.9, 0.999),
        "none": None,
        "flag": True,
    }


def test_roundtrip_is_exact_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ckpt.pt"  # parent created on demand
    state = _state()
    save_checkpoint(path, state)
    assert sorted(os.listdir(path.parent)) == ["ckpt.pt"]
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert torch.equal(loaded["model"]["bias"], state["model"]["bias"])
    rest = {k: v for k, v in state.items() if k != "model"}
    assert {k: v for k, v in loaded.items() if k != "model"} == rest


def test_overwrite_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path) == {"epoch": 2}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_save_refuses_objects_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(TypeError, match=r"state\['extra'\]\[0\].*Payload"):
        save_checkpoint(path, {"epoch": 1, "extra": [Payload()]})
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint(path, [1, 2])  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Payload()}, path)  # plain torch.save pickles the object
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_load_corrupt_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.ones(1000)})
    data = path.read_bytes()
    corrupt = {"garbage": b"not a checkpoint" * 20, "truncated": data[: len(data) // 2], "empty": b""}[kind]
    path.write_bytes(corrupt)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_load_refuses_non_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)


def test_load_map_location(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.arange(3.0)})
    loaded = load_checkpoint(path, map_location=torch.device("cpu"))
    assert loaded["w"].device == torch.device("cpu")
    assert torch.equal(loaded["w"], torch.tensor([0.0, 1.0, 2.0]))


def test_atomic_write_text(tmp_path: Path) -> None:
    path = tmp_path / "out" / "result.json"
    atomic_write_text(path, '{"a": 1}\n')
    atomic_write_text(path, '{"a": "é"}\n')
    assert path.read_text(encoding="utf-8") == '{"a": "é"}\n'
    assert os.listdir(path.parent) == ["result.json"]
