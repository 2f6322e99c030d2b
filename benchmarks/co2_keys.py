"""Tutorial 03's fits of the Mauna Loa CO2 record, repeated with several fitting keys.

    python benchmarks/co2_keys.py                                   # 4 families x 5 keys
    python benchmarks/co2_keys.py --families neural --keys 0 1 2

The tutorial (`tutorials/03_latent_sde_forecasting.py`, full mode) fits one `LatentSDE` per
diffusion family on the weekly record 1958-1967 with `jax.random.key(0)` and forecasts
1968-1969 with `key(1)`. One fit of one record is one draw: this script refits each
family with every key in `--keys` (the tutorial's sizes, seasons and settings; only the
fitting key changes, the forecast key stays 1) and scores each forecast as the tutorial
does (90% coverage of the held-out weeks, mean 90% width and CRPS in ppmv), so that the
tutorial can say how far its one fit is from what the model does typically.

Writes JSON: per fit, and per family the median, mean, best and worst CRPS and coverage.
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

#: The tutorial's full-mode settings.
START, CUT = 1958.0, 1968.0
SIZES = dict(latent_dim=4, context_dim=16, width=32)
FAMILIES = ("neural", "langevin", "linear-noise", "geometric")


def load():
    """`(train, future)`: the tutorial's training record and the held-out two years."""
    import bayesde as bd

    return bd.datasets.load("co2", start=START, end=CUT - 1e-6), bd.datasets.load("co2", start=CUT, end=CUT + 2.0)


def fit_and_score(train, future, family: str, key: int, steps: int = 2000, options=None) -> dict:
    import jax

    import bayesde as bd

    t0 = time.perf_counter()
    model = bd.models.LatentSDE(**{**dict(SIZES, encoder="gru", family=family, substeps=1, seasons=(1.0,)),
                                   **(options or {})})
    post = bd.fit(model, train, method="svi", num_steps=steps, learning_rate=1e-2, key=jax.random.key(key),
                  progress_bar=False, warn=False)
    pred = post.predict(future.ts, key=jax.random.key(1), num_samples=200, data=train)
    return dict(family=family, key=key, coverage_0_90=float(bd.metrics.coverage(pred, future, level=0.9)),
                crps_ppmv=float(bd.metrics.crps(pred, future)),
                width_0_90_ppmv=float(bd.metrics.interval_width(pred, future, 0.9)),
                best_step=post.info.best_step, steps_run=post.info.num_steps_run,
                seconds=round(time.perf_counter() - t0, 1))


def summarise(runs: list[dict]) -> dict:
    import numpy as np

    out = {}
    for fam in dict.fromkeys(r["family"] for r in runs):
        rs = [r for r in runs if r["family"] == fam]
        crps, cov = np.array([r["crps_ppmv"] for r in rs]), np.array([r["coverage_0_90"] for r in rs])
        out[fam] = dict(fits=len(rs), crps_median=float(np.median(crps)), crps_mean=float(crps.mean()),
                        crps_best=float(crps.min()), crps_worst=float(crps.max()),
                        coverage_mean=float(cov.mean()), coverage_worst=float(cov.min()),
                        coverage_below_0_85=int(np.sum(cov < 0.85)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--keys", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--model-options", nargs="*", default=[],
                    help="LatentSDE fields changed from the tutorial's, name=value (e.g. forecast_holdout=0.5)")
    ap.add_argument("--out", default=str(HERE / "results" / "co2_keys_cpu.json"))
    args = ap.parse_args(argv)
    from calibration import _model_options

    options = _model_options(args.model_options)
    t0, runs = time.perf_counter(), []
    train, future = load()
    for fam in args.families:
        for k in args.keys:
            runs.append(fit_and_score(train, future, fam, k, options=options))
            r = runs[-1]
            print(f"{fam:>12s} key {k}: CRPS {r['crps_ppmv']:.3f} ppmv, 90% coverage {r['coverage_0_90']:.2f}, "
                  f"width {r['width_0_90_ppmv']:.2f} ppmv (kept step {r['best_step']}, {r['seconds']:.0f} s)", flush=True)
    result = {"benchmark": "tutorial 03's CO2 fits, one per fitting key",
              "command": "python benchmarks/co2_keys.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model_options": options, "seconds": round(time.perf_counter() - t0, 1), "machine": machine(),
              "summary": summarise(runs), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
