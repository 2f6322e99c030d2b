"""The first table of the calibration issue, rerun on version 0.1 and on this version, same
data and keys in one run.

The issue that opened the calibration work measured three cases at their settings on version
0.1; this script measures the same cases, with the same settings, on the code the issue
measured (`--before`, a git revision checked out in a temporary worktree) and on this
checkout (`after`), each version in its own Python process (`PYTHONPATH` picks the package),
so the two columns differ only by the library:

- `ou`: a plain Ornstein–Uhlenbeck process (`bd.datasets.ornstein_uhlenbeck`: 48 series,
  per-series irregular times, 15% of the values missing), its last quarter forecast, fitted by
  the issue's `LatentSDE(latent_dim=2, context_dim=8, hidden=32, encoder="ncde", family=F)`
  with 600 SVI steps for each of the four families, and by each family at the version's
  own defaults (`LatentSDE(family=F)`, its default steps). The data are simulated once, by
  this checkout, and handed to both versions as arrays; the true law's forecast on the same
  split (`panel_oracle.py`'s) is scored beside them: what a perfect model covers there.
- `bncde`: `tumor_growth(gamma=6, n_patients=1000)`, `BNCDE()` (the issue's `hidden=8` is the
  default state size in both versions), 600 SVI steps at batch 64: 90% coverage of the test
  patients' true outcomes under "chemo every day" and "no treatment" (the settings of
  `bncde_heldback.py`).
- `demo`: `bayesde demo --seed S` (a Lotka–Volterra ODE by NUTS on the hare–lynx pelts of
  1900–1915): how many of the ten held-out 1916–1920 counts its 90% band covers.

Each case runs for `--seeds` seeds (each seed: new data and new fit keys; the demo: its
`--seed`). Scores: 50% and 90% coverage, mean 90% width and CRPS (for `ou` in units of the
history's sd, and the CRPS over the climatology's, as on the panel).

    python benchmarks/issue_table.py                       # ~70 min on 2 cores
    python benchmarks/issue_table.py --cases ou --seeds 1  # one case
    python benchmarks/issue_table.py --quick               # smoke test (a minute or two)

Writes `benchmarks/results/issue_table_cpu.json` (rewritten after every fit, so an
interrupted run keeps what it measured; `--resume` skips what is there) and prints the
table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BEFORE = "e9afcd3"  # version 0.1: the code the issue measured
FAMILIES = ("neural", "langevin", "linear-noise", "geometric")
CASES = ("ou", "bncde", "demo")
BNCDE_PLANS = ("chemo", "none")


# ----------------------------------------------------------------------------- workers
# A worker runs inside the version being measured: it may use only the API both versions
# share (`bd.TimeSeries`, `bd.fit`, `Posterior.predict`, `bd.effects.counterfactual`, the CLI's
# `demo`) and hands back raw draws; everything else happens in the parent, on this checkout.


def _latent_sde(bd, family, issue):
    """The issue's configuration of family `family`, or the family at the version's defaults."""
    if not issue:
        return bd.models.LatentSDE(family=family)
    import dataclasses

    fields = {f.name for f in dataclasses.fields(bd.models.LatentSDE)}
    width = dict(width=32) if "width" in fields else dict(hidden=32)  # `hidden` was renamed `width`
    return bd.models.LatentSDE(latent_dim=2, context_dim=8, encoder="ncde", family=family, **width)


def worker_ou(job, tmp):
    import warnings

    import jax

    import bayesde as bd

    d = np.load(tmp / "ou_data.npz")
    hist = bd.TimeSeries(d["hist_ts"], d["hist_ys"], d["hist_mask"], lengths=d["hist_lengths"])
    k_fit, k_pred = jax.random.split(jax.random.key(int(job["seed"])))
    opts = dict(num_steps=job["steps"]) if job["steps"] else {}
    model = _latent_sde(bd, job["family"], job["config"] == "issue")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bd.fit(model, hist, key=k_fit, progress_bar=False, warn=False, **opts)
        pred = post.predict(d["fut_ts"], key=k_pred, num_samples=job["draws"])
    return dict(samples=np.asarray(pred.samples, dtype=float)), dict(
        fit_s=time.perf_counter() - t0, steps_run=getattr(post.info, "num_steps_run", None),
        best_step=getattr(post.info, "best_step", None))


def worker_bncde(job, tmp):
    import warnings

    import jax

    import bayesde as bd

    sizes = dict(n_patients=60, n_test=20, n_days=30, min_history=10) if job["quick"] else dict(n_patients=1000)
    data = bd.datasets.tumor_growth(gamma=6.0, key=jax.random.key(int(job["seed"])), **sizes)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bd.fit(bd.models.BNCDE(), data.train, key=jax.random.key(int(job["seed"]) + 1),
                      num_steps=job["steps"], batch_size=16 if job["quick"] else 64, progress_bar=False, warn=False)
        eff = bd.effects.counterfactual(post, data.test, plans={p: data.plan(p) for p in BNCDE_PLANS},
                                        horizon=data.horizon, key=jax.random.key(9), num_samples=job["draws"])
    arrays = {}
    for p in BNCDE_PLANS:
        arrays[f"{p}_samples"] = np.asarray(eff.outcomes[p].samples, dtype=float)
        arrays[f"{p}_truth"] = np.asarray(data.counterfactual(p).ys, dtype=float)
    return arrays, dict(fit_s=time.perf_counter() - t0, best_step=getattr(post.info, "best_step", None))


def worker_demo(job, tmp):
    out = tmp / f"demo_{job['version']}_{job['seed']}"
    args = ["demo", "--out", str(out), "--seed", str(job["seed"]), "--quiet", "--force"]
    if job["quick"]:
        args.append("--quick")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from bayesde._cli import app; app()", *args], check=True)
    summary = json.loads((out / "summary.json").read_text())
    return {}, dict(fit_s=time.perf_counter() - t0, coverage_50=summary["coverage_50"],
                    coverage_90=summary["coverage_90"], crps=summary["crps"], n=summary["held_out_values"],
                    diagnostics=summary.get("diagnostics"))


def run_worker(job_file):
    job = json.loads(Path(job_file).read_text())
    tmp = Path(job["tmp"])
    arrays, info = {"ou": worker_ou, "bncde": worker_bncde, "demo": worker_demo}[job["case"]](job, tmp)
    import bayesde as bd

    np.savez(tmp / f"{job['id']}.npz", **arrays)
    (tmp / f"{job['id']}.json").write_text(json.dumps(dict(info, bayesde=bd.__version__,
                                                          package=str(Path(bd.__file__).parent))))


# ----------------------------------------------------------------------------- parent


def simulate_ou(seed, quick, tmp):
    """The `ou` case's data set of `seed`, written for both versions; returns what the parent
    scores against (the future's values, the history's values and sd) and the true law's
    forecast draws on the same split (`panel_oracle.py`'s: from the true state at each
    series' last history time, with the simulator's observation noise)."""
    import jax

    import bayesde as bd
    from calibration import panel_split
    from panel_oracle import oracle_forecast

    data = bd.datasets.ornstein_uhlenbeck(n_series=12 if quick else 48, key=jax.random.key(1000 + seed),
                                          missing=0.15)
    hist, fut, sd = panel_split(data)
    np.savez(tmp / "ou_data.npz", hist_ts=hist.ts, hist_ys=hist.ys, hist_mask=hist.mask, hist_lengths=hist.lengths,
             fut_ts=fut.ts)
    case = bd.datasets.panel()["ou"]._replace(sizes={}, quick={})  # the simulator's own noise, as simulated here
    truth = oracle_forecast(case, data, hist, fut, 500, np.random.default_rng(seed), quick)
    return (np.where(fut.mask, fut.ys, np.nan), np.where(hist.mask, hist.ys, np.nan), sd), truth


def score(case, arrays, info, target):
    """One fit's scores: the demo's own summary; an `ou` forecast's coverage, width and CRPS
    against `target` (`simulate_ou`'s future, history and sd), as the panel scores; each BNCDE
    plan's 50% and 90% coverage and 90% width of the true outcomes."""
    from calibration import _score, band

    if case == "demo":
        return {k: info[k] for k in ("coverage_50", "coverage_90", "crps", "n")}
    if case == "ou":
        y, history, sd = target
        rows = {r["level"]: r for r in _score(arrays["samples"], y, history, sd)}
        return dict(coverage_50=rows[0.5]["coverage"], coverage_90=rows[0.9]["coverage"],
                    width_90=rows[0.9]["width"], crps=rows[0.9]["crps"],
                    crps_over_climatology=rows[0.9]["crps"] / rows[0.9]["crps_climatology"],
                    nonfinite=rows[0.9]["nonfinite"])
    out = {}
    for p in BNCDE_PLANS:
        smp, y = arrays[f"{p}_samples"], arrays[f"{p}_truth"]
        out[f"{p}_coverage_90"], out[f"{p}_width_90"] = band(smp, y, 0.9)
        out[f"{p}_coverage_50"] = band(smp, y, 0.5)[0]
    return out


def worktree(rev, tmp):
    """A detached checkout of `rev` under `tmp` (removed by `main` when the run ends)."""
    path = tmp / f"bayesde-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev], check=True,
                   capture_output=True)
    return path


