"""The training loop: convergence, early stopping, exact resume, outputs and input checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from nde.train import (
    DeviceUnavailableError,
    NonFiniteLossError,
    TrainConfig,
    TrainConfigError,
    TrainResult,
    load_checkpoint,
    move_to_device,
    resolve_device,
    train,
)


def _mse(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x).squeeze(-1), y)


def _regression_data(n: int = 256, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen)
    y = x @ torch.tensor([2.0, -1.0, 0.5]) + 0.3 + 0.01 * torch.randn(n, generator=gen)
    return x, y


# --------------------------------------------------------------------------------------------- convergence


def test_linear_regression_recovers_least_squares() -> None:
    x, y = _regression_data()
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    solution = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1)  # [w1, w2, w3, b]
    residual_mse = nn.functional.mse_loss(design @ solution, y).item()

    def validate(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": nn.functional.mse_loss(model(x).squeeze(-1), y).item()}

    torch.manual_seed(1)
    model = nn.Linear(3, 1)
    config = TrainConfig(epochs=100, batch_size=64, lr=0.02, weight_decay=0.0, progress=False)
    result = train(model, TensorDataset(x, y), _mse, config=config, validate=validate)

    estimate = torch.cat([model.weight.detach().squeeze(0), model.bias.detach()])
    torch.testing.assert_close(estimate, solution, atol=1e-3, rtol=0)
    torch.testing.assert_close(estimate, torch.tensor([2.0, -1.0, 0.5, 0.3]), atol=5e-3, rtol=0)
    # The weights left in the model are those of the best epoch, whose loss is the least-squares optimum.
    assert result.best_metric == pytest.approx(validate(model)["val_loss"], rel=1e-6)
    assert result.best_metric == pytest.approx(residual_mse, rel=1e-2)
    assert result.epochs_run == 100 and not result.stopped_early
    assert result.history[0]["train_loss"] > 100 * result.history[-1]["train_loss"]
    assert result.history[0]["lr"] == 0.02
    assert model.training  # the train flag the model came with is restored


def test_dict_batches_and_train_loss_monitor() -> None:
    x, y = _regression_data(n=64)

    class DictData(Dataset[dict[str, Tensor]]):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> dict[str, Tensor]:
            return {"x": x[i], "y": y[i]}

    def loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return nn.functional.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    model.eval()
    # Without validate the default monitor "val_loss" reads as "train_loss".
    result = train(model, DictData(), loss_fn, config=TrainConfig(epochs=5, batch_size=16, progress=False))
    losses = [record["train_loss"] for record in result.history]
    assert set(result.history[0]) == {"epoch", "train_loss", "lr", "epoch_time_s"}
    assert result.best_metric == min(losses) and result.best_epoch == losses.index(min(losses))
    assert not model.training  # eval flag restored


def test_move_to_device_keeps_structure() -> None:
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    batch = {
        "t": torch.ones(2),
        "l": [torch.zeros(1), 3],
        "p": Pair(torch.ones(1), "s"),
        "tup": (torch.ones(1),),
    }
    moved = move_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["p"], Pair) and moved["p"].b == "s"
    assert isinstance(moved["l"], list) and moved["l"][1] == 3
    assert isinstance(moved["tup"], tuple)
    assert torch.equal(moved["t"], torch.ones(2))


# ---------------------------------------------------------------------------------------- early stopping

# Validation metric per epoch: the best is epoch 3 (a tie at epoch 5 is not an improvement), so with
# patience 3 the run stops after epoch 3 + 3 = 6, before the better value of epoch 7.
_SCHEDULE = [5.0, 4.0, 3.0, 2.0, 2.5, 2.0, 2.1, 1.0, 0.5, 0.4]
_BEST, _PATIENCE = 3, 3


@pytest.mark.parametrize("mode", ["min", "max"])
def test_early_stopping(mode: str) -> None:
    sign = 1.0 if mode == "min" else -1.0
    snapshots: list[dict[str, Tensor]] = []
    calls: list[tuple[bool, bool]] = []

    def validate(model: nn.Module) -> dict[str, float]:
        calls.append((model.training, torch.is_grad_enabled()))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": sign * _SCHEDULE[len(snapshots) - 1], "other": 1.0}

    x, y = _regression_data(n=32)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    config = TrainConfig(
        epochs=len(_SCHEDULE),
        batch_size=8,
        lr=0.01,
        patience=_PATIENCE,
        monitor="score",
        mode=mode,
        progress=False,
    )
    result = train(model, TensorDataset(x, y), _mse, config=config, validate=validate)

    assert result.stopped_early
    assert result.best_epoch == _BEST
    assert result.best_metric == sign * _SCHEDULE[_BEST]
    assert result.epochs_run == _BEST + _PATIENCE + 1 == len(snapshots)
    assert [r["epoch"] for r in result.history] == list(range(_BEST + _PATIENCE + 1))
    assert result.history[-1]["score"] == sign * _SCHEDULE[_BEST + _PATIENCE]
    # validate ran in eval mode, with gradients left enabled.
    assert calls == [(False, True)] * len(snapshots)
    # The best epoch's weights were loaded back, not the last epoch's.
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[_BEST][name])
    assert not torch.equal(snapshots[-1]["weight"], snapshots[_BEST]["weight"])


def test_no_patience_runs_every_epoch() -> None:
    values = iter([3.0, 2.0, 2.5, 2.6, 2.7])
    x, y = _regression_data(n=16)
    result = train(
        nn.Linear(3, 1),
        TensorDataset(x, y),
        _mse,
        config=TrainConfig(epochs=5, batch_size=8, progress=False),
        validate=lambda model: {"val_loss": next(values)},
    )
    assert (result.epochs_run, result.stopped_early) == (5, False)
    assert (result.best_epoch, result.best_metric) == (1, 2.0)


# --------------------------------------------------------------------------------------------------- resume


class _DropoutNet(nn.Module):
    """Dropout makes the result depend on the global RNG, which a resume must reproduce."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _resume_setup() -> tuple[TensorDataset, nn.Module]:
    x, y = _regression_data(n=96, seed=3)
    torch.manual_seed(5)
    return TensorDataset(x, y), _DropoutNet()


