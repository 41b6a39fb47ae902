"""RMTPP and IntensityFree (LogNormMix) on the shipped 5-mark Hawkes data, next to the oracle.

Data: ``datasets/hawkes_5d`` (400 / 50 / 50 sequences on the window [0, 100], ~120 events each; the oracle is
the true Hawkes process, its log-likelihood per event in ``truth.json``). Times are used as they are (mean
gap 0.83), so every log-likelihood is in the data's unit and comparable with the oracle's.

Each model is fitted with :func:`tpp.train.fit_model` (AdamW, batch 32, lr 1e-2, no weight decay, early
stopping on the dev log-likelihood per event with patience 3, at most 20 epochs, CPU, 1 thread), once per
training convention (``--train-conventions``), and its test log-likelihood per event is reported in both
conventions. Trained in EasyTPP's convention, a model never sees the stretch before the first event (its
initial state gets no gradient), which the full convention scores: training in the full convention fixes
that. IntensityFree's log-gap statistics come from the training split (``set_gap_statistics``).

Run from the repository root::

    python benchmarks/tpp_neural_quick.py            # ~1-3 min on 1 CPU thread
    python benchmarks/tpp_neural_quick.py --epochs 2 # smoke run

A Markdown table goes to stdout, every number (with the machine's description) to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import machine_info

from nde.data import dataset_path
from nde.train import atomic_write_text
from tpp.data import read_easytpp_dir
from tpp.models.intensity_free import IntensityFree
from tpp.models.rmtpp import RMTPP
from tpp.train import evaluate_log_likelihood, fit_model

MODELS = {"rmtpp": RMTPP, "intensity_free": IntensityFree}


def run(name: str, train_convention: str, splits: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = MODELS[name](splits["train"].num_marks, hidden_size=args.hidden_size)
    if isinstance(model, IntensityFree):
        model.set_gap_statistics(splits["train"])
    start = time.perf_counter()
    result = fit_model(model, splits["train"], splits["dev"], convention=train_convention, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, patience=args.patience, seed=args.seed, device="cpu",
                       progress=False)
    fit_s = time.perf_counter() - start
    test = {conv: float(evaluate_log_likelihood(model, splits["test"], conv).per_event())
            for conv in ("easytpp", "full")}
    return {"model": name, "train_convention": train_convention, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "stopped_early": result.stopped_early, "fit_s": fit_s,
            "s_per_epoch": fit_s / max(result.epochs_run, 1), "best_dev_ll_per_event": result.best_metric,
            "test_ll_per_event_easytpp": test["easytpp"], "test_ll_per_event_full": test["full"],
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "w": float(model.w) if isinstance(model, RMTPP) else None,
            "history": result.history}


def table(rows: list[dict[str, Any]], oracle: dict[str, float]) -> str:
    lines = ["| model | trained in | epochs (best) | fit s | s/epoch | test ll/event EasyTPP | gap to oracle "
             "| test ll/event full | gap to oracle |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, f = r["test_ll_per_event_easytpp"], r["test_ll_per_event_full"]
        lines.append(f"| {r['model']} | {r['train_convention']} | {r['epochs_run']} ({r['best_epoch'] + 1}) | "
                     f"{r['fit_s']:.1f} | {r['s_per_epoch']:.2f} | {e:.4f} | {e - oracle['easytpp']:+.4f} | "
                     f"{f:.4f} | {f - oracle['full']:+.4f} |")
    lines.append(f"| oracle (true Hawkes) | | | | | {oracle['easytpp']:.4f} | 0 | {oracle['full']:.4f} | 0 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--train-conventions", nargs="+", default=["easytpp", "full"], choices=["easytpp", "full"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/tpp_neural_quick.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = dataset_path("hawkes_5d")
    truth = json.loads((root / "truth.json").read_text())
    splits = read_easytpp_dir(root)
    for seqs in splits.values():
        seqs.windows = np.tile(truth["window"], (len(seqs), 1))
    test_oracle = truth["oracle"]["test"]
    oracle = {"easytpp": test_oracle["ll_per_event_easytpp"], "full": test_oracle["ll_per_event"]}

    rows = []
    for name in args.models:
        for conv in args.train_conventions:
            rows.append(run(name, conv, splits, args))
            r = rows[-1]
            print(f"{name} trained in {conv}: {r['epochs_run']} epochs, {r['fit_s']:.1f} s, test ll/event "
                  f"{r['test_ll_per_event_easytpp']:.4f} (EasyTPP), {r['test_ll_per_event_full']:.4f} (full)",
                  flush=True)
    print()
    print(table(rows, oracle))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"date": datetime.date.today().isoformat(), "machine": machine_info(torch.device("cpu")),
              "data": "datasets/hawkes_5d", "oracle_test_ll_per_event": oracle,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": rows}
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
