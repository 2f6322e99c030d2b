"""Does the held-back score pick the better of several fits of one record?

    python benchmarks/restart_selection.py --series sunspots_gappy --seeds 0 1 2 3
    python benchmarks/restart_selection.py --series sunspots --seeds 0 1 2 3 --origins 1900 1940

On a single record the latent SDE's forecast from one origin moves more from one seed to
the next than from most changes of the model (`docs/real-series.md`): some fits learn the
record's cycle, some explain it as noise around a level. A user with one record can fit it
several times; the question is whether anything they can see without the future tells the
better fit. Here every origin's history (the rows at or before it, on `--transform`'s
scale, as `real_series_origins.py` fits it) is fitted once per seed with the model's
defaults (`bd.fit(bd.models.LatentSDE(**model_args), history, "svi")`, each fit's key its
seed, so seed `s` is `real_series_origins.py --seed s`'s fit), and each fit records

- its held-back score at the parameters it kept: the CRPS of its forecasts of the record's
  own held-back tail (`LatentSDE`'s `forecast_score` site, the score `keep_best` stops on),
  averaged over `--draws` keys, in standardised units: seen by the user, not the future;
- its learned observation noise (standardised units);
- its ELBO at the parameters it kept (the training program's log density without the
  held-back score, `bd.Ensemble(combine="best-elbo")`'s criterion, averaged over as many
  particles as the held-back score's draws): the usual criterion for variational restarts,
  in-sample;
- its forecast of the next `--horizon` rows scored as `real_series_origins.py` scores it
  (CRPS, 90% coverage and width in units of the history's standard deviation).

The summary compares, over the origins, the CRPS of the fit with the lowest held-back
score (the selected restart), of the fit with the lowest observation noise (the one that
explains the most of the record as dynamics; an in-sample criterion) and of the fit with the
highest ELBO with the fits' mean
(one fit at random) and their best (an oracle that sees the future), and gives the rank
correlation between held-back score and CRPS at each origin. Writes JSON.
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
from real_series import PANEL, _score_draws, library_forecast, library_series, record  # noqa: E402
from real_series_origins import origin_split  # noqa: E402


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", default="sunspots_gappy", choices=sorted(PANEL))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3], help="one fit per seed at every origin")
    p.add_argument("--origins", nargs="*", type=float, default=[1900, 1920, 1940, 1960, 1977, 1990])
    p.add_argument("--horizon", type=int, default=15, help="rows scored after each origin")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--draws", type=int, default=256,
                   help="draws the held-back score is averaged over (up to 64, or in rounds of 64 above it)")
    p.add_argument("--transform", default="log1p", choices=["none", "log", "log1p"],
                   help="the scale the model is fitted on (log1p: the command line's default for this data)")
    p.add_argument("--model-args", default="", help='LatentSDE options, "name=value,name=value"')
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/restart_selection_<series>_cpu.json)")
    return p.parse_args(argv)


def _ranks(x):
    return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)


def select(rows):
    """`(per_origin, summary)` of fit rows `{"origin", "seed", "held_out", "noise", "crps", ...}`:
    at every origin with at least two fits, the CRPS of the fit with the lowest held-back
    score (`selected`), of the one with the lowest observation noise (`lowest_noise`, summed
    over the columns; the first of a tie) and, where the rows have an `"elbo"`, of the one with
    the highest ELBO (`highest_elbo`), the fits' mean, best and worst CRPS, and the
    rank correlation of held-back score and CRPS (Spearman's, no ties expected); the summary
    averages them over the origins."""
    per_origin = []
    for origin in sorted({r["origin"] for r in rows}):
        fits = [r for r in rows if r["origin"] == origin]
        if len(fits) < 2:
            continue
        held = np.array([r["held_out"] for r in fits])
        crps = np.array([r["crps"] for r in fits])
        chosen = int(np.argmin(held))
        quiet = int(np.argmin([np.sum(r["noise"]) for r in fits]))
        rho = float(np.corrcoef(_ranks(held), _ranks(crps))[0, 1]) if len(fits) > 2 else float("nan")
        more = {}
        if all("elbo" in r for r in fits):
            more["highest_elbo"] = float(crps[int(np.argmax([r["elbo"] for r in fits]))])
        per_origin.append({"origin": origin, "selected_seed": fits[chosen]["seed"], "selected": float(crps[chosen]),
                           "lowest_noise": float(crps[quiet]), **more,
                           "mean": float(crps.mean()), "best": float(crps.min()), "worst": float(crps.max()),
                           "spearman": rho})
    keys = ("selected", "lowest_noise", "mean", "best", "worst")
    keys += ("highest_elbo",) if per_origin and all("highest_elbo" in o for o in per_origin) else ()
    summary = {f"crps_{k}": float(np.mean([o[k] for o in per_origin])) for k in keys} if per_origin else {}
    if per_origin:
        summary["selected_over_mean"] = summary["crps_selected"] / summary["crps_mean"]
        summary["origins_selected_at_least_as_good_as_mean"] = int(sum(o["selected"] <= o["mean"] for o in per_origin))
        summary["origins"] = len(per_origin)
    return per_origin, summary


def _fit_once(t_h, y_h, names, t_f, y_f, step, seed, args, options):
    import jax

    import bayesde as bd
    from bayesde._cli._csv import inverse
    from bayesde.inference._registry import _bind
    from bayesde.inference._svi import _empty_guide, _held_out_fn, elbo_fn

    data = library_series(t_h, y_h, names, False, args.transform)
    post = bd.fit(bd.models.LatentSDE(**options), data, key=jax.random.key(seed), progress_bar=False,
                  num_steps=args.steps, method="svi")
    model = post.model
    score = _held_out_fn(model, data.batch(), model.held_out_site, min(args.draws, 64))
    params = {k: jax.numpy.asarray(v) for k, v in post.params.items()}
    rounds = max(1, args.draws // 64)
    held = float(np.mean([float(score(params, jax.random.key(100 + i))) for i in range(rounds)]))
    batch = data.batch()
    elbo_of = jax.jit(elbo_fn(_bind(model, None, batch), _empty_guide, model.held_out_site, min(args.draws, 64)))
    elbo = float(np.mean([float(elbo_of(params, jax.random.key(100 + i), batch)) for i in range(rounds)]))
    draws = inverse(args.transform, library_forecast(post, t_h, t_f, step, False, jax.random.key(seed)))
    log_noise = post.params.get("latent_sde.log_noise")  # absent when the model's noise is fixed
    noise = np.full(y_h.shape[-1], model.noise) if log_noise is None else np.exp(np.asarray(log_noise))
    return dict(held_out=held, elbo=elbo, best_step=post.info.best_step, noise=noise.round(4).tolist(),
                **_score_draws(draws, y_f, y_h.std(0)))


def main(argv=None):
    args = _parse(argv)
    step, season, _ = PANEL[args.series]
    if season is not None:
        raise SystemExit(f"--series {args.series}: a dated (seasonal) record; this script reads yearly records")
    options = _model_options([s for s in args.model_args.split(",") if s])
    t, y, names = record(args.series)
    out_path = Path(args.out or HERE / "results" / f"restart_selection_{args.series}_cpu.json")
    rows, t0 = [], time.perf_counter()
    for origin in args.origins:
        hist, target = origin_split(t, origin, args.horizon)
        for seed in args.seeds:
            tic = time.perf_counter()
            row = dict(origin=origin, seed=seed, **_fit_once(t[hist], y[hist], names, t[target], y[target], step, seed,
                                                              args, options))
            row["seconds"] = round(time.perf_counter() - tic, 1)
            rows.append(row)
            print(f"origin {origin:g} seed {seed}: held-back {row['held_out']:.3f}, ELBO {row['elbo']:.1f}, "
                  f"CRPS {row['crps']:.3f}, "
                  f"noise {row['noise'][0]:.2f}", flush=True)
    per_origin, summary = select(rows)
    result = {
        "benchmark": "restart selection by the held-back score, one record, several origins",
        "command": "python benchmarks/restart_selection.py " + " ".join(
            f'"{a}"' if (a == "" or " " in a) else a for a in (sys.argv[1:] if argv is None else argv)),
        "series": args.series, "seeds": args.seeds, "steps": args.steps, "transform": args.transform,
        "model_args": options, "draws": args.draws,
        "units": "CRPS in units of the history's standard deviation over the scored rows; held-back score in "
                 "standardised units",
        "seconds": round(time.perf_counter() - t0, 1), "machine": machine(), "summary": summary,
        "per_origin": per_origin, "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    for o in per_origin:
        print(f"origin {o['origin']:g}: selected {o['selected']:.3f} (seed {o['selected_seed']}), mean {o['mean']:.3f}, "
              f"best {o['best']:.3f}, rank correlation {o['spearman']:.2f}")
    if summary:
        print(f"selected {summary['crps_selected']:.3f}, lowest noise {summary['crps_lowest_noise']:.3f}, "
              f"highest ELBO {summary.get('crps_highest_elbo', float('nan')):.3f}, "
              f"mean of fits {summary['crps_mean']:.3f}, "
              f"best {summary['crps_best']:.3f} (selected / mean {summary['selected_over_mean']:.3f})")
    print("wrote", out_path)


if __name__ == "__main__":
    main()
