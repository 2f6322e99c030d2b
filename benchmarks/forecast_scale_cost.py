"""What a `LatentSDE` field costs in training: SVI milliseconds per step of the default
`LatentSDE()` with the field at two values, on the quick `ou` case of the calibration panel,
measured in the same run. By default the forecast scales: the held-back score
(`forecast_holdout=0.25`: the forecast of the held-back series every step, and
`SVI.keep_best`'s evaluation after every chunk) against none (`0`).

    python benchmarks/forecast_scale_cost.py [--out benchmarks/results/forecast_scale_cost_cpu.json]
    python benchmarks/forecast_scale_cost.py --field scheme --values euler heun \
        --out benchmarks/results/scheme_cost_cpu.json

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
    p.add_argument("--field", default="forecast_holdout", help="the LatentSDE field compared")
    p.add_argument("--values", nargs=2, default=("0", "0.25"), metavar=("BASELINE", "OTHER"),
                   help="its two values (numbers are read as numbers); the ratio is OTHER over BASELINE")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    data = bd.datasets.panel()["ou"].simulate(key=jax.random.key(0), quick=True)
    rows = {}
    values = [_value(v) for v in args.values]
    for value in values:
        model = bd.models.LatentSDE(**{args.field: value})
        bd.fit(model, data, num_steps=100, key=jax.random.key(1), progress_bar=False, warn=False)  # compile
        seconds = {}
        for n in args.steps:
            t = time.perf_counter()
            bd.fit(model, data, num_steps=n, key=jax.random.key(1), progress_bar=False, warn=False)
            seconds[n] = time.perf_counter() - t
        short, long_ = args.steps
        rows[str(value)] = {"seconds": seconds, "ms_per_step": 1e3 * (seconds[long_] - seconds[short]) / (long_ - short)}
        print(f"{args.field}={value}: {rows[str(value)]['ms_per_step']:.2f} ms per SVI step", flush=True)
    base, other = (rows[str(v)]["ms_per_step"] for v in values)
    out = {
        "benchmark": "forecast_scale_cost",
        "case": "panel 'ou', quick sizes (16 series, 30 irregular times), LatentSDE() defaults, "
                "SVI defaults (keep_best=True)",
        "field": args.field,
        "rows": rows,
        "values": values,
        "ratio_other_to_baseline": other / base,
        "machine": {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                    "processor": platform.processor(), "jax": jax.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"ratio {other / base:.2f}; wrote {args.out}")


def _value(text):
    """A field's value from the command line: a number where it reads as one, else the text."""
    try:
        return float(text)
    except ValueError:
        return text


if __name__ == "__main__":
    main()
