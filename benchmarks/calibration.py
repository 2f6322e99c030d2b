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
    model = bd.models.BayesianNeuralODE(dim=2, width=16, observation="lognormal")
    opts = dict(num_steps=600 if quick else 4000, learning_rate=1e-2, num_samples=200 if quick else 500)
    return "lotka_volterra", "svi", hist, model, opts, dict(ts=data.ts), regions


def case_latent_sde(quick, key):
    data = bd.datasets.stochastic_lorenz(
        n_series=32 if quick else 128, n_times=40 if quick else 100, key=key
    )
    hist, fut = data.split(1.5)
    model = bd.models.LatentSDE(latent_dim=3, context_dim=8, hidden=16 if quick else 32)
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
    model = bd.models.BNCDE(hidden=4, width=16, train_paths=2)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small data and short fits (minutes)")
    p.add_argument("--sbc", type=int, default=None, help="SBC data sets (default 100, 0 with --quick)")
    p.add_argument("--models", nargs="*", default=None, help="subset of model names")
    p.add_argument("--out", default=str(RESULTS), help="output folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    num_pred = 200 if args.quick else 500
    rows, summaries = [], {}
    for i, (name, builder) in enumerate(CASES):
        if args.models and name not in args.models:
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
