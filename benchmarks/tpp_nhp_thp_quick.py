"""NHP and THP on the shipped 5-mark Hawkes data set, next to the oracle (the true process's log-likelihood).

Each model is fitted with :func:`tpp.train.fit_model` (AdamW, batch 32, early stopping on the dev split's
log-likelihood per event) in the chosen training convention, then scored on the test split in both
conventions (EasyTPP's: events 2..n, compensator from the first to the last event; full: every event,
compensator over the window [0, 100]). The table puts the per-event test log-likelihood next to the oracle's
from ``truth.json`` (target: within 0.05 nats/event), with the epochs run and the wall time on the chosen
number of CPU threads. It also measures the error of the 8-node Gauss–Legendre compensator against a 64-node
rule on the fitted models, and the time of ``sample_next`` on the test split.

```bash
python benchmarks/tpp_nhp_thp_quick.py                  # both models, ~2 min on 1 CPU thread
python benchmarks/tpp_nhp_thp_quick.py --models thp --epochs 5
```

Writes ``runs/benchmarks/tpp_nhp_thp_quick.json`` (atomically) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info

from nde.data import dataset_path
from tpp.data import read_easytpp_dir
from tpp.data.batch import batches
from tpp.models.nhp import NHP
from tpp.models.thp import THP
from tpp.train import evaluate_log_likelihood, fit_model

MODELS = {
    "nhp": lambda k, a: NHP(k, hidden_size=a.size),
    "thp": lambda k, a: THP(k, d_model=a.size, num_heads=a.thp_heads, num_layers=a.thp_layers),
}


def quadrature_error(model: Any, seqs: Any, fine_nodes: int = 64) -> dict[str, float]:
    """Compensator of the test split with the model's rule and with ``fine_nodes``, full convention, in float64
    (a float64 copy of the model, so that float32 rounding does not pass for quadrature error)."""
    model = copy.deepcopy(model).double()
    coarse = evaluate_log_likelihood(model, seqs, "full", dtype=torch.float64)
    saved = model.n_nodes
    model.n_nodes = fine_nodes
    fine = evaluate_log_likelihood(model, seqs, "full", dtype=torch.float64)
    diff = (coarse.compensator - fine.compensator).abs()
    return {"nodes": saved, "fine_nodes": fine_nodes,
            "max_abs_error_per_sequence": float(diff.max()),
            "max_relative_error_per_sequence": float((diff / fine.compensator).max()),
            "abs_error_per_event": float(diff.sum() / fine.num_scored.sum())}


def run_one(name: str, size: int, splits: dict[str, Any], truth: dict[str, Any], args: argparse.Namespace
            ) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    k = splits["train"].num_marks
    model = MODELS[name](k, args)
    t0 = time.perf_counter()
    result = fit_model(model, splits["train"], splits["dev"], convention=args.convention, epochs=args.epochs,
                       batch_size=32, lr=args.lr, patience=args.patience, seed=args.seed, device="cpu")
    fit_s = time.perf_counter() - t0
    test = splits["test"]
    row: dict[str, Any] = {"model": name, "size": size, "train_convention": args.convention, "lr": args.lr,
                           "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                           "stopped_early": result.stopped_early, "fit_seconds": fit_s,
                           "seconds_per_epoch": fit_s / max(result.epochs_run, 1),
                           "parameters": sum(p.numel() for p in model.parameters())}
    for conv, key in (("easytpp", "ll_per_event_easytpp"), ("full", "ll_per_event")):
        ll = float(evaluate_log_likelihood(model, test, conv, dtype=torch.float64).per_event())
        oracle = truth["oracle"]["test"][key]
        row[f"test_ll_{conv}"] = ll
        row[f"oracle_{conv}"] = oracle
        row[f"gap_{conv}"] = oracle - ll
    row["quadrature"] = quadrature_error(model, test)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    draws = 0
    for b in batches(test, 64):
        model.sample_next(b, args.samples)
        draws += args.samples * b.num_events
    row["sample_next_seconds"] = time.perf_counter() - t0
    row["sample_next_draws"] = draws
    row["history"] = result.history
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="nhp,thp")
    p.add_argument("--size", type=int, default=32, help="NHP hidden size / THP d_model")
    p.add_argument("--thp-heads", type=int, default=2)
    p.add_argument("--thp-layers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--convention", choices=["easytpp", "full"], default="easytpp", help="training convention")
    p.add_argument("--samples", type=int, default=10, help="draws per event in the sample_next timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/benchmarks/tpp_nhp_thp_quick.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")

    directory = dataset_path("hawkes_5d")
    truth = json.loads((directory / "truth.json").read_text())
    splits = read_easytpp_dir(directory)
    for seqs in splits.values():
        seqs.windows = np.tile(np.asarray(truth["window"], dtype=np.float64), (len(seqs), 1))

    rows = [run_one(name, args.size, splits, truth, args) for name in names]

    print(f"\nhawkes_5d test split ({truth['splits']['test']['events']} events), trained in the {args.convention} "
          f"convention, {args.threads} CPU thread(s); log-likelihood per event (nats), oracle = true process\n")
    print("| model | size | epochs (best) | fit s | s/epoch | EasyTPP ll | oracle | gap | full ll | oracle | gap "
          "| GL8 vs GL64: comp. err/event, max rel./seq | sample_next s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        quad = r["quadrature"]
        print(f"| {r['model']} | {r['size']} | {r['epochs_run']} ({r['best_epoch'] + 1}) | {r['fit_seconds']:.0f} | "
              f"{r['seconds_per_epoch']:.1f} | {r['test_ll_easytpp']:.4f} | {r['oracle_easytpp']:.4f} | "
              f"{r['gap_easytpp']:+.4f} | {r['test_ll_full']:.4f} | {r['oracle_full']:.4f} | {r['gap_full']:+.4f} | "
              f"{quad['abs_error_per_event']:.1e}, {quad['max_relative_error_per_sequence']:.1e} | "
              f"{r['sample_next_seconds']:.2f} |")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "tpp_nhp_thp_quick", "dataset": "hawkes_5d", "args": vars(args),
               "machine": machine_info(torch.device("cpu")), "results": rows}
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as fh:
        json.dump(payload, fh, indent=1)
        tmp = fh.name
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
