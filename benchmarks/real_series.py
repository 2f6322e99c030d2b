"""Real series beside classical baselines: bayesde's latent SDE at command-line defaults
against statsmodels SARIMAX and ETS (each chosen by AIC) and the climatology.

    python benchmarks/real_series.py                 # the full panel, writes JSON + PNG
    python benchmarks/real_series.py --quick         # tiny fits (a smoke test, numbers meaningless)
    python benchmarks/real_series.py --dry-run       # split the data and print the commands only

For each shipped real series (`sunspots`, `sunspots_gappy`, `elnino`, `us_macro_growth`,
`nile`) the last 10% of the observed rows (rounded up) are held out. bayesde is fitted
through the actual command line, exactly as a user would:

    bayesde fit --data train.csv --time-col time --model latent-sde --method svi --out RUN
    bayesde forecast --run RUN --horizon H --every STEP --out RUN/forecast

(times are decimal years; `STEP` is the sampling step: 1, 1/12 or 1/4), and the
forecast draws at the held-out times are read from `RUN/forecast/posterior.nc`. If the
command line fails (twice, a minute apart) the script falls back to the same calls in
Python (`bd.fit(bd.models.LatentSDE(), data, "svi", ...)` and `post.forecast`, on the
scale `--transform auto` chooses) and records that it did.

Baselines, fitted on the same training rows (statsmodels, `baselines` extra):

- SARIMAX: orders `(p, d, q)` with `p ≤ 3` (`≤ 2` with a season), `d, q ≤ 1`, a constant
  when `d = 0`, and for a seasonal series `(P, D, Q)_s` in `{0, (1,0,0), (1,0,1), (0,1,1)}`;
  the lowest AIC among the fits whose forecast is finite wins (the JSON names any fit skipped for a
  NaN forecast: it happens, e.g. El Niño up to 1995). The irregular series is put on its regular yearly grid with the
  deleted years missing (the Kalman filter skips them).
- ETS (`ETSModel`, additive errors): trend none / additive / damped, additive season when
  there is one; lowest AIC. It cannot take gaps, so on the irregular series it sees the
  yearly grid with the gaps filled by linear interpolation.
- Climatology: the training values as an ensemble (for the monthly series: the training
  values of the same calendar month; the ratio to every training value's ensemble, the
  climatology that ignores the season, is recorded beside it as `..._all_values`).

Both statsmodels forecasts are Gaussian: CRPS in closed form (Gneiting & Raftery 2007),
90% interval `mean ± 1.645 sd`. bayesde and climatology are scored from their draws
(`E|X − y| − ½ E|X − X'|`, equal-tailed 90% interval). Every score is in units of the
training standard deviation of its column (so the three columns of the multivariate
series average fairly) and averaged over the held-out entries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: name -> (sampling step in years, season length in steps or None, has a cycle/season)
PANEL = {
    "sunspots": (1.0, None, True),
    "sunspots_gappy": (1.0, None, True),
    "elnino": (1.0 / 12.0, 12, True),
    "us_macro_growth": (0.25, None, False),
    "nile": (1.0, None, False),
}
HOLDOUT = 0.10
DAYS_PER_YEAR = 365.25
Z90 = 1.6448536269514722


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", default=",".join(PANEL), help="comma-separated names from the panel")
    p.add_argument("--quick", action="store_true", help="tiny fits (--num-steps 30, 30 draws), small order grids")
    p.add_argument("--dry-run", action="store_true", help="split the data, print the commands, fit nothing")
    p.add_argument("--library", action="store_true", help="skip the command line, call bd.fit/post.forecast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="svi",
                   help="bayesde fit --method: svi (the default), or ensemble (five SVI fits, a mixture)")
    p.add_argument("--transform", default=None,
                   help="bayesde fit --transform (default: the command line's own); the draws are mapped back")
    p.add_argument("--workdir", default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--out", default="benchmarks/results/real_series_cpu.json")
    p.add_argument("--table", action="store_true", help="print the markdown table of the JSON at --out and stop")
    p.add_argument("--diagnose", default=None, metavar="SPEC",
                   help="one library fit of the first --series with changes, e.g. 'steps=10000', 'noise=0.1', "
                        "'time_scale=11,steps=6000' (time_scale: the model's time unit in years instead of the "
                        "training span), 'num_paths=4', 'latent_dim=8'; print in-sample and forecast diagnostics")
    return p.parse_args()


def markdown_table(results: dict) -> str:
    """The docs' table (`docs/real-series.md`) from the JSON's `series` record."""
    rows = ["| series | n train / test | bayesde CRPS | SARIMAX | ETS | climatology | ratio to SARIMAX "
            "| ratio to clim. | bayesde cov. 90% (width) | SARIMAX cov. 90% (width) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        s = r["scores"]
        orders = ", ".join(
            f"{tuple(o['order'])}" + (f"x{tuple(o['seasonal_order'][:3])}{o['seasonal_order'][3]}"
                                      if o["seasonal_order"][3] else "")
            for o in r["sarimax_chosen"])
        sar = f"{s['sarimax']['crps']:.3f} {orders}"
        all_values = ("" if "crps_ratio_vs_climatology_all_values" not in r
                      else f" ({r['crps_ratio_vs_climatology_all_values']:.2f} to all values)")
        rows.append(
            f"| `{name}` | {r['n_train']} / {r['n_test']} | {s['bayesde']['crps']:.3f} | {sar} "
            f"| {s['ets']['crps']:.3f} | {s['climatology']['crps']:.3f} | {r['crps_ratio_vs_sarimax']:.2f} "
            f"| {r['crps_ratio_vs_climatology']:.2f}{all_values} | {s['bayesde']['coverage90']:.2f} "
            f"({s['bayesde']['width90']:.2f}) | {s['sarimax']['coverage90']:.2f} ({s['sarimax']['width90']:.2f}) |")
    return "\n".join(rows)


# ------------------------------------------------------------------------ data
def record(name):
    """`(t, y, names)` of a shipped real series, times in calendar years."""
    import bayesde as bd

    data = bd.datasets.load(name)
    if name == "nile":  # shipped as years since 1871; the panel works in calendar years
        t = data.ts[0] + 1871.0
    else:
        t = data.ts[0].astype(float)
    return t, np.asarray(data.ys[0], dtype=float), list(data.names)


def _split(name):
    """`(t_train, y_train, t_test, y_test, names)`: the last 10% of the rows held out."""
    t, y, names = record(name)
    n_test = math.ceil(HOLDOUT * len(t))
    return t[:-n_test], y[:-n_test], t[-n_test:], y[-n_test:], names


def _month_dates(t):
    """Decimal years on a monthly grid (`year + k/12`) as the first day of each month."""
    year = np.floor(np.asarray(t) + 1e-9).astype(int)
    month = np.rint((np.asarray(t) - year) * 12).astype(int) + 1
    return [f"{y:04d}-{m:02d}-01" for y, m in zip(year, month)]


def _write_train_csv(path, t, y, names, dated=False):
    """The training CSV; a monthly series (`dated`) gets its dates, as a user's file has
    them, so that the command line knows the time of year (SARIMAX is told the season)."""
    import pandas as pd

    df = pd.DataFrame({"time": _month_dates(t) if dated else np.round(t, 6)})
    for j, c in enumerate(names):
        df[c] = y[:, j]
    df.to_csv(path, index=False)


# ----------------------------------------------------------------------- scores
def _crps_draws(draws, obs):
    """Sample CRPS per entry; `draws (S, ...)`, `obs (...)`."""
    x = np.sort(draws, axis=0)
    s = x.shape[0]
    term1 = np.mean(np.abs(x - obs[None]), axis=0)
    # E|X - X'| = 2/S² Σ_i (2i - S - 1) x_(i) for sorted draws
    w = (2.0 * np.arange(1, s + 1) - s - 1.0).reshape((s,) + (1,) * (x.ndim - 1))
    term2 = np.sum(w * x, axis=0) * 2.0 / s**2
    return term1 - 0.5 * term2


def _crps_gauss(mu, sd, obs):
    from scipy.stats import norm

    z = (obs - mu) / sd
    return sd * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))


def _scores(crps, lo, hi, mean, obs, sd_train):
    """Averages over the held-out entries, in units of the training sd per column."""
    return {
        "crps": float(np.mean(crps / sd_train)),
        "coverage90": float(np.mean((obs >= lo) & (obs <= hi))),
        "width90": float(np.mean((hi - lo) / sd_train)),
        "rmse": float(np.sqrt(np.mean(((mean - obs) / sd_train) ** 2))),
    }


def _score_draws(draws, obs, sd_train):
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    return _scores(_crps_draws(draws, obs), lo, hi, draws.mean(axis=0), obs, sd_train)


def _score_gauss(mu, sd, obs, sd_train):
    return _scores(_crps_gauss(mu, sd, obs), mu - Z90 * sd, mu + Z90 * sd, mu, obs, sd_train)


# ------------------------------------------------------------------- baselines
def _grid(t_train, t_test, step):
    """Regular grid from the first training time to the last test time; the index of
    every training and test time on it."""
    n = int(round((t_test[-1] - t_train[0]) / step)) + 1
    grid = t_train[0] + step * np.arange(n)
    i_tr = np.rint((t_train - t_train[0]) / step).astype(int)
    i_te = np.rint((t_test - t_train[0]) / step).astype(int)
    return grid, i_tr, i_te


def _sarimax(y, n_ahead, season, quick):
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    ps = (0, 1, 2) if season or quick else (0, 1, 2, 3)
    seasonal = [(0, 0, 0, 0)]
    if season:
        seasonal += [(1, 0, 0, season), (1, 0, 1, season), (0, 1, 1, season)]
    if quick:
        ps, seasonal = (1, 2), seasonal[:2]
    best, unusable = None, []
    for p in ps:
        for d in (0, 1):
            for q in (0, 1):
                for so in seasonal:
                    try:
                        res = SARIMAX(y, order=(p, d, q), seasonal_order=so, trend="c" if d == 0 else "n").fit(
                            disp=False, maxiter=200)
                    except (ValueError, np.linalg.LinAlgError):
                        continue
                    if not np.isfinite(res.aic) or (best is not None and res.aic >= best[0]):
                        continue
                    f = res.get_forecast(n_ahead)
                    mu, var = np.asarray(f.predicted_mean), np.asarray(f.var_pred_mean)
                    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(var)) and np.all(var >= 0)):
                        unusable.append([p, d, q, *so])  # a fit whose forecast is not finite is no candidate
                        continue
                    best = (res.aic, (p, d, q), so, mu, np.sqrt(var))
    aic, order, so, mu, sd = best
    info = {"order": list(order), "seasonal_order": list(so), "aic": float(aic)}
    if unusable:
        info["skipped_non_finite_forecast"] = unusable
    return mu, sd, info


def _ets(y, n_ahead, season, quick):
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    import pandas as pd

    y = pd.Series(y)
    trends = [(None, False), ("add", False), ("add", True)]
    seasons = [None, "add"] if season else [None]
    if quick:
        trends = trends[:1]
    best = None
    for trend, damped in trends:
        for s in seasons:
            try:
                res = ETSModel(y, error="add", trend=trend, damped_trend=damped, seasonal=s,
                               seasonal_periods=season if s else None).fit(disp=False, maxiter=500)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(res.aic) and (best is None or res.aic < best[0]):
                best = (res.aic, trend, damped, s, res)
    aic, trend, damped, s, res = best
    p = res.get_prediction(start=len(y), end=len(y) + n_ahead - 1)
    return np.asarray(p.predicted_mean), np.sqrt(np.asarray(p.var_pred_mean)), {
        "trend": trend, "damped": damped, "seasonal": s, "aic": float(aic)}


def _baselines(t_train, y_train, t_test, y_test, step, season, quick):
    """SARIMAX and ETS per column on the regular grid; means and sds at the test times."""
    grid, i_tr, i_te = _grid(t_train, t_test, step)
    n_fit = int(i_tr[-1]) + 1
    out = {"sarimax": ([], [], []), "ets": ([], [], [])}
    for j in range(y_train.shape[1]):
        col = np.full(n_fit, np.nan)
        col[i_tr] = y_train[:, j]
        n_ahead = int(len(grid) - n_fit)  # a numpy integer would read as an index label
        at = i_te - n_fit
        mu, sd, info = _sarimax(col, n_ahead, season, quick)
        for k, v in zip(range(3), (mu[at], sd[at], info)):
            out["sarimax"][k].append(v)
        filled = np.interp(np.arange(n_fit), i_tr, y_train[:, j])
        mu, sd, info = _ets(filled, n_ahead, season, quick)
        for k, v in zip(range(3), (mu[at], sd[at], info)):
            out["ets"][k].append(v)
    return {k: (np.stack(m, -1), np.stack(s, -1), info) for k, (m, s, info) in out.items()}


def _climatology(t_train, y_train, t_test, season):
    """Draws `(S, T_test, D)`: the training values (of the same calendar month)."""
    if not season:
        return np.broadcast_to(y_train[:, None, :], (len(y_train), len(t_test), y_train.shape[1]))
    m_tr = np.rint((t_train % 1.0) * season).astype(int) % season
    m_te = np.rint((t_test % 1.0) * season).astype(int) % season
    per = [y_train[m_tr == m] for m in m_te]
    s = min(len(p) for p in per)
    return np.stack([p[-s:] for p in per], axis=1)


# -------------------------------------------------------------------- bayesde
def _bayesde_exe():
    exe = Path(sys.executable).parent / "bayesde"
    return str(exe) if exe.exists() else shutil.which("bayesde")


def _model_horizon(horizon, step, dated):
    """`(horizon, every)` in the model's time unit for a forecast `horizon` years ahead every `step`
    years: a date column is read in days, and then the horizon reaches half a step past the last
    held-out month's first day (months are 28-31 days long)."""
    if not dated:
        return horizon, step
    return horizon * DAYS_PER_YEAR + step * DAYS_PER_YEAR / 2, step * DAYS_PER_YEAR


