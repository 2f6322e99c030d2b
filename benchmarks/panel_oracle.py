"""The true law's own coverage on the calibration panel: how far from nominal a perfect
model's intervals land on the panel's held-out points.

For every forecast process of `bd.datasets.panel()` whose law is known, the forecast of
each series is simulated from the *true* parameters, started at the true (noise-free)
state at the series' last history time, with the simulator's observation noise added:
the best forecast any model could make, short of knowing the future noise. It is scored
exactly as `calibration.py --panel` scores a model (same data, same split, same
`_score`). Its coverage is not the nominal one: sixteen series observed over a quarter of
their window are few, correlated points, so a perfect model's 90% coverage moves from
data set to data set. `--draws N` measures that spread over N data sets per process
(seeds beyond the panel's); the panel's own seeds are reported one by one, beside the
models' rows of the panel CSV.

    python benchmarks/panel_oracle.py --draws 100           # quick panel sizes, 2 seeds
    python benchmarks/panel_oracle.py --full --seeds 3      # full sizes, 3 seeds, 50 draws, 500 samples

Writes `benchmarks/results/panel_oracle_{quick,full}_cpu.json`: per process, the panel
seeds' rows and, over the draws, the mean, sd, 5% and 95% quantiles of 90% coverage, how
often a group of `--seeds` draws misses the band or meets the whole must-show, and the
CRPS over climatology's; and the chance that a perfect model meets the must-show on
every process at once.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration as C  # noqa: E402

import bayesde as bd  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _noise(case, quick):
    """The observation-noise sd the case simulates with (its size override, else the
    simulator's default), and whether it is relative."""
    kw = case.quick if quick else case.sizes
    name = case.builder.__name__
    default = inspect.signature(bd.datasets.geometric_brownian_motion if name == "_gbm" else case.builder)
    sd = kw.get("noise_std", default.parameters["noise_std"].default)
    return float(sd), name in ("_gbm", "lv_process_noise")


def _stepper(name, truth, i):
    """`(step(x, h, rng) -> x, dt, to_obs(x) -> values)` of process `name`, series `i`, on the
    state the simulator integrates (log scale for Lotka–Volterra, the residual for the
    seasonal series, value and regime for the switching OU)."""
    if name == "ornstein_uhlenbeck":
        th, mu, sg = truth["theta"], truth["mu"], truth["sigma"]

        def step(x, h, rng):
            a = math.exp(-th * h)
            return mu + (x - mu) * a + sg * math.sqrt((1 - a * a) / (2 * th)) * rng.standard_normal(x.shape)

        return step, 0.05, lambda x: x
    if name == "cir":
        k, th, sg = truth["kappa"], truth["theta"], truth["sigma"]

        def step(x, h, rng):
            xp = np.maximum(x, 0.0)
            return x + k * (th - xp) * h + sg * np.sqrt(xp * h) * rng.standard_normal(x.shape)

        return step, 5e-3, lambda x: np.maximum(x, 0.0)
    if name == "damped_oscillator":
        om, ze, sg = truth["omega"], truth["zeta"], truth["sigma"]

        def step(u, h, rng):
            x, v = u[:, 0], u[:, 1]
            v2 = v + (-(om**2) * x - 2 * ze * om * v) * h + sg * math.sqrt(h) * rng.standard_normal(v.shape)
            return np.stack([x + v * h, v2], axis=1)

        return step, 5e-3, lambda u: u
    if name == "regime_switching":
        lv, rate, th, sg = np.asarray(truth["levels"]), truth["rate"], truth["theta"], truth["sigma"]

        def step(u, h, rng):
            x, s = u[:, 0], u[:, 1].astype(int)
            a = math.exp(-th * h)
            x = lv[s] + (x - lv[s]) * a + sg * math.sqrt((1 - a * a) / (2 * th)) * rng.standard_normal(x.shape)
            s = np.where(rng.random(s.shape) < -math.expm1(-rate * h), 1 - s, s)
            return np.stack([x, s], axis=1)

        return step, 1e-2, lambda u: u[:, :1]
    if name == "_gbm":
        mu, sg = truth["mu"], truth["sigma"]

        def step(x, h, rng):
            return x * np.exp((mu - 0.5 * sg**2) * h + sg * math.sqrt(h) * rng.standard_normal(x.shape))

        return step, 1.0, lambda x: x
    if name == "lv_process_noise":
        al, be, ga, de, sg = (truth[k] for k in ("alpha", "beta", "gamma", "delta", "sigma"))

        def step(u, h, rng):
            x, y = np.exp(u[:, 0]), np.exp(u[:, 1])
            d = np.stack([al - be * y, de * x - ga], axis=1)
            return u + d * h + sg * math.sqrt(h) * rng.standard_normal(u.shape)

        return step, 1e-2, np.exp
    if name == "seasonal_trend":
        rate, rsd = truth["residual_rate"], truth["residual_sd"]

        def step(r, h, rng):
            a = math.exp(-rate * h)
            return r * a + rsd * math.sqrt(1 - a * a) * rng.standard_normal(r.shape)

        return step, 1e-2, lambda r: r
    raise KeyError(name)


def _start(name, truth, i, j, t):
    """The true state of series `i` at its history's last time `t` (observation `j`)."""
    clean = truth["clean"][i, j]
    if name == "lv_process_noise":
        return np.log(clean)
    if name == "regime_switching":
        return np.array([clean[0], float(truth["regime"][i, j])])
    if name == "seasonal_trend":
        return clean - _seasonal_mean(truth, i, t)
    return clean


def _seasonal_mean(truth, i, t):
    return np.atleast_1d(truth["level"][i] + truth["slope"][i] * t + truth["amplitude"][i]
                         * np.sin(2 * np.pi * t / truth["period"] + truth["phase"][i]))


def oracle_forecast(case, data, hist, fut, num_samples, rng, quick):
    """Draws `(num_samples, N, T, D)` of the true law's forecast at `fut`'s times."""
    name = case.builder.__name__
    noise, relative = _noise(case, quick)
    out = np.full((num_samples,) + fut.ys.shape, np.nan)
    for i in range(data.n_series):
        j = int(hist.lengths[i]) - 1
        t = float(hist.ts[i, j])
        step, dt, to_obs = _stepper(name, data.truth, i)
        x = np.tile(_start(name, data.truth, i, j, t), (num_samples, 1))
        for k in range(int(fut.lengths[i])):
            t_next = float(fut.ts[i, k])
            n = max(1, int(math.ceil((t_next - t) / dt - 1e-9)))
            for _ in range(n):  # n equal steps of at most dt up to the next time
                x = step(x, (t_next - t) / n, rng)
            t = t_next
            v = to_obs(x)
            if name == "seasonal_trend":
                v = v + _seasonal_mean(data.truth, i, t)
            eps = rng.standard_normal(v.shape)
            out[:, i, k] = v * (1 + noise * eps) if relative else v + noise * eps
    return out


def run(quick, seeds, draws, num_samples, out_path):
    cases = {k: c for k, c in bd.datasets.panel().items() if c.kind == "forecast"}
    key = jax.random.key(0)
    result = dict(meta=dict(quick=quick, seeds=seeds, draws=draws, num_samples=num_samples,
                            machine=C._machine()), processes={})
    for name, case in cases.items():
        rows, extra = [], []
        for s in range(seeds + draws):
            missing = C.panel_missing(s)
            data = case.simulate(key=C.panel_data_key(key, name, s), missing=missing, quick=quick)
            try:
                hist, fut, sd = C.panel_split(data)
            except ValueError as e:  # a series with no future time: the panel's fit would fail too
                (rows if s < seeds else extra).append(dict(seed=s, missing=missing, error=str(e)))
                continue
            rng = np.random.default_rng([s, list(cases).index(name)])
            samples = oracle_forecast(case, data, hist, fut, num_samples, rng, quick)
            y = np.where(fut.mask, fut.ys, np.nan)
            scored = C._score(samples, y, np.where(hist.mask, hist.ys, np.nan), sd)
            r = {f"cov{int(100 * x['level'])}": x["coverage"] for x in scored}
            r90 = next(x for x in scored if x["level"] == 0.9)
            r.update(seed=s, missing=missing, width90=r90["width"], crps_ratio=r90["crps"] / r90["crps_climatology"])
            (rows if s < seeds else extra).append(r)
        scored = [r for r in extra if "error" not in r]
        c90 = np.array([r["cov90"] for r in scored]) if scored else np.array([np.nan])
        ratio = np.array([r["crps_ratio"] for r in scored]) if scored else np.array([np.nan])
        summary = dict(draws_scored=len(scored), cov90_mean=float(c90.mean()), cov90_sd=float(c90.std(ddof=1)) if len(c90) > 1 else None,
                       cov90_q05=float(np.quantile(c90, 0.05)), cov90_q95=float(np.quantile(c90, 0.95)),
                       cov90_below_080=float(np.mean(c90 < 0.80)),
                       mean_of_seeds_outside_band=_mean_of_k_outside(c90, seeds),
                       must_show_met=_groups_pass(c90, seeds), crps_ratio_mean=float(ratio.mean()))
        result["processes"][name] = dict(panel_seeds=rows, draws=summary)
        print(f"{name:11s} panel seeds " + " ".join(f"{r['cov90']:.2f}" if "cov90" in r else "n/a" for r in rows)
              + f" | {len(scored)} of {draws} draws: 90% coverage {summary['cov90_mean']:.3f} ± {summary['cov90_sd'] or 0:.3f}"
              f" [{summary['cov90_q05']:.2f}, {summary['cov90_q95']:.2f}], below 0.80 {summary['cov90_below_080']:.0%},"
              f" mean of {seeds} outside [0.85, 0.95] {summary['mean_of_seeds_outside_band']:.0%};"
              f" CRPS/climatology {summary['crps_ratio_mean']:.2f}", flush=True)
    p_all = float(np.prod([v["draws"]["must_show_met"] for v in result["processes"].values()]))
    result["p_perfect_model_meets_must_show"] = p_all
    print(f"a perfect model meets the must-show (band on every process, no seed below 0.80) "
          f"with probability {p_all:.2f}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(f"wrote {out_path}")


def _groups_pass(c90, k):
    """The share of groups of `k` draws that meet the panel's must-show for one process:
    mean coverage inside [0.85, 0.95] and no draw below 0.80."""
    if len(c90) < k or k < 1:
        return float("nan")
    g = c90[: len(c90) // k * k].reshape(-1, k)
    return float(np.mean((g.mean(axis=1) >= 0.85) & (g.mean(axis=1) <= 0.95) & (g.min(axis=1) >= 0.80)))


def _mean_of_k_outside(c90, k):
    """How often the mean coverage of `k` independent data sets (the panel's per-process
    figure, over its `k` seeds) falls outside the band [0.85, 0.95]: groups of the draws."""
    if len(c90) < k or k < 1:
        return float("nan")
    groups = c90[: len(c90) // k * k].reshape(-1, k).mean(axis=1)
    return float(np.mean((groups < 0.85) | (groups > 0.95)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the panel's full sizes (default: quick)")
    p.add_argument("--seeds", type=int, default=2, help="the panel's seeds, reported one by one")
    p.add_argument("--draws", type=int, default=50, help="further data sets per process for the spread")
    p.add_argument("--num-samples", type=int, default=None,
                   help="forecast draws (default: the panel's, 200 quick, 500 full)")
    p.add_argument("--out", default=None, help="JSON path (default results/panel_oracle_{quick,full}_cpu.json)")
    args = p.parse_args(argv)
    out = args.out or RESULTS / f"panel_oracle_{'full' if args.full else 'quick'}_cpu.json"
    num_samples = args.num_samples or (500 if args.full else 200)
    run(not args.full, args.seeds, args.draws, num_samples, Path(out))


if __name__ == "__main__":
    main()
