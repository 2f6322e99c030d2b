"""Does a latent SDE's diffusion collapse while it trains? Reads `σ(t)` and the noise sd along one run.

Fits one full-size panel case (default: `lv_sde`, seed 0, the panel's data and keys) with a
`LatentSDE` family, stopped at several step counts (`keep_best` off, so each is the plain
trajectory up to that step; the same key gives the same trajectory), and records at each the
diffusion `g(t)` the model solves with (floor included) on a grid over the training span,
the learned observation noise sd and the forecast scales `κ`, `ρ`. The variants compare the
geometric family with and without its diffusion floor and drift bound, and the Langevin
family (the same model reading `x` instead of `exp(x)`).

    python benchmarks/geometric_diffusion.py                      # lv_sde seed 0, ~8 min on 2 cores
    python benchmarks/geometric_diffusion.py --process gbm --seed 2 --steps 100 300

Writes `benchmarks/results/geometric_diffusion_<process>_s<seed>_cpu.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import calibration as C  # noqa: E402
from _machine import machine  # noqa: E402

import bayesde as bd  # noqa: E402

VARIANTS = {
    "geometric": ("LatentSDE-geometric", {}),
    "geometric, no floor or bound": ("LatentSDE-geometric", dict(diffusion_floor=None, drift_bound=None)),
    "langevin": ("LatentSDE-langevin", {}),
}


def diffusion_on_grid(post, dim, ts):
    """`g(t)` of a fitted `LatentSDE` at model times `ts`, `(len(ts), latent_dim)`: the
    diffusion its solver uses (state-independent families; read at `z = 0`)."""
    model = post.model
    with numpyro.handlers.substitute(data=post.params):
        nets = model._make_networks(dim)
    _, _, g = model._sde(nets)
    z = jnp.zeros((model.latent_dim,))
    return np.stack([np.asarray(g(t, z, None)) for t in ts])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--process", default="lv_sde", choices=[n for n, c in bd.datasets.panel().items()
                                                           if c.kind == "forecast"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, nargs="*", default=[20, 100, 300, 1000])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()

    case = bd.datasets.panel()[args.process]
    k_data = C.panel_data_key(jax.random.key(0), case.name, args.seed)
    data = case.simulate(key=k_data, missing=C.panel_missing(args.seed), quick=False)
    hist, _, _ = C.panel_split(data)
    grid = np.linspace(0.0, 1.0, 5)
    rows = []
    for variant in args.variants:
        name, options = VARIANTS[variant]
        k_fit, _ = C.panel_fit_keys(k_data, name)
        model = dataclasses.replace(C.PANEL_MODELS[name]["build"](data.dim), **options)
        for n in args.steps:
            tic = time.perf_counter()
            post = bd.fit(model, hist, key=k_fit, num_steps=n, keep_best=False, min_steps=0, patience=None,
                          progress_bar=False, warn=False)
            g = diffusion_on_grid(post, data.dim, grid)
            pr = post.params
            row = dict(variant=variant, steps=n, diffusion_min=float(g.min()), diffusion_max=float(g.max()),
                       diffusion_per_coordinate_max=g.max(axis=0).round(4).tolist(),
                       noise_sd=np.exp(np.asarray(pr["latent_sde.log_noise"])).round(4).tolist(),
                       kappa=float(np.exp(pr["latent_sde.forecast_log_scale"])),
                       rho=np.exp(np.asarray(pr["latent_sde.forecast_log_discrepancy"])).round(4).tolist(),
                       seconds=round(time.perf_counter() - tic, 1))
            rows.append(row)
            print(f"{variant:>30s} step {n:5d}: g in [{row['diffusion_min']:.4f}, {row['diffusion_max']:.4f}], "
                  f"noise sd {row['noise_sd']}", flush=True)
    out = HERE / "results" / f"geometric_diffusion_{args.process}_s{args.seed}_cpu.json"
    command = "python benchmarks/geometric_diffusion.py " + " ".join(sys.argv[1:])
    out.write_text(json.dumps(dict(command=command.strip(), process=args.process, seed=args.seed,
                                   model_time_grid=grid.tolist(), rows=rows, machine=machine()), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
