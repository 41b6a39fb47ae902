"""Worker launched by ``test_distributed.py`` under torchrun: trains a small MLP with DDP on CPU (gloo).

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_worker.py OUTDIR``.

Each rank writes ``OUTDIR/rank{RANK}.pt`` (a plain checkpoint) with its final parameters, the dataset
indices it was given in epoch 0, its loss before and after training and the run's history, so that the
test can check that the ranks agree, saw disjoint shards covering the data, and learned something.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from nde.train import TrainConfig, save_checkpoint, train

N_SAMPLES = 256
N_FEATURES = 4
EPOCHS = 30


class IndexedDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """``(index, x [F], y [])`` items, so that the loss function can record which samples a rank saw."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return torch.tensor(index), self.x[index], self.y[index]


def main(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    # Same data on every rank (fixed generator); the target is a random teacher network, which a small
    # MLP can fit well.
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(N_SAMPLES, N_FEATURES, generator=gen)
    teacher = torch.randn(N_FEATURES, 8, generator=gen)
    y = torch.tanh(x @ teacher) @ torch.randn(8, generator=gen)
    data = IndexedDataset(x, y)

    # A different initialisation per rank: DistributedDataParallel must broadcast rank 0's weights.
    torch.manual_seed(100 + rank)
    model = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.Tanh(), nn.Linear(32, 1))

    seen: list[Tensor] = []
    per_epoch: list[Tensor] = []
    wrapped: list[bool] = []

    def full_loss(m: nn.Module) -> float:
        with torch.no_grad():
            return nn.functional.mse_loss(m(x).squeeze(-1), y).item()

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        index, xb, yb = batch
        seen.append(index.clone())
        wrapped.append(isinstance(m, nn.parallel.DistributedDataParallel))
        return nn.functional.mse_loss(m(xb).squeeze(-1), yb)

    def validate(m: nn.Module) -> dict[str, float]:
        # Called once per epoch on every rank: close the record of the indices of this epoch.
        per_epoch.append(torch.cat(seen))
        seen.clear()
        return {"val_loss": full_loss(m)}

    initial_loss = full_loss(model)
    config = TrainConfig(
        epochs=EPOCHS,
        batch_size=16,
        lr=1e-2,
        weight_decay=0.0,
        device="cpu",
        seed=7,
        progress=False,
        out_dir=out_dir / "run",
    )
    result = train(model, data, loss_fn, config=config, validate=validate)
    save_checkpoint(
        out_dir / f"rank{rank}.pt",
        {
            "params": model.state_dict(),
            "epoch0_indices": per_epoch[0],
            "initial_loss": initial_loss,
            "final_loss": full_loss(model),
            "train_loss": [record["train_loss"] for record in result.history],
            "val_loss": [record["val_loss"] for record in result.history],
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "all_wrapped": all(wrapped),
            "group_destroyed": not dist.is_initialized(),
        },
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
