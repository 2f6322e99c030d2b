"""Coverage on processes no default was ever measured on: a second panel, kept out of tuning.

Every default of the forecasting models was chosen on `bd.datasets.panel()`, so that panel
cannot say how the defaults do on data they were not chosen on. This script simulates six
other processes, fits each model configuration at its library defaults exactly as
`calibration.py --panel` does (same split: the last quarter of the time window forecast;
same scores: `calibration._score`), and scores the true law's forecast on the same split
beside it (started from the true state at each series' last history time, as
`panel_oracle.py` does), so that each cell reads against what a perfect model covers there.

| process | what it adds to the panel |
| --- | --- |
| `double_well` | `dX = (X − X³) dt + 0.6 dW`: two wells, rare switches (a bimodal future) |
| `logistic` | `dX = r X (1 − X) dt + 0.25 X dW`, `r` per series in [0.8, 1.6]: S-curves, positive, saturating |
| `jump_ou` | `dX = −X dt + 0.3 dW + J dN`, jumps `N(0, 0.8²)` at rate 0.5: heavy-tailed increments |
| `van_der_pol` | `dx = y dt`, `dy = ((1 − x²) y − x) dt + 0.5 dW`, both observed: a nonlinear limit cycle, 2-D |
| `phase_cycle` | `y = sin φ`, `dφ = ω dt + 0.4 dW`, period per series in [1.5, 2.5]: a cycle whose phase diffuses |
| `drift_walk` | `dX = μ dt + 0.5 dW`, `μ ~ N(0, 0.5²)` per series: non-stationary, a trend per series |

Each data set: 32 series, 40–50 times drawn per series on a grid of step 0.01, Gaussian
observation noise (sd 0.05; 0.03 for `logistic`), a fraction of the values deleted (seed
`s`: `calibration.PANEL_MISSING[s % 3]`, 0, 30 and 15%). The processes are simulated here by
Euler–Maruyama on that grid, and the true law's forecast with the same steps.

    python benchmarks/unseen_processes.py --models LatentSDE --seeds 3
    python benchmarks/unseen_processes.py --models LatentSDE-ncde --members 4 --cross-fit --combine quantiles
    python benchmarks/unseen_processes.py --table benchmarks/results/unseen_processes_cpu.json

`--members M` fits each case as a deep ensemble of `M` (`method="ensemble"`, `--cross-fit`:
each member holds back its own fold) and scores its draws pooled and, with `--combine`, combined
across the members the other ways `calibration.combine_members` knows (the same fits); each
way is a column of its own, e.g. `LatentSDE-ncde[ensemble=4,cross-fit,quantiles]`.

Writes `benchmarks/results/unseen_processes_cpu.json` after every fit (`--resume` keeps the
finished cells): per process, model and seed the 50/80/90/95% coverage, 90% width and CRPS
(both in units of the history's sd) and the climatology's CRPS; and the same for the truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration as C  # noqa: E402

import bayesde as bd  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DT = 0.01
N_SERIES = 32
NUM_PRED = 200
ORACLE_SAMPLES = 500


class Process:
    """One process: its state's size, the observed part, the initial law (with any static
    per-series parameters drawn into the state), the drift, the diffusion and the jumps."""

    def __init__(self, name, *, t_max, n_times, noise, state_dim, observe, init, drift, diffusion,
                 jumps=None, burn_in=0.0, names=("x",)):
        self.name, self.t_max, self.n_times, self.noise = name, t_max, n_times, noise
        self.state_dim, self.observe, self.init = state_dim, observe, init
        self.drift, self.diffusion, self.jumps, self.burn_in = drift, diffusion, jumps, burn_in
        self.names = list(names)

    def step(self, x, rng):
        """One Euler–Maruyama step of `DT` of states `x (..., state_dim)`."""
        out = x + self.drift(x) * DT + self.diffusion(x) * math.sqrt(DT) * rng.standard_normal(x.shape)
        if self.jumps is not None:
            rate, size = self.jumps
            hit = rng.random(x.shape[:-1]) < rate * DT
            out[..., 0] += np.where(hit, size * rng.standard_normal(x.shape[:-1]), 0.0)
        return out


def _logistic_drift(x):
    d = np.zeros_like(x)
    d[..., 0] = x[..., 1] * x[..., 0] * (1 - x[..., 0])
    return d


def _logistic_diffusion(x):
    g = np.zeros_like(x)
    g[..., 0] = 0.25 * np.maximum(x[..., 0], 0.0)
    return g


def _vdp_drift(u):
    x, y = u[..., 0], u[..., 1]
    return np.stack([y, (1 - x**2) * y - x], axis=-1)


def _rate_in_second(u):
    """`dX = θ dt` with the per-series rate `θ` held in the state's second coordinate (the
    phase's frequency, the walk's drift); the rate itself does not move."""
    d = np.zeros_like(u)
    d[..., 0] = u[..., 1]
    return d


def _only_first(sd):
    def g(u):
        out = np.zeros_like(u)
        out[..., 0] = sd
        return out

    return g


PROCESSES = {p.name: p for p in [
    Process("double_well", t_max=10.0, n_times=40, noise=0.05, state_dim=1, observe=lambda u: u,
            init=lambda rng, n: rng.choice([-1.0, 1.0], (n, 1)) + 0.3 * rng.standard_normal((n, 1)),
            drift=lambda u: u - u**3, diffusion=lambda u: np.full_like(u, 0.6)),
    Process("logistic", t_max=8.0, n_times=40, noise=0.03, state_dim=2, observe=lambda u: u[..., :1],
            init=lambda rng, n: np.stack([rng.uniform(0.05, 0.3, n), rng.uniform(0.8, 1.6, n)], axis=1),
            drift=_logistic_drift, diffusion=_logistic_diffusion),
    Process("jump_ou", t_max=10.0, n_times=40, noise=0.05, state_dim=1, observe=lambda u: u,
            init=lambda rng, n: 0.3 / math.sqrt(2) * rng.standard_normal((n, 1)),
            drift=lambda u: -u, diffusion=lambda u: np.full_like(u, 0.3), jumps=(0.5, 0.8)),
    Process("van_der_pol", t_max=15.0, n_times=50, noise=0.05, state_dim=2, observe=lambda u: u,
            init=lambda rng, n: 1.5 * rng.standard_normal((n, 2)),
            drift=_vdp_drift, diffusion=lambda u: np.stack([np.zeros_like(u[..., 0]), np.full_like(u[..., 1], 0.5)], -1),
            burn_in=5.0, names=("x", "y")),
    Process("phase_cycle", t_max=8.0, n_times=48, noise=0.05, state_dim=2, observe=lambda u: np.sin(u[..., :1]),
            init=lambda rng, n: np.stack([rng.uniform(0, 2 * np.pi, n), 2 * np.pi / rng.uniform(1.5, 2.5, n)], 1),
            drift=_rate_in_second, diffusion=_only_first(0.4)),
    Process("drift_walk", t_max=10.0, n_times=40, noise=0.05, state_dim=2, observe=lambda u: u[..., :1],
            init=lambda rng, n: np.stack([rng.standard_normal(n), 0.5 * rng.standard_normal(n)], axis=1),
            drift=_rate_in_second, diffusion=_only_first(0.5)),
]}


def simulate(proc: Process, seed: int):
    """`(data, states, idx)`: a `TimeSeries` of `N_SERIES` series at per-series times on the
    grid of step `DT`, the true states `(N, n_fine, state_dim)` on the grid and the grid
    indices `(N, n_times)` of the observations."""
    rng = np.random.default_rng([2026, list(PROCESSES).index(proc.name), seed])
    n_fine = int(round(proc.t_max / DT)) + 1
    x = proc.init(rng, N_SERIES).astype(float)
    for _ in range(int(round(proc.burn_in / DT))):
        x = proc.step(x, rng)
    states = np.empty((N_SERIES, n_fine, proc.state_dim))
    states[:, 0] = x
    for k in range(1, n_fine):
        x = proc.step(x, rng)
        states[:, k] = x
    idx = np.sort(np.argsort(rng.random((N_SERIES, n_fine)), axis=1)[:, :proc.n_times], axis=1)
    ts = idx * DT
    clean = proc.observe(states[np.arange(N_SERIES)[:, None], idx])
    ys = clean + proc.noise * rng.standard_normal(clean.shape)
    missing = C.panel_missing(seed)
    if missing > 0:
        drop = rng.random(ys.shape) < missing
        drop[:, 0] = False  # every series keeps its first values
        ys = np.where(drop, np.nan, ys)
    return bd.TimeSeries(ts, ys, names=proc.names), states, idx


def oracle(proc: Process, states, idx, hist, fut, seed):
    """Draws `(ORACLE_SAMPLES, N, T_future, D)` of the true law's forecast at `fut`'s times,
    started at each series' true state at its last history time."""
    rng = np.random.default_rng([7, list(PROCESSES).index(proc.name), seed])
    out = np.full((ORACLE_SAMPLES,) + fut.ys.shape, np.nan)
    for i in range(fut.n_series):
        j = int(idx[i, int(hist.lengths[i]) - 1])
        x = np.tile(states[i, j], (ORACLE_SAMPLES, 1))
        k = j
        for m in range(int(fut.lengths[i])):
            target = int(round(fut.ts[i, m] / DT))
            while k < target:
                x = proc.step(x, rng)
                k += 1
            v = proc.observe(x)
            out[:, i, m] = v + proc.noise * rng.standard_normal(v.shape)
    return out