def _model_times_in_years(times, t0, dated):
    """`(decimal years, tolerance in steps for _draws_at)` of model times: days since the first
    month `t0` for a dated series (a month is not 1/12 year to the day), years otherwise."""
    return (t0 + np.asarray(times) / DAYS_PER_YEAR, 0.5) if dated else (np.asarray(times), 0.01)


def _cli_commands(csv, run, horizon, step, quick, seed, dated=False, method="svi", transform=None):
    horizon, step = _model_horizon(horizon, step, dated)
    fit = [_bayesde_exe(), "fit", "--data", str(csv), "--time-col", "time", "--model", "latent-sde",
           "--method", method, "--out", str(run), "--seed", str(seed), "--force", "--quiet"]
    fc = [_bayesde_exe(), "forecast", "--run", str(run), "--horizon", f"{horizon:.6f}", "--every",
          f"{step:.10f}", "--out", str(run / "forecast"), "--seed", str(seed), "--force", "--quiet"]
    if quick:
        fit += ["--num-steps", "30", "--num-samples", "30"]
    if transform is not None:
        fit += ["--transform", transform]
    return fit, fc


def _draws_at(times, draws, t_test, step, tolerance=0.01):
    idx = [int(np.argmin(np.abs(times - t))) for t in t_test]
    gap = np.max(np.abs(times[idx] - t_test))
    if gap > tolerance * step:
        raise RuntimeError(f"forecast grid misses a held-out time by {gap}")
    return draws[:, idx, :]


