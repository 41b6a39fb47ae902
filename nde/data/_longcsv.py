"""Read and validate a shipped long-format CSV (one row per observation) into a ``DataFrame``.

Private helper of the loaders in :mod:`nde.data`; errors are :class:`~nde.data.spirals.DataFormatError`
with the file, the series and the CSV line in the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nde.data.spirals import DataFormatError

__all__ = ["read_long_csv"]


def read_long_csv(
    path: Path,
    *,
    what: str,
    columns: Sequence[str],
    id_col: str = "series_id",
    time_col: str = "time",
    label_col: str | None = None,
) -> pd.DataFrame:
    """Read ``path`` and return its ``columns`` (in that order) as a validated ``DataFrame``.

    ``id_col`` becomes ``str``, ``label_col`` (if given) ``int64`` and every other column ``float64``.
    Rows keep file order and the index is ``0 .. n_rows - 1``; columns not in ``columns`` are ignored.

    Raises:
        FileNotFoundError: no such file (``what`` names the data set in the message).
        DataFormatError: empty file, a missing column, a missing series id, a missing / non-numeric /
            infinite value, times not strictly increasing within a series, a label that is not an
            integer or differs within a series. The message names the file, series and line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} data file not found: {path}")
    try:
        df = pd.read_csv(path, dtype={id_col: str})
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: file is empty") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; expected columns {list(columns)}, found {list(df.columns)}"
        )
    if len(df) == 0:
        raise DataFormatError(f"{path}: file has a header but no data rows")

    bad = df[id_col].isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}: line {row + 2}: missing {id_col}")
    ids = df[id_col].astype(str).to_numpy(dtype=object)

    out: dict[str, np.ndarray] = {id_col: ids}
    for col in columns:
        if col == id_col:
            continue
        arr = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}: series {ids[row]!r}, line {row + 2}: {col} is missing, infinite or not a number "
                f"({df[col].iloc[row]!r})"
            )
        out[col] = arr

    codes, uniques = pd.factorize(pd.Series(ids), sort=False)
    order = np.argsort(codes, kind="stable")
    codes_s = codes[order]
    t_s = out[time_col][order]
    dt = np.diff(t_s)
    bad = (codes_s[1:] == codes_s[:-1]) & (dt <= 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        problem = "duplicate time" if dt[k] == 0 else "times not sorted (must be strictly increasing)"
        raise DataFormatError(
            f"{path}: series {uniques[codes_s[k]]!r}, line {int(order[k + 1]) + 2}: {problem}: "
            f"t={float(t_s[k + 1])!r} follows t={float(t_s[k])!r}"
        )

    if label_col is not None:
        lab = out[label_col]
        bad = lab != np.round(lab)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}: series {ids[row]!r}, line {row + 2}: {label_col} must be an integer, "
                f"got {df[label_col].iloc[row]!r}"
            )
        _, first_row = np.unique(codes, return_index=True)
        diff = np.flatnonzero(lab != lab[first_row][codes])
        if diff.size:
            row = int(diff[0])
            raise DataFormatError(
                f"{path}: series {ids[row]!r}, line {row + 2}: {label_col} differs within the series "
                f"({int(lab[first_row[codes[row]]])} and {int(lab[row])})"
            )
        out[label_col] = lab.astype(np.int64)

    frame = pd.DataFrame({c: out[c] for c in columns})
    frame[id_col] = frame[id_col].astype(str)
    return frame
