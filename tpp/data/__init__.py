"""EasyTPP-compatible event data: the shared container, readers and writers, batching, simulators."""

from tpp.data.batch import EventBatch, TimeScaler, batches, make_batch
from tpp.data.formats import (
    SPLITS,
    GapMismatchWarning,
    UnsafePickleError,
    from_frame,
    read_csv,
    read_easytpp_dir,
    read_easytpp_json,
    read_easytpp_pickle,
    safe_pickle_load,
    to_frame,
    write_csv,
    write_easytpp_dir,
    write_easytpp_json,
    write_easytpp_pickle,
)
from tpp.data.sequences import EventSequences, TPPDataError
from tpp.data.simulators import HawkesProcess, PoissonProcess, SelfCorrectingProcess

__all__ = [
    "SPLITS",
    "EventBatch",
    "EventSequences",
    "GapMismatchWarning",
    "HawkesProcess",
    "PoissonProcess",
    "SelfCorrectingProcess",
    "TPPDataError",
    "TimeScaler",
    "UnsafePickleError",
    "batches",
    "from_frame",
    "make_batch",
    "read_csv",
    "read_easytpp_dir",
    "read_easytpp_json",
    "read_easytpp_pickle",
    "safe_pickle_load",
    "to_frame",
    "write_csv",
    "write_easytpp_dir",
    "write_easytpp_json",
    "write_easytpp_pickle",
]