def _bayesde_cli(csv, run, horizon, step, t_test, quick, seed, t0=None, method="svi", transform=None):
    """Fit and forecast through the command line; `t0` (the first training time in
    decimal years) when the CSV holds month dates, whose model times are days since it.
    `posterior.nc` holds the draws on the scale the model was fitted on: those of a run
    fitted with a `--transform` (its `cli.json` says which) are mapped back to the data's
    units, as `forecast.csv` gives them."""
    import arviz as az

    from bayesde._cli._csv import inverse

    fit, fc = _cli_commands(csv, run, horizon, step, quick, seed, dated=t0 is not None, method=method,
                            transform=transform)
    for cmd in (fit, fc):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:3])} failed: {r.stderr.strip()[-2000:]}")
    pred = az.from_netcdf(str(run / "forecast" / "posterior.nc")).predictions
    draws = pred["y"].values  # (chain, draw, series, time, variable)
    draws = draws.reshape(-1, *draws.shape[2:])[:, 0]
    draws = inverse(json.loads((run / "cli.json").read_text()).get("transform") or "none", draws)
    times, tolerance = _model_times_in_years(pred["time"].values, t0, t0 is not None)
    return _draws_at(times, draws, t_test, step, tolerance=tolerance), " && ".join(
        " ".join(c[1:]) for c in (fit, fc))


