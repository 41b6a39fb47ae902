"""Test accuracy of every irregular-time-series classifier on UEA Japanese Vowels with 0%, 30% and 50% dropped.

The data set ships in ``datasets/japanese_vowels/`` (640 utterances of 9 speakers, 12 channels, 7-29
frames). As in Kidger et al. (2020), a random share of the time points of every series is removed
(:func:`nde.data.drop_observations`, all channels of a time point together, seeded), which makes the
series irregularly sampled; the models see the frame index as time. The UEA split is kept: the 270
``train_*`` series are divided 85/15 (stratified, seeded) into training and validation, the 370
``test_*`` series are the test set. Each model trains with early stopping on the validation loss, and
the best epoch's weights are scored on the test set.

Every (model, share dropped) is fitted with three seeds (each redraws the dropped points, the split and
the weights); the table gives the mean and standard deviation of the test accuracy.

Run from the repository root (about 15-25 minutes on one CPU thread)::

    python benchmarks/irregular_uea.py
    python benchmarks/irregular_uea.py --models ncde,gru --drops 0,0.5 --epochs 20   # a subset

A Markdown table goes to stdout and every result, with the machine, to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info

from nde.data import JAPANESE_VOWELS_CHANNELS, drop_observations, load_japanese_vowels
from nde.irregular import IrregularDataset, get_model_class

CLASSIFIERS = ("ncde", "ode_rnn", "latent_ode", "gru")


def japanese_vowels_splits(drop: float, seed: int) -> tuple[IrregularDataset, IrregularDataset, IrregularDataset]:
    """Train / validation / test with ``drop`` of each series' time points removed."""
    frame = load_japanese_vowels()
    if drop > 0:
        frame = drop_observations(frame, drop, id_col="series_id", seed=seed)
    data = IrregularDataset.from_frame(frame, id_col="series_id", time_col="time",
                                       value_cols=list(JAPANESE_VOWELS_CHANNELS), label_col="label")
    ids = data.series_ids
    train_full = data.subset([i for i, s in enumerate(ids) if s.startswith("train_")])
    test = data.subset([i for i, s in enumerate(ids) if s.startswith("test_")])
    train, val = train_full.split((0.85, 0.15), seed=seed)
    return train, val, test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CLASSIFIERS))
    parser.add_argument("--drops", default="0,0.3,0.5")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-2,
                        help="AdamW weight decay (the 234 training series are memorised without it)")
    parser.add_argument("--seeds", default="0,1,2",
                        help="each seed redraws the dropped points, the split and the weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/benchmarks/irregular_uea.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    drops = [float(d) for d in args.drops.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for drop in drops:
        for seed in seeds:
            train, val, test = japanese_vowels_splits(drop, seed)
            for name in models:
                model = get_model_class(name)(task="classify")
                start = time.perf_counter()
                fit = model.fit(train, val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                weight_decay=args.weight_decay, patience=args.patience, seed=seed, device="cpu")
                seconds = time.perf_counter() - start
                scores = model.predict(test).metrics()
                row = {"model": name, "dropped": drop, "seed": seed, **scores, "best_epoch": fit.best_epoch,
                       "epochs_run": fit.epochs_run, "train_seconds": round(seconds, 1),
                       "seconds_per_epoch": round(seconds / fit.epochs_run, 2),
                       "n_train": len(train), "n_val": len(val), "n_test": len(test)}
                results.append(row)
                print(json.dumps(row), flush=True)

    def summary(name: str, drop: float, key: str) -> tuple[float, float]:
        values = [r[key] for r in results if r["model"] == name and r["dropped"] == drop]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    print(f"\nTest accuracy, mean ± standard deviation over seeds {seeds}:\n")
    print("| model | " + " | ".join(f"{d:.0%} dropped" for d in drops) + " | train s per fit |")
    print("|---|" + "---|" * len(drops) + "---|")
    for name in models:
        cells = [summary(name, d, "accuracy") for d in drops]
        seconds = statistics.mean(r["train_seconds"] for r in results if r["model"] == name)
        print(f"| {name} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cells) + f" | {seconds:.0f} |")
    if 0.0 in drops and 0.5 in drops:
        print("\n| model | mean accuracy change 0% -> 50% dropped (points) |\n|---|---|")
        for name in models:
            change = summary(name, 0.5, "accuracy")[0] - summary(name, 0.0, "accuracy")[0]
            print(f"| {name} | {100 * change:+.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": machine_info(torch.device("cpu")),
                               "settings": vars(args), "results": results}, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
