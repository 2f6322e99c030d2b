"""BNCDE's held-back widening on a large confounded cohort: counterfactual coverage with
and without it, same data and keys.

`BNCDE()` holds back every fourth series (at most 64) from the likelihood and fits a
widening of the head's sd on their forecasts (`bd.models.BNCDE`, `forecast_series_every`).
On the quick calibration panel (100 patients) it is what makes the intervals wide
enough; this script checks what it costs where the cohort is large and the plan is
rare: `tumor_growth(gamma=6, n_patients=1000)`, 600 SVI steps at batch 64 (the issue's
configuration), 90% coverage of the true outcomes of the test patients under "no
treatment" and "chemo every day", per horizon and overall, for `forecast_series_every=0`
(off), the default, and the default without early stopping on the held-back score
(`keep_best=False`), larger weight diffusions, the initial weights' spread learned
(`weight_spread="learned"`, against the layers' initial scale or `1/sqrt(fan_in)`; on the
output layers or on every layer of the fields), and a deep ensemble of the default model
(`method="ensemble"`, four members), over several seeds (each seed: new patients and a
new fit). Beside the coverage, each plan's miss is split into bias and spread: the true
outcome in units of the predictive sd on the log scale (`z`), whose mean per horizon is the
bias and whose sd says how much too narrow the band is (1: right), and the plan's overlap share
(`bd.effects.overlap`). `--forecasts decoder,rollout` scores each fit with both of the
model's forecasters (`BNCDE.forecast`: one step at a time with the draws read back, the
default, or the paper's decoder). The JSON is rewritten after every fit.

    python benchmarks/bncde_heldback.py --seeds 3      # 4-5 minutes a fit on 2 cores, 10 for the ensemble
    python benchmarks/bncde_heldback.py --quick        # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
import warnings

import jax
import numpy as np

import bayesde as bd
from bayesde.models._bncde import _widening

from _machine import machine  # noqa: E402  (benchmarks/ is the script's directory)
from calibration import band  # noqa: E402


class _UnitPrior(bd.models.BNCDE):
    """The learned spread against the prior sd `1/sqrt(fan_in)` (LeCun's), not the
    layers' initial scale."""

    def _spread_prior(self, part, name):
        return 1.0 / np.sqrt(self._layer_shapes(part)["W" + name[1]][0])


#: name -> (model keywords, fit keywords)
VARIANTS = {"off": (dict(forecast_series_every=0), {}), "default": ({}, {}),
            "default without keep_best": ({}, dict(keep_best=False)),
            # the weight diffusion: with the default 0.01 the weight paths hardly spread
            "sigma=0.04": (dict(sigma=0.04), {}), "sigma=0.1": (dict(sigma=0.1), {}),
            # the initial weights' spread: the paper's fixed σ (the default before), or learned
            # against a prior at the layers' initial scale (the default now)
            "fixed spread": (dict(weight_spread="fixed"), {}),
            "learned spread": (dict(weight_spread="learned"), {}),
            "learned spread with prior 1/sqrt(fan_in)": (dict(weight_spread="learned", cls=_UnitPrior), {}),
            # every layer of the fields stochastic, each weight's spread learned against its layer's
            # initial scale: the hidden features themselves vary, which a plan outside the data reads
            "learned spread on every layer": (dict(weight_spread="learned", stochastic="all"), {}),
            # a deep ensemble of the default model: the spread between independently trained
            # networks, which is where a rarely seen plan's extrapolation error could show
            "ensemble of 4": ({}, dict(method="ensemble", num_members=4)),
            # the same members each keeping its last step (the ensemble engine before it kept
            # each member's best-scoring step)
            "ensemble of 4 (last steps)": ({}, dict(method=bd.Ensemble(num_members=4, keep_best=False))),
            # each treatment's exposure (a dose decaying by half every 0.5, 2 or 8 days) read by both
            # fields beside the treatment itself: sustained treatment is then a growing input, whose
            # effect isolated treatment days can teach, rather than a run of identical ones
            "exposures": (dict(exposure_halflives=(0.5, 2.0, 8.0)), {}),
            # the two that moved the rare plan most, together: members that disagree on an
            # extrapolation, each reading the exposures
            "ensemble of 4 with exposures": (dict(exposure_halflives=(0.5, 2.0, 8.0)),
                                             dict(method="ensemble", num_members=4)),
            # every point-estimated weight under a zero-mean prior at its layer's initial scale (the
            # default since it was measured), and without it (the default before)
            "gaussian weight prior": (dict(weight_prior="gaussian"), {}),
            "no weight prior": (dict(weight_prior="none"), {}),
            # the held-back score may also narrow the head's sd (κ ≥ 0), or only widen it (κ ≥ 1)
            "widening may narrow": (dict(min_widening=0.0), {}),
            "widening only widens": (dict(min_widening=1.0), {})}
PLANS = ("none", "chemo")


def run_one(variant: str, seed: int, args) -> list:
    sizes = dict(n_patients=60, n_test=20, n_days=30, min_history=10) if args.quick else dict(n_patients=args.n_patients)
    data = bd.datasets.tumor_growth(gamma=args.gamma, key=jax.random.key(seed), **sizes)
    model_kw, fit_kw = VARIANTS[variant]
    model_kw = dict(model_kw)
    cls = model_kw.pop("cls", bd.models.BNCDE)
    model = cls(**model_kw, **(dict(width=16, train_paths=2) if args.quick else {}))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bd.fit(model, data.train, key=jax.random.key(seed + 1), num_steps=args.steps,
                      batch_size=args.batch_size, progress_bar=False, **fit_kw)
    fit_s = time.perf_counter() - t0
    theta = post.params.get("head.forecast_widening")
    kept = getattr(post.info, "best_step", None) or getattr(post.info, "member_best_step", None)  # SVI / ensemble
    fitted = dict(variant=variant, seed=seed, fit_s=fit_s, best_step=kept,
                  widening=None if theta is None else np.asarray(_widening(theta, post.model.min_widening)).tolist())
    log_sd0 = post.params.get("w.log_sd0")
    if log_sd0 is not None:  # the learned spread of the initial weights: its quartiles
        fitted["weight_sd0_quartiles"] = np.quantile(np.exp(np.asarray(log_sd0)), [0.25, 0.5, 0.75]).tolist()
    rows = []
    for forecast in args.forecasts:  # the same fit, forecast by each of the model's forecasters
        pred = copy.copy(post)
        pred.model = dataclasses.replace(post.model, forecast=forecast)
        rows.append(dict(fitted, forecast=forecast, **score(pred, data, args)))
    return rows


def score(post, data, args) -> dict:
    """Each plan's 90% coverage of the test patients' true outcomes (overall and per horizon),
    its bias and spread in predictive sds on the log scale, and its overlap share."""
    row = {}
    eff = bd.effects.counterfactual(post, data.test, plans={p: data.plan(p) for p in PLANS}, horizon=data.horizon,
                                    key=jax.random.key(9), num_samples=args.draws)
    for p in PLANS:
        smp, y = np.asarray(eff.outcomes[p].samples), np.asarray(data.counterfactual(p).ys)
        ok = np.isfinite(y)
        row[f"{p}_coverage_0.90"] = band(smp, y, 0.9)[0]
        row[f"{p}_coverage_0.90_by_tau"] = [band(smp[:, :, t], y[:, t], 0.9)[0] for t in range(y.shape[1])]
        # bias or spread? the truth in units of the predictive's sd, on the log scale of the positive
        # outcomes, over the finite draws (a diverged draw is left out): the mean of z is the bias,
        # its sd how much too narrow the spread is (1: right)
        logs = np.log(np.where(np.isfinite(smp) & (smp > 0), smp, np.nan))
        z = (np.log(np.maximum(y, 1e-12)) - np.nanmean(logs, 0)) / np.maximum(np.nanstd(logs, 0), 1e-12)
        row[f"{p}_z_mean_by_tau"] = [float(z[:, t][ok[:, t]].mean()) for t in range(y.shape[1])]
        row[f"{p}_z_sd_by_tau"] = [float(z[:, t][ok[:, t]].std()) for t in range(y.shape[1])]
        row[f"{p}_overlap_share"] = None if eff.overlap is None else float(eff.overlap[p]["share"])
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed … first-seed + seeds − 1")
    ap.add_argument("--gamma", type=float, default=6.0)
    ap.add_argument("--n-patients", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    ap.add_argument("--forecasts", default=bd.models.BNCDE().forecast,
                    help="comma-separated forecasters to score each fit with: rollout (the model's default), "
                         "decoder (the paper's)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bncde_heldback_cpu.json"))
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.batch_size, args.draws = 1, 20, 32, 20
    variants = [v.strip() for v in args.variants.split(",")]
    args.forecasts = [f.strip() for f in args.forecasts.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for variant in variants:
            for r in run_one(variant, seed, args):
                rows.append(r)
                print(f"seed {seed} {_label(r)}: 90% coverage none {r['none_coverage_0.90']:.3f}, "
                      f"chemo {r['chemo_coverage_0.90']:.3f} (fit {r['fit_s']:.0f} s, kept step {r['best_step']})",
                      flush=True)
            summary = write(args, rows)  # after every fit: a run that is stopped keeps what it measured
    print(json.dumps(summary, indent=1))
    print("wrote", args.out)


def write(args, rows):
    """Summarise `rows` (mean and worst coverage per variant over the seeds run so far), write
    the JSON and return the summary."""
    summary = {}
    for label in dict.fromkeys(_label(r) for r in rows):
        mine = [r for r in rows if _label(r) == label]
        summary[label] = {f"{p}_coverage_0.90_{stat}": float(fn([r[f"{p}_coverage_0.90"] for r in mine]))
                          for p in PLANS for stat, fn in (("mean", np.mean), ("min", np.min))}
    out = dict(benchmark="BNCDE held-back widening on a large confounded cohort",
               command="python benchmarks/bncde_heldback.py " + " ".join(
                   f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, list) else v}"
                   for k, v in vars(args).items() if k not in ("out", "quick")),
               machine=machine(),
               summary=summary, runs=rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return summary


def _label(row) -> str:
    """A run's name in the summary: its variant, and its forecaster where not the model's default."""
    forecast = row["forecast"]
    return row["variant"] if forecast == bd.models.BNCDE().forecast else f"{row['variant']}, {forecast}"


if __name__ == "__main__":
    main()
