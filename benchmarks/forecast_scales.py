"""Which of the latent SDE's two forecast scales carries the spread on the panel?

`LatentSDE` widens its forecasts by two numbers fitted on held-back tails (never by the
ELBO): `κ`, a factor on the prior SDE's diffusion over the horizon, and `ρ`, the sd of a
random-walk discrepancy added to the decoded path (`bd.models.LatentSDE`'s docstring).
This script refits a panel configuration exactly as `calibration.py --panel` does (same
data, keys, sizes and scoring; its `fitted` rows equal that CSV's) and, from the same
fit, forecasts again with each scale switched off (`κ = 1`; `ρ = 0`), so the coverage a
scale buys is read off one fit:

    python benchmarks/calibration.py --panel ...   # the panel itself
    python benchmarks/forecast_scales.py --processes regime,ou --seeds 0,1,2 \
        --out benchmarks/results/forecast_scales_a_cpu.jsonl

Writes one JSON line per fit (appends; run halves of the panel side by side): the fitted
`kappa`, `rho`, the kept step, and per variant the 50/80/90/95% coverage, the CRPS and
the climatology's CRPS (training sds).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bayesde as bd  # noqa: E402
from calibration import (  # noqa: E402
    PANEL_MODELS, _model_options, _score, panel_data_key, panel_fit_keys, panel_missing, panel_split,
)

RESULTS = Path(__file__).resolve().parent / "results"
SCALE, DISCREPANCY = "latent_sde.forecast_log_scale", "latent_sde.forecast_log_discrepancy"


def variants(params) -> dict:
    """The parameter changes of each variant: as fitted, `κ = 1`, `ρ = 0`."""
    rho_off = jnp.full_like(jnp.asarray(params[DISCREPANCY]), -jnp.inf)
    return {"fitted": {}, "kappa=1": {SCALE: jnp.zeros(())}, "rho=0": {DISCREPANCY: rho_off}}


def one_fit(process, model_name, seed, model_options, key, num_pred=500):
    """Fit `model_name` on the panel's `process` data set `seed` as the panel does and
    score its forecast with the fitted scales and with each switched off."""
    case = bd.datasets.panel()[process]
    spec = PANEL_MODELS[model_name]
    t0 = time.perf_counter()
    k_data = panel_data_key(key, case.name, seed)
    k_fit, k_pred = panel_fit_keys(k_data, model_name)
    data = case.simulate(key=k_data, missing=panel_missing(seed), quick=False)
    hist, fut, sd = panel_split(data)
    model = dataclasses.replace(spec["build"](data.dim), **model_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bd.fit(model, hist, key=k_fit, progress_bar=False, warn=False)
    y = np.where(fut.mask, fut.ys, np.nan)
    history = np.where(hist.mask, hist.ys, np.nan)
    rec = dict(process=process, model=model_name, seed=seed, model_options=model_options,
               kappa=float(np.exp(post.params[SCALE])), rho=np.exp(np.asarray(post.params[DISCREPANCY])).tolist(),
               best_step=post.info.best_step, seconds=round(time.perf_counter() - t0, 1))
    for name, change in variants(post.params).items():
        p = copy.copy(post)  # a new posterior: its predictive is compiled with these parameters
        p.params = dict(post.params, **change)
        rows = _score(p.predict(fut.ts, key=k_pred, num_samples=num_pred).samples, y, history, sd)
        rec[name] = {f"c{round(100 * r['level'])}": round(r["coverage"], 4) for r in rows}
        rec[name].update(crps=round(rows[0]["crps"], 4), crps_climatology=round(rows[0]["crps_climatology"], 4))
    return rec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="LatentSDE", help="a LatentSDE configuration of calibration.py's panel")
    p.add_argument("--processes", default="ou,cir,oscillator,regime,gbm,lv_sde,seasonal")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--model-options", nargs="*", default=None, help="fields of the model, e.g. linear_drift=1")
    p.add_argument("--seed", type=int, default=0, help="the panel's --seed")
    p.add_argument("--out", default=str(RESULTS / "forecast_scales_cpu.jsonl"))
    args = p.parse_args(argv)
    if not args.models.startswith("LatentSDE") or args.models not in PANEL_MODELS:
        p.error(f"--models: expected a LatentSDE configuration of the panel, got {args.models!r}")
    key = jax.random.key(args.seed)
    for process in args.processes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            rec = one_fit(process, args.models, seed, _model_options(args.model_options), key)
            print(json.dumps(rec), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