def library_series(t, y, names, dated, transform="none"):
    """The `TimeSeries` that `bayesde fit` reads from the training CSV, its values on the
    `transform` scale. A dated (monthly) series goes through `TimeSeries.from_pandas` with its
    month dates, as the command line reads them: times in days since the first month, so that
    the model knows the time of year."""
    import pandas as pd

    import bayesde as bd
    from bayesde._cli._csv import forward

    y = forward(transform, y)
    if not dated:
        return bd.TimeSeries(t, y[None], names=names)
    frame = pd.DataFrame({"time": _month_dates(t), **{n: y[:, j] for j, n in enumerate(names)}})
    return bd.TimeSeries.from_pandas(frame, time="time", series=None, values=names, time_unit="days")


def library_forecast(post, t_train, t_test, step, dated, key):
    """Draws `(S, T_test, D)` on the model's scale at the times `t_test` (decimal years) from
    `post.forecast` after the end of `t_train`, asked as `bayesde forecast` is asked."""
    horizon, every = _model_horizon(float(t_test[-1] - t_train[-1]), step, dated)
    _, pred = post.forecast(horizon, every=every, key=key, return_prediction=True)
    times, tolerance = _model_times_in_years(pred.ts[0], float(t_train[0]), dated)
    return _draws_at(times, np.asarray(pred.samples)[:, 0], t_test, step, tolerance=tolerance)


