"""A validated container for irregularly sampled, partially observed multivariate time series.

Input is a long-format table (a pandas ``DataFrame`` or a CSV file): one row per observation time of
one series, one column per channel, ``NaN`` where a channel was not observed at that time. The
container keeps, per series, ``times [n_i]``, ``values [n_i, C]`` (NaN where unobserved) and
``mask [n_i, C]``, and produces padded batch-first batches (``times [B, L]``, ``values [B, L, C]``,
``mask [B, L, C]``) and NaN-free control paths for Neural CDEs (:func:`cde_controls`).

Times are floats in the unit of the time column; timestamp columns (datetime dtype, or strings that
pandas parses as dates) become float **days** since the earliest timestamp in the table
(``IrregularDataset.time_origin``), e.g. 12 hours after it is ``0.5``.

Bad input raises :class:`IrregularDataError` (a ``ValueError``) naming the source, the series and
the column. Nothing is silently dropped: rows with no observed channel are rejected unless
``drop_empty_rows=True``, in which case their number is kept in ``dropped_empty_rows``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = [
    "IrregularBatch",
    "IrregularDataError",
    "IrregularDataset",
    "IrregularSeries",
    "Standardizer",
    "cde_controls",
]


class IrregularDataError(ValueError):
    """Irregular time-series input is malformed; the message names the source, series and column."""


@dataclass
class IrregularSeries:
    """One series as stored: ``times [n]``, ``values [n, C]`` (NaN unobserved), ``mask [n, C]`` bool.

    ``times`` and ``values`` are float64; ``label`` is the class index ``0..K-1`` or None.
    """

    series_id: str
    times: Tensor
    values: Tensor
    mask: Tensor
    label: int | None


@dataclass
class IrregularBatch:
    """Padded batch of ``B`` series of up to ``L`` observation times and ``C`` channels.

    Attributes:
        times: ``[B, L]`` observation times; padding repeats the last time of each series.
        values: ``[B, L, C]``; NaN where unobserved; padding repeats the last row so that a path
            through all ``L`` points is constant after the end of the series.
        mask: ``[B, L, C]`` bool, True only where a channel was observed (False at padding).
        lengths: ``[B]`` long, number of observation times per series.
        labels: ``[B]`` long class indices, or None for an unlabelled data set.
        series_ids: the ``B`` series identifiers.
    """

    times: Tensor
    values: Tensor
    mask: Tensor
    lengths: Tensor
    labels: Tensor | None
    series_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series_ids)

    @property
    def time_mask(self) -> Tensor:
        """``[B, L]`` bool, True at the first ``lengths[b]`` positions (real observation times)."""
        pos = torch.arange(self.times.shape[1], device=self.times.device)
        return pos[None, :] < self.lengths[:, None].to(self.times.device)

    def to(self, device: torch.device | str) -> IrregularBatch:
        """The same batch with every tensor moved to ``device``."""
        return IrregularBatch(
            times=self.times.to(device),
            values=self.values.to(device),
            mask=self.mask.to(device),
            lengths=self.lengths.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            series_ids=list(self.series_ids),
        )


def _parse_times(col: pd.Series) -> tuple[np.ndarray, pd.Timestamp | None]:
    """Times as float64 (NaN where missing or unparseable) and the timestamp origin (None if numeric)."""
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=np.float64), None
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan), None
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col):
        stamps = pd.Series(col)
    else:
        as_num = pd.to_numeric(col, errors="coerce")
        present = col.notna().to_numpy()
        if bool(as_num.notna().to_numpy()[present].all()):
            return as_num.to_numpy(dtype=np.float64, na_value=np.nan), None
        try:
            stamps = pd.to_datetime(col, errors="coerce", utc=True, format="mixed")
        except (TypeError, ValueError):
            stamps = pd.to_datetime(col, errors="coerce", utc=True)
    ok = stamps.notna().to_numpy()
    if not ok.any():
        return np.full(len(col), np.nan), None
    origin = stamps[ok].min()
    days = ((stamps - origin) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64, na_value=np.nan)
    return days, origin


def _show(x: Any) -> str:
    """``repr`` of a table cell without numpy's type wrapper (``nan`` rather than ``np.float64(nan)``)."""
    return repr(x.item() if isinstance(x, np.generic) else x)


