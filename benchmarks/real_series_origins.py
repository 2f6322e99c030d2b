"""Real series scored from several forecast origins, each a fresh fit on the history up to it.

    python benchmarks/real_series_origins.py                                # sunspots, the model's defaults
    python benchmarks/real_series_origins.py --variants "" "steps_per_unit=16"
    python benchmarks/real_series_origins.py --variants "members=4"         # a deep ensemble of 4
    python benchmarks/real_series_origins.py --variants "transform=log1p,members=4,combine=best-elbo"  # --restarts 4
    python benchmarks/real_series_origins.py --variants "transform=log1p"   # fitted on log(1 + y)
    python benchmarks/real_series_origins.py --series sunspots_gappy --origins 1900 1940 1977
    python benchmarks/real_series_origins.py --variants "transform=log1p" --scales   # also with κ = 1, with ρ = 0

`benchmarks/real_series.py` scores one split per series: the last 10% of the rows. For a
quasi-periodic record that is one draw of a phase and an amplitude (sunspots: the two
strongest cycles of the century follow the split), too few to tell a model that learned
the cycle from one that did not. Here every origin `t₀` refits bayesde's latent SDE on the
rows at or before `t₀` (library calls with the model's defaults, `bd.fit(
bd.models.LatentSDE(**variant), history, "svi")` then `post.forecast`, 2000 steps; the
variant `transform=log1p` is what `bayesde fit --transform auto`, the command line's
default, does with a record never below zero) and
scores the next `--horizon` rows beside a SARIMAX chosen by AIC on the same history and
the history's climatology, exactly as `real_series.py` scores them (CRPS and 90% interval
in units of the history's standard deviation). Origins before the last tenth of the
record use rows the one-split benchmark trains on: a rolling-origin backtest, every fit
honest about its own future.

Writes JSON (per origin and pooled: CRPS, 90% coverage and width of each forecaster,
bayesde's CRPS over SARIMAX's and over the climatology's). For a record never below zero
the same SARIMAX search also runs on `log(1 + y)` (`sarimax_log1p`, its Gaussian draws mapped
back by `expm1`): the classical model on the scale of `bayesde fit --transform log1p`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import machine  # noqa: E402
from calibration import _model_options  # noqa: E402
from real_series import (PANEL, _baselines, _climatology, _score_draws, _score_gauss,  # noqa: E402
                         library_forecast, library_series, record)


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", default="sunspots", choices=sorted(PANEL))
    p.add_argument("--origins", nargs="*", type=float, default=[1900, 1920, 1940, 1960, 1977, 1990],
                   help="origin times (decimal years); each fit sees the rows at or before it")
    p.add_argument("--horizon", type=int, default=15, help="rows scored after each origin")
    p.add_argument("--variants", nargs="*", default=[""],
                   help='LatentSDE options per variant, "name=value,name=value" ("" = the defaults; '
                       '"members=4" fits a deep ensemble of 4 instead of one SVI fit, "members=4,combine=quantiles" '
                       'averages its members\' quantiles, "members=4,combine=best-elbo" keeps the member with the highest ELBO, as '
                       'bayesde fit --restarts 4; "transform=log1p" fits log(1 + y), as bayesde fit --transform log1p)')
    p.add_argument("--steps", type=int, default=2000, help="SVI steps (the command line's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scales", action="store_true",
                   help="also forecast each single fit again with kappa = 1 and with rho = 0 (its forecast scales "
                        "switched off one at a time; same fit, same key), as benchmarks/forecast_scales.py does on the panel")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/real_series_origins_<series>_cpu.json)")
    return p.parse_args()


#: Variant keys that are options of the ensemble engine, not of the model.
_ENSEMBLE_KEYS = ("members", "cross_fit", "combine")
#: Variant keys of the data's scale (`bayesde fit --transform`), not of the model.
_DATA_KEYS = ("transform",)


def _variant(spec):
    """`(model options, fit options, transform)` of a variant `"name=value,..."`: `members=M` fits
    a deep ensemble of `M` members (`method="ensemble"`) instead of one SVI fit, with `cross_fit=1`
    and `combine=quantiles` its options; `transform=log1p` (or `log`) fits the model on that
    scale and maps every draw back, as `bayesde fit --transform` does; the rest are `LatentSDE`
    fields."""
    tokens = [s for s in spec.split(",") if s]
    transform = "none"
    for s in [s for s in tokens if s.split("=", 1)[0] in _DATA_KEYS]:
        transform = s.split("=", 1)[1]
        if transform not in ("none", "log", "log1p"):
            raise SystemExit(f"variant {spec!r}: transform={transform!r}; choose none, log or log1p")
    tokens = [s for s in tokens if s.split("=", 1)[0] not in _DATA_KEYS]
    engine = _model_options([s for s in tokens if s.split("=", 1)[0] in _ENSEMBLE_KEYS])
    fit = dict(method="svi")
    if "members" in engine:
        fit = dict(method="ensemble", num_members=int(engine.pop("members")))
        if "cross_fit" in engine:
            engine["cross_fit"] = bool(engine["cross_fit"])
        fit.update(engine)
    elif engine:
        raise SystemExit(f"variant {spec!r}: {sorted(engine)} are ensemble options; add members=M")
    return _model_options([s for s in tokens if s.split("=", 1)[0] not in _ENSEMBLE_KEYS]), fit, transform


#: The forecast scales' parameters (log κ, log ρ), and what `--scales` sets each to in turn (κ = 1, ρ = 0).
_KAPPA, _RHO = "latent_sde.forecast_log_scale", "latent_sde.forecast_log_discrepancy"
_SCALES = {"kappa=1": (_KAPPA, 0.0), "rho=0": (_RHO, -np.inf)}


def _switched_off(params: dict) -> dict:
    """`{"kappa=1": params, "rho=0": params}`: `params` with one forecast scale switched off
    in each (a fit without the scales, `forecast_holdout=0`, gives `{}`)."""
    return {name: dict(params, **{key: np.full(np.shape(params[key]), value, np.float32)})
            for name, (key, value) in _SCALES.items() if key in params}


def _bayesde(t_hist, y_hist, names, t_target, step, options, steps, seed, fit_options=None, transform="none",
             dated=False, switch_off=False):
    """`(draws, kept step, fitted values, draws with each scale switched off)`: the fitted values
    are κ and ρ and, for restarts (`combine=best-elbo`), every member's ELBO and the member kept;
    the last is `{}` unless `switch_off` (single fits only), else `{"kappa=1": draws, "rho=0":
    draws}` from the same fit and key."""
    import copy

    import jax

    import bayesde as bd
    from bayesde._cli._csv import inverse

    data = library_series(t_hist, y_hist, names, dated, transform)
    post = bd.fit(bd.models.LatentSDE(**options), data, key=jax.random.key(seed), progress_bar=False,
                  num_steps=steps, **(fit_options or dict(method="svi")))
    draws = library_forecast(post, t_hist, t_target, step, dated, jax.random.key(seed))
    best = getattr(post.info, "member_best_step", None) or post.info.best_step
    fitted = {name: np.exp(np.asarray(post.params[key])).round(3).tolist()  # κ and ρ (per member of an ensemble)
              for name, key in (("kappa", _KAPPA), ("rho", _RHO)) if key in post.params}
    if getattr(post.info, "selected_member", None) is not None:  # restarts: what the choice saw
        fitted.update(member_elbo=[round(v, 2) for v in post.info.member_elbo], selected_member=post.info.selected_member)
    off = {}
    for name, params in (_switched_off(post.params) if switch_off else {}).items():
        other = copy.copy(post)  # a new posterior: its predictive is compiled with these parameters
        other.params = params
        off[name] = inverse(transform, library_forecast(other, t_hist, t_target, step, dated, jax.random.key(seed)))
    return inverse(transform, draws), best, fitted, off  # the data's units, as `bayesde forecast` gives them


def _log1p_gauss_draws(mu, sd, n=2000, seed=0):
    """Draws in the data's units `(n, T, D)` of a Gaussian forecast `N(mu, sd²)` of
    `log(1 + y)`: mapped back by the map `bayesde forecast` applies to a `--transform log1p`
    run's draws (`expm1`, floored at 0; the quantiles of a monotone map, scored from draws)."""
    from bayesde._cli._csv import inverse

    z = np.random.default_rng(seed).standard_normal((n,) + np.shape(mu))
    return inverse("log1p", mu[None] + sd[None] * z)


