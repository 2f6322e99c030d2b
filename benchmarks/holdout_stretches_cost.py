"""What a single record's earlier held-back stretches cost a fit.

    python benchmarks/holdout_stretches_cost.py                 # El Nino, 300 steps, 2 rounds, S = 4
    python benchmarks/holdout_stretches_cost.py --series sunspots --steps 200 --stretches 4

`LatentSDE(forecast_stretches=S)` forecasts `S - 1` earlier stretches of a single record
beside its tail on every SVI step, each from a posterior over the window before it. This
script fits the same record with `forecast_stretches=1` (the tail alone, the default) and
`S`, alternating in one process so that both see the same machine load, `--rounds` times
each (the first round of each includes compiling, so it is reported apart), and writes the
seconds of a fit and their ratio. `keep_best=False`, so that both run every step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("BAYESDE_FAST", "0")

from _machine import machine  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", default="elnino")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--stretches", type=int, default=4)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import jax
    import numpy as np

    import bayesde as bd

    data = bd.datasets.load(args.series)
    settings = {"tail alone (forecast_stretches=1)": 1, f"forecast_stretches={args.stretches}": args.stretches}
    seconds = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, stretches in settings.items():
            tic = time.perf_counter()
            post = bd.fit(bd.models.LatentSDE(forecast_stretches=stretches), data, "svi", num_steps=args.steps,
                          keep_best=False, key=jax.random.key(0), progress_bar=False, warn=False)
            np.asarray(post.loss)  # wait for the device
            seconds[name].append(time.perf_counter() - tic)
            print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
    later = {name: float(np.mean(s[1:])) if len(s) > 1 else None for name, s in seconds.items()}
    base, new = (later[name] for name in settings)
    out = {
        "benchmark": "cost of a single record's held-back stretches per SVI fit",
        "command": "python benchmarks/holdout_stretches_cost.py " + " ".join(sys.argv[1:]),
        "series": args.series, "rows": int(data.ts.shape[1]), "steps": args.steps, "machine": machine(),
        "seconds_first_round": {name: round(s[0], 2) for name, s in seconds.items()},
        "seconds_later_rounds": {name: (None if v is None else round(v, 2)) for name, v in later.items()},
        "ratio_over_tail_alone": None if base is None else round(new / base, 3),
    }
    path = Path(args.out or HERE / "results" / f"holdout_stretches_cost_{args.series}_cpu.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("seconds_later_rounds", "ratio_over_tail_alone")}), f"-> {path}")


if __name__ == "__main__":
    main()
