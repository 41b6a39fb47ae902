"""One rule for turning a ``seed`` argument into a NumPy generator, shared by the simulators and baselines."""

from __future__ import annotations

import numpy as np


def as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    """``seed`` itself when it is a ``numpy.random.Generator``, else ``default_rng(seed)`` for an int.

    Raises:
        ValueError: anything else (a bool, a float, None), so that a mistyped seed never passes silently.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise ValueError(f"seed must be an int or a numpy Generator, got {seed!r}")