def _cell(samples, fut, hist, sd, seconds=None, extra=None):
    y = np.where(fut.mask, fut.ys, np.nan)
    h = np.where(hist.mask, hist.ys, np.nan)
    rows = C._score(samples, y, h, sd)
    cell = {f"coverage_{int(r['level'] * 100)}": r["coverage"] for r in rows}
    r90 = next(r for r in rows if r["level"] == 0.9)
    cell.update(width_90=r90["width"], crps=r90["crps"], crps_climatology=r90["crps_climatology"],
                nonfinite=r90["nonfinite"], n=r90["n"])
    if seconds is not None:
        cell["seconds"] = seconds
    cell.update(extra or {})
    return cell


def run(args):
    out = Path(args.out)
    result = json.loads(out.read_text()) if args.resume and out.exists() else {}
    result.setdefault("meta", {}).update(
        machine=C._machine(), command="python " + " ".join(sys.argv), n_series=N_SERIES, num_pred=NUM_PRED,
        oracle_samples=ORACLE_SAMPLES)
    cells = result.setdefault("cells", {})
    procs = [p for a in args.processes for p in a.split(",") if p] if args.processes else list(PROCESSES)
    models = [m for a in args.models for m in a.split(",") if m]
    options = C._model_options(args.model_options)
    label = "".join(f"[{k}={v}]" for k, v in options.items())  # a variant is a column of its own
    fit_options, labels = ensemble_options(args)
    forecasters = [m for m, spec in C.PANEL_MODELS.items() if not spec.get("treatment")]
    for name in procs:
        if name not in PROCESSES:
            raise SystemExit(f"unseen_processes.py: unknown process {name!r}; choose from {list(PROCESSES)}")
    for name in models:
        if name not in forecasters:
            raise SystemExit(f"unseen_processes.py: unknown model {name!r}; choose from {forecasters}")
    for pname in procs:
        proc = PROCESSES[pname]
        for seed in range(args.seeds):
            data, states, idx = simulate(proc, seed)
            hist, fut, sd = C.panel_split(data)
            key = f"{pname}|truth|{seed}"
            if key not in cells:
                cells[key] = _cell(oracle(proc, states, idx, hist, fut, seed), fut, hist, sd)
            k_data = jax.random.fold_in(jax.random.fold_in(jax.random.key(2026), list(PROCESSES).index(pname)), seed)
            for m in models:
                keys = {how: f"{pname}|{m}{label}{tag}|{seed}" for how, tag in labels.items()}
                if all(k in cells for k in keys.values()):
                    continue
                k_fit, k_pred = C.panel_fit_keys(k_data, m)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = dataclasses.replace(C.PANEL_MODELS[m]["build"](data.dim), **options)
                    post = bd.fit(model, hist, key=k_fit, progress_bar=False, warn=False, **fit_options)
                    pred = post.predict(fut.ts, key=k_pred, num_samples=NUM_PRED)
                seconds = time.perf_counter() - t0
                member_steps = getattr(post.info, "member_best_step", None)  # an ensemble keeps a step per member
                extra = dict(best_step=getattr(post.info, "best_step", None) if member_steps is None
                             else "/".join(str(b) for b in member_steps))
                t, samples = cells[f"{pname}|truth|{seed}"], np.asarray(pred.samples)
                for how, key in keys.items():
                    draws = samples if member_steps is None else np.asarray(
                        C.combine_members(samples, len(member_steps), how))
                    cells[key] = c = _cell(draws, fut, hist, sd, seconds, extra)
                    print(f"{pname} {key.split('|')[1]} seed={seed}: cov90 {c['coverage_90']:.2f} "
                          f"(truth {t['coverage_90']:.2f}), CRPS {c['crps']:.3f} (truth {t['crps']:.3f}, "
                          f"climatology {c['crps_climatology']:.3f}), {c['seconds']:.0f}s", flush=True)
                out.write_text(json.dumps(result, indent=1))
            out.write_text(json.dumps(result, indent=1))
    return result


