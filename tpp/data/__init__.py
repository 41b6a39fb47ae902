"""EasyTPP-compatible event data: the shared container, readers and writers, batching, simulators."""

from tpp.data.sequences import EventSequences, TPPDataError

__all__ = ["EventSequences", "TPPDataError"]
