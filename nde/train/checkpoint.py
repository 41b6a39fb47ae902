"""Atomic checkpoint files that can be loaded without running pickled code.

A checkpoint is a ``dict`` whose leaves are tensors, numbers (``int``, ``float``, ``bool``), strings or
``None``, nested in lists, tuples and dicts. :func:`save_checkpoint` refuses anything else before
writing, and :func:`load_checkpoint` loads with ``torch.load(..., weights_only=True)``, so a file that
holds an arbitrary pickled object (which could run code when unpickled) is rejected.

Writes go to a temporary file in the destination directory, are flushed and fsync-ed, then renamed over
the destination with :func:`os.replace`. The rename is atomic on POSIX and Windows when both paths are
on one file system (hence the same directory), so a reader, or a run killed mid-write, sees either the
old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CheckpointError", "atomic_write_text", "load_checkpoint", "save_checkpoint"]

_PLAIN_SCALARS = (bool, int, float, str, type(None))


class CheckpointError(RuntimeError):
    """Raised when a checkpoint cannot be written or read: unsafe content, corrupt file, wrong layout."""


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first leaf of ``value`` that is not a tensor/number/string/None."""
    if isinstance(value, torch.Tensor) or isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint key at {where} must be str or int, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint value at {where} has type {type(value).__module__}.{type(value).__qualname__}; "
        "only tensors, numbers, strings, None and lists/tuples/dicts of them can be saved "
        "(so that loading never unpickles arbitrary objects)"
    )


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; best effort, since some platforms cannot open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` on a same-directory temp file, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; give it the mode a plain open() would.
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, path)
    except BaseException:
        # Also on KeyboardInterrupt: the destination is untouched, so only the temp file needs removing.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Atomically write ``state`` to ``path`` with :func:`torch.save`.

    Args:
        path: destination file; its parent directories are created.
        state: a mapping with string keys whose leaves are tensors, numbers, strings or ``None``.

    Raises:
        TypeError: ``state`` contains anything else (checked before any file is created).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"a checkpoint must be a dict, got {type(state).__name__}")
    _check_plain(state, "state")
    _atomic_write(path, lambda file: torch.save(dict(state), file))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``, e.g. a JSON result file; parents are created."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``path`` (a temporary file beside it, fsynced, renamed over it)."""
    _atomic_write(path, lambda file: file.write(data))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: where tensors are placed (as for :func:`torch.load`); CPU by default.

    Returns:
        The saved dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file holds objects other than tensors/numbers/strings/containers
            (``weights_only`` refuses them), is corrupt or truncated, or does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch.save writes a zip archive; garbage that is not one also ends in UnpicklingError, because
        # torch.load then tries the legacy (raw pickle) format, so tell the two cases apart by the format.
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"cannot read checkpoint {str(path)!r}: the file is corrupt or not a torch checkpoint"
            ) from err
        raise CheckpointError(
            f"refusing to load checkpoint {str(path)!r}: it contains objects other than tensors, numbers, "
            "strings and containers, which weights_only=True does not unpickle (the chained error names "
            "the offending type)"
        ) from err
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: the file is corrupt, truncated or not a torch "
            f"checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, expected a dict")
    return state