def jobs_for(case, seed, args):
    """The fits of one case and seed, each run once per version: for `ou` the issue's
    configuration (600 steps) and the defaults for every family; one BNCDE fit; one demo."""
    steps = 60 if args.quick else 600
    draws = 100 if args.quick else 500
    if case == "ou":
        for config in ("issue", "defaults"):
            for family in FAMILIES:
                yield dict(case=case, seed=seed, family=family, config=config, draws=draws,
                           steps=steps if config == "issue" else (120 if args.quick else None))
    elif case == "bncde":
        yield dict(case=case, seed=seed, steps=steps, draws=200, quick=args.quick)
    else:
        yield dict(case=case, seed=seed, quick=args.quick)


def label(job):
    """The row's name in the JSON (and `--resume`'s key with the version)."""
    extra = [job[k] for k in ("config", "family") if k in job]
    return " ".join([job["case"], *extra, f"seed {job['seed']}"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default=BEFORE, help="the git revision measured as 'before' (default: version 0.1)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {CASES}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out and skip their fits")
    ap.add_argument("--table", action="store_true", help="print the table of --out (or of several, comma-separated) and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker)
    if args.table:
        paths = args.out.split(",") if args.out else [RESULTS / "issue_table_cpu.json"]
        records = [json.loads(Path(p).read_text()) for p in paths]
        print(table(dict(records[0], rows=[r for rec in records for r in rec["rows"]])))
        return None
    sys.path.insert(0, str(HERE))
    from _machine import machine

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        ap.error(f"--cases: unknown {unknown}; choose from {CASES}")
    out = Path(args.out) if args.out else RESULTS / ("issue_table_quick_cpu.json" if args.quick else "issue_table_cpu.json")
    record = json.loads(out.read_text()) if args.resume and out.exists() else {}
    record.update(before=args.before, after=subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                            capture_output=True, text=True).stdout.strip(),
                  machine=machine())
    # every command that wrote to the file, the first being the one that ran the fits (`--resume` adds)
    record["commands"] = record.get("commands", []) + [" ".join(["python", "benchmarks/issue_table.py",
                                                                 *(argv or sys.argv[1:])])]
    rows = record.setdefault("rows", [])
    done = {(r["version"], r["label"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="issue_table_") as t:
        tmp = Path(t)
        roots = {"before": worktree(args.before, tmp), "after": ROOT}
        try:
            for case in cases:
                for seed in range(args.seeds):
                    target = None
                    if case == "ou":
                        target, law = simulate_ou(seed, args.quick, tmp)
                        if ("truth", f"ou seed {seed}") not in done:  # the true law's forecast, scored alike
                            rows.append(dict(version="truth", label=f"ou seed {seed}", case=case, seed=seed,
                                             **score(case, dict(samples=law), {}, target)))
                            out.write_text(json.dumps(record, indent=1, default=str))
                    for job in jobs_for(case, seed, args):
                        for version, root in roots.items():
                            if (version, label(job)) in done:
                                continue
                            job = dict(job, version=version, tmp=str(tmp), id=f"job_{version}")
                            (tmp / "job.json").write_text(json.dumps(job))
                            env = dict(os.environ, PYTHONPATH=str(root))
                            subprocess.run([sys.executable, __file__, "--worker", str(tmp / "job.json")], check=True,
                                           env=env, cwd=tmp)
                            info = json.loads((tmp / f"job_{version}.json").read_text())
                            arrays = dict(np.load(tmp / f"job_{version}.npz"))
                            row = dict(version=version, label=label(job), **{k: v for k, v in job.items()
                                                                             if k not in ("tmp", "id", "version")})
                            row.update(info, **score(case, arrays, info, target))
                            rows.append(row)
                            out.write_text(json.dumps(record, indent=1, default=str))
                            print(f"{version:6s} {label(job):40s} " + " ".join(
                                f"{k}={v:.3f}" for k, v in row.items() if "coverage_90" in k), flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(roots["before"])],
                           capture_output=True)
    print(table(record))
    return record


def table(record) -> str:
    """The markdown table: one line per case and configuration, before and after, the mean over
    seeds (the worst seed: the lowest coverage, the highest CRPS)."""
    rows = record["rows"]

    def cell(sel, key):
        vals = [r[key] for r in rows if sel(r) and r.get(key) is not None]
        if not vals:
            return "–"
        if not np.all(np.isfinite(vals)):
            return "n/a (diverged draws)"  # a non-finite draw leaves the CRPS undefined
        worst = max(vals) if key == "crps" else min(vals)  # the highest score, the lowest coverage
        return f"{np.mean(vals):.2f} ({worst:.2f})" if len(vals) > 1 else f"{vals[0]:.2f}"

    lines = ["| case | the true law's 90% coverage | before: 90% coverage (worst seed) | after | before: CRPS (worst seed) "
             "| after |", "| --- | --- | --- | --- | --- | --- |"]
    groups = []
    for r in rows:
        if r["version"] == "truth":
            continue
        g = (r["case"], r.get("config"), r.get("family"))
        if g not in groups:
            groups.append(g)
    for case, config, family in groups:
        same = lambda r, v: r["version"] == v and (r["case"], r.get("config"), r.get("family")) == (case, config, family)  # noqa: E731
        if case == "bncde":
            for p in BNCDE_PLANS:
                lines.append(f"| BNCDE γ = 6, under {p!r} | – | {cell(lambda r: same(r, 'before'), f'{p}_coverage_90')} | "
                             f"{cell(lambda r: same(r, 'after'), f'{p}_coverage_90')} | | |")
            continue
        name = "demo (hare–lynx, 10 counts)" if case == "demo" else f"OU, {family}, {'600 steps' if config == 'issue' else 'defaults'}"
        law = cell(lambda r: r["version"] == "truth" and r["case"] == case, "coverage_90")
        lines.append(f"| {name} | {law} | {cell(lambda r: same(r, 'before'), 'coverage_90')} | "
                     f"{cell(lambda r: same(r, 'after'), 'coverage_90')} | {cell(lambda r: same(r, 'before'), 'crps')} | "
                     f"{cell(lambda r: same(r, 'after'), 'crps')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
