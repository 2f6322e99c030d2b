"""Calibration report: is every bayesde model's uncertainty honest on data with known truth?

For each model in `bd.models` this fits the model on its simulator (known truth), predicts
held-out observations and scores the posterior predictive:

- coverage curve: observed coverage of the equal-tailed intervals at nominal levels
  0.5-0.99 (calibrated = on the diagonal);
- PIT histogram (randomised PIT; flat = calibrated, U = too narrow, hump = too wide);
- interval score (Gneiting & Raftery 2007) at every level, CRPS and RMSE.

With `--sbc N` (default 100 in the full run, 0 with `--quick`) it also runs
simulation-based calibration (Talts et al. 2018) of NUTS on exponential decay.

    python benchmarks/calibration.py            # full run
    python benchmarks/calibration.py --quick    # minutes, small fits

Writes `benchmarks/results/calibration.csv` (tidy: one row per model, region, metric and
level) and `benchmarks/results/calibration.png`. A model whose fit fails is recorded with
`status=error` and the message; the other models still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("BAYESDE_FAST", "1")  # no progress bars in a report run

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bayesde as bd  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = bd.calibration.DEFAULT_LEVELS


# ----------------------------------------------------------------------- helpers
def _future_truth(data: bd.TimeSeries, split: float) -> np.ndarray:
    """The observations after `split` (NaN elsewhere), aligned with `data`."""
    return np.where((data.ts > split)[..., None] & data.mask, data.ys, np.nan)


def _lv_case(quick: bool, key):
    """Lotka-Volterra: train on t <= 10, score the forecast (t > 10) against the held-out
    observations and the fit window against a fresh noisy replicate of the known truth."""
    k_data, k_rep = jax.random.split(key)
    n_series, n_times = (2, 30) if quick else (4, 45)
    data = bd.datasets.lotka_volterra(n_series=n_series, n_times=n_times, t_max=15.0, key=k_data)
    split = 10.0
    hist, _ = data.split(split)
    f, sigma = data.truth["f"], data.truth["sigma"]
    replicate = f * np.exp(sigma * np.asarray(jax.random.normal(k_rep, f.shape)))
    regions = {
        "forecast": _future_truth(data, split),
        "fit-window replicate": np.where((data.ts <= split)[..., None], replicate, np.nan),
    }
    return data, hist, regions


def case_ode(quick, key):
    data, hist, regions = _lv_case(quick, key)
    model = bd.models.ODE(bd.models.lotka_volterra_field, priors=bd.models.lotka_volterra_priors())
    opts = dict(num_warmup=150, num_samples=150) if quick else dict(num_warmup=500, num_samples=500, num_chains=2)
    return "lotka_volterra", "nuts", hist, model, opts, dict(ts=data.ts), regions


def case_bnode(quick, key):
    data, hist, regions = _lv_case(quick, key)
    model = bd.models.BayesianNeuralODE(state_dim=2, width=16, observation="lognormal")
    opts = dict(num_steps=600 if quick else 4000, learning_rate=1e-2, num_samples=200 if quick else 500)
    return "lotka_volterra", "svi", hist, model, opts, dict(ts=data.ts), regions


def case_latent_sde(quick, key):
    data = bd.datasets.stochastic_lorenz(
        n_series=32 if quick else 128, n_times=40 if quick else 100, key=key
    )
    hist, fut = data.split(1.5)
    model = bd.models.LatentSDE(latent_dim=3, context_dim=8, width=16 if quick else 32)
    opts = dict(num_steps=200 if quick else 2000, learning_rate=1e-2)
    return "stochastic_lorenz", "svi", hist, model, opts, dict(ts=fut.ts), {"forecast": fut}


def case_fractional_sde(quick, key):
    data = bd.datasets.fractional_ou(
        hurst=0.3, n_series=16 if quick else 64, n_times=60 if quick else 200, t_max=3.0 if quick else 10.0,
        obs_noise=0.05, key=key,
    )
    t_max = float(data.ts.max())
    hist, fut = data.split(0.8 * t_max)
    model = bd.models.FractionalSDE(latent_dim=1, width=16 if quick else 32, control_width=16 if quick else 32)
    opts = dict(num_steps=200 if quick else 2000, learning_rate=1e-2)
    return "fractional_ou", "svi", hist, model, opts, dict(ts=fut.ts), {"forecast": fut}


def case_bncde(quick, key):
    sim = bd.datasets.tumor_growth(
        n_patients=160 if quick else 600, n_test=80 if quick else 200, n_days=30, min_history=10,
        gamma=2.0, key=key,
    )
    model = bd.models.BNCDE(state_dim=4, width=16, train_paths=2)
    opts = dict(num_steps=300 if quick else 2000, batch_size=32, learning_rate=1e-2)
    predict = dict(ts=sim.factual.ts, data=sim.test, treatments=sim.factual.treatments)
    return "tumor_growth", "svi", sim.train, model, opts, predict, {"factual forecast": sim.factual}


CASES = [
    ("ODE", case_ode),
    ("BayesianNeuralODE", case_bnode),
    ("LatentSDE", case_latent_sde),
    ("FractionalSDE", case_fractional_sde),
    ("BNCDE", case_bncde),
]


def run_case(name, builder, quick, key, num_pred):
    """Fit one model and score it; returns (rows, summaries)."""
    rows, summaries = [], {}
    t0 = time.perf_counter()
    base = dict(model=name, dataset="", method="", region="", seconds=np.nan, status="ok", error="")
    try:
        if not hasattr(bd.models, name):
            raise RuntimeError(f"bd.models has no {name}")
        dataset, method, train, model, opts, predict_kw, regions = builder(quick, jax.random.fold_in(key, 0))
        base.update(dataset=dataset, method=method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            post = bd.fit(model, train, method=method, key=jax.random.fold_in(key, 1), progress_bar=False, **opts)
        pred = post.predict(key=jax.random.fold_in(key, 2), num_samples=num_pred, **predict_kw)
        base["seconds"] = time.perf_counter() - t0
        for region, truth in regions.items():
            s = bd.calibration.calibration_summary(pred, truth, LEVELS)
            summaries[region] = s
            r = dict(base, region=region)
            for lv, cov, isc, w in zip(s["levels"], s["coverage"], s["interval_score"], s["width"]):
                rows += [
                    dict(r, metric="coverage", level=lv, value=cov, n=s["n"]),
                    dict(r, metric="interval_score", level=lv, value=isc, n=s["n"]),
                    dict(r, metric="interval_width", level=lv, value=w, n=s["n"]),
                ]
            rows += [
                dict(r, metric="crps", level=np.nan, value=s["crps"], n=s["n"]),
                dict(r, metric="rmse", level=np.nan, value=s["rmse"], n=s["n"]),
                dict(r, metric="pit_ks_pvalue", level=np.nan, value=s["pit_ks_pvalue"], n=s["n"]),
            ]
            nb = len(s["pit_counts"])
            rows += [
                dict(r, metric="pit_count", level=(b + 0.5) / nb, value=c, n=s["n"])
                for b, c in enumerate(s["pit_counts"])
            ]
        print(f"  {name}: done in {base['seconds']:.0f}s", flush=True)
    except Exception as e:  # a failing model is recorded, the report goes on
        traceback.print_exc()
        rows.append(
            dict(base, seconds=time.perf_counter() - t0, status="error", error=f"{type(e).__name__}: {e}"[:500],
                 metric="", level=np.nan, value=np.nan, n=0)
        )
        print(f"  {name}: FAILED ({type(e).__name__}: {e})", flush=True)
    return rows, summaries


# ----------------------------------------------------------------------------- SBC
SBC_SIGMA = 0.1


def _decay_program(batch, query=None):
    import numpyro
    import numpyro.distributions as dist

    k = numpyro.sample("k", dist.LogNormal(0.0, 0.5))
    f = jnp.exp(-k * (batch.ts - batch.ts[:, :1]))[..., None]
    numpyro.sample("y", dist.Normal(f, SBC_SIGMA).mask(batch.mask), obs=batch.ys)


def _decay_simulate(key):
    k_k, k_y = jax.random.split(key)
    k = jnp.exp(0.5 * jax.random.normal(k_k))
    ts = np.linspace(0.0, 2.0, 8)
    f = np.exp(-float(k) * ts)[None, :, None] * np.ones((2, 1, 1))
    ys = f + SBC_SIGMA * np.asarray(jax.random.normal(k_y, f.shape))
    return {"k": k}, bd.TimeSeries(ts, ys)


def run_sbc(num_datasets, key):
    t0 = time.perf_counter()
    res = bd.calibration.sbc(
        _decay_program, simulate=_decay_simulate, num_datasets=num_datasets,
        fit_kwargs=dict(method="nuts", num_warmup=200, num_samples=200), thin=2, key=key,
        progress=lambda i, n: print(f"  SBC {i}/{n}", flush=True) if i % 10 == 0 else None,
    )
    base = dict(model="ODE exp-decay (SBC)", dataset="simulated prior", method="nuts", region="sbc",
                seconds=time.perf_counter() - t0, status="ok", error="", n=num_datasets)
    t = res.tests["k"]
    rows = [dict(base, metric="sbc_pvalue", level=np.nan, value=t["pvalue"]),
            dict(base, metric="sbc_chi2", level=np.nan, value=t["statistic"])]
    rows += [dict(base, metric="sbc_rank_count", level=(b + 0.5) / len(t["observed"]), value=c)
             for b, c in enumerate(t["observed"])]
    return rows, res


# ---------------------------------------------------------------------------- plot
def plot(summaries, sbc_res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(m, r, s) for m, d in summaries.items() for r, s in d.items()]
    n_pit = max(1, len(items)) + (1 if sbc_res is not None else 0)
    ncols = min(4, n_pit)
    nrows = 1 + -(-n_pit // ncols)
    fig = plt.figure(figsize=(4.2 * max(ncols, 2), 3.4 * nrows))
    gs = fig.add_gridspec(nrows, max(ncols, 2))
    ax = fig.add_subplot(gs[0, : max(ncols, 2) // 2])
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="calibrated")
    for i, (m, r, s) in enumerate(items):
        ax.plot(s["levels"], s["coverage"], "o-", color=f"C{i}", label=f"{m} ({r})")
    ax.set_xlabel("nominal level")
    ax.set_ylabel("observed coverage")
    ax.set_title("Coverage curves")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(gs[0, max(ncols, 2) // 2:])
    ax2.axis("off")
    lines = [f"{'model (region)':38s} {'cov90':>6s} {'IS90':>8s} {'CRPS':>8s}"]
    for m, r, s in items:
        i90 = list(np.round(s["levels"], 3)).index(0.9)
        lines.append(f"{(m + ' (' + r + ')')[:38]:38s} {s['coverage'][i90]:6.2f} {s['interval_score'][i90]:8.3g} {s['crps']:8.3g}")
    ax2.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=7)
    ax2.set_title("90% coverage, interval score, CRPS")
    for j, (m, r, s) in enumerate(items):
        a = fig.add_subplot(gs[1 + j // ncols, j % ncols])
        c = s["pit_counts"]
        a.bar((np.arange(len(c)) + 0.5) / len(c), c, width=0.9 / len(c), color=f"C{j}")
        a.axhline(np.sum(c) / len(c), color="k", ls="--", lw=1)
        a.set_title(f"PIT: {m} ({r})", fontsize=8)
        a.set_xlim(0, 1)
    if sbc_res is not None:
        j = len(items)
        a = fig.add_subplot(gs[1 + j // ncols, j % ncols])
        sbc_res.plot(a)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- panel
PANEL_LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Missing fraction of seed `s`: `PANEL_MISSING[s % 3]`, so two seeds span 0 and 30%.
PANEL_MISSING = (0.0, 0.3, 0.15)
#: Model configurations at their library defaults; `dim` is the only size the data set.
PANEL_MODELS = {
    "LatentSDE": dict(family="neural", encoder="gru", build=lambda dim: bd.models.LatentSDE()),
    "LatentSDE-langevin": dict(family="langevin", encoder="gru",
                               build=lambda dim: bd.models.LatentSDE(family="langevin")),
    "LatentSDE-linear-noise": dict(family="linear-noise", encoder="gru",
                                   build=lambda dim: bd.models.LatentSDE(family="linear-noise")),
    "LatentSDE-geometric": dict(family="geometric", encoder="gru",
                                build=lambda dim: bd.models.LatentSDE(family="geometric")),
    "LatentSDE-ncde": dict(family="neural", encoder="ncde", build=lambda dim: bd.models.LatentSDE(encoder="ncde")),
    "FractionalSDE": dict(family="", encoder="", build=lambda dim: bd.models.FractionalSDE(latent_dim=dim)),
    "BayesianNeuralODE": dict(family="", encoder="", build=lambda dim: bd.models.BayesianNeuralODE(state_dim=dim)),
    "BNCDE": dict(family="", encoder="", build=lambda dim: bd.models.BNCDE(), treatment=True),
}
PANEL_COLUMNS = ["process", "model", "family", "encoder", "seed", "missing", "steps", "region", "level",
                 "coverage", "width", "crps", "crps_climatology", "nonfinite", "n", "seconds", "status", "error",
                 "steps_run", "best_step"]
TUMOR_PLANS = {"factual": "inside", "none": "outside", "chemo": "outside"}


def _crps_ensemble(samples, y):
    """CRPS of an ensemble `samples (S, ...)` at `y (...)`: `E|X − y| − ½ E|X − X'|`, the
    second term from the sorted draws."""
    s = np.sort(samples, axis=0)
    m = s.shape[0]
    w = (2 * np.arange(1, m + 1) - m - 1).reshape((m,) + (1,) * (s.ndim - 1))
    return np.mean(np.abs(s - y[None]), axis=0) - np.sum(w * s, axis=0) / m**2


def _climatology_crps(history, y, sd):
    """CRPS (standardised by `sd`) of each series' own training values as the forecast."""
    out = np.full(y.shape, np.nan)
    for i in range(y.shape[0]):
        for d in range(y.shape[2]):
            h = history[i, :, d]
            h = h[np.isfinite(h)]
            if h.size == 0:
                continue
            out[i, :, d] = _crps_ensemble(h[:, None] / sd[d], y[i, :, d] / sd[d])
    return out


