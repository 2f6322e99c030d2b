"""How long a short fit takes from a fresh process, with the engines' compiled
initialisation (`bayesde.inference._init`) against NumPyro's eager one, measured in the
same run on the same machine.

    python benchmarks/fit_startup.py --repeats 2 --out benchmarks/results/fit_startup_cpu.json

A short fit is mostly start-up: finding the starting point, compiling the step, drawing
the posterior. Each case runs in a fresh Python process with an empty XLA cache (what a
user's first `bayesde fit` meets) and XLA's default flags (or `--xla-flags`), once per
mode and repeat; the JSON holds every wall time, the medians, their ratio (eager ÷
compiled) and the largest difference between the two modes' fitted values: SVI's
parameters agree to float rounding; NUTS starts from the same point up to rounding, and
its chain, which amplifies any difference, then draws other (equally valid) samples.
Timings are recorded here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import machine  # noqa: E402

#: case -> what it fits; every case is small on purpose: start-up is what is measured.
CASES = {
    "neural_ode_svi": "BayesianNeuralODE(width=8, depth=1) on hare-lynx, SVI 5 steps",
    "neural_ode_nuts": "BayesianNeuralODE(width=8, depth=1) on hare-lynx, NUTS 1 chain 20 + 20, tree depth 4",
    "latent_sde_svi": "LatentSDE() on 8 OU series of 40 times, SVI 5 steps",
    "lv_ode_nuts": "Lotka-Volterra ODE on hare-lynx, NUTS 1 chain 50 + 50",
}


def child(case: str, mode: str) -> dict:
    """Run `case` in this process with the initialisation `mode`; returns its timings."""
    t_import = time.perf_counter()
    import contextlib

    import jax
    import numpy as np

    import bayesde as bd
    import bayesde.inference._ensemble as ens
    import bayesde.inference._mcmc as mcmc
    import bayesde.inference._svi as svi

    if mode == "eager":  # NumPyro's own single-key initialisation
        for mod in (svi, mcmc, ens):
            mod.compiled_initialisation = contextlib.nullcontext
    import_s = time.perf_counter() - t_import
    key = jax.random.key(0)
    t0 = time.perf_counter()
    if case.startswith("neural_ode") or case == "lv_ode_nuts":
        data = bd.datasets.load("hare_lynx")
        if case == "lv_ode_nuts":
            import numpyro.distributions as dist

            rates = {"alpha": 0.5, "beta": 0.025, "gamma": 0.8, "delta": 0.025}  # tutorial 01's priors
            priors = {k: dist.LogNormal(np.log(v), 0.5) for k, v in rates.items()}
            model = bd.models.ODE(bd.models.lotka_volterra_field, priors, observation="lognormal")
        else:
            model = bd.models.BayesianNeuralODE(state_dim=2, width=8, depth=1, observation="lognormal")
    else:
        data = bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=40, key=jax.random.key(1))
        model = bd.models.LatentSDE()
    options = {"neural_ode_nuts": dict(num_warmup=20, num_samples=20, max_tree_depth=4),
               "lv_ode_nuts": dict(num_warmup=50, num_samples=50)}
    if case.endswith("svi"):
        values = bd.fit(model, data, "svi", num_steps=5, key=key, progress_bar=False, warn=False).params
    else:
        values = bd.fit(model, data, "nuts", num_chains=1, key=key, progress_bar=False, warn=False,
                        **options[case]).samples
    fit_s = time.perf_counter() - t0
    return {"import_s": round(import_s, 3), "fit_s": round(fit_s, 3),
            "values": {k: np.asarray(v, np.float64).ravel().tolist() for k, v in values.items()}}


def run_child(case: str, mode: str, xla_flags: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bayesde-xla-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
        if xla_flags:
            env["XLA_FLAGS"] = xla_flags
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", case, "--mode", mode],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{case} ({mode}) failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(wall, 3)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/fit_startup_cpu.json")
    p.add_argument("--xla-flags", default="", help="XLA_FLAGS for the fits (default: none, XLA's defaults); "
                   "the test suite's are '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="compiled", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode)))
        return
    import numpy as np

    results = {}
    for case in args.cases.split(","):
        runs = {"compiled": [], "eager": []}
        for _ in range(args.repeats):
            for mode in runs:  # interleaved, so that a change in the machine's load falls on both
                runs[mode].append(run_child(case, mode, args.xla_flags))
                print(f"{case:16s} {mode:8s} fit {runs[mode][-1]['fit_s']:6.1f} s", flush=True)
        med = {m: statistics.median(r["fit_s"] for r in rs) for m, rs in runs.items()}
        a, b = runs["compiled"][0]["values"], runs["eager"][0]["values"]
        results[case] = {
            "what": CASES[case],
            "fit_s": {m: [r["fit_s"] for r in rs] for m, rs in runs.items()},
            "process_wall_s": {m: [r["process_wall_s"] for r in rs] for m, rs in runs.items()},
            "median_fit_s": med,
            "eager_over_compiled": round(med["eager"] / med["compiled"], 3),
            "max_abs_difference": float(max(np.max(np.abs(np.subtract(a[k], b[k]))) for k in a)),
        }
        print(f"{case:16s} eager / compiled = {results[case]['eager_over_compiled']:.2f}, "
              f"max |difference| {results[case]['max_abs_difference']:.1e}", flush=True)
    out = {
        "benchmark": "fit_startup",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "xla_flags": args.xla_flags or "defaults (XLA_FLAGS unset)",
        "repeats": args.repeats,
        "cases": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
