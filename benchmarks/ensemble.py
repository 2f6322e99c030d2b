"""Deep ensemble vs the SVI point estimate: 90% coverage of a held-out forecast.

    python benchmarks/ensemble.py                 # 2 seeds, a few minutes on a laptop CPU
    python benchmarks/ensemble.py --fast          # tiny sizes, a smoke run

For each seed: an Ornstein–Uhlenbeck panel (`bd.datasets.ornstein_uhlenbeck`,
`--series` series x `--times` irregular times on [0, 10]); fit `bd.models.LatentSDE()`
at its defaults on the first three quarters of the time range with `method="svi"` (the
networks are one point estimate) and with `bd.Ensemble(num_members=--members)` (the same
SVI fit from `--members` initialisations, trained side by side), both for `--steps`
steps at the engines' default learning rate; then forecast the last quarter of every
series and score the 90% interval coverage, its width and the CRPS against the held-out
observations. Both fits draw the same total number of predictive samples. Writes
`benchmarks/results/ensemble_cpu.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import bayesde as bd


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--series", type=int, default=16)
    p.add_argument("--times", type=int, default=40)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--draws", type=int, default=500, help="predictive draws of each method in all")
    p.add_argument("--fast", action="store_true", help="tiny sizes: a smoke run, numbers mean nothing")
    p.add_argument("--out", default="benchmarks/results/ensemble_cpu.json")
    return p.parse_args()


def _score(post, fut, key, num_samples):
    pred = post.predict(fut.ts, key=key, num_samples=num_samples)
    return {
        "coverage_90": float(bd.metrics.coverage(pred, fut, level=0.9)),
        "width_90": float(bd.metrics.interval_width(pred, fut, level=0.9)),
        "crps": float(bd.metrics.crps(pred, fut)),
    }


def run_seed(seed, args):
    key = jax.random.key(seed)
    k_data, k_fit, k_pred = jax.random.split(key, 3)
    t_max = 10.0
    data = bd.datasets.ornstein_uhlenbeck(n_series=args.series, n_times=args.times, t_max=t_max, key=k_data)
    hist, fut = data.split(0.75 * t_max)
    model = bd.models.LatentSDE()
    out = {}
    methods = {
        "svi": bd.SVI(num_steps=args.steps, num_samples=args.draws),
        f"ensemble_{args.members}": bd.Ensemble(num_members=args.members, num_steps=args.steps,
                                                num_samples=max(1, args.draws // args.members)),
    }
    for name, method in methods.items():
        t0 = time.perf_counter()
        post = bd.fit(model, hist, method=method, key=k_fit, progress_bar=False, warn=False)
        seconds = time.perf_counter() - t0
        row = _score(post, fut, k_pred, args.draws)
        row["fit_seconds"] = seconds
        row["final_loss"] = float(np.mean(post.loss[-max(1, len(post.loss) // 20):]))
        if name != "svi":
            row["member_final_loss"] = [float(x) for x in post.info.member_final_loss]
            row["failed_members"] = list(post.info.failed_members)
        out[name] = row
        print(json.dumps({"seed": seed, "method": name, **row}), flush=True)
    return out


def main():
    args = _parse()
    if args.fast:
        args.series, args.times, args.steps, args.members, args.draws, args.seeds = 4, 16, 20, 2, 20, 1
    runs = {str(s): run_seed(s, args) for s in range(args.seeds)}
    names = list(next(iter(runs.values())))
    mean = {n: {m: float(np.mean([runs[s][n][m] for s in runs])) for m in ("coverage_90", "width_90", "crps",
                                                                          "fit_seconds")} for n in names}
    cmd = "python benchmarks/ensemble.py" + (" --fast" if args.fast else
                                             f" --seeds {args.seeds} --series {args.series} --times {args.times} "
                                             f"--steps {args.steps} --members {args.members} --draws {args.draws}")
    result = {
        "command": cmd,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "config": {"data": "ornstein_uhlenbeck(theta=1, sigma=0.5, noise_std=0.05)", "t_max": 10.0,
                   "held_out": "t > 7.5 (last quarter)", "model": "LatentSDE() defaults",
                   "series": args.series, "times": args.times, "steps": args.steps,
                   "members": args.members, "draws": args.draws},
        "runs": runs,
        "mean_over_seeds": mean,
    }
    print(json.dumps(mean, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