def _score(samples, y, history, sd):
    """Rows of level, coverage, width and CRPS (width and CRPS in units of the training
    data's sd per dimension) over the observed entries of `y (N, T, D)`."""
    samples, y = np.asarray(samples, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    # Non-finite draws (a diverged solve) stay in: their intervals are NaN and cover nothing.
    nonfinite = float(np.mean(~np.isfinite(samples[:, ok])))
    z = samples / sd
    crps = _crps_ensemble(z, y / sd)[ok].mean()
    clim = np.nanmean(_climatology_crps(history, y, sd)[ok])
    rows = []
    for lv in PANEL_LEVELS:
        cov, width = band(samples, y, lv, sd)
        rows.append(dict(level=lv, coverage=cov, width=width, crps=float(crps),
                         crps_climatology=float(clim), nonfinite=nonfinite, n=int(ok.sum())))
    return rows


def band(samples, y, level, unit=1.0):
    """Coverage of the finite entries of `y (N, T, D)` by the central `level` interval of
    `samples (S, N, T, D)`, and the interval's mean width in `unit`s."""
    ok = np.isfinite(y)
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(((y >= lo) & (y <= hi))[ok].mean()), float(((hi - lo) / unit)[ok].mean())


def panel_cut(data: bd.TimeSeries) -> float:
    """The time that splits a forecast case into history (`t <= cut`) and future: 75% of
    the way through the data's time window."""
    real = np.arange(data.n_times)[None, :] < data.lengths[:, None]
    t_lo, t_hi = data.ts[real].min(), data.ts[real].max()
    return float(t_lo + 0.75 * (t_hi - t_lo))


def panel_split(data: bd.TimeSeries):
    """A forecast case's history (up to `panel_cut`), future (the rest) and the history's
    sd per dimension, the unit of widths and CRPS."""
    hist, fut = data.split(panel_cut(data))
    sd = np.nanstd(np.where(hist.mask, hist.ys, np.nan), axis=(0, 1))
    return hist, fut, sd


def panel_data_key(key, case_name, seed):
    """The key a panel case's data are simulated with (`--seed`'s key, the case, the seed)."""
    return jax.random.fold_in(jax.random.fold_in(key, list(bd.datasets.panel()).index(case_name)), seed)


def panel_missing(seed):
    """The fraction of values the panel deletes from a forecast case's data set of `seed`
    (`PANEL_MISSING`, cycled). Every script that simulates a panel data set asks here."""
    return PANEL_MISSING[seed % len(PANEL_MISSING)]


def panel_fit_keys(k_data, model_name):
    """`(k_fit, k_pred)`: the keys the panel fits `model_name` and draws its predictive with,
    on the data set simulated with `k_data` (`panel_data_key`). Every script that refits a
    panel case derives them here, so that its fits are the panel's."""
    return jax.random.split(jax.random.fold_in(k_data, 1 + list(PANEL_MODELS).index(model_name)))


COMBINES = ("pool", "quantiles", "median-quantiles", "recentred")


def ensemble_options(members, cross_fit, combine, prog):
    """`(combines, fit_options)` of a script's `--members`, `--cross-fit` and `--combine`: the
    ways of combining the draws to score (`"pool"`, the draws as they are, first) and the
    engine's fields of a deep ensemble (`{}` for one SVI fit). Refuses, naming `prog`, an
    unknown combination, an ensemble of fewer than 2, and the ensemble's options without
    `--members` (before any earlier result is touched)."""
    combines = list(dict.fromkeys(["pool"] + list(combine or [])))
    unknown = [c for c in combines if c not in COMBINES]
    if unknown:
        raise SystemExit(f"{prog}: --combine {unknown}: choose from {list(COMBINES)}")
    if not members:
        if combines != ["pool"]:
            raise SystemExit(f"{prog}: --combine combines an ensemble's members; give --members too")
        if cross_fit:
            raise SystemExit(f"{prog}: --cross-fit is an ensemble's option; give --members too")
        return combines, {}
    if members < 2:
        raise SystemExit(f"{prog}: --members {members}: an ensemble needs at least 2")
    return combines, dict(method="ensemble", num_members=members, cross_fit=cross_fit)


def combine_members(samples, members: int, how: str):
    """An ensemble's predictive draws `samples (members * K, ...)` (member-major, as
    `post.predict` lays them out) combined across its members: `"pool"` the equal-weight
    mixture (the draws as they are); `"quantiles"` the members' quantiles averaged
    (Vincentization, what `Ensemble(combine="quantiles")` predicts: the library's
    `average_quantiles`); `"median-quantiles"` their median at each level
    (`Ensemble(combine="median-quantiles")`); `"recentred"` every
    member's draws moved to the ensemble's mean (the mixture of the members' spreads
    without the spread of their centres)."""
    s = np.asarray(samples, dtype=float)
    if how == "pool":
        return s
    if s.shape[0] % members:
        raise ValueError(f"combine_members: {s.shape[0]} draws do not split into {members} members")
    if how in ("quantiles", "median-quantiles"):  # exactly what the library's ensemble predicts
        return bd.Ensemble(combine=how).combine_draws(s, np.repeat(np.arange(members), s.shape[0] // members))
    x = s.reshape((members, s.shape[0] // members) + s.shape[1:])
    if how == "recentred":
        return (x - x.mean(axis=1, keepdims=True) + x.mean(axis=(0, 1))).reshape(s.shape)
    raise ValueError(f"combine_members: unknown combination {how!r}; choose from {COMBINES}")


def _plan_draws(post, data, key, num_pred):
    """A treatment case's forecasts under each plan of `TUMOR_PLANS` for `data.test`:
    `{region: (draws, truth, history values)}`, the region `"<plan> (<inside|outside>)"`."""
    plans = {p: data.plan(p) for p in TUMOR_PLANS}
    eff = bd.effects.counterfactual(post, data.test, plans=plans, horizon=data.horizon, key=key, num_samples=num_pred)
    hist_vals = np.where(data.test.mask, data.test.ys, np.nan)
    return {f"{p} ({TUMOR_PLANS[p]})": (eff.outcomes[p].samples, data.counterfactual(p).ys, hist_vals)
            for p in plans}


def new_patients_region(region: str, n: int) -> str:
    """The region of a plan scored on `n` test patients of a fresh cohort (`--new-patients`)."""
    return f"{region}, {n} new patients"


def _panel_case(case, model_name, seed, quick, steps, num_pred, key, fit_options=None, model_options=None,
                combines=("pool",), new_patients=0):
    """Fit one model configuration on one simulated data set and score its forecast (or,
    for treatment cases, its outcomes under each plan). Returns `(missing, scored, info)`,
    `info` the SVI steps run and the step whose parameters were kept. `fit_options` are
    further fields of the engine (`patience`, `learning_rate`), `model_options` fields of
    the model (`steps_per_unit=16`) that replace its defaults, for comparisons. `scored`
    is `{combine: {region: rows}}`: the draws as they are (`"pool"`) and, for an ensemble,
    the same draws combined across its members in each other way of `combines`
    (`combine_members`). `new_patients` (treatment cases): also score the plans on this many
    test patients of a fresh cohort of the same process and sizes (another data key; the fit is
    the same), regions named by `new_patients_region`."""
    spec = PANEL_MODELS[model_name]
    build = lambda dim: dataclasses.replace(spec["build"](dim), **(model_options or {}))  # noqa: E731
    missing = panel_missing(seed) if case.kind == "forecast" else float("nan")
    k_data = panel_data_key(key, case.name, seed)
    k_fit, k_pred = panel_fit_keys(k_data, model_name)
    opts = {} if steps is None else dict(num_steps=steps)
    opts.update(fit_options or {})
    data = case.simulate(key=k_data, missing=missing, quick=quick)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.kind == "forecast":
            hist, fut, sd = panel_split(data)
            post = bd.fit(build(data.dim), hist, key=k_fit, progress_bar=False, warn=False, **opts)
            pred = post.predict(fut.ts, key=k_pred, num_samples=num_pred)
            y = np.where(fut.mask, fut.ys, np.nan)
            draws = {"forecast": (pred.samples, y, np.where(hist.mask, hist.ys, np.nan))}
        else:
            train = data.train
            sd = np.nanstd(np.where(train.mask, train.ys, np.nan), axis=(0, 1))
            post = bd.fit(build(train.dim), train, key=k_fit, progress_bar=False, warn=False, **opts)
            draws = _plan_draws(post, data, k_pred, num_pred)
            if new_patients:
                # the cohort `benchmarks/bncde_tails.py --new-patients` forecasts (the same data key)
                fresh = case.simulate(key=jax.random.fold_in(k_data, 1), quick=quick, n_test=new_patients)
                more = _plan_draws(post, fresh, jax.random.fold_in(k_pred, 1), num_pred)
                draws.update({new_patients_region(r, new_patients): v for r, v in more.items()})
    best = getattr(post.info, "best_step", None)
    members = getattr(post.info, "member_best_step", None)  # an ensemble keeps a step per member
    if members is None and set(combines) != {"pool"}:
        raise ValueError("_panel_case: combines other than 'pool' need an ensemble fit")
    scored = {c: {reg: _score(combine_members(x, len(members or ()), c), y, h, sd) for reg, (x, y, h) in draws.items()}
              for c in combines}
    info = dict(steps_run=getattr(post.info, "num_steps_run", None),
                best_step=best if members is None else "/".join(str(b) for b in members))
    return missing, scored, info


def run_panel(args):
    """`--panel`: every model configuration at its defaults on every panel process."""
    import pandas as pd

    cases = bd.datasets.panel()
    procs = _names(args.processes, cases, "process")
    models = _names(args.models, PANEL_MODELS, "model")
    n_seeds = args.seeds if args.seeds is not None else (2 if args.quick else 3)
    steps = None if args.steps_multiplier == 1 else int(round(bd.SVI().num_steps * args.steps_multiplier))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or ("calibration_panel" if args.steps_multiplier == 1 else
                         f"calibration_panel_steps{args.steps_multiplier:g}x")
    if args.new_patients < 0:
        raise SystemExit(f"calibration.py: --new-patients must be 0 (none) or a number of patients, got {args.new_patients}")
    combines, ensemble = ensemble_options(args.members, args.cross_fit, args.combine, "calibration.py")
    if ensemble and args.patience != "default":
        raise SystemExit("calibration.py: --patience is an SVI option; an ensemble (--members) runs every step")
    # one file set per way of combining the members; `pool` (the ensemble's own mixture) keeps the plain name
    base_name, cpu = (name[:-4], "_cpu") if name.endswith("_cpu") else (name, "")
    stems = {c: name if c == "pool" else f"{base_name}_{c}{cpu}" for c in combines}
    csv_paths = {c: out / f"{stem}.csv" for c, stem in stems.items()}
    csv_path = csv_paths["pool"]
    done = set()
    if args.resume and csv_path.exists():
        old = pd.read_csv(csv_path)
        done = set(zip(old.process, old.model, old.seed))
    else:
        for path in csv_paths.values():
            path.unlink(missing_ok=True)
    key = jax.random.key(args.seed)
    fit_options = dict(ensemble)
    if args.patience != "default":
        fit_options["patience"] = args.patience
    if args.learning_rate is not None:
        fit_options["learning_rate"] = args.learning_rate
    model_options = _model_options(args.model_options)
    num_pred = 200 if args.quick else 500
    t_start = time.perf_counter()
    # Seed-major, then model: a run stopped by --budget-minutes has whole models done.
    todo = [(p, m, s) for s in range(n_seeds) for m in models for p in procs
            if (cases[p].kind == "treatment") == bool(PANEL_MODELS[m].get("treatment"))]
    print(f"panel: {len(todo)} fits ({len(procs)} processes x {len(models)} models x {n_seeds} seeds), "
          f"steps={'default' if steps is None else steps}, quick={args.quick}", flush=True)
    for i, (p, m, s) in enumerate(todo):
        if (p, m, s) in done:
            continue
        if args.budget_minutes and time.perf_counter() - t_start > 60 * args.budget_minutes:
            print(f"budget of {args.budget_minutes:g} min spent: {len(todo) - i} fits not run "
                  "(rerun with --resume to continue)", flush=True)
            break
        spec = PANEL_MODELS[m]
        base = dict(process=p, model=m, family=spec["family"], encoder=spec["encoder"], seed=s,
                    missing=np.nan, steps=steps or bd.SVI().num_steps, status="ok", error="")
        t0 = time.perf_counter()
        rows = {c: [] for c in combines}
        try:
            missing, scored, info = _panel_case(cases[p], m, s, args.quick, steps, num_pred,
                                                key, fit_options, model_options, combines, args.new_patients)
            base.update(missing=missing, seconds=time.perf_counter() - t0, **info)
            for c in combines:
                for region, rs in scored[c].items():
                    rows[c] += [dict(base, region=region, **r) for r in rs]
            msg = ""
            for c in combines:
                c90 = {reg: next(r["coverage"] for r in rs if r["level"] == 0.9) for reg, rs in scored[c].items()}
                msg += ("" if c == "pool" else f" | {c}: ") + " ".join(f"{reg}={v:.2f}" for reg, v in c90.items())
            msg += f" (kept step {info['best_step']} of {info['steps_run']})"
        except Exception as e:  # a failing fit is a row, the panel goes on
            traceback.print_exc()
            base.update(seconds=time.perf_counter() - t0, status="error", error=f"{type(e).__name__}: {e}"[:500])
            rows = {c: [dict(base, region="", level=np.nan, coverage=np.nan, width=np.nan, crps=np.nan,
                             crps_climatology=np.nan, nonfinite=np.nan, n=0)] for c in combines}
            msg = f"FAILED {type(e).__name__}: {e}"[:200]
        for c, path in csv_paths.items():
            pd.DataFrame(rows[c], columns=PANEL_COLUMNS).to_csv(path, mode="a", header=not path.exists(), index=False)
        print(f"[{i + 1}/{len(todo)} {time.perf_counter() - t_start:6.0f}s] {p} {m} seed={s}: "
              f"{time.perf_counter() - t0:.0f}s, cov90 {msg}", flush=True)
    for c, path in csv_paths.items():
        df = pd.read_csv(path)
        summary = panel_summary(df)
        meta = dict(quick=bool(args.quick), seeds=n_seeds, fits_planned=len(todo),
                    fits_done=int(df.groupby(["process", "model", "seed"]).ngroups), steps=int(steps or bd.SVI().num_steps),
                    steps_multiplier=args.steps_multiplier, patience=args.patience, members=args.members,
                    cross_fit=args.cross_fit, combine=c, learning_rate=args.learning_rate, model_options=model_options,
                    new_patients=args.new_patients,
                    processes=procs, models=models,
                    sizes={p: (cases[p].quick if args.quick else cases[p].sizes) for p in procs},
                    missing=list(PANEL_MISSING[:n_seeds]), levels=list(PANEL_LEVELS), num_pred=num_pred,
                    machine=_machine(), band=[0.85, 0.95], floor=0.80)
        stem = stems[c]
        (out / f"{stem}.json").write_text(json.dumps(
            dict(meta=meta, summary=summary.reset_index().to_dict(orient="records"),
                 rows=df.to_dict(orient="records")), indent=1, default=str))
        plot_panel(df, out / f"{stem}.png")
        if len(combines) > 1:
            print(f"--- members combined: {c}")
        print(summary.to_string(float_format=lambda v: f"{v:.2f}"))
        print(panel_markdown(df))
        bad = df[df.status != "ok"]
        for _, r in bad.iterrows():
            print(f"FAILED {r['process']} {r['model']} seed={r['seed']}: {r['error']}")
        print(f"wrote {path}, {out / (stem + '.json')} and {out / (stem + '.png')}")


def _model_options(arg):
    """`--model-options a=1 b=x` as a dict of numbers or strings."""
    out = {}
    for item in arg or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--model-options: expected name=value, got {item!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _names(arg, known, what):
    if not arg:
        return list(known)
    names = [n for a in arg for n in a.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}(es) {unknown}; choose from {list(known)}")
    return names


def _machine():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import machine

    return machine()


def panel_summary(df):
    """Mean and worst (over seeds) 90% coverage, mean 90% width and CRPS per process,
    model and region; `in_band` marks the must-show band."""
    ok = df[(df.status == "ok") & np.isclose(df.level.fillna(-1), 0.9)]
    g = ok.groupby(["process", "model", "region"])
    s = g.agg(cov90_mean=("coverage", "mean"), cov90_worst=("coverage", "min"), width90=("width", "mean"),
              crps=("crps", "mean"), crps_clim=("crps_climatology", "mean"), seeds=("seed", "nunique"))
    s["in_band"] = (s.cov90_mean >= 0.85) & (s.cov90_mean <= 0.95) & (s.cov90_worst >= 0.80)
    return s


def panel_markdown(df):
    """The panel's headline table (process x model: mean and worst 90% coverage over
    seeds), as markdown for `docs/calibration.md`; cells outside the band are bold."""
    s = panel_summary(df).reset_index()
    s["case"] = np.where(s.region == "forecast", s.process, s.process + " " + s.region.astype(str))
    cases = list(dict.fromkeys(s.case))
    models = list(dict.fromkeys(s.model))
    lines = ["| process | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for c in cases:
        cells = []
        for m in models:
            r = s[(s.case == c) & (s.model == m)]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            txt = f"{r.cov90_mean:.2f} ({r.cov90_worst:.2f})"
            cells.append(txt if r.in_band else f"**{txt}**")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_panel(df, path):
    """Mean 90% coverage per process (x) and model (colour), seeds as small dots, the
    must-show band [0.85, 0.95] shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df.status == "ok") & np.isclose(df.level.fillna(-1), 0.9)].copy()
    ok["case"] = np.where(ok.region == "forecast", ok.process, ok.process + "\n" + ok.region.astype(str))
    cases = list(dict.fromkeys(ok.case))
    models = list(dict.fromkeys(ok.model))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(cases) + 3), 4.5))
    ax.axhspan(0.85, 0.95, color="g", alpha=0.12, label="band [0.85, 0.95]")
    ax.axhline(0.9, color="g", lw=0.8)
    ax.axhline(0.8, color="r", lw=0.8, ls=":", label="floor 0.80")
    width = 0.8 / max(1, len(models))
    for j, m in enumerate(models):
        sub = ok[ok.model == m]
        for i, c in enumerate(cases):
            v = sub[sub.case == c].coverage.to_numpy()
            if v.size == 0:
                continue
            x = i - 0.4 + (j + 0.5) * width
            ax.plot([x] * v.size, v, ".", color=f"C{j}", ms=3, alpha=0.6)
            ax.plot(x, v.mean(), "o", color=f"C{j}", ms=6, label=m if i == min(
                k for k, cc in enumerate(cases) if cc in set(sub.case)) else None)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("90% interval coverage")
    ax.set_ylim(min(0.4, float(ok.coverage.min()) - 0.05) if len(ok) else 0.4, 1.01)
    ax.set_title("Calibration panel: library defaults, held-out forecasts (dots: seeds)")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small data and short fits (minutes)")
    p.add_argument("--sbc", type=int, default=None, help="SBC data sets (default 100, 0 with --quick)")
    p.add_argument("--models", nargs="*", default=None,
                   help="subset of model names (comma or space separated; with --panel, of PANEL_MODELS)")
    p.add_argument("--panel", action="store_true",
                   help="the calibration panel: every model at its defaults on processes it was not developed on")
    p.add_argument("--seeds", type=int, default=None, help="panel seeds (default 3, 2 with --quick)")
    p.add_argument("--processes", nargs="*", default=None, help="panel processes (comma or space separated)")
    p.add_argument("--patience", type=lambda v: v if v == "default" else None if v == "none" else int(v), default="default",
                   help="panel: SVI's patience in steps, or 'none' to run every step (default: SVI's own)")
    p.add_argument("--model-options", nargs="*", default=None,
                   help="panel: model fields that replace the defaults of every model run, e.g. steps_per_unit=16")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="panel: SVI's learning rate (default: SVI's own)")
    p.add_argument("--steps-multiplier", type=float, default=1.0,
                   help="panel: SVI steps = this x the default (the longer-training check uses 10)")
    p.add_argument("--members", type=int, default=None,
                   help="panel: fit each case as a deep ensemble of this many members (method='ensemble') instead of SVI")
    p.add_argument("--cross-fit", action="store_true",
                   help="panel, with --members: each member holds back its own fold of series (Ensemble(cross_fit=True))")
    p.add_argument("--combine", nargs="*", default=None,
                   help=f"panel, with --members: also score the members' draws combined these ways {list(COMBINES)[1:]} "
                        "(same fits; each to its own files, NAME_<way>, before a closing _cpu)")
    p.add_argument("--new-patients", type=int, default=0,
                   help="panel, tumour cases: also score the plans on this many test patients of a fresh cohort of "
                        "the same process (the fit unchanged; regions '<plan>, N new patients'): the quick sizes' "
                        "30 test patients move a cell by about 0.05")
    p.add_argument("--name", default=None, help="panel: output file stem (default calibration_panel)")
    p.add_argument("--resume", action="store_true", help="panel: keep finished rows of an earlier run")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="panel: start no new fit after this many minutes (then summarise what ran)")
    p.add_argument("--out", default=str(RESULTS), help="output folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.panel:
        return run_panel(args)
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    num_pred = 200 if args.quick else 500
    rows, summaries = [], {}
    for i, (name, builder) in enumerate(CASES):
        if args.models and name not in [n for a in args.models for n in a.split(",")]:
            continue
        print(f"[{name}]", flush=True)
        r, s = run_case(name, builder, args.quick, jax.random.fold_in(key, i), num_pred)
        rows += r
        if s:
            summaries[name] = s
    n_sbc = (0 if args.quick else 100) if args.sbc is None else args.sbc
    sbc_res = None
    if n_sbc > 0:
        print(f"[SBC] {n_sbc} data sets", flush=True)
        try:
            r, sbc_res = run_sbc(n_sbc, jax.random.fold_in(key, 99))
            rows += r
        except Exception as e:
            traceback.print_exc()
            rows.append(dict(model="ODE exp-decay (SBC)", status="error", error=f"{type(e).__name__}: {e}"[:500]))
    columns = ["model", "dataset", "method", "region", "seconds", "status", "error", "metric", "level", "value", "n"]
    df = pd.DataFrame(rows, columns=columns)
    df.insert(0, "quick", bool(args.quick))
    df.to_csv(out / "calibration.csv", index=False)
    plot(summaries, sbc_res, out / "calibration.png")
    # Headline: 90% coverage, interval score and CRPS per model and region.
    ok = df[df.status == "ok"]
    head = ok[(ok.metric.isin(["coverage", "interval_score"])) & np.isclose(ok.level.fillna(-1), 0.9)]
    head = head.pivot_table(index=["model", "region"], columns="metric", values="value")
    crps = ok[ok.metric == "crps"].set_index(["model", "region"])["value"].rename("crps")
    if len(head):
        print(head.join(crps).to_string(float_format=lambda v: f"{v:.3f}"))
    sbc_rows = ok[ok.metric == "sbc_pvalue"]
    for _, r in sbc_rows.iterrows():
        print(f"SBC {r['model']}: rank-uniformity p = {r['value']:.3f} over {int(r['n'])} data sets")
    bad = df[df.status == "error"]
    for _, r in bad.iterrows():
        print(f"FAILED {r['model']}: {r['error']}")
    print(f"wrote {out / 'calibration.csv'} and {out / 'calibration.png'}")


if __name__ == "__main__":
    main()
