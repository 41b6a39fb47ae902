"""Fitting any :class:`~tpp.models.base.TPPModel` by maximum likelihood with the loop of :mod:`nde.train`.

Every model of the zoo trains the same way: AdamW on minus the log-likelihood per scored event, early
stopping on the dev split's log-likelihood per event, checkpoints that make an interrupted fit resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from nde.train import TrainConfig, TrainResult, train
from tpp.data.batch import EventBatch, batches, make_batch
from tpp.data.sequences import EventSequences
from tpp.models.base import Convention, LogLikelihood, TPPModel

__all__ = ["LengthBucketedBatches", "evaluate_log_likelihood", "fit_model"]


class _SequenceIndices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class LengthBucketedBatches(Dataset[list[int]]):
    """Batches of sequences of similar lengths, regrouped every epoch ("sortish" batching).

    Each item is the list of sequence indices of one batch. At every epoch (:meth:`set_epoch`) the sequences are
    shuffled with the epoch's seed, cut into pools of ``pool`` batches, each pool sorted by length and cut into
    batches of ``batch_size``; the loader then shuffles the order of the batches. Every sequence is in exactly one
    batch per epoch, as with plain shuffling, but a batch pads to a length close to its sequences' own, so the
    recurrent models (whose cost grows with the longest sequence of the batch) do less work on padding.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, pool: int = 50) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.pool = int(batch_size), int(pool)
        self.set_epoch(0)

    def set_epoch(self, seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(self.lengths))
        size = self.pool * self.batch_size
        self.batches: list[list[int]] = []
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            self.batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[int]:
        return self.batches[i]


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
              dtype: torch.dtype = torch.float32, bucket_by_length: bool = False) -> TrainResult:
    """Maximise the log-likelihood per scored event of ``train_seqs``; keep the best epoch on ``dev_seqs``.

    The dev metric is ``val_ll_per_event`` (higher is better). ``convention="full"`` needs windows on both
    splits. ``bucket_by_length``: batches of sequences of similar lengths, regrouped every epoch
    (:class:`LengthBucketedBatches`), instead of uniformly shuffled ones: less padding, so faster recurrent
    models, at the same batch size and number of steps. Returns the :class:`nde.train.TrainResult`; the model
    holds the best weights.
    """
    if not isinstance(model, TPPModel):
        raise TypeError(f"model must be a TPPModel, got {type(model).__name__}")
    for name, seqs in (("train", train_seqs), ("dev", dev_seqs)):
        if seqs is not None and seqs.num_marks != model.num_marks:
            raise ValueError(f"the {name} split has {seqs.num_marks} marks, the model {model.num_marks}")

    model.prepare(train_seqs)

    def collate(indices: list[int]) -> EventBatch:
        return make_batch(train_seqs, np.asarray(indices), dtype=dtype)

    def collate_bucket(items: list[list[int]]) -> EventBatch:
        return make_batch(train_seqs, np.asarray(items[0]), dtype=dtype)

    validate = None
    if dev_seqs is not None:
        def validate(objective: nn.Module) -> dict[str, float]:
            ll = evaluate_log_likelihood(objective.model, dev_seqs, convention, batch_size=batch_size, dtype=dtype)
            return {"val_ll_per_event": float(ll.per_event())}

    data: Dataset[Any] = _SequenceIndices(len(train_seqs))
    if bucket_by_length:
        # The dataset's items are whole batches: the loader takes one item per step.
        data, collate, loader_batch = LengthBucketedBatches(train_seqs.lengths, batch_size), collate_bucket, 1
    else:
        loader_batch = batch_size
    config = TrainConfig(epochs=epochs, batch_size=loader_batch, lr=lr, weight_decay=weight_decay, device=device,
                         seed=seed, patience=patience, monitor="val_ll_per_event" if dev_seqs is not None else
                         "train_loss", mode="max" if dev_seqs is not None else "min", out_dir=out_dir,
                         resume=resume, progress=progress)
    result = train(_Objective(model, convention), data, _call, config=config,
                   validate=validate, collate_fn=collate)
    model.eval()
    return result
