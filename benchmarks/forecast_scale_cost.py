"""What the latent SDE's forecast scales cost in training: SVI milliseconds per step of the
default `LatentSDE()` with the held-back score (`forecast_holdout=0.25`: the forecast of the
held-back series every step, and `SVI.keep_best`'s evaluation after every chunk) and without
it (`0`), on the quick `ou` case of the calibration panel, measured in the same run.

    python benchmarks/forecast_scale_cost.py [--out benchmarks/results/forecast_scale_cost_cpu.json]

Per-step time is the difference between a long and a short fit of the same compiled program
(so compilation cancels), divided by the difference in steps.
"""

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import jax

import bayesde as bd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/forecast_scale_cost_cpu.json")
    p.add_argument("--steps", type=int, nargs=2, default=(600, 1600), metavar=("SHORT", "LONG"))
    args = p.parse_args()
    warnings.simplefilter("ignore")
    data = bd.datasets.panel()["ou"].simulate(key=jax.random.key(0), quick=True)
    rows = {}
    for holdout in (0.0, 0.25):
        model = bd.models.LatentSDE(forecast_holdout=holdout)
        bd.fit(model, data, num_steps=100, key=jax.random.key(1), progress_bar=False, warn=False)  # compile
        seconds = {}
        for n in args.steps:
            t = time.perf_counter()
            bd.fit(model, data, num_steps=n, key=jax.random.key(1), progress_bar=False, warn=False)
            seconds[n] = time.perf_counter() - t
        short, long_ = args.steps
        rows[str(holdout)] = {"seconds": seconds, "ms_per_step": 1e3 * (seconds[long_] - seconds[short]) / (long_ - short)}
        print(f"forecast_holdout={holdout}: {rows[str(holdout)]['ms_per_step']:.2f} ms per SVI step", flush=True)
    out = {
        "benchmark": "forecast_scale_cost",
        "case": "panel 'ou', quick sizes (16 series, 30 irregular times), LatentSDE() defaults, "
                "SVI defaults (keep_best=True)",
        "rows": rows,
        "ratio_with_to_without": rows["0.25"]["ms_per_step"] / rows["0.0"]["ms_per_step"],
        "machine": {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                    "processor": platform.processor(), "jax": jax.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"ratio {out['ratio_with_to_without']:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
