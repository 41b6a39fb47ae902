"""TSDiff-Q forecast speed: guided sample paths per second for each sampler, on one device.

The model has the size ``benchmarks/tsdiff_forecast.py`` trains on seasonal AR (the paper's small model: context
168, prediction 24, hourly lags up to four weeks, 3 S4D blocks of width 64); its weights are random, which does
not change the cost of a sample. Each sampler forecasts ``--series`` series with ``--samples`` paths each through
:func:`nde.tsdiff.forecast` (quantile guidance, scale 4, one batch of ``series x samples`` paths), after one
untimed warm-up call; the table gives the median of ``--repeats`` timed calls.

```bash
python benchmarks/tsdiff_sampling_speed.py                  # CPU, 1 thread
python benchmarks/tsdiff_sampling_speed.py --device cuda
```
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_info

from nde.train import atomic_write_text
from nde.tsdiff import TSDiff, TSDiffConfig, forecast

LAGS = (24, 48, 72, 96, 120, 144, 168, 336, 504, 672)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samplers", default="ddpm:100,ddim:20,dpmpp:20", help="name:steps,...")
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/benchmarks/tsdiff_sampling_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = TSDiffConfig(context_length=168, prediction_length=24, lags=LAGS, freq="h")
    model = TSDiff(config).to(device).eval()
    rng = np.random.default_rng(0)
    t = np.arange(config.history_length)
    history = [10 + np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(t.size) for _ in range(args.series)]
    paths = args.series * args.samples
    results: dict[str, Any] = {"benchmark": "tsdiff_sampling_speed", "settings": vars(args),
                               "machine": machine_info(device), "torch_threads": torch.get_num_threads(),
                               "samplers": {}}
    print(f"TSDiff-Q, {args.series} series x {args.samples} paths, device {device}, "
          f"{torch.get_num_threads()} thread(s)\n")
    print("| sampler | steps | median s | paths/s |")
    print("|---|---|---|---|")
    for item in args.samplers.split(","):
        name, steps = item.split(":")

        def call(name: str = name, steps: str = steps) -> None:
            forecast(model, history, num_samples=args.samples, sampler=name, steps=int(steps), batch_size=paths,
                     device=device)

        call()
        seconds = []
        for _ in range(args.repeats):
            _sync(device)
            start = time.perf_counter()
            call()
            _sync(device)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        results["samplers"][f"{name}{steps}"] = {"seconds": seconds, "median_s": median, "paths_per_s": paths / median}
        print(f"| {name} | {steps} | {median:.3f} | {paths / median:.0f} |", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(f"\nresults in {out}")


if __name__ == "__main__":
    main()