def _bayesde_library(t_train, y_train, names, step, t_test, quick, seed, dated=False):
    import jax
    import bayesde as bd

    from bayesde._cli._csv import inverse, resolve_transform

    # the scale the command line's default (`--transform auto`) would fit
    transform = resolve_transform("auto", "latent-sde", library_series(t_train, y_train, names, dated))[0].value
    data = library_series(t_train, y_train, names, dated, transform)
    opts = {"num_steps": 30, "num_samples": 30} if quick else {}
    post = bd.fit(bd.models.LatentSDE(), data, "svi", key=jax.random.key(seed), progress_bar=False, **opts)
    draws = inverse(transform, library_forecast(post, t_train, t_test, step, dated, jax.random.key(seed)))
    return draws, (
        f"bd.fit(bd.models.LatentSDE(), data, 'svi') + post.forecast, on the {transform} scale")


# -------------------------------------------------------------------- diagnose
def diagnose(name, spec, seed=0):
    """One library fit with the CLI's model defaults, on the data's own scale (the version
    0.1 diagnosis; not `--transform auto`), except `spec` ("key=value,..."): the learned
    noise, the in-sample fit and the forecast, all in training sds."""
    import dataclasses

    import jax
    import bayesde as bd

    kw = dict(item.split("=") for item in spec.split(",") if item) if spec else {}
    steps = int(kw.pop("steps", 2000))
    time_scale = kw.pop("time_scale", None)
    model_kw = {k: float(v) if k == "noise" else int(v) for k, v in kw.items()}
    model = bd.models.LatentSDE(**model_kw)
    if time_scale is not None:  # a diagnostic only: override the unit that adapt() derives from the span
        adapt = type(model).adapt
        type(model).adapt = lambda self, data: dataclasses.replace(adapt(self, data), time_scale=float(time_scale))
    step, season, _ = PANEL[name]
    t_tr, y_tr, t_te, y_te, names = _split(name)
    sd = y_tr.std(0)
    post = bd.fit(model, bd.TimeSeries(t_tr, y_tr[None], names=names), "svi", key=jax.random.key(seed),
                  progress_bar=False, num_steps=steps)
    _, pred = post.forecast(float(t_te[-1] - t_tr[-1]), every=step, key=jax.random.key(seed),
                            return_prediction=True)
    draws, grid = np.asarray(pred.samples)[:, 0], pred.ts[0]
    ins = _draws_at(grid, draws, t_tr, step).mean(0)
    fut = _draws_at(grid, draws, t_te, step)
    sc = _score_draws(fut, y_te, sd)
    noise = [float(np.exp(np.asarray(v)).ravel()[0]) for k, v in post.params.items() if k.endswith("log_noise")]
    loss = np.asarray(post.loss).ravel()
    return {
        "series": name, "spec": spec, "final_loss": float(loss[-100:].mean()),
        "steps_run": int(loss.size), "best_step": post.info.best_step,
        "learned_noise_sd": noise, "in_sample_rmse": float(np.sqrt(np.mean(((ins - y_tr) / sd) ** 2))),
        "forecast_crps": sc["crps"], "coverage90": sc["coverage90"],
        "crps_vs_climatology": sc["crps"] / _score_draws(_climatology(t_tr, y_tr, t_te, season), y_te, sd)["crps"],
        "forecast_sd": float((fut.std(0) / sd).mean()), "truth_sd": float((y_te.std(0) / sd).mean()),
    }