def origin_split(t, origin, horizon):
    """`(hist, target)`: which rows of the times `t` are the history at `origin` (those at or
    before it) and the indices of the next `horizon` rows, which are scored; `SystemExit` names
    an origin that leaves fewer than 20 rows of history or nothing to score."""
    hist = t <= origin
    target = np.flatnonzero(~hist)[:horizon]
    if hist.sum() < 20 or target.size == 0:
        raise SystemExit(f"--origins: {origin} leaves {hist.sum()} rows of history and {target.size} to score; "
                         "choose an origin inside the record.")
    return hist, target


def main():
    args = _parse()
    for spec in args.variants if args.scales else ():
        if _variant(spec)[1]["method"] != "svi":
            raise SystemExit(f"--scales: variant {spec!r} fits an ensemble; --scales switches off one SVI fit's scales")
    step, season, _ = PANEL[args.series]
    t, y, names = record(args.series)
    out_path = Path(args.out or HERE / "results" / f"real_series_origins_{args.series}_cpu.json")
    runs, t0 = [], time.perf_counter()
    for origin in args.origins:
        hist, target = origin_split(t, origin, args.horizon)
        t_h, y_h, t_f, y_f = t[hist], y[hist], t[target], y[target]
        sd = y_h.std(0)
        base = _baselines(t_h, y_h, t_f, y_f, step, season, quick=False)
        mu, s, info = base["sarimax"]
        row = {"origin": origin, "n_history": int(hist.sum()), "n_scored": int(target.size),
               "sarimax": _score_gauss(mu, s, y_f, sd), "sarimax_chosen": info,
               "climatology": _score_draws(_climatology(t_h, y_h, t_f, season), y_f, sd)}
        if season:  # the climatology that ignores the season: every value of the history
            row["climatology_all_values"] = _score_draws(_climatology(t_h, y_h, t_f, None), y_f, sd)
        if (y_h >= 0).all():  # the classical model on the scale a statistician would give such data
            log_base = _baselines(t_h, np.log1p(y_h), t_f, np.log1p(y_f), step, season, quick=False)
            row["sarimax_log1p"] = _score_draws(_log1p_gauss_draws(*log_base["sarimax"][:2]), y_f, sd)
            row["sarimax_log1p_chosen"] = log_base["sarimax"][2]
        for spec in args.variants:
            tic = time.perf_counter()
            options, fit_options, transform = _variant(spec)
            draws, best, fitted, off = _bayesde(t_h, y_h, names, t_f, step, options, args.steps, args.seed, fit_options,
                                                transform, dated=season is not None, switch_off=args.scales)
            row[f"bayesde[{spec}]"] = dict(_score_draws(draws, y_f, sd), best_step=best, **fitted,
                                          seconds=round(time.perf_counter() - tic, 1))
            for name, d in off.items():
                row[f"bayesde[{spec}] {name}"] = _score_draws(d, y_f, sd)
            print(f"origin {origin:g} [{spec}]: CRPS {row[f'bayesde[{spec}]']['crps']:.3f} "
                  f"(SARIMAX {row['sarimax']['crps']:.3f}, climatology {row['climatology']['crps']:.3f}), "
                  f"cov90 {row[f'bayesde[{spec}]']['coverage90']:.2f}", flush=True)
        runs.append(row)
    summary = {}
    keys = ["sarimax"] + (["sarimax_log1p"] if all("sarimax_log1p" in r for r in runs) else [])
    keys += ["climatology"] + (["climatology_all_values"] if season else [])
    keys += [k for k in runs[0] if k.startswith("bayesde[")]
    for key in keys:
        crps = np.array([r[key]["crps"] for r in runs])
        summary[key] = {
            "crps_mean": float(crps.mean()),
            "coverage90_mean": float(np.mean([r[key]["coverage90"] for r in runs])),
            "coverage90_min": float(np.min([r[key]["coverage90"] for r in runs])),
            "width90_mean": float(np.mean([r[key]["width90"] for r in runs])),
            "crps_ratio_vs_sarimax": float(crps.mean() / np.mean([r["sarimax"]["crps"] for r in runs])),
            "crps_ratio_vs_climatology": float(crps.mean() / np.mean([r["climatology"]["crps"] for r in runs])),
        }
    result = {
        "benchmark": "real series from several origins, a fresh fit per origin",
        "command": "python benchmarks/real_series_origins.py " + " ".join(
            f'"{a}"' if (a == "" or " " in a) else a for a in sys.argv[1:]),
        "series": args.series, "horizon_rows": args.horizon, "steps": args.steps, "seed": args.seed,
        "units": "every score in units of the history's standard deviation, averaged over the scored rows",
        "seconds": round(time.perf_counter() - t0, 1), "machine": machine(), "summary": summary, "runs": runs,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    for key, s in summary.items():
        print(f"{key:32s} CRPS {s['crps_mean']:.3f}  /SARIMAX {s['crps_ratio_vs_sarimax']:.2f}  "
              f"/clim {s['crps_ratio_vs_climatology']:.2f}  cov90 {s['coverage90_mean']:.2f} (min {s['coverage90_min']:.2f})")
    print("wrote", out_path)


if __name__ == "__main__":
    main()
