"""Comparison of a data set folder rebuilt by its script with the shipped one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _same(a: Any, b: Any, where: str, rtol: float) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), where
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=rtol), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]", rtol)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys differ"
        for key in a:
            _same(a[key], b[key], f"{where}.{key}", rtol)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_json_files(rebuilt: Path, shipped: Path, rtol: float = 1e-12) -> None:
    """The ``*.json`` files of both folders hold the same structure, integers and strings exactly and the same
    floats to ``rtol``.

    Not byte for byte: numpy's vectorised ``exp`` and ``log`` round the last bit differently on CPUs with and
    without AVX-512, so a simulation's times can differ there in the 16th digit (marks and counts do not).
    """
    names = sorted(p.name for p in shipped.glob("*.json"))
    assert names and sorted(p.name for p in rebuilt.glob("*.json")) == names
    for name in names:
        _same(json.loads((rebuilt / name).read_text()), json.loads((shipped / name).read_text()), name, rtol)
