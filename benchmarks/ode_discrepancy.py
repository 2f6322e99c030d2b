"""Does an Ornstein–Uhlenbeck discrepancy make a mechanistic ODE's forecasts honest?

A Lotka–Volterra ODE fitted by NUTS explains the wiggles of a noisy cycle as independent
observation noise, so its forecast bands do not widen over the horizon. `ODE(discrepancy="ou")`
adds an OU process to the path (integrated out by a Kalman filter). This script fits the
same mechanistic model with and without it, by NUTS, on

- `hare_lynx`: the Hudson Bay pelts, history 1900–1915, scored on 1916–1920 (the demo's
  split and model, `bayesde demo`), one fit per key;
- `lv_sde`: the calibration panel's Lotka–Volterra process with process noise (the
  panel's data, split and scoring, `benchmarks/calibration.py`), one data set per seed,
  LogNormal priors on the rates centred a factor `e^{0.5}` away from the truth with
  log-sd 1, as a user who knows the mechanism but not the rates would set them.

    python benchmarks/ode_discrepancy.py --case hare_lynx        # ~10 min on 2 cores
    python benchmarks/ode_discrepancy.py --case lv_sde --seeds 3

Writes `benchmarks/results/ode_discrepancy_<case>_cpu.json`: per fit and variant the 50% and
90% coverage, CRPS (for `lv_sde` also over the climatology's), mean 90% width, the NUTS
diagnostics, the posterior medians of `sigma` and the discrepancy's `ρ`, `ℓ`, and seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import calibration as C  # noqa: E402
from _machine import machine  # noqa: E402

import bayesde as bd  # noqa: E402

VARIANTS = {"independent noise": None, "OU discrepancy": "ou"}


def _medians(post):
    out = {}
    for k in ("sigma", "discrepancy_sd", "discrepancy_time"):
        if k in post.samples:
            x = np.asarray(post.samples[k])
            out[k] = np.round(np.median(x.reshape(-1, *x.shape[2:]), 0), 4).tolist()
    return out


def _scores(pred, hist, fut, sd):
    """Coverage at 50% and 90%, mean 90% width and CRPS: in data units for the real series,
    in units of the history's sd with the climatology's CRPS beside it for the panel case
    (the panel's own scoring)."""
    if sd is None:
        q = np.asarray(pred.quantiles([0.05, 0.95]))
        return dict(coverage50=round(float(bd.metrics.coverage(pred, fut, 0.5)), 4),
                    coverage90=round(float(bd.metrics.coverage(pred, fut, 0.9)), 4),
                    width90=round(float(np.mean((q[1] - q[0])[np.asarray(fut.mask)])), 4),
                    crps=round(float(bd.metrics.crps(pred, fut)), 4))
    nan = lambda x: np.where(x.mask, x.ys, np.nan)  # noqa: E731
    rows = {r["level"]: r for r in C._score(np.asarray(pred.samples), nan(fut), nan(hist), sd)}
    return dict(coverage50=round(rows[0.5]["coverage"], 4), coverage90=round(rows[0.9]["coverage"], 4),
                width90=round(rows[0.9]["width"], 4), crps=round(rows[0.9]["crps"], 4),
                crps_climatology=round(rows[0.9]["crps_climatology"], 4))


def _case(name, seed):
    """`(history, future, model builder, scale sd or None, key)` of one fit."""
    if name == "hare_lynx":
        data = bd.datasets.load("hare_lynx")
        hist, fut = data.split(15.5)  # the demo's history 1900–1915 and held-out 1916–1920
        pri = bd.models.lotka_volterra_priors(beta=0.025, delta=0.025)  # the CLI's ode-lv model
        return hist, fut, pri, None, jax.random.key(seed)
    case = bd.datasets.panel()["lv_sde"]
    k_data = C.panel_data_key(jax.random.key(0), case.name, seed)
    data = case.simulate(key=k_data, missing=C.panel_missing(seed), quick=False)
    hist, fut, sd = C.panel_split(data)
    truth = {k: float(data.truth[k]) for k in ("alpha", "beta", "gamma", "delta")}
    # a factor e^0.5 off, alternately above and below the truth, log-sd 1
    off = dict(zip(truth, (0.5, -0.5, 0.5, -0.5)))
    pri = bd.models.lotka_volterra_priors(**{k: v * np.exp(off[k]) for k, v in truth.items()}, scale=1.0)
    return hist, fut, pri, sd, jax.random.fold_in(k_data, 99)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("hare_lynx", "lv_sde"), default="hare_lynx")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--resume", action="store_true", help="keep the fits of an earlier run's JSON")
    args = p.parse_args()
    out = Path(args.out) / f"ode_discrepancy_{args.case}_cpu.json"
    rows = json.loads(out.read_text())["rows"] if args.resume and out.exists() else []
    for seed in range(args.seeds):
        hist, fut, priors, sd, key = _case(args.case, seed)
        k_fit, k_pred = jax.random.split(key)
        for label, disc in VARIANTS.items():
            if any(r["seed"] == seed and r["variant"] == label for r in rows):
                continue
            t0 = time.perf_counter()
            model = bd.models.ODE(bd.models.lotka_volterra_field, priors, observation="lognormal", discrepancy=disc)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                post = bd.fit(model, hist, method="nuts", num_warmup=args.warmup, num_samples=args.samples,
                              num_chains=2, key=k_fit, progress_bar=False, warn=False)
            pred = post.predict(fut.ts, data=hist, key=k_pred)
            d = post.diagnostics()
            row = dict(case=args.case, seed=seed, variant=label, discrepancy=disc, **_scores(pred, hist, fut, sd),
                       divergences=int(d["divergences"]), max_rhat=round(float(d["max_rhat"]), 4),
                       min_ess=round(float(d["min_ess"]), 1), medians=_medians(post),
                       seconds=round(time.perf_counter() - t0, 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write(out, args, rows)  # after every fit: a long run stopped early keeps what it measured
    print(json.dumps(_write(out, args, rows), indent=1))
    print(f"wrote {out}")


def _write(out, args, rows):
    """The JSON of the fits so far, with the mean and worst case per variant; returns the summary."""
    summary = {}
    for label in VARIANTS:
        r = [x for x in rows if x["variant"] == label]
        if r:
            summary[label] = {k: dict(mean=round(float(np.mean([x[k] for x in r])), 4),
                                      worst=round(float(min(x[k] for x in r) if k != "crps" else max(x[k] for x in r)), 4))
                              for k in ("coverage50", "coverage90", "crps")}
    out.write_text(json.dumps(dict(benchmark="ode_discrepancy", case=args.case, seeds=args.seeds,
                                   warmup=args.warmup, samples=args.samples, machine=machine(),
                                   fits=len(rows), summary=summary, rows=rows), indent=1))
    return summary


if __name__ == "__main__":
    main()