def _config(out_dir: Path | None, epochs: int = 4, **kwargs: Any) -> TrainConfig:
    settings: dict[str, Any] = {"batch_size": 16, "lr": 0.01, "seed": 11, "progress": False, **kwargs}
    return TrainConfig(epochs=epochs, out_dir=out_dir, **settings)


def _validate(model: nn.Module) -> dict[str, float]:
    # A metric whose best epoch is not the last one, so best.pt and the final weights matter separately.
    with torch.no_grad():
        return {"val_loss": float(sum(p.abs().sum() for p in model.parameters()))}


def _strip_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in record.items() if k != "epoch_time_s"} for record in history]


def _assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Exact equality of nested dicts/lists/tuples of tensors and plain values (tensors: torch.equal)."""
    assert type(a) is type(b), where
    if isinstance(a, Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, TrainResult]:
    out_dir = tmp_path_factory.mktemp("full")
    data, model = _resume_setup()
    result = train(model, data, _mse, config=_config(out_dir), validate=_validate)
    return out_dir, model, result


def _assert_matches_uninterrupted(
    out_dir: Path, model: nn.Module, result: TrainResult, reference: tuple[Path, nn.Module, TrainResult]
) -> None:
    ref_dir, ref_model, ref_result = reference
    _assert_same_state(model.state_dict(), ref_model.state_dict())
    ckpt, ref_ckpt = load_checkpoint(out_dir / "checkpoint.pt"), load_checkpoint(ref_dir / "checkpoint.pt")
    # Last-epoch weights and the whole optimiser state (moments, step counts) are bit-identical.
    _assert_same_state(ckpt["model"], ref_ckpt["model"])
    _assert_same_state(ckpt["optimizer"], ref_ckpt["optimizer"])
    assert ckpt["epoch"] == ref_ckpt["epoch"] == 3
    assert (result.best_epoch, result.best_metric) == (ref_result.best_epoch, ref_result.best_metric)
    assert _strip_time(result.history) == _strip_time(ref_result.history)
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3]
    assert _strip_time([json.loads(line) for line in lines]) == _strip_time(ref_result.history)


def test_uninterrupted_run_outputs(uninterrupted: tuple[Path, nn.Module, TrainResult]) -> None:
    out_dir, model, result = uninterrupted
    assert sorted(p.name for p in out_dir.iterdir()) == ["best.pt", "checkpoint.pt", "metrics.jsonl"]
    ckpt = load_checkpoint(out_dir / "checkpoint.pt")
    assert ckpt["epoch"] == 3 and ckpt["best_epoch"] == result.best_epoch
    assert ckpt["best_metric"] == result.best_metric
    assert ckpt["config"]["epochs"] == 4 and ckpt["config"]["out_dir"] == str(out_dir)
    expected_bad = 3 - result.best_epoch
    assert ckpt["epochs_without_improvement"] == expected_bad
    best = load_checkpoint(out_dir / "best.pt")
    assert best["epoch"] == result.best_epoch
    _assert_same_state(best["model"], model.state_dict())
    record = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert set(record) == {"epoch", "train_loss", "val_loss", "lr", "epoch_time_s"}
    assert record["epoch_time_s"] > 0 and math.isfinite(record["train_loss"])


def test_resume_after_two_epochs_is_bit_identical(
    tmp_path: Path, uninterrupted: tuple[Path, nn.Module, TrainResult]
) -> None:
    data, model = _resume_setup()
    first = train(model, data, _mse, config=_config(tmp_path, epochs=2), validate=_validate)
    assert first.epochs_run == 2
    # A new process would build a fresh model: the checkpoint must supply all the state.
    data, model = _resume_setup()
    result = train(model, data, _mse, config=_config(tmp_path, epochs=4), validate=_validate)
    _assert_matches_uninterrupted(tmp_path, model, result, uninterrupted)


def test_keyboard_interrupt_then_resume(
    tmp_path: Path, uninterrupted: tuple[Path, nn.Module, TrainResult]
) -> None:
    data, model = _resume_setup()
    steps = {"n": 0}

    def interrupting_loss(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        steps["n"] += 1
        if steps["n"] == 6 * 2 + 3:  # 6 steps per epoch: step 2 of epoch 2
            raise KeyboardInterrupt
        return _mse(m, batch)

    with pytest.raises(KeyboardInterrupt):
        train(model, data, interrupting_loss, config=_config(tmp_path), validate=_validate)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    # Simulate a crash between the metrics line and the checkpoint of epoch 2: a stray line to drop.
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 2, "train_loss": 0.0}\n{"epoch": 3, "tr')
    data, model = _resume_setup()
    result = train(model, data, _mse, config=_config(tmp_path), validate=_validate)
    _assert_matches_uninterrupted(tmp_path, model, result, uninterrupted)


def test_resume_false_starts_over(tmp_path: Path, uninterrupted: tuple[Path, nn.Module, TrainResult]) -> None:
    data, model = _resume_setup()
    train(model, data, _mse, config=_config(tmp_path, epochs=3, seed=99), validate=_validate)
    data, model = _resume_setup()
    result = train(model, data, _mse, config=_config(tmp_path, resume=False), validate=_validate)
    _assert_matches_uninterrupted(tmp_path, model, result, uninterrupted)


def test_resume_of_a_finished_run_trains_nothing(
    tmp_path: Path, uninterrupted: tuple[Path, nn.Module, TrainResult]
) -> None:
    data, model = _resume_setup()
    train(model, data, _mse, config=_config(tmp_path), validate=_validate)
    calls = []
    data, model = _resume_setup()
    result = train(
        model,
        data,
        lambda m, b: calls.append(1) or _mse(m, b),
        config=_config(tmp_path),
        validate=_validate,
    )
    assert calls == []
    _assert_matches_uninterrupted(tmp_path, model, result, uninterrupted)


def test_resume_with_another_monitor_is_refused(tmp_path: Path) -> None:
    data, model = _resume_setup()
    train(model, data, _mse, config=_config(tmp_path, epochs=1), validate=_validate)
    with pytest.raises(ValueError, match="monitoring 'val_loss'"):
        train(model, data, _mse, config=_config(tmp_path, mode="max"), validate=_validate)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.0}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"grad_clip": float("inf")}, "grad_clip"),
        ({"device": "tpu"}, "device"),
        ({"seed": -1}, "seed"),
        ({"patience": 0}, "patience"),
        ({"monitor": ""}, "monitor"),
        ({"mode": "avg"}, "mode"),
        ({"out_dir": ""}, "out_dir"),
        ({"resume": "yes"}, "resume"),
        ({"progress": 1}, "progress"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"epochs": 1, "batch_size": 1}
    with pytest.raises(TrainConfigError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**{**base, **kwargs})


def test_config_defaults_are_valid() -> None:
    config = TrainConfig(epochs=1, batch_size=1)
    assert (config.lr, config.weight_decay, config.grad_clip, config.device) == (1e-3, 1e-2, 1.0, "auto")
    assert (config.monitor, config.mode, config.patience, config.resume) == ("val_loss", "min", None, True)
    assert isinstance(TrainConfigError("x"), ValueError)


def test_nan_loss_raises_with_epoch_and_step(tmp_path: Path) -> None:
    x, y = _regression_data(n=32)
    calls = {"n": 0}

    def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        calls["n"] += 1
        loss = _mse(model, batch)
        return loss * float("nan") if calls["n"] == 4 + 3 else loss  # 4 steps per epoch: epoch 1, step 2

    config = TrainConfig(epochs=3, batch_size=8, out_dir=tmp_path, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 1, step 2"):
        train(nn.Linear(3, 1), TensorDataset(x, y), loss_fn, config=config)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_non_finite_gradient_raises() -> None:
    x, y = _regression_data(n=8)

    def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        # sqrt at 0: the loss is finite (0) but its gradient is infinite.
        return torch.sqrt((model.weight * 0).sum())

    config = TrainConfig(epochs=1, batch_size=8, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient norm .* at epoch 0, step 0"):
        train(nn.Linear(3, 1), TensorDataset(x, y), loss_fn, config=config)


def test_non_scalar_loss_raises() -> None:
    x, y = _regression_data(n=8)
    config = TrainConfig(epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="scalar"):
        train(nn.Linear(3, 1), TensorDataset(x, y), lambda m, b: m(b[0]), config=config)


def test_missing_monitored_metric_raises() -> None:
    x, y = _regression_data(n=8)
    config = TrainConfig(epochs=2, batch_size=4, progress=False, monitor="val_acc", mode="max")
    with pytest.raises(ValueError, match="'val_acc' is not among the metrics of epoch 0"):
        train(nn.Linear(3, 1), TensorDataset(x, y), _mse, config=config, validate=lambda m: {"val_loss": 1.0})


def test_monitor_without_validate_raises() -> None:
    data = TensorDataset(*_regression_data(n=8))
    with pytest.raises(TrainConfigError, match="needs a validate function"):
        train(nn.Linear(3, 1), data, _mse, config=TrainConfig(epochs=1, batch_size=4, monitor="acc"))
    with pytest.raises(TrainConfigError, match="mode='min'"):
        train(nn.Linear(3, 1), data, _mse, config=TrainConfig(epochs=1, batch_size=4, mode="max"))


def test_reserved_metric_name_raises() -> None:
    x, y = _regression_data(n=8)
    config = TrainConfig(epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="reserves"):
        train(nn.Linear(3, 1), TensorDataset(x, y), _mse, config=config, validate=lambda m: {"lr": 1.0})


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_device("cpu") == torch.device("cpu")
    # Pretend there is no GPU, so that the test means the same on a machine with one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            resolve_device(spec)
    assert issubclass(DeviceUnavailableError, ValueError)
    for spec in ("gpu", "CUDA", "cuda:", "cuda:-1", "mps", ""):
        with pytest.raises(ValueError, match=r"allowed values are auto, cpu, cuda, cuda:N"):
            resolve_device(spec)


def test_cuda_without_cuda_fails_in_train(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x, y = _regression_data(n=8)
    config = TrainConfig(epochs=1, batch_size=4, device="cuda", progress=False)
    with pytest.raises(DeviceUnavailableError):
        train(nn.Linear(3, 1), TensorDataset(x, y), _mse, config=config)


def test_resume_with_changed_hyperparameters_warns(tmp_path: Path) -> None:
    data, model = _resume_setup()
    train(model, data, _mse, config=_config(tmp_path, epochs=1), validate=_validate)
    with pytest.warns(UserWarning, match="different lr"):
        result = train(model, data, _mse, config=_config(tmp_path, epochs=2, lr=0.02), validate=_validate)
    assert result.epochs_run == 2


def test_progress_bar_shows_losses(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = _regression_data(n=16)
    config = TrainConfig(epochs=2, batch_size=8, progress=True)
    train(nn.Linear(3, 1), TensorDataset(x, y), _mse, config=config, validate=lambda m: {"val_loss": 0.5})
    err = capsys.readouterr().err
    assert "2/2" in err and "train_loss=" in err and "val_loss=0.5" in err


def test_a_dataset_with_set_epoch_is_told_each_epochs_seed() -> None:
    class Regrouped(Dataset[Tensor]):
        def __init__(self) -> None:
            self.seeds: list[int] = []

        def set_epoch(self, seed: int) -> None:
            self.seeds.append(seed)

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> Tensor:
            return torch.full((1,), float(i))

    data = Regrouped()
    model = nn.Linear(1, 1)
    train(model, data, lambda m, x: m(x).square().mean(), config=TrainConfig(epochs=3, batch_size=2, seed=7))
    assert data.seeds == [7, 8, 9]
