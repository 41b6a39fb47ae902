"""Loader for the shipped irregular 2-D spirals classification data set.

The CSV (see ``datasets/spirals/README.md``) is in long format, one row per observation, with
columns ``series_id,time,x,y,label``; label 0 is a clockwise spiral, 1 an anticlockwise one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from nde.data.registry import dataset_path

__all__ = ["SPIRALS_COLUMNS", "DataFormatError", "SpiralsData", "load_spirals", "split_indices"]

SPIRALS_COLUMNS: tuple[str, ...] = ("series_id", "time", "x", "y", "label")
_NUMERIC_COLUMNS: tuple[str, ...] = ("time", "x", "y", "label")


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file (and series)."""


@dataclass
class SpiralsData:
    """Padded tensors for ``N`` irregularly observed series of up to ``L`` points each.

    Attributes:
        times: ``[N, L]`` float32 observation times, increasing along each row.
        values: ``[N, L, 2]`` float32 observed ``(x, y)``.
        mask: ``[N, L]`` bool, True where a point was observed (the first ``lengths[i]`` entries).
        lengths: ``[N]`` long, number of observed points per series.
        labels: ``[N]`` long, 0 = clockwise, 1 = anticlockwise.
        series_ids: ``N`` series identifiers, in file order.

    Padding positions (``mask`` False) repeat the last observed time and values (fill-forward), so
    that a path interpolated through all ``L`` points is constant after the end of the series.
    """

    times: Tensor
    values: Tensor
    mask: Tensor
    lengths: Tensor
    labels: Tensor
    series_ids: list[str]

    def __len__(self) -> int:
        return len(self.series_ids)

    def subset(self, indices: Tensor | Sequence[int]) -> SpiralsData:
        """The series at ``indices`` (e.g. one output of :func:`split_indices`), same padding ``L``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return SpiralsData(
            times=self.times[idx],
            values=self.values[idx],
            mask=self.mask[idx],
            lengths=self.lengths[idx],
            labels=self.labels[idx],
            series_ids=[self.series_ids[i] for i in idx.tolist()],
        )


def _default_path() -> Path:
    return dataset_path("spirals") / "spirals.csv"


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"spirals data file not found: {path}")
    try:
        df = pd.read_csv(path, dtype={"series_id": str})
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: file is empty") from None
    missing = [c for c in SPIRALS_COLUMNS if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; expected columns {list(SPIRALS_COLUMNS)}, "
            f"found {list(df.columns)}"
        )
    if len(df) == 0:
        raise DataFormatError(f"{path}: file has a header but no data rows")
    return df


def _sid_at(ids: np.ndarray, row: int) -> str:
    sid = ids[row]
    return repr(sid) if isinstance(sid, str) else "<missing>"


def load_spirals(path: str | Path | None = None) -> SpiralsData:
    """Load the spirals data set into padded tensors.

    Args:
        path: the CSV file, or a folder holding ``spirals.csv``; default: the shipped file found
            with ``dataset_path("spirals")``.

    Returns:
        :class:`SpiralsData` with ``N`` series (in order of first appearance in the file) padded to
        ``L = max(lengths)``: ``times [N, L]``, ``values [N, L, 2]``, ``mask [N, L]``, ``lengths [N]``,
        ``labels [N]``.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: (a ``ValueError``) empty file, missing columns, a missing/NaN/non-numeric
            value in an observed row, a label other than 0/1 or differing within a series, or times
            that are unsorted or duplicated within a series. The message names the file and series.
    """
    path = _default_path() if path is None else Path(path)
    if path.is_dir():
        path = path / "spirals.csv"
    df = _read_csv(path)
    ids = df["series_id"].to_numpy(dtype=object)

    # Missing ids and missing / non-numeric / infinite values, reported at the first bad row.
    bad_id = pd.isna(df["series_id"]).to_numpy()
    if bad_id.any():
        row = int(np.flatnonzero(bad_id)[0])
        raise DataFormatError(f"{path}: line {row + 2}: missing series_id")
    numeric: dict[str, np.ndarray] = {}
    for col in _NUMERIC_COLUMNS:
        arr = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}: series {_sid_at(ids, row)}, line {row + 2}: {col} is NaN, missing, infinite or "
                f"not a number ({df[col].iloc[row]!r})"
            )
        numeric[col] = arr
    label = numeric["label"]
    bad = (label != 0) & (label != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{path}: series {_sid_at(ids, row)}, line {row + 2}: label must be 0 (clockwise) or 1 "
            f"(anticlockwise), got {df['label'].iloc[row]!r}"
        )

    # Group rows by series (order of first appearance), keeping file order within each series.
    codes, uniques = pd.factorize(df["series_id"], sort=False)
    order = np.argsort(codes, kind="stable")
    codes_s = codes[order]
    time_s = numeric["time"][order]
    lengths = np.bincount(codes_s, minlength=len(uniques))
    starts = np.cumsum(lengths) - lengths
    series_ids = [str(u) for u in uniques]

    same = codes_s[1:] == codes_s[:-1]
    dt = np.diff(time_s)
    bad = same & (dt <= 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        row = int(order[k + 1])
        problem = "duplicate time" if dt[k] == 0 else "times not sorted (must be strictly increasing)"
        raise DataFormatError(
            f"{path}: series {series_ids[codes_s[k]]!r}, line {row + 2}: {problem}: "
            f"t={float(time_s[k + 1])!r} follows t={float(time_s[k])!r}"
        )

    label_s = label[order]
    lab_min = np.minimum.reduceat(label_s, starts)
    lab_max = np.maximum.reduceat(label_s, starts)
    bad_series = np.flatnonzero(lab_min != lab_max)
    if bad_series.size:
        i = int(bad_series[0])
        raise DataFormatError(
            f"{path}: series {series_ids[i]!r}: label differs within the series "
            f"(found {int(lab_min[i])} and {int(lab_max[i])})"
        )

    # Padded gather index: position j of series i reads row starts[i] + min(j, lengths[i] - 1), so the
    # padding repeats the last observation (fill-forward).
    n_max = int(lengths.max())
    pos = np.arange(n_max)
    gather = starts[:, None] + np.minimum(pos[None, :], lengths[:, None] - 1)  # [N, L]
    xy_s = np.stack([numeric["x"][order], numeric["y"][order]], axis=-1)  # [rows, 2]
    return SpiralsData(
        times=torch.from_numpy(time_s[gather].astype(np.float32)),
        values=torch.from_numpy(xy_s[gather].astype(np.float32)),
        mask=torch.from_numpy(pos[None, :] < lengths[:, None]),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
        labels=torch.from_numpy(lab_min.astype(np.int64)),
        series_ids=series_ids,
    )


def split_indices(
    n: int, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Split ``range(n)`` into train / validation / test indices by a seeded random permutation.

    Sizes are ``round(fractions[0] * n)``, ``round(fractions[1] * n)`` and the rest. Each returned
    tensor is ``[n_part]`` long, sorted; together they are a partition of ``0 .. n - 1``. The same
    ``(n, fractions, seed)`` always gives the same split (a private ``torch.Generator`` is used, so
    the global RNG state is neither used nor changed).
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    n_train = round(fractions[0] * n)
    n_val = min(round(fractions[1] * n), n - n_train)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    train, val, test = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return train.sort().values, val.sort().values, test.sort().values