# ----------------------------------------------------------------------- main
def run_series(name, args, workdir):
    step, season, cycle = PANEL[name]
    t_tr, y_tr, t_te, y_te, names = _split(name)
    sd_train = np.std(y_tr, axis=0)
    csv = workdir / f"{name}_train.csv"
    dated = season is not None
    _write_train_csv(csv, t_tr, y_tr, names, dated=dated)
    run = workdir / f"{name}_run"
    horizon = float(t_te[-1] - t_tr[-1])
    rec = {
        "n_train": int(len(t_tr)), "n_test": int(len(t_te)), "dim": len(names), "names": names,
        "train_span": [float(t_tr[0]), float(t_tr[-1])], "test_span": [float(t_te[0]), float(t_te[-1])],
        "step_years": step, "season": season, "cycle_or_season": cycle, "horizon_years": horizon,
    }
    if args.dry_run:
        fit, fc = _cli_commands(csv, run, horizon, step, args.quick, args.seed, dated=dated, method=args.method,
                                transform=args.transform)
        rec["commands"] = [" ".join(fit[1:]), " ".join(fc[1:])]
        return rec, None
    t0 = time.perf_counter()
    how, draws = "cli", None
    if not args.library:
        for attempt in range(2):
            try:
                draws, cmd = _bayesde_cli(csv, run, horizon, step, t_te, args.quick, args.seed,
                                          t0=float(t_tr[0]) if dated else None, method=args.method,
                                          transform=args.transform)
                break
            except RuntimeError as e:
                rec.setdefault("cli_errors", []).append(str(e)[-500:])
                time.sleep(0 if args.quick else 60 * (attempt == 0))
    if draws is None:
        # the library fallback: SVI, on the scale the command line's default chooses
        if args.method != "svi" or args.transform is not None:
            raise RuntimeError(f"{name}: bayesde fit --method {args.method} --transform {args.transform} failed: "
                               f"{rec['cli_errors'][-1]}")
        how = "library"
        draws, cmd = _bayesde_library(t_tr, y_tr, names, step, t_te, args.quick, args.seed, dated)
    rec["bayesde_seconds"] = round(time.perf_counter() - t0, 1)
    rec["bayesde_via"] = how
    rec["bayesde_command"] = cmd
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = _baselines(t_tr, y_tr, t_te, y_te, step, season, args.quick)
    rec["baseline_seconds"] = round(time.perf_counter() - t0, 1)
    clim = _climatology(t_tr, y_tr, t_te, season)
    scores = {
        "bayesde": _score_draws(draws, y_te, sd_train),
        "sarimax": _score_gauss(base["sarimax"][0], base["sarimax"][1], y_te, sd_train),
        "ets": _score_gauss(base["ets"][0], base["ets"][1], y_te, sd_train),
        "climatology": _score_draws(clim, y_te, sd_train),
    }
    if season:  # the climatology: every training value, whatever its month
        scores["climatology_all_values"] = _score_draws(_climatology(t_tr, y_tr, t_te, None), y_te, sd_train)
    rec["scores"] = scores
    rec["sarimax_chosen"] = base["sarimax"][2]
    rec["ets_chosen"] = base["ets"][2]
    b = scores["bayesde"]["crps"]
    rec["crps_ratio_vs_sarimax"] = b / scores["sarimax"]["crps"]
    rec["crps_ratio_vs_ets"] = b / scores["ets"]["crps"]
    rec["crps_ratio_vs_climatology"] = b / scores["climatology"]["crps"]
    if season:
        rec["crps_ratio_vs_climatology_all_values"] = b / scores["climatology_all_values"]["crps"]
    rec["passes"] = {
        "crps_at_most_1.2x_sarimax": rec["crps_ratio_vs_sarimax"] <= 1.2,
        "coverage90_at_least_0.8": scores["bayesde"]["coverage90"] >= 0.8,
    }
    if name == "sunspots_gappy":
        rec["passes"]["better_than_sarimax"] = rec["crps_ratio_vs_sarimax"] < 1.0
    if cycle:
        rec["passes"]["crps_at_most_0.8x_climatology"] = rec["crps_ratio_vs_climatology"] <= 0.8
    plot = {"t_tr": t_tr, "y_tr": y_tr, "t_te": t_te, "y_te": y_te, "draws": draws,
            "sarimax": base["sarimax"][:2], "names": names}
    return rec, plot