def ensemble_options(args):
    """`(fit_options, labels)`: the engine's fields for `--members` / `--cross-fit`
    (`calibration.ensemble_options`, which refuses what does not fit together) and
    `{combine: column suffix}` for each way the draws are scored (`{"pool": ""}` for one SVI fit)."""
    combines, fit_options = C.ensemble_options(args.members, args.cross_fit, args.combine, "unseen_processes.py")
    if not fit_options:
        return {}, {"pool": ""}
    base = f"ensemble={args.members}" + (",cross-fit" if args.cross_fit else "")
    return fit_options, {c: f"[{base}{'' if c == 'pool' else ',' + c}]" for c in combines}


def summary(result):
    """`{process: {model: {coverage_90, worst_90, crps_ratio, ...}}}`: means over the seeds, the
    worst seed's coverage and the CRPS over the climatology's (the truth is a model named
    `truth`)."""
    table = {}
    for key, cell in result["cells"].items():
        proc, model, _ = key.split("|")
        table.setdefault(proc, {}).setdefault(model, []).append(cell)
    out = {}
    for proc, models in table.items():
        for model, cs in models.items():
            out.setdefault(proc, {})[model] = dict(
                seeds=len(cs),
                **{f"coverage_{lv}": float(np.mean([c[f"coverage_{lv}"] for c in cs])) for lv in (50, 80, 90, 95)},
                worst_90=float(min(c["coverage_90"] for c in cs)),
                crps_ratio=float(np.mean([c["crps"] / c["crps_climatology"] for c in cs])),
                width_90=float(np.mean([c["width_90"] for c in cs])))
    return out


