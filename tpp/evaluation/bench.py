"""The benchmark runner behind ``nde tpp bench``: train every named model on one data set, score it, compare.

For a folder with EasyTPP splits (``train``, ``dev``, ``test``: JSON, or pickle with ``allow_pickle``) and an
optional ``truth.json`` (written by ``nde tpp generate``), each model is trained by maximum likelihood with
early stopping on the dev split (:func:`tpp.train.fit_model`; a model with its own ``fit_mle`` — the
classical Hawkes process — uses that; checkpoints under ``OUT/checkpoints/`` let the same run resume after
an interruption, and are discarded when the data or the settings differ), then scored on the test split
(:func:`tpp.evaluation.evaluate_model`).
With ``truth.json`` the true process is scored the same way (the oracle) and its intensity is drawn beside
each model's. The full-convention log-likelihood needs the observation window: from ``truth.json`` or
``window``; without either, only EasyTPP's convention is reported and models train in it.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nde.train import atomic_write_text
from tpp.data import EventSequences, HawkesProcess, make_batch, read_easytpp_dir
from tpp.data.batch import TimeScaler
from tpp.evaluation.metrics import evaluate_model
from tpp.models.base import TPPModel
from tpp.models.registry import MODEL_NAMES, get_model_class
from tpp.train import fit_model

__all__ = ["load_benchmark_data", "run_benchmark"]

METRICS = ("test_ll_per_event", "test_ll_per_event_easytpp", "rmse", "type_accuracy")


def load_benchmark_data(data_dir: str | Path, *, allow_pickle: bool = False,
                        window: tuple[float, float] | None = None) -> tuple[dict[str, EventSequences], dict | None]:
    """The three splits, with windows from ``truth.json`` or ``window`` when given, and the truth (or None)."""
    folder = Path(data_dir)
    splits = read_easytpp_dir(folder, allow_pickle=allow_pickle)
    missing = [s for s in ("train", "dev", "test") if s not in splits]
    if missing:
        raise ValueError(f"{folder}: missing split(s) {missing}")
    truth = None
    if (folder / "truth.json").is_file():
        truth = json.loads((folder / "truth.json").read_text())
        window = window or tuple(truth["window"])  # type: ignore[assignment]
    if window is not None:
        start, end = float(window[0]), float(window[1])
        for name, seqs in splits.items():
            seqs.windows = np.tile([start, end], (len(seqs), 1))
            seqs.source = f"{folder / name} (window [{start}, {end}])"
            seqs.validate()
    return splits, truth


def _oracle(truth: dict) -> TPPModel | None:
    """The true process as a model, when it is one the zoo can hold (Hawkes, or Poisson as α = 0)."""
    from tpp.models.hawkes import HawkesModel

    params = truth["parameters"]
    if truth["process"] == "HawkesProcess":
        return HawkesModel.from_process(HawkesProcess(params["mu"], params["alpha"], params["beta"]))
    if truth["process"] == "PoissonProcess":
        k = len(params["mu"])
        return HawkesModel.from_process(HawkesProcess(params["mu"], np.zeros((k, k)), 1.0))
    return None


def _plot_intensity(model: TPPModel, oracle: TPPModel | None, seqs: EventSequences, path: Path, title: str,
                    scaler: TimeScaler | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    first = seqs.subset([0])
    batch = make_batch(first, dtype=torch.float64)
    start = float(first.windows[0, 0]) if first.windows is not None else float(first.times[0][0])
    end = float(first.windows[0, 1]) if first.windows is not None else float(first.times[0][-1])
    grid = torch.linspace(start, end, 1000, dtype=torch.float64).unsqueeze(0)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for label, m, style, c in ((model.name, model, "-", scaler), ("truth", oracle, "--", None)):
        if m is None:
            continue
        m64 = copy.deepcopy(m).double()  # a float64 copy: the caller's model keeps its dtype
        with torch.no_grad():
            if c is None:
                lam = m64.intensity(batch, grid).sum(-1)[0]
            else:  # λ(t) = λ_rescaled(t / c) / c in the data's units
                scaled = make_batch(c.transform(first), dtype=torch.float64)
                lam = m64.intensity(scaled, grid / c.scale).sum(-1)[0] / c.scale
        ax.plot(grid[0].numpy(), lam.numpy(), style, lw=1.2, label=f"{label}: total intensity")
    ax.plot(first.times[0], np.zeros(len(first.times[0])), "k|", ms=12, label="events")
    ax.set_xlabel("time")
    ax.set_ylabel("λ(t)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_benchmark(data_dir: str | Path, models: Sequence[str], out_dir: str | Path, *, epochs: int = 20,
                  batch_size: int = 32, lr: float = 1e-2, patience: int | None = 5, seed: int = 0,
                  device: str = "auto", n_samples: int = 100, allow_pickle: bool = False,
                  window: tuple[float, float] | None = None, plots: bool = True,
                  progress: bool = False, rescale_time: bool = False,
                  bucket_by_length: bool = False) -> dict[str, Any]:
    """Train and score ``models`` on ``data_dir``; write ``results.json``, ``results.md`` and intensity plots.

    ``rescale_time``: the neural models train on times divided by the mean inter-event gap of the training
    split (:class:`~tpp.data.batch.TimeScaler`), and every reported metric is converted back to the data's units
    (see :func:`~tpp.evaluation.evaluate_model`); the classical Hawkes fit, whose parameters carry the units,
    always sees the data as they are. ``bucket_by_length``: the neural models train on batches of sequences of
    similar lengths (:class:`~tpp.train.LengthBucketedBatches`).
    """
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODEL_NAMES)}")
    splits, truth = load_benchmark_data(data_dir, allow_pickle=allow_pickle, window=window)
    convention = "full" if splits["train"].windows is not None else "easytpp"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = splits["train"].num_marks
    results: dict[str, Any] = {"dataset": str(data_dir), "num_marks": k, "train_convention": convention,
                               "splits": {s: {"sequences": len(v), "events": v.num_events} for s, v in splits.items()},
                               "models": {}}
    # Checkpoints resume an interrupted run, but only of the same run: other data or settings start over.
    run_key = {"data": str(Path(data_dir).resolve()), "events": {s: v.num_events for s, v in splits.items()},
               "first_times": {s: float(v.times[0][0]) for s, v in splits.items()}, "epochs": epochs,
               "batch_size": batch_size, "lr": lr, "seed": seed, "convention": convention,
               "rescale_time": rescale_time, "bucket_by_length": bucket_by_length}
    scaler = TimeScaler().fit(splits["train"]) if rescale_time else None
    if scaler is not None:
        results["time_scale"] = scaler.scale
    key_file = out / "checkpoints" / "run.json"
    resume = key_file.is_file() and json.loads(key_file.read_text()) == run_key
    key_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(key_file, json.dumps(run_key, indent=2) + "\n")
    oracle = _oracle(truth) if truth is not None else None
    if oracle is not None:
        start = time.perf_counter()
        results["oracle"] = evaluate_model(oracle, splits["test"], n_samples=n_samples, seed=seed,
                                           dtype=torch.float64)
        results["oracle"]["eval_seconds"] = round(time.perf_counter() - start, 2)
    for name in models:
        torch.manual_seed(seed)
        model = get_model_class(name)(k)
        start = time.perf_counter()
        model_scaler = None if hasattr(model, "fit_mle") else scaler
        if hasattr(model, "fit_mle"):
            fit = model.fit_mle(splits["train"], convention=convention)
            epochs_run = getattr(fit, "iterations", None)
        else:
            train, dev = ((splits["train"], splits["dev"]) if scaler is None
                          else (scaler.transform(splits["train"]), scaler.transform(splits["dev"])))
            fit = fit_model(model, train, dev, convention=convention, epochs=epochs,
                            batch_size=batch_size, lr=lr, patience=patience, seed=seed, device=device,
                            out_dir=out / "checkpoints" / name, resume=resume, progress=progress,
                            bucket_by_length=bucket_by_length)
            epochs_run = fit.epochs_run
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = evaluate_model(model, splits["test"], n_samples=n_samples, seed=seed, time_scaler=model_scaler)
        scores.update(train_seconds=round(train_seconds, 2), eval_seconds=round(time.perf_counter() - start, 2),
                      epochs=epochs_run)
        results["models"][name] = scores
        if plots:
            _plot_intensity(model, oracle, splits["test"], out / f"intensity_{name}.png",
                            f"{name} on the first test sequence of {Path(data_dir).name}", model_scaler)
        print(json.dumps({name: scores}), flush=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "results.md", results_table(results))
    return results


def results_table(results: dict[str, Any]) -> str:
    """``results.json`` as a Markdown table (models, then the oracle)."""
    def cell(value: Any, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    lines = [f"Data: {results['dataset']} ({results['num_marks']} marks; test {results['splits']['test']['sequences']}"
             f" sequences, {results['splits']['test']['events']} events; trained in the "
             f"{results['train_convention']} convention)", "",
             "| model | test ll/event (full) | test ll/event (EasyTPP) | RMSE | accuracy | train s | eval s |",
             "|---|---|---|---|---|---|---|"]
    rows = list(results["models"].items()) + ([("oracle (true process)", results["oracle"])]
                                               if "oracle" in results else [])
    for name, r in rows:
        lines.append(f"| {name} | {cell(r['test_ll_per_event'], '.4f')} | {r['test_ll_per_event_easytpp']:.4f} | "
                     f"{r['rmse']:.4f} | {r['type_accuracy']:.4f} | {cell(r.get('train_seconds'), '.1f')} | "
                     f"{cell(r.get('eval_seconds'), '.1f')} |")
    return "\n".join(lines) + "\n"
