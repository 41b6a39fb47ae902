"""``nde quickstart``: a short end-to-end run on the shipped data, writing under ``runs/quickstart/``.

1. A Neural CDE classifies the irregularly sampled spirals (``datasets/spirals/``) by their direction of
   rotation.
2. A Latent SDE forecasts the irregularly observed Ornstein–Uhlenbeck paths (``datasets/ou/``) and is
   scored next to the exact forecast of the true process; its forecasts are drawn in ``forecast.png``.
3. A short temporal-point-process benchmark on the shipped 5-mark Hawkes set (``datasets/hawkes_5d/``): the
   classical Hawkes process (maximum likelihood) and IntensityFree, next to the true process.

The test metrics of all three are printed and written to ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from nde.data import load_ou, load_spirals, ou_oracle_forecast_scores, split_indices
from nde.irregular import IrregularDataset, NeuralCDEClassifier, classification_metrics
from nde.irregular.latent_sde import LatentSDEModel
from nde.train import TrainConfig, atomic_write_text, resolve_device, train


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="fit a Neural CDE to the shipped spirals data and print its test metrics",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="runs/quickstart", help="output folder")
    parser.add_argument("--data", default=None,
                        help="a CSV with columns series_id,time,x,y,label (default: the shipped spirals)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the classifier")
    parser.add_argument("--forecast-epochs", type=int, default=25,
                        help="training epochs of the Latent SDE forecaster (0 skips the forecast)")
    parser.add_argument("--tpp-epochs", type=int, default=10,
                        help="training epochs of IntensityFree in the point-process benchmark (0 skips it)")
    parser.add_argument("--tsdiff-epochs", type=int, default=20,
                        help="training epochs of the small TSDiff model on datasets/seasonal_ar (0 skips it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the data order")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (small models run fastest on one thread)")
    parser.add_argument("--restart", action="store_true", help="discard an earlier run's checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def spirals_control_values(times: Tensor, values: Tensor, time_scale: float) -> Tensor:
    """The control's channels ``[N, L, 3]``: rescaled time, x, y (a CDE sees time only as a channel)."""
    return torch.cat([(times / time_scale).unsqueeze(-1), values], dim=-1)


