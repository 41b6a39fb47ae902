"""Forecast plots: the observations, the median forecast and its 50% and 90% bands."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nde.irregular.base import ForecastPrediction
from nde.irregular.data import IrregularDataset

__all__ = ["plot_forecasts"]


def plot_forecasts(history: IrregularDataset, prediction: ForecastPrediction, path: str | Path, *,
                   series: Sequence[int] | None = None, channel: int = 0, title: str | None = None) -> Path:
    """Save a grid of panels, one per series: observed points, forecast median and 50% / 90% bands.

    Args:
        history: the series whose observations are drawn (the whole series: context and held-out targets).
        prediction: forecasts for the same series, in the same order.
        path: image file to write (format from its suffix, e.g. ``.png``).
        series: indices of the series to draw (default: the first four).
        channel: which channel to draw.
        title: figure title.

    Raises:
        ImportError: matplotlib is missing (``pip install 'nde[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is in the test extra
        raise ImportError("plotting needs matplotlib: pip install 'nde[plot]'") from err
    if len(history) != len(prediction.series_ids):
        raise ValueError(f"history has {len(history)} series, the prediction {len(prediction.series_ids)}")
    if not 0 <= channel < history.n_channels:
        raise ValueError(f"channel {channel} is outside the {history.n_channels} channels")
    chosen = list(series) if series is not None else list(range(min(4, len(history))))
    quantiles = prediction.quantiles([0.05, 0.25, 0.5, 0.75, 0.95]).numpy()
    n_cols = min(2, len(chosen))
    n_rows = -(-len(chosen) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(6 * n_cols, 3.2 * n_rows), squeeze=False)
    for ax, i in zip(axes.flat, chosen, strict=False):
        s = history[i]
        seen = ~np.isnan(s.values[:, channel].numpy())
        ax.plot(s.times.numpy()[seen], s.values[:, channel].numpy()[seen], "k.", ms=4, label="observed")
        valid = prediction.valid[i].numpy()
        t = prediction.times[i].numpy()[valid]
        q = quantiles[:, i, valid, channel]
        ax.fill_between(t, q[0], q[4], color="tab:blue", alpha=0.2, label="90% interval")
        ax.fill_between(t, q[1], q[3], color="tab:blue", alpha=0.4, label="50% interval")
        ax.plot(t, q[2], color="tab:blue", lw=1.5, label="median")
        ax.set_title(f"series {prediction.series_ids[i]}", fontsize=9)
        ax.set_xlabel("time")
        ax.set_ylabel(history.channel_names[channel])
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
