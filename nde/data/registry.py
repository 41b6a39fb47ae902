"""Locate the data sets shipped with ``nde``.

A shipped data set is a folder ``datasets/<name>/`` at the root of the source tree. It is found

1. in the source tree, ``<repo>/datasets/<name>``, located relative to the ``nde`` package's
   ``__file__`` (editable installs and running from a checkout), or
2. inside the installed package, ``importlib.resources.files("nde") / "_datasets" / name``, where
   the wheel build copies ``datasets/`` (hatchling ``force-include`` in ``pyproject.toml``).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import nde

__all__ = ["UnknownDatasetError", "available_datasets", "dataset_path"]


class UnknownDatasetError(ValueError):
    """Raised by :func:`dataset_path` for a name that is not a shipped data set."""


def _source_root() -> Path | None:
    """``<repo>/datasets`` when ``nde`` is imported from a source checkout, else ``None``.

    The checkout is recognised by a ``pyproject.toml`` beside the ``nde`` package, so that an
    unrelated ``site-packages/datasets`` (e.g. the Hugging Face package) is never picked up.
    """
    repo = Path(nde.__file__).resolve().parent.parent
    root = repo / "datasets"
    if (repo / "pyproject.toml").is_file() and root.is_dir() and not (root / "__init__.py").exists():
        return root
    return None


def _package_root() -> Path | None:
    """``<site-packages>/nde/_datasets`` in an installed wheel, else ``None``."""
    try:
        root = importlib.resources.files("nde") / "_datasets"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - nde is always importable here
        return None
    # Only real directories are usable (not a zip import); the data are read with ordinary file APIs.
    if isinstance(root, Path) and root.is_dir():
        return root
    return None


def _roots() -> list[Path]:
    """Folders that hold shipped data sets, source tree first."""
    return [root for root in (_source_root(), _package_root()) if root is not None]


def _is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith((".", "_"))


def available_datasets() -> list[str]:
    """Names of the shipped data sets, sorted."""
    names: set[str] = set()
    for root in _roots():
        names.update(p.name for p in root.iterdir() if _is_dataset_dir(p))
    return sorted(names)


def dataset_path(name: str) -> Path:
    """Return the folder of the shipped data set ``name`` (e.g. ``"spirals"``).

    Raises:
        UnknownDatasetError: (a ``ValueError``) if no shipped data set has that name; the message
            lists the available names.
    """
    valid = bool(name) and name == Path(name).name and not name.startswith((".", "_"))
    if valid:
        for root in _roots():
            candidate = root / name
            if _is_dataset_dir(candidate):
                return candidate
    available = ", ".join(repr(n) for n in available_datasets()) or "none found"
    raise UnknownDatasetError(f"unknown data set {name!r}; available data sets: {available}")
