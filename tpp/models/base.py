"""The one base class of the TPP model zoo, and the pieces its models share.

A model of marked event sequences with ``K`` marks defines, given the history ``H_t`` of events strictly
before ``t``, the conditional intensity ``λ_k(t | H_t)`` of every mark (or, for intensity-free models, the
conditional density of the next event's time and mark, from which the intensity follows). Its
log-likelihood over ``[a, b]`` is

    ``log L = Σ_{a < t_i <= b} log λ_{m_i}(t_i | H_{t_i}) - ∫_a^b Σ_k λ_k(t | H_t) dt``

(event term minus compensator). Two conventions fix what is scored (:class:`Convention`):

``"easytpp"``
    events ``2..N`` of each sequence given their history, compensator from the first to the last event
    (EasyTPP's; needs no window);
``"full"``
    every event, the first given an empty history, compensator over the observation window
    ``[window_start, window_end]`` (needs ``batch.window_start`` / ``window_end``).

Per-event values divide the sum over sequences by the number of scored events (``Σ N_i - 1`` in EasyTPP's
convention, ``Σ N_i`` in the full one).

Subclasses implement :meth:`TPPModel.log_likelihood`, :meth:`TPPModel.intensity` and
:meth:`TPPModel.sample_next`, declare ``name`` (the name ``nde tpp bench --models`` uses) and whether their
compensator is exact (``exact_compensator``) or a quadrature (:func:`gauss_legendre_compensator`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from tpp.data.batch import EventBatch
from tpp.data.sequences import EventSequences

__all__ = [
    "CONVENTIONS",
    "Convention",
    "LogLikelihood",
    "TPPModel",
    "check_convention",
    "gauss_legendre_compensator",
    "scored_events",
    "start_times",
]

Convention = Literal["easytpp", "full"]
CONVENTIONS: tuple[Convention, ...] = ("easytpp", "full")


def check_convention(convention: str, batch: EventBatch) -> Convention:
    """``convention`` if valid for ``batch``; a ``ValueError`` says what is missing otherwise."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    if convention == "full" and not batch.has_windows:
        raise ValueError("the full log-likelihood needs each sequence's observation window "
                         "(EventSequences.windows, e.g. from truth.json or --window); EasyTPP's convention does not")
    return convention  # type: ignore[return-value]


def scored_events(batch: EventBatch, convention: Convention) -> Tensor:
    """``[B, L]`` bool: the events whose log-intensity enters the log-likelihood (all, or all but the first)."""
    if convention == "full":
        return batch.mask
    first = torch.zeros_like(batch.mask)
    first[:, 0] = True
    return batch.mask & ~first


def start_times(batch: EventBatch) -> Tensor:
    """``[B]`` the time a model's initial state refers to: the window start, or the first event when unknown."""
    return torch.where(torch.isfinite(batch.window_start), batch.window_start, batch.times[:, 0])


@dataclass
class LogLikelihood:
    """Per-sequence parts of a log-likelihood (all ``[B]``): ``event_term - compensator = total``.

    ``num_scored`` counts the events in ``event_term``. :meth:`per_event` is the data-set statistic
    ``Σ total / Σ num_scored``.
    """

    event_term: Tensor
    compensator: Tensor
    num_scored: Tensor

    @property
    def total(self) -> Tensor:
        return self.event_term - self.compensator

    def per_event(self) -> Tensor:
        """``Σ_b total_b / Σ_b num_scored_b`` (a 0-d tensor)."""
        return self.total.sum() / self.num_scored.sum().clamp_min(1)


class TPPModel(nn.Module, ABC):
    """Base of every TPP model: log-likelihood, intensity for all marks, draws of the next event.

    Attributes:
        name: the registry name (``"hawkes"``, ``"rmtpp"``, ...).
        exact_compensator: True when the compensator is in closed form; False when it is a quadrature
            (documented by the model, its error tested against the Hawkes closed form).
        num_marks: ``K``.
    """

    name: ClassVar[str]
    exact_compensator: ClassVar[bool] = False

    def __init__(self, num_marks: int) -> None:
        super().__init__()
        if not isinstance(num_marks, int) or num_marks < 1:
            raise ValueError(f"num_marks must be a positive int, got {num_marks!r}")
        self.num_marks = num_marks

    def _check_batch(self, batch: EventBatch) -> None:
        if batch.num_marks != self.num_marks:
            raise ValueError(f"the batch has {batch.num_marks} marks, the model {self.num_marks}")

    @abstractmethod
    def log_likelihood(self, batch: EventBatch, convention: Convention = "easytpp") -> LogLikelihood:
        """Event term, compensator and number of scored events per sequence, in the batch's time unit."""

    @abstractmethod
    def intensity(self, batch: EventBatch, query_times: Tensor) -> Tensor:
        """``λ_k(t | H_t)`` for every mark at ``query_times [B, Q]`` -> ``[B, Q, K]``.

        The history of a query time is the batch's events strictly before it (queries before the first
        event see an empty history, from the window start when known).
        """

    @abstractmethod
    def sample_next(self, batch: EventBatch, n_samples: int) -> tuple[Tensor, Tensor]:
        """Exact draws of the event that follows each event: ``(gaps [S, B, L], marks [S, B, L])``.

        Entry ``[s, b, j]`` is a draw of the time from event ``j`` of sequence ``b`` to the next event and of
        that event's mark, given the history up to and including event ``j``. Padded positions hold
        arbitrary values. "Exact" means direct sampling from the model's law, or thinning with a proven
        upper bound on the intensity. When the model gives the next event a probability below 1 (an
        intensity that decays to 0), a draw may be "no next event": gap ``inf`` and mark ``-1``.
        """

    def prepare(self, train_seqs: EventSequences) -> None:
        """Set statistics of the training data the model uses (e.g. gap standardisation); called by
        :func:`tpp.train.fit_model` before training. The default does nothing."""

    def loss(self, batch: EventBatch, convention: Convention = "easytpp") -> Tensor:
        """Training objective: minus the log-likelihood per scored event of the batch."""
        return -self.log_likelihood(batch, check_convention(convention, batch)).per_event()


def gauss_legendre_compensator(intensity_at: Callable[[Tensor], Tensor], starts: Tensor, ends: Tensor,
                               n_nodes: int = 8) -> Tensor:
    """``∫_{starts}^{ends} Σ_k λ_k(t) dt`` for each interval by Gauss–Legendre quadrature with ``n_nodes``.

    Args:
        intensity_at: ``(times [..., n_nodes]) -> [..., n_nodes, K]`` the intensity at those times, each
            given the history of its interval (the caller's recurrent state at the interval's start).
        starts, ends: ``[...]`` interval ends (``ends >= starts``).
        n_nodes: nodes per interval; the rule is exact for polynomials of degree ``2 n_nodes - 1``, and its
            error on an exponentially decaying intensity is tested against the Hawkes closed form.

    Returns:
        ``[...]`` the integrals.
    """
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    x = torch.as_tensor(nodes, dtype=starts.dtype, device=starts.device)
    w = torch.as_tensor(weights, dtype=starts.dtype, device=starts.device)
    half = (ends - starts).unsqueeze(-1) / 2
    times = starts.unsqueeze(-1) + half * (x + 1)
    values = intensity_at(times).sum(-1)  # [..., n_nodes]
    return (values * w * half).sum(-1)
