"""``nde fit`` and ``nde predict``: irregular time series from a long-format CSV to a fitted model.

``nde fit`` splits the series 70/15/15 (seeded; stratified by label), fits the model on the first part,
keeps the epoch with the best validation loss and scores the test part. It writes

``OUT/metrics.json``
    test-split scores: ``accuracy``, ``auroc`` and ``log_loss`` (classification) or ``mse``, ``crps``,
    ``coverage_90`` and ``coverage_50`` (forecasting, in the data's units), with the run's settings;
``OUT/model/``
    ``config.json`` and ``weights.pt``, read back by ``nde predict --model OUT/model``;
``OUT/predictions.csv``
    one row per test series (class probabilities) or per forecast point (mean and quantiles);
``OUT/train/``
    checkpoints and ``metrics.jsonl``; running the same command again resumes an interrupted fit;
``OUT/forecast.png``
    with ``--plot`` (forecasting): observations, median and 50% / 90% bands of a few test series.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nde.data import available_datasets, dataset_path
from nde.irregular import (
    MODEL_NAMES,
    ClassPrediction,
    ForecastPrediction,
    IrregularDataset,
    IrregularModel,
    get_model_class,
)
from nde.train import atomic_write_text

__all__ = ["add_fit_parser", "add_predict_parser", "resolve_data_file"]


def resolve_data_file(data: str) -> Path:
    """A CSV path, or the name of a shipped data set (``ou``, ``japanese_vowels``, ``spirals``)."""
    path = Path(data)
    if path.is_file():
        return path
    if data in available_datasets():
        shipped = dataset_path(data) / f"{data}.csv"
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(f"no such file: {data} (nor a shipped data set; those are {available_datasets()})")


def _value_cols(text: str | None) -> list[str] | None:
    return None if not text else [c.strip() for c in text.split(",") if c.strip()]


def _add_data_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--data", required=True, help="long-format CSV (or a shipped data set name: ou, spirals, ...)")
    parser.add_argument("--id-col", required=required, default=None, help="series id column")
    parser.add_argument("--time-col", required=required, default=None, help="time column (numbers or timestamps)")
    parser.add_argument("--label-col", default=None, help="class label column (classification)")
    parser.add_argument("--value-cols", default=None,
                        help="comma-separated channel columns (default: every other numeric column)")
    parser.add_argument("--drop-empty-rows", action="store_true", help="drop rows with no observed channel")


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=100, help="forecast draws per point")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (small models run fastest on one thread)")
    parser.add_argument("--plot", action="store_true", help="draw forecasts of a few series (forecasting only)")


def add_fit_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fit", help="fit an irregular-time-series model to a long-format CSV and score it on a held-out split",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data_args(parser, required=True)
    parser.add_argument("--task", choices=["classify", "forecast"], required=True)
    parser.add_argument("--model", choices=list(MODEL_NAMES), default="ncde")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--patience", type=int, default=None, help="stop after this many epochs without improvement")
    parser.add_argument("--hidden", type=int, default=None, help="state size (default: the model's own)")
    parser.add_argument("--forecast-fraction", type=float, default=0.2,
                        help="share of each series' time span held out as forecast targets")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the data order")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--restart", action="store_true", help="discard an earlier run's checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _common_args(parser)
    parser.set_defaults(run=run_fit)


def add_predict_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict", help="class probabilities or forecasts from a model saved by `nde fit`",
        description="Classify every series of --data, or forecast it. A forecasting model forecasts after the "
                    "end of each series (--horizon, --steps, or --future-times), or with --holdout scores "
                    "the last forecast fraction of each series as `nde fit` does.")
    parser.add_argument("--model", required=True, help="a model folder written by `nde fit` (OUT/model)")
    _add_data_args(parser, required=False)
    parser.add_argument("--out", required=True, help="CSV file for the predictions")
    parser.add_argument("--future-times", default=None, help="comma-separated times to forecast, for every series")
    parser.add_argument("--horizon", type=float, default=None,
                        help="forecast this far past each series' last observation (default: the span the "
                             "model was trained to forecast)")
    parser.add_argument("--steps", type=int, default=10, help="forecast times up to --horizon")
    parser.add_argument("--holdout", action="store_true", help="forecast and score each series' last part")
    parser.add_argument("--seed", type=int, default=0)
    _common_args(parser)
    parser.set_defaults(run=run_predict)


def _load_data(args: argparse.Namespace, columns: dict[str, Any]) -> IrregularDataset:
    return IrregularDataset.from_csv(
        resolve_data_file(args.data), id_col=columns["id_col"], time_col=columns["time_col"],
        label_col=columns.get("label_col"), value_cols=columns.get("value_cols"),
        drop_empty_rows=bool(args.drop_empty_rows))


def _write_predictions(prediction: ClassPrediction | ForecastPrediction, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, prediction.to_frame().to_csv(index=False))


def _plot(data: IrregularDataset, prediction: ForecastPrediction, path: Path, title: str) -> Path:
    from nde.irregular.plotting import plot_forecasts

    return plot_forecasts(data, prediction, path, title=title)


def run_fit(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    columns = {"id_col": args.id_col, "time_col": args.time_col, "label_col": args.label_col,
               "value_cols": _value_cols(args.value_cols)}
    if args.task == "classify" and args.label_col is None:
        raise ValueError("--task classify needs --label-col")
    data = _load_data(args, columns)
    train, val, test = data.split((0.7, 0.15, 0.15), seed=args.seed)
    hyper = {} if args.hidden is None else {"hidden": args.hidden}
    model = get_model_class(args.model)(task=args.task, forecast_fraction=args.forecast_fraction, **hyper)
    model.metadata = {"columns": {**columns, "value_cols": list(data.channel_names)}, "data": str(args.data)}
    out = Path(args.out)
    print(f"nde fit: {args.model} ({args.task}) on {args.data}: {len(train)}/{len(val)}/{len(test)} series "
          f"(train/val/test), {data.n_channels} channels, up to {args.epochs} epochs, writing to {out}/")
    start = time.perf_counter()
    result = model.fit(train, val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       patience=args.patience, seed=args.seed, device=args.device, out_dir=out / "train",
                       resume=not args.restart, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    model.save(out / "model")
    prediction = model.predict(test, n_samples=args.samples, seed=args.seed)
    scores = prediction.metrics()
    _write_predictions(prediction, out / "predictions.csv")
    metrics = {**scores, "model": args.model, "task": args.task, "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run, "train_seconds": round(seconds, 2), "n_train": len(train),
               "n_val": len(val), "n_test": len(test), "seed": args.seed}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print("\n| test metric | value |\n|---|---|")
    for key, value in scores.items():
        print(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    print(f"\nbest epoch {result.best_epoch}, {seconds:.1f} s of training; model in {out / 'model'}")
    if args.plot:
        if not isinstance(prediction, ForecastPrediction):
            raise ValueError("--plot draws forecasts: use it with --task forecast")
        print(f"plot: {_plot(test, prediction, out / 'forecast.png', f'{args.model}: test forecasts')}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    model = IrregularModel.load(args.model, device="cpu")
    saved = dict(model.metadata.get("columns", {}))
    columns = {"id_col": args.id_col or saved.get("id_col"), "time_col": args.time_col or saved.get("time_col"),
               "label_col": args.label_col if args.label_col is not None else saved.get("label_col"),
               "value_cols": _value_cols(args.value_cols) or saved.get("value_cols")}
    if columns["id_col"] is None or columns["time_col"] is None:
        raise ValueError("the model folder does not record the CSV's columns: pass --id-col and --time-col")
    if columns["label_col"] is not None and columns["label_col"] not in _csv_header(resolve_data_file(args.data)):
        columns["label_col"] = None  # a user's new data need not carry labels
    data = _load_data(args, columns)
    out = Path(args.out)
    if model.task == "classify":
        prediction = model.predict(data)
        _write_predictions(prediction, out)
        print(f"nde predict: class probabilities of {len(data)} series written to {out}")
        if prediction.labels is not None:
            print(json.dumps(prediction.metrics(), indent=2))
        return 0
    if args.holdout:
        prediction = model.predict(data, n_samples=args.samples, seed=args.seed)
        print(json.dumps(prediction.metrics(), indent=2))
    else:
        prediction = model.forecast(data, _future_times(args, model, data), n_samples=args.samples, seed=args.seed)
    _write_predictions(prediction, out)
    print(f"nde predict: forecasts of {len(data)} series written to {out}")
    if args.plot:
        print(f"plot: {_plot(data, prediction, out.with_suffix('.png'), 'forecasts')}")
    return 0


def _csv_header(path: Path) -> list[str]:
    with path.open() as handle:
        return [c.strip() for c in handle.readline().rstrip("\n").split(",")]


def _future_times(args: argparse.Namespace, model: IrregularModel, data: IrregularDataset) -> np.ndarray:
    """``[N, Q]`` forecast times: the given ones, or ``steps`` equally spaced ones up to ``horizon`` past each end."""
    if args.future_times is not None:
        times = np.array([float(x) for x in args.future_times.split(",") if x.strip()])
        return np.broadcast_to(times, (len(data), len(times))).copy()
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    horizon = args.horizon
    if horizon is None:
        assert model.scaler is not None and model.scaler.time_scale is not None
        horizon = model.forecast_fraction * model.scaler.time_scale
    if not horizon > 0:
        raise ValueError(f"--horizon must be positive, got {horizon}")
    ends = np.array([float(data[i].times[-1]) for i in range(len(data))])
    offsets = horizon * np.arange(1, args.steps + 1) / args.steps
    return ends[:, None] + offsets[None, :]

