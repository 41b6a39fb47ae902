"""``nde tsdiff train`` and ``nde tsdiff forecast``: TSDiff on a long-format CSV (``item_id,timestamp,target``).

``nde tsdiff train --data FILE.csv --freq F --context C --prediction P --epochs N --seed S --out DIR`` holds
out the last ``--windows`` blocks of ``P`` points of every series (the test windows), trains one
unconditional TSDiff model on random windows of the rest (the last ``P`` points of it for the validation
loss) and writes

``DIR/config.json``, ``DIR/weights.pt``
    the model: context and prediction lengths, lags, scaler settings, sizes, the CSV's columns, the number
    of test windows; ``nde tsdiff forecast --model DIR`` needs nothing else;
``DIR/train/``
    the training loop's checkpoints and ``metrics.jsonl``; the same command resumes an interrupted run.

``nde tsdiff forecast --model DIR --data FILE.csv --out OUT`` forecasts the last ``P`` points of every
series (each test window, given the ``C`` points before it and the longer history its lags reach) with
self-guidance (``--guidance quantile``: TSDiff-Q, ``mse``: TSDiff-MS; ``--scale``; ``--sampler ddpm|ddim|dpmpp``,
``--steps``, ``--samples``) and writes

``OUT/forecasts.csv``
    one row per forecast point: ``item_id, window, timestamp, target`` (the truth), ``mean`` and the
    quantiles ``q0.05 .. q0.95`` of the sample paths (order statistics, as GluonTS);
``OUT/metrics.json``
    :func:`nde.metrics.forecast_metrics` of the sample paths against the truth: ``crps`` (mean CRPS per
    forecast point, in the data's units), ``mean_wql``, ``mase``, ``coverage_90`` and the others, with
    ``seconds`` (wall time of the sampling) and the settings; ``--baseline seasonal_naive|linear`` (repeatable)
    adds the same scores of a baseline under ``baselines``;
``OUT/forecast.png``
    fan charts (median, 50% and 90% bands, truth) of the first ``--plot-series`` series.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["add_parser", "normalize_freq", "run_forecast", "run_train"]

#: Quantile levels written to forecasts.csv.
CSV_QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
#: pandas < 2.2 aliases that pandas 3 rejects, and their replacements.
_LEGACY_ALIASES = {"H": "h", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns"}


def normalize_freq(freq: str | None) -> str | None:
    """``freq`` as pandas reads it, accepting the upper-case legacy aliases (``"H"``, ``"2H"``, ``"T"``, ...).

    Raises:
        ValueError: pandas cannot read it either way.
    """
    if freq is None:
        return None
    from pandas.tseries.frequencies import to_offset

    try:
        return to_offset(freq).freqstr
    except ValueError:
        match = re.fullmatch(r"(\d*)([A-Z])", freq.strip())
        if match and match.group(2) in _LEGACY_ALIASES:
            return to_offset(match.group(1) + _LEGACY_ALIASES[match.group(2)]).freqstr
        raise ValueError(f"invalid frequency {freq!r} (a pandas alias such as h, 30min, D, MS)") from None


def _column_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--item-col", default="item_id", help="series id column (default item_id)")
    parser.add_argument("--timestamp-col", default="timestamp", help="timestamp column (default timestamp)")
    parser.add_argument("--target-col", default="target", help="value column (default target)")


def add_parser(subparsers: Any) -> None:
    """Add ``tsdiff`` with its sub-commands ``train`` and ``forecast``."""
    parser = subparsers.add_parser("tsdiff", help="TSDiff: train an unconditional diffusion model, forecast with it",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=lambda _args: (parser.print_help(), 0)[1])
    commands = parser.add_subparsers(dest="tsdiff_command", metavar="COMMAND", title="commands")

    train = commands.add_parser("train", help="train TSDiff on the series of a long-format CSV",
                                description="Train TSDiff; see `nde tsdiff --help` for the files it writes.")
    train.add_argument("--data", required=True, help="long-format CSV: item_id,timestamp,target")
    _column_args(train)
    train.add_argument("--freq", default=None, help="frequency (pandas alias; H, h, 30min, D; default: inferred)")
    train.add_argument("--context", type=int, required=True, help="context length C (points)")
    train.add_argument("--prediction", type=int, required=True, help="prediction length P (points)")
    train.add_argument("--windows", type=int, default=1, help="test windows of P points held out per series")
    train.add_argument("--lags", default="auto",
                       help="'auto' (TSDiff's lags for the frequency that fit the data), 'none', or e.g. 24,48,168")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--batches-per-epoch", type=int, default=128)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--hidden", type=int, default=64, help="denoiser width (paper's small config: 64)")
    train.add_argument("--blocks", type=int, default=3, help="residual S4 blocks (3)")
    train.add_argument("--state", type=int, default=128, help="S4D state size (128)")
    train.add_argument("--s4-init", choices=["lin", "inv"], default="lin", help="S4D initialisation")
    train.add_argument("--patience", type=int, default=None, help="stop after this many epochs without improvement")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    train.add_argument("--out", required=True, help="model folder")
    train.add_argument("--restart", action="store_true", help="discard an earlier run's checkpoint in --out")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(run=run_train)

    fc = commands.add_parser("forecast", help="forecast (and score) the last window(s) of every series",
                             description="Forecast with a model from `nde tsdiff train`; see `nde tsdiff --help`.")
    fc.add_argument("--model", required=True, help="model folder written by `nde tsdiff train`")
    fc.add_argument("--data", required=True, help="long-format CSV with the model's columns")
    fc.add_argument("--guidance", choices=["quantile", "mse"], default="quantile")
    fc.add_argument("--scale", type=float, default=4.0, help="guidance scale (4 in the paper's hourly setups)")
    fc.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp"], default="ddpm")
    fc.add_argument("--steps", type=int, default=None, help="sampler steps (default: 100 for ddpm/ddim, 20 dpmpp)")
    fc.add_argument("--samples", type=int, default=100, help="sample paths per series")
    fc.add_argument("--clip-margin", default="1",
                    help="clip the guided data prediction to the observed range widened by this margin ('none': off)")
    fc.add_argument("--windows", type=int, default=None, help="windows per series (default: the model's)")
    fc.add_argument("--baseline", action="append", choices=["seasonal_naive", "linear"], default=[],
                    help="also score this baseline (repeatable)")
    fc.add_argument("--batch-size", type=int, default=512, help="sample paths per sampler call")
    fc.add_argument("--plot-series", type=int, default=4, help="series in the fan chart (0: no plot)")
    fc.add_argument("--seed", type=int, default=0)
    fc.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    fc.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    fc.add_argument("--out", required=True, help="output folder")
    fc.set_defaults(run=run_forecast)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _parse_lags(text: str, freq: str, longest: int, window: int) -> list[int]:
    from nde.data.timeseries import lags_for_frequency

    text = text.strip().lower()
    if text == "none":
        return []
    if text == "auto":
        try:
            lags = lags_for_frequency(freq, "tsdiff")
        except ValueError:
            return []  # TSDiff defines lags for sub-daily and daily data only
        # Keep the lags for which the longest series still has a training window (and a validation window).
        return [lag for lag in lags if lag + window <= longest]
    try:
        lags = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lags must be 'auto', 'none' or comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in lags) or len(set(lags)) != len(lags):
        raise ValueError(f"--lags must be distinct positive integers, got {lags}")
    return lags


def run_train(args: argparse.Namespace) -> int:
    from nde.data.timeseries import read_time_series, rolling_test_windows
    from nde.tsdiff import TSDiffConfig, fit_tsdiff

    torch.set_num_threads(_positive("--threads", args.threads))
    context, prediction = _positive("--context", args.context), _positive("--prediction", args.prediction)
    windows = _positive("--windows", args.windows)
    columns = {"item_col": args.item_col, "timestamp_col": args.timestamp_col, "target_col": args.target_col}
    series = read_time_series(args.data, freq=normalize_freq(args.freq), **columns)
    split = rolling_test_windows(series, prediction, context, windows)
    train_parts = list(split.train)
    longest = max(len(v) for v in train_parts)
    lags = _parse_lags(args.lags, series.freq, longest - prediction, context + prediction)
    config = TSDiffConfig(context_length=context, prediction_length=prediction, lags=tuple(lags), freq=series.freq,
                          hidden_dim=args.hidden, num_blocks=args.blocks, state_dim=args.state,
                          s4_init=args.s4_init)
    out = Path(args.out)
    print(f"nde tsdiff train: {len(series)} series ({series.freq}) from {args.data}; context {context}, "
          f"prediction {prediction}, {windows} test window(s) held out; lags {lags or 'none'}; "
          f"{args.epochs} epochs of {args.batches_per_epoch} x {args.batch_size} windows; writing to {out}/")
    start = time.perf_counter()
    model, result = fit_tsdiff(train_parts, config, epochs=args.epochs, batch_size=args.batch_size,
                               batches_per_epoch=args.batches_per_epoch, lr=args.lr, seed=args.seed,
                               device=args.device, out_dir=out / "train", resume=not args.restart,
                               patience=args.patience, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    model.metadata = {
        "data": str(args.data),
        "columns": columns,
        "test_windows": windows,
        "train": {"best_epoch": result.best_epoch, "best_metric": result.best_metric,
                  "monitor": "val_loss" if "val_loss" in result.history[-1] else "train_loss",
                  "epochs_run": result.epochs_run, "seconds": round(seconds, 2), "seed": args.seed,
                  "batch_size": args.batch_size, "batches_per_epoch": args.batches_per_epoch, "lr": args.lr},
    }
    model.save(out)
    print(f"best epoch {result.best_epoch} ({model.metadata['train']['monitor']} {result.best_metric:.4f}), "
          f"{seconds:.1f} s; model in {out}/ (forecast with: nde tsdiff forecast --model {out} --data ...)")
    return 0


def _clip_margin(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"--clip-margin must be a number >= 0 or 'none', got {text!r}")
    return value


def _baseline_samples(name: str, split: Any, season: int, freq: str, num_samples: int, seed: int) -> np.ndarray:
    """``[S, M, P]`` sample paths of a baseline for the windows of ``split`` (a ``RollingWindows``)."""
    from nde.data.timeseries import lags_for_frequency
    from nde.forecast_baselines import linear_lag_forecast, seasonal_naive_forecast

    histories = split.histories()
    p = split.prediction_length
    if name == "seasonal_naive":
        return seasonal_naive_forecast(histories, p, season, num_samples=num_samples)
    # linear: GluonTS lags for the frequency, as far back as the shortest training part allows.
    shortest = min(min(len(v) for v in split.train), int(split.origin.min()))
    try:
        lags = lags_for_frequency(freq, "gluonts", lag_ub=max(1, min(1200, shortest // 2)))
    except ValueError:
        lags = list(range(1, 8))
    lags = [lag for lag in lags if lag <= shortest // 2] or [1]
    return linear_lag_forecast(list(split.train), histories, p, lags, num_samples=num_samples, seed=seed)


def _forecast_frame(split: Any, samples: np.ndarray) -> Any:
    import pandas as pd

    from nde.metrics.forecast import sample_quantiles

    quantiles = sample_quantiles(samples, CSV_QUANTILES).numpy()  # [Q, M, P]
    frames = []
    for k in range(len(split)):
        i = int(split.item_index[k])
        stamps = pd.date_range(split.forecast_start[k], periods=split.prediction_length, freq=split.series.freq)
        frame = pd.DataFrame({"item_id": split.series.item_ids[i], "window": int(split.window_index[k]),
                              "timestamp": stamps, "target": split.target[k], "mean": samples[:, k].mean(0)})
        for j, q in enumerate(CSV_QUANTILES):
            frame[f"q{q:g}"] = quantiles[j, k]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _plot(split: Any, samples: np.ndarray, path: Path, n_series: int, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = [k for k in range(len(split)) if split.window_index[k] == split.windows - 1][:n_series]
    fig, axes = plt.subplots(len(last), 1, figsize=(9, 2.4 * len(last)), squeeze=False)
    p = split.prediction_length
    for ax, k in zip(axes[:, 0], last, strict=True):
        i, origin = int(split.item_index[k]), int(split.origin[k])
        values = split.series.values[i]
        shown = min(split.context_length, 3 * p)
        t_past = np.arange(origin - shown, origin)
        t_future = np.arange(origin, origin + p)
        lo90, lo50, median, hi50, hi90 = np.quantile(samples[:, k], [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.plot(t_past, values[origin - shown : origin], color="black", lw=1, label="observed")
        ax.plot(t_future, split.target[k], color="black", lw=1, ls="--", label="truth")
        ax.fill_between(t_future, lo90, hi90, color="tab:blue", alpha=0.2, label="90%")
        ax.fill_between(t_future, lo50, hi50, color="tab:blue", alpha=0.4, label="50%")
        ax.plot(t_future, median, color="tab:blue", lw=1.5, label="median")
        ax.set_title(f"{split.series.item_ids[i]}", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=5)
    axes[-1, 0].set_xlabel("time step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_forecast(args: argparse.Namespace) -> int:
    from nde.data.timeseries import read_time_series, rolling_test_windows, seasonality_for_frequency
    from nde.metrics.forecast import forecast_metrics
    from nde.train import atomic_write_text, resolve_device
    from nde.tsdiff import TSDiff, default_steps, forecast

    torch.set_num_threads(_positive("--threads", args.threads))
    _positive("--samples", args.samples)
    if args.steps is not None:
        _positive("--steps", args.steps)
    model = TSDiff.load(args.model, device=resolve_device(args.device))
    config = model.config
    columns = dict(model.metadata.get("columns") or {})
    series = read_time_series(args.data, freq=config.freq, **columns)
    windows = _positive("--windows", args.windows if args.windows is not None
                        else int(model.metadata.get("test_windows", 1)))
    split = rolling_test_windows(series, config.prediction_length, config.context_length, windows)
    histories = [series.values[i][:o] for i, o in zip(split.item_index, split.origin, strict=True)]
    steps = default_steps(model, args.sampler) if args.steps is None else args.steps
    clip_margin = _clip_margin(args.clip_margin)
    season = seasonality_for_frequency(series.freq)
    start = time.perf_counter()
    samples = forecast(model, histories, num_samples=args.samples, guidance=args.guidance, scale=args.scale,
                       sampler=args.sampler, steps=steps, batch_size=args.batch_size, seed=args.seed,
                       clip_margin=clip_margin)
    seconds = time.perf_counter() - start
    insample = split.histories()
    scores = forecast_metrics(samples, split.target, insample=insample, season=season)
    baselines = {name: forecast_metrics(_baseline_samples(name, split, season, series.freq, args.samples, args.seed),
                                        split.target, insample=insample, season=season)
                 for name in dict.fromkeys(args.baseline)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "forecasts.csv", _forecast_frame(split, samples).to_csv(index=False))
    metrics: dict[str, Any] = {
        **scores, "seconds": round(seconds, 3),
        "model": str(args.model), "data": str(args.data), "guidance": args.guidance, "scale": args.scale,
        "sampler": args.sampler, "steps": steps, "clip_margin": clip_margin, "samples": args.samples,
        "seed": args.seed, "windows": windows,
        "n_series": len(series), "season": season, "device": str(next(model.parameters()).device),
    }
    if baselines:
        metrics["baselines"] = baselines
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    rows = [("tsdiff", scores), *baselines.items()]
    print(f"nde tsdiff forecast: {len(split)} window(s) of {config.prediction_length} points, {args.samples} "
          f"samples, {args.sampler} {steps} steps, {args.guidance} guidance x {args.scale}: {seconds:.1f} s")
    print("\n| forecast | CRPS | mean wQL | MASE | 90% coverage |\n|---|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['crps']:.4g} | {s['mean_wql']:.4f} | {s['mase']:.3f} | {s['coverage_90']:.3f} |")
    print(f"\nwrote {out / 'forecasts.csv'} and {out / 'metrics.json'}")
    if args.plot_series > 0:
        title = f"TSDiff ({args.guidance} guidance, {args.sampler} {steps} steps)"
        print(f"plot: {_plot(split, samples, out / 'forecast.png', args.plot_series, title)}")
    return 0
