"""Why BNCDE's intervals under-cover on new patients: the standardised errors of its
forecasts, and the scale of the predictive each score would choose for them.

Fits the default `BNCDE()` on a quick calibration-panel tumour case (the same data and
keys as the seed `--seed` of `python benchmarks/calibration.py --panel --quick --models
BNCDE`), then forecasts 5 days ahead (a) the test patients under the factual plan and two plans
outside the observed patterns, and (b) training patients from cut days 12, 18 and 24,
separately for the series held back from the likelihood and for kept ones. For each set
it reports the 90% coverage, the quantiles of `|z|` (`z` = error over the predictive sd),
its excess kurtosis, and the factor `c` by which the predictive sd would have to be
scaled (as `N(0, c²)` for `z`) to minimise the CRPS, to minimise the log score, and to
cover 90%. Held-back rows are the validation set the widening `κ` is fitted on: whether
the score's `c` there matches the `c` that 90% coverage needs is the question. The test
patients also get their coverage by forecast day, and `--spread-scales 1,0.5` forecasts
again from the same fit with its initial weights' learned spread times each factor.

    python benchmarks/bncde_tails.py --gamma 4      # about 8 minutes on 2 cores
    python benchmarks/bncde_tails.py --gamma 0 --new-patients 300   # and 300 patients of a fresh cohort
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings

import jax
import numpy as np
from scipy import optimize, stats

import bayesde as bd
from bayesde.models._bncde import _widening


def _inside(samples, y):
    """Whether each entry of `y (N, T, D)` lies in the central 90% interval of `samples`
    (NaN where `y` is missing)."""
    lo, hi = np.quantile(samples, [0.05, 0.95], axis=0)
    inside = ((y >= lo) & (y <= hi)).astype(float)
    inside[~np.isfinite(y)] = np.nan
    return inside


def _z(samples, y):
    s, y = np.asarray(samples, float), np.asarray(y, float)
    ok = np.isfinite(y)
    return ((y - s.mean(0)) / s.std(0))[ok], float(np.nanmean(_inside(s, y)))


def _by_day(samples, y):
    """The 90% coverage on each forecast day `(T,)` (days without observations: NaN)."""
    return np.nanmean(_inside(np.asarray(samples, float), np.asarray(y, float)), axis=(0, 2)).tolist()


def _row(z, cov):
    a = np.abs(z)

    def crps(c):  # CRPS of N(0, c²) at |z|, averaged
        u = a / c
        return np.mean(c * (u * (2 * stats.norm.cdf(u) - 1) + 2 * stats.norm.pdf(u) - 1 / np.sqrt(np.pi)))

    return dict(n=int(z.size), coverage_90=cov, abs_z_q50=float(np.quantile(a, 0.5)),
                abs_z_q90=float(np.quantile(a, 0.9)), excess_kurtosis=float(stats.kurtosis(z)),
                c_crps=float(optimize.minimize_scalar(crps, bounds=(0.05, 50), method="bounded").x),
                c_log_score=float(np.sqrt(np.mean(z**2))), c_for_90=float(np.quantile(a, 0.9) / 1.645))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gamma", type=int, default=4, choices=(0, 4, 8))
    ap.add_argument("--seed", type=int, default=0, help="the panel's seed (its data and keys)")
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--spread-scales", default="1",
                    help="comma-separated factors on the fitted initial weights' spread to forecast with "
                         "beside it (1: the fit as it is)")
    ap.add_argument("--new-patients", type=int, default=0,
                    help="also forecast this many test patients of a fresh cohort of the same process (the "
                         "fit unchanged): a coverage less noisy than the panel's 30 patients'")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.spread_scales = [float(v) for v in args.spread_scales.split(",")]
    if 1.0 not in args.spread_scales:
        args.spread_scales.insert(0, 1.0)
    stem = f"bncde_tails_gamma{args.gamma}" + (f"_seed{args.seed}" if args.seed else "")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"{stem}_cpu.json")
    cases = bd.datasets.panel()
    name = f"tumor_gamma{args.gamma}"
    # the panel's keys for this seed and the model `BNCDE` (benchmarks/calibration.py, _panel_case)
    from _machine import machine  # (benchmarks/ is the script's directory)
    from calibration import panel_data_key, panel_fit_keys

    k_data = panel_data_key(jax.random.key(0), name, args.seed)
    k_fit, k_pred = panel_fit_keys(k_data, "BNCDE")
    data = cases[name].simulate(key=k_data, missing=float("nan"), quick=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bd.fit(bd.models.BNCDE(), data.train, key=k_fit, progress_bar=False, warn=False)
    theta = np.asarray(post.params["head.forecast_widening"])
    res = dict(benchmark="BNCDE forecast errors on new and held-back patients", case=name, seed=args.seed,
               command="python benchmarks/bncde_tails.py " + " ".join(sys.argv[1:]), fit_s=time.perf_counter() - t0,
               best_step=post.info.best_step, widening=np.asarray(_widening(theta, post.model.min_widening)).tolist())
    for scale in args.spread_scales:
        # the same fit, its initial weights' learned spread (`w.log_sd0`) times `scale`
        scaled = copy.copy(post)
        scaled.params = dict(post.params, **{"w.log_sd0": post.params["w.log_sd0"] + np.log(scale)})
        sets = _sets(scaled, data, k_pred, args.draws, groups=("held", "kept") if scale == 1.0 else ("held",))
        if scale == 1.0:
            res["sets"] = sets
        else:
            res.setdefault("spread_scaled", {})[str(scale)] = sets
        _show(f"weight spread x {scale}", sets)
    if args.new_patients:
        # the same process and sizes, another key: only its test patients are read
        fresh = bd.datasets.tumor_growth(gamma=float(args.gamma), key=jax.random.fold_in(k_data, 1),
                                         **dict(cases[name].quick, n_test=args.new_patients))
        res["new_patients"] = _sets(post, fresh, jax.random.fold_in(k_pred, 1), args.draws, groups=())
        _show(f"{args.new_patients} new patients", res["new_patients"])
    res["machine"] = machine()
    print("best step", res["best_step"], "widening", np.round(res["widening"], 2))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", out)


def _show(title, sets):
    print(f"-- {title}")
    for k, v in sets.items():
        print(f"{k}: " + ", ".join(f"{a}={_fmt(b)}" for a, b in v.items()))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list):
        return "[" + " ".join(f"{x:.2f}" for x in v) + "]"
    return str(v)


def _sets(post, data, key, draws, groups=("held", "kept")):
    """The rows of `_row` for the test patients under each plan (with the coverage by day)
    and for the training patients of `groups` (`"held"`: held back from the likelihood;
    `"kept"`: as many kept ones) from cut days 12, 18, 24."""
    plans = {p: data.plan(p) for p in ("factual", "none", "chemo")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eff = bd.effects.counterfactual(post, data.test, plans=plans, horizon=data.horizon, key=key,
                                        num_samples=draws)
    sets = {}
    for p in plans:
        samples, truth = eff.outcomes[p].samples, data.counterfactual(p).ys
        sets[f"test patients, {p}"] = dict(_row(*_z(samples, truth)), coverage_90_by_day=_by_day(samples, truth))
    tr, h = data.train, data.horizon
    held = np.nonzero(post.model._is_held_back(np.arange(tr.n_series)))[0]
    kept = np.setdiff1d(np.arange(tr.n_series), held)[: held.size]
    patients = {"held": ("training patients held back from the likelihood", held),
                "kept": ("training patients kept", kept)}
    for label, idx in (patients[g] for g in groups):
        zs, covs = [], []
        for cut in (12, 18, 24):
            past = slice(0, cut + 1)
            nxt = slice(cut + 1, cut + 1 + h)
            hist = bd.TimeSeries(tr.ts[idx, past], tr.ys[idx, past], tr.mask[idx, past],
                                 treatments=tr.treatments[idx, past],
                                 static=None if tr.static is None else tr.static[idx])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                e = bd.effects.counterfactual(post, hist, plans={"factual": np.asarray(tr.treatments[idx, nxt])},
                                              horizon=h, key=jax.random.key(cut), num_samples=draws)
            z, c = _z(e.outcomes["factual"].samples, np.where(tr.mask[idx, nxt], tr.ys[idx, nxt], np.nan))
            zs.append(z)
            covs.append(c)
        sets[label] = _row(np.concatenate(zs), float(np.mean(covs)))
    return sets


if __name__ == "__main__":
    main()