def table(paths):
    """Markdown: one row per process, a column per model (mean 90% coverage (worst seed),
    CRPS / climatology's), the truth first."""
    merged = {"cells": {}}
    for p in paths:
        merged["cells"].update(json.loads(Path(p).read_text())["cells"])
    s = summary(merged)
    models = sorted({m for v in s.values() for m in v}, key=lambda m: (m != "truth", m))
    lines = ["| process | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for proc in PROCESSES:
        if proc not in s:
            continue
        cells = []
        for m in models:
            c = s[proc].get(m)
            cells.append("" if c is None else
                         f"{c['coverage_90']:.2f} ({c['worst_90']:.2f}), {c['crps_ratio']:.2f}")
        lines.append(f"| `{proc}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=["LatentSDE"], help="calibration.PANEL_MODELS names")
    p.add_argument("--processes", nargs="*", default=None, help=f"of {list(PROCESSES)} (default all)")
    p.add_argument("--model-options", nargs="*", default=None,
                   help="fields of the model to change, name=value (JSON values), e.g. posterior_drift=own; "
                        "the fits keep the default's keys and are a column of their own")
    p.add_argument("--members", type=int, default=None,
                   help="fit each case as a deep ensemble of this many members (method='ensemble')")
    p.add_argument("--cross-fit", action="store_true",
                   help="with --members: each member holds back its own fold of series")
    p.add_argument("--combine", nargs="*", default=None,
                   help=f"with --members: also score the members' draws combined these ways {list(C.COMBINES)[1:]}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "unseen_processes_cpu.json"))
    p.add_argument("--resume", action="store_true", help="keep the cells of an earlier run of --out")
    p.add_argument("--table", nargs="*", default=None, help="print the markdown table of these JSONs and stop")
    args = p.parse_args(argv)
    if args.table is not None:
        print(table(args.table or [args.out]))
        return
    run(args)
    print(table([args.out]))


if __name__ == "__main__":
    main()
