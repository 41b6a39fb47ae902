"""Speed of multi-step generation: ``S`` continuations of ``N`` events after each of ``B`` histories.

Target (issue 7): 100 samples of 20 future events for 1,000 sequences with NHP (hidden size 32) in under 30 s on
one CPU thread. The histories are 1,000 sequences simulated from the true process of ``datasets/hawkes_5d``
(its ``truth.json``: 5 marks, window [0, 100], about 120 events each), each cut before its last ``N`` events, as
:func:`tpp.evaluation.multistep.evaluate_multistep` does. The neural models are first trained for ``--epochs``
epochs on the data set's training split (so that their intensities, hence the thinning's acceptance rates, are
those of a fitted model, not of a random one); the Hawkes model has the true parameters.

For each model: the seconds of :func:`tpp.evaluation.multistep.generate` with the model's own ``O(1)`` state
updates (the "fast" path; for THP, THP-TM and SAHP a key-value cache: one new attention column per layer and
step) on all ``B`` histories, the seconds of the generic default (re-encoding the whole
history every step) on the first ``--generic-sequences`` histories, and both per history, whose ratio is the
speed-up of the fast path; then the seconds of scoring the draws (OTD per draw, per-step RMSE and accuracy,
T-mAP) with :func:`tpp.evaluation.multistep.evaluate_multistep`'s metrics.

```bash
python benchmarks/tpp_multistep_speed.py                    # NHP, 1000 x 100 x 20, one thread
python benchmarks/tpp_multistep_speed.py --models nhp,rmtpp,intensity_free,hawkes,thp --sequences 200
```

Writes ``runs/benchmarks/tpp_multistep_speed.json`` (atomically, after every model) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info, sync

from nde.data import dataset_path
from nde.train import atomic_write_text
from tpp.data import read_easytpp_dir
from tpp.data.simulators import HawkesProcess
from tpp.evaluation.multistep import generate, point_predictions, split_histories
from tpp.evaluation.sequence_metrics import otd_batch, step_errors, tmap
from tpp.models.base import TPPModel
from tpp.models.hawkes import HawkesModel
from tpp.models.intensity_free import IntensityFree
from tpp.models.nhp import NHP
from tpp.models.rmtpp import RMTPP
from tpp.models.sahp import SAHP
from tpp.models.thp import THP
from tpp.models.time_mark import LogNormMixTimeMark, RMTPPTimeMark, THPTimeMark
from tpp.train import fit_model

#: model name -> (class, the keyword that sets its width, whether the mark embedding takes the same width)
NEURAL: dict[str, tuple[Any, str, bool]] = {
    "nhp": (NHP, "hidden_size", False), "rmtpp": (RMTPP, "hidden_size", True),
    "intensity_free": (IntensityFree, "hidden_size", True), "thp": (THP, "d_model", False),
    "sahp": (SAHP, "d_model", False), "thp_tm": (THPTimeMark, "d_model", False),
    "lnm_tm": (LogNormMixTimeMark, "hidden_size", True), "rmtpp_tm": (RMTPPTimeMark, "hidden_size", True),
}
MODELS = (*NEURAL, "hawkes")


def build_model(name: str, num_marks: int, truth: dict[str, Any], hidden: int) -> TPPModel:
    if name == "hawkes":
        p = truth["parameters"]
        return HawkesModel.from_process(HawkesProcess(p["mu"], p["alpha"], p["beta"])).float()
    if name not in NEURAL:
        raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")
    cls, width, embedding = NEURAL[name]
    return cls(num_marks, **{width: hidden}, **({"embedding_size": hidden} if embedding else {}))


def score_seconds(c: Any, future_t: np.ndarray, future_m: np.ndarray, cut: np.ndarray, num_marks: int) -> float:
    """Seconds to compute the metrics of :func:`evaluate_multistep` from the draws."""
    start = time.perf_counter()
    point = point_predictions(c, num_marks)
    step_errors(point["elapsed"], point["marks"], future_t - cut[:, None], future_m)
    S, B, N = c.gaps.shape
    mean_gap = float(np.mean(np.diff(np.concatenate([cut[:, None], future_t], axis=1), axis=1)))
    otd_batch(c.times.double().numpy().reshape(S * B, N), c.marks.numpy().reshape(S * B, N),
              np.tile(future_t, (S, 1)), np.tile(future_m, (S, 1)), num_marks, cost=mean_gap)
    tmap(cut[:, None] + point["elapsed"], point["mark_share"], future_t, future_m, cut,
         horizon=float(np.quantile(future_t[:, -1] - cut, 0.1)), deltas=[mean_gap * f for f in (0.5, 1, 2, 4)])
    return time.perf_counter() - start


def run(name: str, splits: dict[str, Any], truth: dict[str, Any], histories: Any, future: tuple[np.ndarray, ...],
        args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    num_marks = histories.num_marks
    model = build_model(name, num_marks, truth, args.hidden)
    train_seconds = 0.0
    if name != "hawkes" and args.epochs > 0:
        start = time.perf_counter()
        fit_model(model, splits["train"], splits["dev"], epochs=args.epochs, batch_size=32, lr=1e-2, seed=args.seed,
                  device=args.device, out_dir=work / name, resume=False)
        train_seconds = time.perf_counter() - start
    model.to(args.device)
    device = torch.device(args.device)
    sync(device)
    start = time.perf_counter()
    c = generate(model, histories, args.steps, args.samples, batch_size=args.batch_size, seed=args.seed)
    sync(device)
    fast = time.perf_counter() - start
    # Models without their own state updates (THP) run the generic default on both paths: no second timing.
    incremental = type(model).encode is not TPPModel.encode
    n_generic = min(args.generic_sequences, len(histories)) if incremental else 0
    generic = None
    if n_generic > 0:
        sub = histories.subset(list(range(n_generic)))
        start = time.perf_counter()
        generate(model, sub, args.steps, args.samples, batch_size=args.batch_size, seed=args.seed, incremental=False)
        sync(device)
        generic = time.perf_counter() - start
    future_t, future_m, cut = future
    metrics = score_seconds(c, future_t, future_m, cut, num_marks)
    finite = torch.isfinite(c.gaps)
    return {
        "incremental": incremental,
        "fast_seconds": round(fast, 2),
        "fast_ms_per_history": round(1000 * fast / len(histories), 3),
        "generic_seconds": None if generic is None else round(generic, 2),
        "generic_sequences": n_generic,
        "generic_ms_per_history": None if generic is None else round(1000 * generic / n_generic, 3),
        "speedup": None if generic is None else round((generic / n_generic) / (fast / len(histories)), 1),
        "metrics_seconds": round(metrics, 2),
        "train_seconds": round(train_seconds, 1),
        "mean_gap": float(c.gaps[finite].mean()),
        "ended_share": float((~finite).double().mean()),
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def table(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [f"{s['sequences']} histories x {s['samples']} samples x {s['steps']} events, hidden {s['hidden']}, "
             f"{results['torch_threads']} thread(s), {results['machine']['device']}", "",
             "| model | fast path s (all histories) | ms / history: fast / generic | speed-up | metrics s |",
             "|---|---|---|---|---|"]
    for name, r in results["models"].items():
        generic = "–" if r["generic_ms_per_history"] is None else f"{r['generic_ms_per_history']:.1f}"
        speed = "–" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        lines.append(f"| {name} | {r['fast_seconds']:.2f} | {r['fast_ms_per_history']:.2f} / {generic} | {speed} | "
                     f"{r['metrics_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="nhp")
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of the neural models (0: untrained)")
    parser.add_argument("--batch-size", type=int, default=250, help="histories per generation batch")
    parser.add_argument("--generic-sequences", type=int, default=5,
                        help="histories for the generic (re-encoding) path, timed apart (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/benchmarks/tpp_multistep_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])     # pay torch._dynamo's import outside the timings
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")

    data_dir = dataset_path("hawkes_5d")
    splits = read_easytpp_dir(data_dir)
    truth = json.loads((data_dir / "truth.json").read_text())
    p = truth["parameters"]
    seqs = HawkesProcess(p["mu"], p["alpha"], p["beta"]).simulate(args.sequences, tuple(truth["window"]), args.seed)
    histories, future_t, future_m, kept = split_histories(seqs, args.steps)
    cut = np.array([t[-1] for t in histories.times])
    results: dict[str, Any] = {
        "benchmark": "tpp_multistep_speed", "data": f"simulated from {data_dir / 'truth.json'}",
        "settings": vars(args), "machine": machine_info(torch.device(args.device)),
        "torch_threads": torch.get_num_threads(),
        "histories": {"sequences": len(histories), "left_out": int(len(seqs) - len(kept)),
                      "mean_history_events": float(histories.lengths.mean())},
        "models": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results["models"][name] = run(name, splits, truth, histories, (future_t, future_m, cut), args, Path(tmp))
            print(json.dumps({name: results["models"][name]}), flush=True)
            atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