class IrregularDataset:
    """Irregularly sampled multivariate series with per-channel observation masks and optional labels.

    Build with :meth:`from_frame` or :meth:`from_csv`. Attributes: ``series_ids`` (list of str),
    ``channel_names``, ``n_channels`` (``C``), ``classes`` (original labels, sorted; label ``k`` of a
    series means ``classes[k]``) or None, ``labels`` (``[N]`` long) or None, ``source``,
    ``dropped_empty_rows``, ``time_origin`` (the timestamp at time 0 when the time column held
    timestamps, converted to days; else None).
    """

    def __init__(
        self,
        times: list[np.ndarray],
        values: list[np.ndarray],
        series_ids: Sequence[str],
        channel_names: Sequence[str],
        labels: np.ndarray | None = None,
        classes: Sequence[Any] | None = None,
        *,
        source: str = "<arrays>",
        dropped_empty_rows: int = 0,
        time_origin: pd.Timestamp | None = None,
    ) -> None:
        """Low-level constructor from already validated per-series arrays (``times [n_i]``, ``values [n_i, C]``)."""
        self._times = [np.asarray(t, dtype=np.float64) for t in times]
        self._values = [np.asarray(v, dtype=np.float64) for v in values]
        self.series_ids = [str(s) for s in series_ids]
        self.channel_names = [str(c) for c in channel_names]
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.classes = None if classes is None else list(classes)
        self.source = source
        self.dropped_empty_rows = int(dropped_empty_rows)
        self.time_origin = time_origin
        if not (len(self._times) == len(self._values) == len(self.series_ids)):
            raise IrregularDataError(f"{source}: times, values and series_ids differ in length")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csv(cls, path: str | Path, **kwargs: Any) -> IrregularDataset:
        """Read a long-format CSV file; keyword arguments as for :meth:`from_frame` (``source`` = the path).

        Raises:
            FileNotFoundError: no such file.
            IrregularDataError: empty file or any problem listed in :meth:`from_frame`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"irregular data file not found: {path}")
        id_col = kwargs.get("id_col")
        try:
            df = pd.read_csv(path, dtype={id_col: str} if id_col is not None else None)
        except pd.errors.EmptyDataError:
            raise IrregularDataError(f"{path}: file is empty") from None
        kwargs.setdefault("source", str(path))
        return cls._from_frame(df, row_offset=2, row_word="line", **kwargs)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        id_col: str,
        time_col: str,
        value_cols: Sequence[str] | None = None,
        label_col: str | None = None,
        source: str = "<DataFrame>",
        drop_empty_rows: bool = False,
    ) -> IrregularDataset:
        """Build a data set from a long-format table, one row per (series, observation time).

        Args:
            df: the table.
            id_col: series identifier column (converted to str); series keep order of first appearance.
            time_col: observation times: numbers (kept in their unit) or timestamps (datetime dtype
                or date strings) converted to float days since the earliest timestamp.
            value_cols: channel columns, NaN where unobserved; default: every numeric column other
                than ``id_col``, ``time_col`` and ``label_col``.
            label_col: optional per-series class label (constant within each series); labels are
                mapped to indices ``0..K-1`` in sorted order of the original labels (``classes``).
            source: name used in error messages (file name).
            drop_empty_rows: drop rows where no channel is observed and count them in
                ``dropped_empty_rows``; by default such a row is an error.

        Raises:
            IrregularDataError: missing columns; missing series id; a non-numeric or infinite value
                in a value column; a missing or unparseable time; unsorted or duplicate times within
                a series; a series with no observed value; a row with no observed channel (unless
                ``drop_empty_rows``); a missing label or one that differs within a series.
        """
        return cls._from_frame(
            df, id_col=id_col, time_col=time_col, value_cols=value_cols, label_col=label_col,
            source=source, drop_empty_rows=drop_empty_rows, row_offset=0, row_word="row",
        )

    @classmethod
    def _from_frame(
        cls,
        df: pd.DataFrame,
        *,
        id_col: str,
        time_col: str,
        value_cols: Sequence[str] | None = None,
        label_col: str | None = None,
        source: str = "<DataFrame>",
        drop_empty_rows: bool = False,
        row_offset: int = 0,
        row_word: str = "row",
    ) -> IrregularDataset:
        def err(msg: str) -> IrregularDataError:
            return IrregularDataError(f"{source}: {msg}")

        def where(row: int) -> str:
            return f"{row_word} {row + row_offset}"

        if not isinstance(df, pd.DataFrame):
            raise err(f"expected a pandas DataFrame, got {type(df).__name__}")
        special = [id_col, time_col] + ([label_col] if label_col is not None else [])
        missing = [c for c in special if c not in df.columns]
        if missing:
            raise err(f"missing column(s) {missing}; found columns {list(df.columns)}")
        if value_cols is None:
            value_cols = [
                c for c in df.columns
                if c not in special and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
            ]
            if not value_cols:
                raise err(f"no numeric value columns besides {special}; found columns {list(df.columns)}")
            # Nothing is dropped silently: a column that is neither numeric nor named must be resolved.
            skipped = [c for c in df.columns if c not in special and c not in value_cols]
            if skipped:
                raise err(
                    f"column(s) {skipped} are not numeric, so they cannot be channels; pass value_cols=[...] "
                    "to choose the channels (a number column holding text shows a stray value)"
                )
        value_cols = list(value_cols)
        if not value_cols:
            raise err("value_cols is empty")
        needed = special + value_cols
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise err(f"missing column(s) {missing}; found columns {list(df.columns)}")
        overlap = [c for c in value_cols if c in special]
        if overlap:
            raise err(f"column(s) {overlap} cannot be both a value column and the id/time/label column")
        if len(df) == 0:
            raise err("table has no rows")

        ids_raw = df[id_col]
        bad = ids_raw.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise err(f"{where(row)}: column {id_col!r}: missing series id")
        ids = ids_raw.astype(str).to_numpy(dtype=object)

        def sid(row: int) -> str:
            return repr(ids[row])

        # Values: numeric, finite where present.
        vals = np.empty((len(df), len(value_cols)), dtype=np.float64)
        for j, c in enumerate(value_cols):
            col = df[c]
            num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = (np.isnan(num) & col.notna().to_numpy()) | np.isinf(num)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise err(
                    f"series {sid(row)}, {where(row)}: column {c!r}: value {_show(col.iloc[row])} "
                    "is not a finite number"
                )
            vals[:, j] = num

        # Times.
        times, origin = _parse_times(df[time_col])
        bad = ~np.isfinite(times)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise err(
                f"series {sid(row)}, {where(row)}: column {time_col!r}: time {_show(df[time_col].iloc[row])} "
                "is missing, infinite or unparseable"
            )

        # Group rows by series (order of first appearance), file order within each series.
        codes, uniques = pd.factorize(pd.Series(ids), sort=False)
        n_series = len(uniques)
        series_ids = [str(u) for u in uniques]
        observed = ~np.isnan(vals)
        row_any = observed.any(axis=1)
        per_series_obs = np.bincount(codes, weights=row_any.astype(np.float64), minlength=n_series)
        empty = np.flatnonzero(per_series_obs == 0)
        if empty.size:
            i = int(empty[0])
            raise err(f"series {series_ids[i]!r}: empty series: no value observed in columns {value_cols}")
        empty_rows = np.flatnonzero(~row_any)
        if empty_rows.size and not drop_empty_rows:
            row = int(empty_rows[0])
            raise err(
                f"series {sid(row)}, {where(row)}: column(s) {value_cols} all NaN at time {float(times[row])!r}: "
                f"an observation time with nothing observed ({empty_rows.size} such row(s); "
                "pass drop_empty_rows=True to drop and count them)"
            )
        keep = row_any if drop_empty_rows else np.ones(len(df), dtype=bool)
        rows = np.flatnonzero(keep)
        order = rows[np.argsort(codes[rows], kind="stable")]
        codes_s = codes[order]
        t_s = times[order]
        same = codes_s[1:] == codes_s[:-1]
        dt = np.diff(t_s)
        bad = same & (dt <= 0)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            problem = "duplicate time" if dt[k] == 0 else "times not sorted (must be strictly increasing)"
            raise err(
                f"series {series_ids[codes_s[k]]!r}, column {time_col!r}: {problem}: t={float(t_s[k + 1])!r} "
                f"({where(int(order[k + 1]))}) follows t={float(t_s[k])!r} ({where(int(order[k]))})"
            )

        # Labels.
        labels = classes = None
        if label_col is not None:
            lab = df[label_col]
            bad = lab.isna().to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise err(f"series {sid(row)}, {where(row)}: column {label_col!r}: label is missing")
            lab_codes, lab_uniques = pd.factorize(lab, sort=True)
            _, first_row = np.unique(codes, return_index=True)  # codes are 0..n_series-1
            first = lab_codes[first_row].astype(np.int64)  # label code of each series' first row
            diff = np.flatnonzero(lab_codes != first[codes])
            if diff.size:
                row = int(diff[0])
                i = int(codes[row])
                raise err(
                    f"series {series_ids[i]!r}, {where(row)}: column {label_col!r}: label differs within the "
                    f"series ({lab_uniques[first[i]]!r} and {lab_uniques[lab_codes[row]]!r})"
                )
            labels = first
            classes = [v.item() if isinstance(v, np.generic) else v for v in lab_uniques]

        lengths = np.bincount(codes_s, minlength=n_series)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        v_s = vals[order]
        return cls(
            [t_s[bounds[i]:bounds[i + 1]] for i in range(n_series)],
            [v_s[bounds[i]:bounds[i + 1]] for i in range(n_series)],
            series_ids,
            [str(c) for c in value_cols],
            labels,
            classes,
            source=source,
            dropped_empty_rows=int(empty_rows.size) if drop_empty_rows else 0,
            time_origin=origin,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.series_ids)

    @property
    def n_channels(self) -> int:
        """Number of value channels ``C``."""
        return len(self.channel_names)

    @property
    def lengths(self) -> Tensor:
        """``[N]`` long, number of observation times per series."""
        return torch.tensor([len(t) for t in self._times], dtype=torch.long)

    def __getitem__(self, i: int) -> IrregularSeries:
        """Series ``i`` as stored (float64 ``times [n]``, ``values [n, C]``, bool ``mask [n, C]``)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"series index {i} out of range for {len(self)} series")
        v = torch.from_numpy(self._values[i].copy())
        return IrregularSeries(
            series_id=self.series_ids[i],
            times=torch.from_numpy(self._times[i].copy()),
            values=v,
            mask=~torch.isnan(v),
            label=None if self.labels is None else int(self.labels[i]),
        )

    def _replace(self, times: list[np.ndarray], values: list[np.ndarray], indices: Sequence[int] | None = None,
                 time_origin: Any = "same") -> IrregularDataset:
        idx = list(range(len(self))) if indices is None else list(indices)
        return IrregularDataset(
            times, values, [self.series_ids[i] for i in idx], self.channel_names,
            None if self.labels is None else self.labels.numpy()[idx], self.classes,
            source=self.source, dropped_empty_rows=self.dropped_empty_rows,
            time_origin=self.time_origin if time_origin == "same" else time_origin,
        )

    def subset(self, indices: Sequence[int] | Tensor) -> IrregularDataset:
        """The series at ``indices`` (same channels and ``classes``)."""
        idx = [int(i) for i in torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()]
        for i in idx:
            if not 0 <= i < len(self):
                raise IndexError(f"series index {i} out of range for {len(self)} series")
        return self._replace([self._times[i] for i in idx], [self._values[i] for i in idx], idx)

    def split(
        self, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
    ) -> tuple[IrregularDataset, ...]:
        """Split the series into parts (default train / validation / test) by a seeded permutation.

        With labels the split is stratified: each class is divided by ``fractions`` separately (largest
        remainder rounding), and every part with a positive fraction gets at least one series of a
        class that has at least as many series as there are such parts. Series keep their original
        order within each part. The same ``seed`` gives the same split.
        """
        fr = np.asarray(list(fractions), dtype=np.float64)
        if fr.ndim != 1 or fr.size == 0 or (fr < 0).any() or not math.isclose(float(fr.sum()), 1.0, abs_tol=1e-6):
            raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
        rng = np.random.default_rng(seed)
        groups = [np.arange(len(self))] if self.labels is None else [
            np.flatnonzero(self.labels.numpy() == k) for k in range(len(self.classes or []))
        ]
        parts: list[list[int]] = [[] for _ in fr]
        positive = np.flatnonzero(fr > 0)
        for g in groups:
            n = len(g)
            if n == 0:
                continue
            perm = g[rng.permutation(n)]
            exact = fr * n
            sizes = np.floor(exact).astype(np.int64)
            rem = n - int(sizes.sum())
            for j in np.argsort(-(exact - sizes), kind="stable")[:rem]:
                sizes[j] += 1
            if n >= positive.size:
                for j in positive:
                    if sizes[j] == 0:
                        sizes[int(np.argmax(sizes))] -= 1
                        sizes[j] += 1
            start = 0
            for j, s in enumerate(sizes):
                parts[j].extend(perm[start:start + s].tolist())
                start += s
        return tuple(self.subset(sorted(p)) for p in parts)

    # ------------------------------------------------------------------ batching
    def batch(self, indices: Sequence[int] | Tensor | None = None, *, dtype: torch.dtype = torch.float32
              ) -> IrregularBatch:
        """Pad the series at ``indices`` (default: all) into one :class:`IrregularBatch`.

        Returns ``times [B, L]``, ``values [B, L, C]``, ``mask [B, L, C]``, ``lengths [B]``, ``labels [B]``
        (or None) with ``L`` the longest selected series. Padding repeats each series' last time and last
        row of values (so a path is constant after the end) and has ``mask`` False.
        """
        idx = list(range(len(self))) if indices is None else [
            int(i) for i in torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        ]
        if not idx:
            raise ValueError("cannot batch zero series")
        for i in idx:
            if not 0 <= i < len(self):
                raise IndexError(f"series index {i} out of range for {len(self)} series")
        lengths = np.array([len(self._times[i]) for i in idx], dtype=np.int64)
        L, C = int(lengths.max()), self.n_channels
        times = np.empty((len(idx), L))
        values = np.empty((len(idx), L, C))
        pos = np.arange(L)
        for b, i in enumerate(idx):
            g = np.minimum(pos, lengths[b] - 1)
            times[b] = self._times[i][g]
            values[b] = self._values[i][g]
        mask = ~np.isnan(values) & (pos[None, :, None] < lengths[:, None, None])
        return IrregularBatch(
            times=torch.as_tensor(times, dtype=dtype),
            values=torch.as_tensor(values, dtype=dtype),
            mask=torch.from_numpy(mask),
            lengths=torch.from_numpy(lengths),
            labels=None if self.labels is None else self.labels[idx].clone(),
            series_ids=[self.series_ids[i] for i in idx],
        )

    def __repr__(self) -> str:
        k = "unlabelled" if self.classes is None else f"{len(self.classes)} classes"
        return f"IrregularDataset({len(self)} series, {self.n_channels} channels, {k}, source={self.source!r})"