def _figure(plots, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(plots), 1, figsize=(9, 2.6 * len(plots)), squeeze=False)
    for ax, (name, p) in zip(axes[:, 0], plots.items()):
        n_show = 3 * len(p["t_te"])
        lo, hi = np.quantile(p["draws"][..., 0], [0.05, 0.95], axis=0)
        mu, sd = p["sarimax"][0][:, 0], p["sarimax"][1][:, 0]
        ax.plot(p["t_tr"][-n_show:], p["y_tr"][-n_show:, 0], ".", color="0.3", ms=3, label="training data")
        ax.plot(p["t_te"], p["y_te"][:, 0], "o", color="k", ms=3, label="held out")
        ax.fill_between(p["t_te"], lo, hi, color="C0", alpha=0.3, label="bayesde 90%")
        ax.plot(p["t_te"], np.median(p["draws"][..., 0], axis=0), color="C0", lw=1)
        ax.fill_between(p["t_te"], mu - Z90 * sd, mu + Z90 * sd, color="C1", alpha=0.25, label="SARIMAX 90%")
        ax.plot(p["t_te"], mu, color="C1", lw=1)
        ax.set_title(f"{name} ({p['names'][0]})", fontsize=9)
        ax.set_xlabel("year")
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    args = _parse()
    if args.table:
        print(markdown_table(json.loads(Path(args.out).read_text())["series"]))
        return
    names = [s.strip() for s in args.series.split(",") if s.strip()]
    unknown = [s for s in names if s not in PANEL]
    if unknown:
        raise SystemExit(f"--series: {unknown} not in the panel {list(PANEL)}")
    if args.method != "svi" and (args.library or args.diagnose is not None):
        raise SystemExit(f"--method {args.method}: --library and --diagnose fit with SVI only; drop one of them")
    if args.diagnose is not None:
        print(json.dumps(diagnose(names[0], args.diagnose, args.seed)))
        return
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bayesde_real_")
        workdir = Path(tmp.name)
    results, plots = {}, {}
    t_start = time.perf_counter()
    for name in names:
        rec, plot = run_series(name, args, workdir)
        results[name] = rec
        if plot is not None:
            plots[name] = plot
            s = rec["scores"]
            print(f"{name:16s} CRPS bayesde {s['bayesde']['crps']:.3f} sarimax {s['sarimax']['crps']:.3f} "
                  f"ets {s['ets']['crps']:.3f} clim {s['climatology']['crps']:.3f} | ratio {rec['crps_ratio_vs_sarimax']:.2f}"
                  f" | cov90 {s['bayesde']['coverage90']:.2f} ({rec['bayesde_via']}, {rec['bayesde_seconds']} s)",
                  flush=True)
        else:
            print(json.dumps({name: rec}, indent=1))
    if args.dry_run:
        return
    import bayesde as bd
    import jax
    from _machine import avx512

    out = {
        "benchmark": "real_series",
        "holdout": f"last {HOLDOUT:.0%} of the observed rows (rounded up)",
        "units": "every score in units of the training standard deviation of its column, averaged over "
                 "the held-out entries",
        "quick": args.quick,
        "seed": args.seed,
        "method": args.method,
        "transform": args.transform,
        "seconds": round(time.perf_counter() - t_start, 1),
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "avx512": avx512(), "jax": jax.__version__, "device": str(jax.devices()[0]),
            "bayesde": getattr(bd, "__version__", None), "python": platform.python_version(),
        },
        "series": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    _figure(plots, str(Path(args.out).with_suffix(".png")))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