def run_quickstart(out_dir: str | Path, *, data_path: str | Path | None = None, epochs: int = 15, seed: int = 0,
                   device: str = "auto", resume: bool = True, progress: bool = True) -> dict[str, float]:
    """Fit the Neural CDE classifier on the spirals (or a CSV of the same layout) and return its test metrics.

    Writes ``out_dir/ncde/`` (checkpoints, ``metrics.jsonl``) and ``out_dir/metrics.json``.
    """
    out = Path(out_dir)
    data = load_spirals(data_path)
    train_idx, val_idx, test_idx = split_indices(len(data), seed=seed)
    time_scale = float(data.times.max())
    torch.manual_seed(seed)
    model = NeuralCDEClassifier(3, hidden_channels=16, n_classes=2, width=32, depth=2, method="rk4",
                                step_size=1.0)

    def split(idx: Tensor) -> tuple[Tensor, Tensor]:
        part = data.subset(idx)
        return model.coefficients(spirals_control_values(part.times, part.values, time_scale)), part.labels

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(train_idx), split(val_idx), split(test_idx)
    target = resolve_device(device)

    def evaluate(net: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        with torch.no_grad():
            return classification_metrics(net(x.to(target)), y.to(target))

    def loss_fn(net: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(net(x), y)

    def validate(net: nn.Module) -> dict[str, float]:
        return {f"val_{k}": v for k, v in evaluate(net, val_x, val_y).items()}

    config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, weight_decay=1e-4, device=device, seed=seed,
                         monitor="val_loss", patience=4, out_dir=out / "ncde", resume=resume, progress=progress)
    start = time.perf_counter()
    result = train(model, TensorDataset(train_x, train_y), loss_fn, config=config, validate=validate)
    metrics = {f"test_{k}": v for k, v in evaluate(model, test_x, test_y).items()}
    metrics.update(best_epoch=result.best_epoch, epochs_run=result.epochs_run,
                   train_seconds=round(time.perf_counter() - start, 2),
                   n_train=len(train_idx), n_val=len(val_idx), n_test=len(test_idx))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_forecast_quickstart(out_dir: str | Path, *, epochs: int = 25, seed: int = 0, device: str = "auto",
                            resume: bool = True, progress: bool = True, plot: bool = True) -> dict[str, Any]:
    """Fit the Latent SDE to the shipped OU paths, score its test forecasts next to the exact ones, plot them.

    Each series' last 20% of its time span is forecast from the observations before it. Writes
    ``out_dir/latent_sde/`` (checkpoints, ``metrics.jsonl``), ``out_dir/forecast.png`` (when matplotlib is
    installed and ``plot``) and returns the test metrics, prefixed ``forecast_``, with the oracle's
    (``forecast_oracle_crps``, ``forecast_oracle_coverage_90``), ``forecast_crps_ratio`` (model / oracle; 1 is
    the best possible) and ``forecast_plot`` (the image's path, or why there is none).
    """
    out = Path(out_dir)
    frame = load_ou()
    data = IrregularDataset.from_frame(frame, id_col="series_id", time_col="time")
    train_part, val_part, test_part = data.split((0.7, 0.15, 0.15), seed=seed)
    model = LatentSDEModel(task="forecast", forecast_fraction=0.2)
    start = time.perf_counter()
    result = model.fit(train_part, val_part, epochs=epochs, batch_size=64, lr=1e-2, seed=seed, device=device,
                       out_dir=out / "latent_sde", resume=resume, progress=progress)
    prediction = model.predict(test_part, n_samples=200, seed=seed)
    scores = prediction.metrics()
    oracle = ou_oracle_forecast_scores(frame[frame["series_id"].isin(test_part.series_ids)], forecast_fraction=0.2)
    metrics = {f"forecast_{k}": v for k, v in scores.items()}
    metrics.update(forecast_oracle_crps=oracle["crps"], forecast_oracle_coverage_90=oracle["coverage"],
                   forecast_crps_ratio=scores["crps"] / oracle["crps"], forecast_best_epoch=result.best_epoch,
                   forecast_train_seconds=round(time.perf_counter() - start, 2))
    metrics["forecast_plot"] = "not drawn"
    if plot:
        try:
            from nde.irregular.plotting import plot_forecasts

            path = plot_forecasts(test_part, prediction, out / "forecast.png",
                                  title="Latent SDE forecasts of OU paths (test series)")
            metrics["forecast_plot"] = str(path)
        except ImportError:
            metrics["forecast_plot"] = "not drawn: matplotlib is not installed (pip install 'nde[plot]')"
    return metrics


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    source = args.data or "datasets/spirals (2 classes, 30% of observations dropped)"
    print(f"nde quickstart: Neural CDE on {source}, "
          f"{args.epochs} epochs, seed {args.seed}, writing to {args.out}/")
    metrics: dict[str, Any] = run_quickstart(args.out, data_path=args.data, epochs=args.epochs, seed=args.seed,
                                             device=args.device, resume=not args.restart,
                                             progress=not args.no_progress)
    print("\n| test metric | value |\n|---|---|")
    for key in ("test_accuracy", "test_auroc", "test_loss"):
        print(f"| {key.removeprefix('test_')} | {metrics[key]:.4f} |")
    print(f"\nbest epoch {metrics['best_epoch']}, {metrics['train_seconds']} s of training")
    if args.forecast_epochs > 0:
        print(f"\nnde quickstart: Latent SDE forecasts of datasets/ou (Ornstein-Uhlenbeck paths at irregular "
              f"times), {args.forecast_epochs} epochs")
        forecast = run_forecast_quickstart(args.out, epochs=args.forecast_epochs, seed=args.seed,
                                           device=args.device, resume=not args.restart, progress=not args.no_progress)
        metrics.update(forecast)
        atomic_write_text(Path(args.out) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        print("\n| forecast metric (test) | Latent SDE | exact OU forecast |\n|---|---|---|")
        print(f"| CRPS | {metrics['forecast_crps']:.4f} | {metrics['forecast_oracle_crps']:.4f} |")
        print(f"| 90% interval coverage | {metrics['forecast_coverage_90']:.3f} | "
              f"{metrics['forecast_oracle_coverage_90']:.3f} |")
        print(f"\nCRPS ratio to the exact forecast {metrics['forecast_crps_ratio']:.3f}; "
              f"{metrics['forecast_train_seconds']} s of training")
        print(f"plot: {metrics['forecast_plot']}")
    if args.tpp_epochs > 0:
        # The command line is a shell over both packages; the nde library itself never imports tpp.
        from nde.data import dataset_path
        from tpp.evaluation.bench import results_table, run_benchmark

        print(f"\nnde quickstart: temporal point processes on datasets/hawkes_5d (5 marks), Hawkes MLE and "
              f"IntensityFree ({args.tpp_epochs} epochs)")
        results = run_benchmark(dataset_path("hawkes_5d"), ["hawkes", "intensity_free"], Path(args.out) / "tpp",
                                epochs=args.tpp_epochs, seed=args.seed, device=args.device, plots=True)
        metrics["tpp"] = {"models": results["models"], "oracle": results["oracle"]}
        atomic_write_text(Path(args.out) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        print()
        print(results_table(results))
    if args.tsdiff_epochs > 0:
        metrics["tsdiff"] = run_tsdiff_quickstart(Path(args.out) / "tsdiff", epochs=args.tsdiff_epochs,
                                                  seed=args.seed, device=args.device, restart=args.restart)
        atomic_write_text(Path(args.out) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(f"metrics in {Path(args.out) / 'metrics.json'}")
    return 0


def run_tsdiff_quickstart(out_dir: Path, *, epochs: int, seed: int, device: str, restart: bool) -> dict[str, Any]:
    """A small TSDiff (width 32, 2 blocks, state 32) on the simulated seasonal AR set, its quantile-guided DDIM
    forecast of the last day of each series, and the exact forecast's scores beside it."""
    from nde.cli.main import main as nde_main
    from nde.data import dataset_path, seasonal_ar_oracle_scores

    data = str(dataset_path("seasonal_ar") / "seasonal_ar.csv")
    print(f"\nnde quickstart: TSDiff on datasets/seasonal_ar (16 hourly series), a small model, {epochs} epochs, "
          "then a quantile-guided forecast of the last 24 hours")
    train_args = ["tsdiff", "train", "--data", data, "--context", "72", "--prediction", "24", "--epochs",
                  str(epochs), "--batches-per-epoch", "32", "--batch-size", "32", "--hidden", "32", "--blocks", "2",
                  "--state", "32", "--lr", "3e-3", "--seed", str(seed), "--device", device, "--out",
                  str(out_dir / "model"), "--no-progress", *(["--restart"] if restart else [])]
    if nde_main(train_args) != 0:
        raise RuntimeError("nde tsdiff train failed")
    forecast_args = ["tsdiff", "forecast", "--model", str(out_dir / "model"), "--data", data, "--guidance",
                     "quantile", "--scale", "4", "--sampler", "ddim", "--steps", "20", "--samples", "32",
                     "--baseline", "seasonal_naive", "--seed", str(seed), "--device", device, "--out",
                     str(out_dir / "forecast")]
    if nde_main(forecast_args) != 0:
        raise RuntimeError("nde tsdiff forecast failed")
    scores = json.loads((out_dir / "forecast" / "metrics.json").read_text())
    oracle = seasonal_ar_oracle_scores(prediction_length=24, windows=1)
    print(f"exact forecast (oracle) CRPS {oracle['crps']:.4g}; TSDiff / oracle = {scores['crps'] / oracle['crps']:.3f}")
    return {"crps": scores["crps"], "oracle_crps": oracle["crps"],
            "seasonal_naive_crps": scores["baselines"]["seasonal_naive"]["crps"], "seconds": scores["seconds"],
            "plot": str(out_dir / "forecast" / "forecast.png")}