class Standardizer:
    """Per-channel standardisation of values and rescaling of times, fitted on a training set.

    ``values -> (values - mean) / std`` per channel, with ``mean`` and ``std`` (population, ``ddof=0``)
    over the observed entries only; a channel with zero std (or never observed) gets std 1 (and mean 0
    if never observed). ``times -> times / time_scale``; ``time_scale`` is given or fitted as the mean
    series duration ``t_last - t_first`` (1 if that is 0).
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 time_scale: float | None = None) -> None:
        """Create unfitted (all None), or from known statistics."""
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.time_scale = None if time_scale is None else float(time_scale)

    def fit(self, ds: IrregularDataset, time_scale: float | None = None) -> Standardizer:
        """Fit mean / std on the observed values of ``ds`` and ``time_scale`` (unless given); returns self."""
        if len(ds) == 0:
            raise IrregularDataError(f"{ds.source}: cannot fit a Standardizer on zero series")
        allv = np.concatenate(ds._values, axis=0)
        obs = ~np.isnan(allv)
        count = obs.sum(axis=0)
        total = np.where(obs, allv, 0.0).sum(axis=0)
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        var = np.where(obs, (allv - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
        std = np.sqrt(var)
        self.mean = mean
        self.std = np.where(std > 0, std, 1.0)
        if time_scale is None:
            dur = float(np.mean([t[-1] - t[0] for t in ds._times]))
            time_scale = dur if dur > 0 else 1.0
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive finite number, got {time_scale!r}")
        self.time_scale = float(time_scale)
        return self

    def _check(self) -> None:
        if self.mean is None or self.std is None or self.time_scale is None:
            raise RuntimeError("Standardizer is not fitted; call fit(dataset) or from_dict(...) first")

    def transform(self, ds: IrregularDataset) -> IrregularDataset:
        """A new data set with standardised values (NaN stays NaN) and times divided by ``time_scale``."""
        self._check()
        if ds.n_channels != len(self.mean):
            raise IrregularDataError(
                f"{ds.source}: data set has {ds.n_channels} channels, the Standardizer was fitted on {len(self.mean)}"
            )
        return ds._replace([t / self.time_scale for t in ds._times],
                           [(v - self.mean) / self.std for v in ds._values], time_origin=ds.time_origin)

    def inverse_transform_values(self, values: Tensor | np.ndarray) -> Tensor:
        """Undo the value standardisation of ``values [..., C]``; returns a tensor (float64 for numpy input)."""
        self._check()
        v = torch.as_tensor(values)
        if not v.is_floating_point():
            v = v.to(torch.float64)
        if v.shape[-1] != len(self.mean):
            raise ValueError(f"values must end in {len(self.mean)} channels, got shape {list(v.shape)}")
        mean = torch.as_tensor(self.mean, dtype=v.dtype, device=v.device)
        std = torch.as_tensor(self.std, dtype=v.dtype, device=v.device)
        return v * std + mean

    def inverse_transform_times(self, times: Tensor | np.ndarray) -> Tensor:
        """Undo the time rescaling: ``times * time_scale`` (any shape)."""
        self._check()
        t = torch.as_tensor(times)
        if not t.is_floating_point():
            t = t.to(torch.float64)
        return t * self.time_scale

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict ``{"mean": [...], "std": [...], "time_scale": float}``."""
        self._check()
        return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in self.std],
                "time_scale": float(self.time_scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        """Rebuild from :meth:`to_dict` output."""
        try:
            mean, std, ts = d["mean"], d["std"], d["time_scale"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"Standardizer dict needs keys mean, std, time_scale; got {d!r}") from e
        if len(mean) != len(std):
            raise ValueError(f"Standardizer dict: mean has {len(mean)} channels, std has {len(std)}")
        return cls(mean, std, ts)


def cde_controls(batch: IrregularBatch, *, include_time: bool = True, include_counts: bool = True,
                 count_scale: float = 1.0) -> Tensor:
    """NaN-free control path ``[B, L, C']`` for a Neural CDE from a padded batch.

    Channels, in order: ``times`` (if ``include_time``); the ``C`` values with unobserved entries
    forward-filled from the last observation of that channel (entries before the first observation take
    the first observation; a channel never observed in a series is 0, the mean after standardisation);
    the cumulative observation count of each channel (if ``include_counts``; Kidger et al. 2020), which
    lets the model see informative missingness. Padding (mask False) therefore keeps every channel
    constant after the end of a series. ``C' = include_time + C + C * include_counts``. ``count_scale``
    multiplies the counts: left at 1 they grow with the length of the series and, through the CDE, drive
    the state harder than the standardised values do (one over the mean number of observations per series
    keeps them on the values' scale). Feed it to
    :func:`nde.layers.cde.interpolation_coefficients` with ``times`` or ``time_channel=0``.
    """
    values, mask = batch.values, batch.mask
    B, L, C = values.shape
    pos = torch.arange(L, device=values.device).view(1, L, 1).expand(B, L, C)
    last = torch.where(mask, pos, torch.full_like(pos, -1)).cummax(dim=1).values  # last observed index so far
    has_any = mask.any(dim=1, keepdim=True)  # [B, 1, C]
    first = mask.to(torch.int8).argmax(dim=1, keepdim=True).expand(B, L, C)  # first observed index
    idx = torch.where(last < 0, first, last)
    filled = values.gather(1, idx)
    filled = torch.where(has_any & ~torch.isnan(filled), filled, torch.zeros_like(filled))
    parts = []
    if include_time:
        parts.append(batch.times.to(values.dtype).unsqueeze(-1))
    parts.append(filled)
    if include_counts:
        parts.append(mask.to(values.dtype).cumsum(dim=1) * count_scale)
    return torch.cat(parts, dim=-1)
