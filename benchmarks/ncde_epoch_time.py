"""Training time per epoch of the library's Neural CDE classifier against a hand-written torchcde loop.

Same data (UEA Japanese Vowels training series, ``datasets/japanese_vowels/``, optionally with a share of
the time points dropped), same network and initial weights, same solver (RK4, one step per observation),
same optimiser (AdamW, gradient clipping at norm 1), same batch size:

* **library**: ``NeuralCDEModel(task="classify").fit(train, epochs=E)``; the epoch time is the training
  loop's own ``epoch_time_s`` (no validation set, so an epoch is training only);
* **hand-written**: the loop a torchcde user writes (Kidger's examples): coefficients computed once,
  shuffled index batches, ``torchcde.cdeint`` with ``method="rk4", options={"step_size": 1}``, read at
  every knot and gathered at each series' last observation, LayerNorm, linear readout, cross-entropy,
  backward, clip, step.

Both sides must first give the same loss on one batch (checked; exit status 1 otherwise; their gradients
differ slightly because torchcde's are off, see docs/benchmarks.md);
then rounds alternate library / hand-written, each from the same initial weights and batch order, and the
table gives the median epoch times.

    python benchmarks/ncde_epoch_time.py            # 5 rounds of 2 epochs each side, ~3 min on one thread
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchcde
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info
from irregular_uea import japanese_vowels_splits

from nde.irregular import NeuralCDEModel, Standardizer


def hand_loss(net: nn.Module, inputs: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the series ``idx``, written directly against torchcde."""
    cde = net.cde
    coeffs, lengths, labels = inputs["coeffs"], inputs["lengths"], inputs["labels"]
    knots = torch.arange(inputs["times"].shape[1], dtype=coeffs.dtype)
    path = torchcde.CubicSpline(coeffs[idx])
    z0 = cde.initial(path.evaluate(path.interval[0]))
    states = torchcde.cdeint(X=path, func=cde.vector_field, z0=z0, t=knots, method="rk4", options={"step_size": 1.0})
    last = (lengths[idx] - 1).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
    logits = net.readout(net.norm(states.gather(1, last).squeeze(1)))
    return nn.functional.cross_entropy(logits, labels[idx])


def hand_epoch(net: nn.Module, inputs: dict[str, torch.Tensor], optimiser: torch.optim.Optimizer, batch_size: int,
               generator: torch.Generator) -> float:
    """One epoch written directly against torchcde; returns the mean of the per-step losses."""
    n_series = len(inputs["labels"])
    # The order a shuffling DataLoader with this generator gives, as the library's loop uses: its iterator
    # first draws a base seed from the generator, then RandomSampler draws the permutation.
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.tensor(list(torch.utils.data.RandomSampler(range(n_series), generator=generator)))
    total, steps = 0.0, 0
    for start in range(0, n_series, batch_size):
        loss = hand_loss(net, inputs, order[start:start + batch_size])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        total += float(loss.detach())
        steps += 1
    return total / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drop", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per side per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/benchmarks/ncde_epoch_time.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_data, _, _ = japanese_vowels_splits(args.drop, seed=0)
    model = NeuralCDEModel(task="classify")
    model.scaler = Standardizer().fit(train_data)
    model.data_stats = {"mean_observations": float(train_data.lengths.double().mean())}  # as fit() sets it
    torch.manual_seed(0)
    model._setup(train_data)
    inputs = model.prepare(train_data)
    initial = copy.deepcopy(model.net.state_dict())

    # Same computation: the loss of one batch must agree to float precision. The gradients do not quite:
    # torchcde.cdeint's fixed-step RK4 gradient differs from central finite differences by up to ~1% (seen
    # in float64), while the library's matches them (tests/nde/solvers); the difference is reported.
    net = model.net
    idx = torch.arange(args.batch_size)
    batch = {k: v[idx] for k, v in inputs.items()}
    lib_loss = model._loss(net, batch)
    lib_grads = torch.autograd.grad(lib_loss, list(net.parameters()))
    hand = hand_loss(net, inputs, idx)
    hand_grads = torch.autograd.grad(hand, list(net.parameters()))
    grad_error = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                     for a, b in zip(lib_grads, hand_grads, strict=True))
    print(f"one batch: loss library {float(lib_loss):.7f}, hand-written {float(hand):.7f}; "
          f"largest relative gradient difference {grad_error:.2e}")

    hand_net = copy.deepcopy(net)
    lib_times, hand_times = [], []
    for r in range(args.rounds):
        model.net.load_state_dict(initial)
        fit = model.fit(train_data, None, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=r,
                        device="cpu")
        lib_times += [h["epoch_time_s"] for h in fit.history]
        hand_net.load_state_dict(initial)
        hand_opt = torch.optim.AdamW(hand_net.parameters(), lr=args.lr, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(r)
        for _ in range(args.epochs):
            start = time.perf_counter()
            hand_epoch(hand_net, inputs, hand_opt, args.batch_size, gen)
            hand_times.append(time.perf_counter() - start)
    lib, hand = statistics.median(lib_times), statistics.median(hand_times)
    print("\n| loop | median s / epoch | epochs timed |\n|---|---|---|")
    print(f"| library `NeuralCDEModel.fit` | {lib:.3f} | {len(lib_times)} |")
    print(f"| hand-written torchcde | {hand:.3f} | {len(hand_times)} |")
    print(f"\nlibrary / hand-written = {lib / hand:.3f} (target <= 1.10)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "machine": machine_info(torch.device("cpu")),
        "settings": vars(args), "n_train": len(train_data), "one_batch_loss": [float(lib_loss), float(hand)],
        "max_relative_gradient_difference": grad_error,
        "library_epoch_s": lib_times, "hand_epoch_s": hand_times, "ratio": lib / hand}, indent=2) + "\n")
    print(f"written to {out}")
    return 0 if abs(float(lib_loss) - float(hand)) < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
