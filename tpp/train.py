"""Fitting any :class:`~tpp.models.base.TPPModel` by maximum likelihood with the loop of :mod:`nde.train`.

Every model of the zoo trains the same way: AdamW on minus the log-likelihood per scored event, early
stopping on the dev split's log-likelihood per event, checkpoints that make an interrupted fit resumable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from nde.train import TrainConfig, TrainResult, train
from tpp.data.batch import EventBatch, batches, make_batch
from tpp.data.sequences import EventSequences
from tpp.models.base import Convention, LogLikelihood, TPPModel

__all__ = ["evaluate_log_likelihood", "fit_model"]


class _SequenceIndices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _Objective(nn.Module):
    """The loss as a module's forward, so that under DDP it runs through the wrapper."""

    def __init__(self, model: TPPModel, convention: Convention) -> None:
        super().__init__()
        self.model = model
        self.convention = convention

    def forward(self, batch: EventBatch) -> Tensor:
        device = next(self.model.parameters()).device
        return self.model.loss(batch.to(device), self.convention)


def _call(objective: nn.Module, batch: EventBatch) -> Tensor:
    return objective(batch)


@torch.no_grad()
def evaluate_log_likelihood(model: TPPModel, seqs: EventSequences, convention: Convention = "easytpp", *,
                            batch_size: int = 64, dtype: torch.dtype = torch.float32) -> LogLikelihood:
    """The model's log-likelihood of every sequence of ``seqs`` (parts per sequence, ``[N]``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = [model.log_likelihood(b, convention)
             for b in batches(seqs, batch_size, dtype=dtype, device=device)]
    model.train(was_training)
    return LogLikelihood(torch.cat([p.event_term for p in parts]), torch.cat([p.compensator for p in parts]),
                         torch.cat([p.num_scored for p in parts]))


def fit_model(model: TPPModel, train_seqs: EventSequences, dev_seqs: EventSequences | None = None, *,
              convention: Convention = "easytpp", epochs: int = 20, batch_size: int = 32, lr: float = 1e-2,
              weight_decay: float = 0.0, patience: int | None = None, seed: int = 0, device: str = "auto",
              out_dir: str | Path | None = None, resume: bool = True, progress: bool = False,
              dtype: torch.dtype = torch.float32) -> TrainResult:
    """Maximise the log-likelihood per scored event of ``train_seqs``; keep the best epoch on ``dev_seqs``.

    The dev metric is ``val_ll_per_event`` (higher is better). ``convention="full"`` needs windows on both
    splits. Returns the :class:`nde.train.TrainResult`; the model holds the best weights.
    """
    if not isinstance(model, TPPModel):
        raise TypeError(f"model must be a TPPModel, got {type(model).__name__}")
    for name, seqs in (("train", train_seqs), ("dev", dev_seqs)):
        if seqs is not None and seqs.num_marks != model.num_marks:
            raise ValueError(f"the {name} split has {seqs.num_marks} marks, the model {model.num_marks}")

    model.prepare(train_seqs)

    def collate(indices: list[int]) -> EventBatch:
        return make_batch(train_seqs, np.asarray(indices), dtype=dtype)

    validate = None
    if dev_seqs is not None:
        def validate(objective: nn.Module) -> dict[str, float]:
            ll = evaluate_log_likelihood(objective.model, dev_seqs, convention, batch_size=batch_size, dtype=dtype)
            return {"val_ll_per_event": float(ll.per_event())}

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, device=device,
                         seed=seed, patience=patience, monitor="val_ll_per_event" if dev_seqs is not None else
                         "train_loss", mode="max" if dev_seqs is not None else "min", out_dir=out_dir,
                         resume=resume, progress=progress)
    result = train(_Objective(model, convention), _SequenceIndices(len(train_seqs)), _call, config=config,
                   validate=validate, collate_fn=collate)
    model.eval()
    return result
