"""BNCDE vs TE-CDE with MC dropout on the tumour-growth benchmark: speed and calibration.

Paper configuration (Hess et al., ICLR 2024): hidden state 8, 128-wide fields, 10 Monte
Carlo weight paths per training step, 100 predictive draws, batch 64.

Defaults: 4000 training / 1000 test patients, 8 epochs with cosine learning-rate decay
(`--schedule`), BNCDE weight diffusion σ = 0.04 (`--sigma`): in `benchmarks/bncde_sweep.py`
at these settings (3 seeds) its mean counterfactual 95% coverage was inside 92–98% at
every horizon (the model's own default, 0.01, suits small fields; see `bd.models.BNCDE`).
About 6 minutes for BNCDE and 1 for the MC-dropout baseline on 2 cores.

Reports, per model:

- seconds per epoch per 1000 training patients (SVI steps at batch 64, after compiling),
- seconds for the posterior predictive of the test patients (100 draws; cold = with
  compilation, warm = compiled),
- factual and counterfactual coverage at 0.90 / 0.95 / 0.99, median 95% width, RMSE of the
  predictive mean and CRPS, per horizon τ = 1..5.

For scale, the authors' PyTorch code on one core of the project's earlier (AVX-512)
machine: about 53 s per epoch per 1000 patients and about 162 s for the 1000-patient
predictive. Where the training step's time goes, and the best time this CPU allows:
`benchmarks/bncde_profile.py`.

    python benchmarks/bncde.py                       # realistic run (about 7 min on 2 cores)
    python benchmarks/bncde.py --quick               # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax

import bayesde as bd
from _machine import avx512

LEVELS = (0.90, 0.95, 0.99)
PAPER = {"train_s_per_epoch_per_1000": 53.0, "predict_s_1000": 162.0}


def step_seconds(model, data, batch_size, steps, key):
    """Seconds per compiled SVI step of the model's program at `batch_size`."""
    from numpyro.infer import SVI, Trace_ELBO

    m = model.adapt(data)
    batch = data.batch()

    def prog(b, q=None):
        return m.program(b, q, subsample_size=batch_size)

    svi = SVI(prog, lambda *a, **k: None, numpyro.optim.optax_to_numpyro(optax.adam(1e-3)), Trace_ELBO())
    state = svi.init(key, batch)
    upd = jax.jit(svi.update)
    state, loss = upd(state, batch)
    jax.block_until_ready(loss)
    t = time.perf_counter()
    for _ in range(steps):
        state, loss = upd(state, batch)
    jax.block_until_ready(loss)
    return (time.perf_counter() - t) / steps


def per_tau(pred, truth):
    """Metrics per horizon step."""
    out = {f"coverage_{lv:.2f}": [] for lv in LEVELS}
    out.update({"median_width_0.95": [], "rmse": [], "crps": []})
    for k in range(pred.samples.shape[2]):
        p = bd.Prediction(pred.samples[:, :, k : k + 1], pred.ts[:, k : k + 1])
        y = truth.ys[:, k : k + 1]
        for lv in LEVELS:
            out[f"coverage_{lv:.2f}"].append(bd.metrics.coverage(p, y, level=lv))
        lo, hi = p.interval(0.95)
        out["median_width_0.95"].append(float(jnp.median(hi - lo)))
        out["rmse"].append(bd.metrics.rmse(p, y))
        out["crps"].append(bd.metrics.crps(p, y))
    return out


def average(dicts):
    return {k: list(np.mean([d[k] for d in dicts], axis=0)) for k in dicts[0]}


def run(args):
    key = jax.random.key(args.seed)
    sim = bd.datasets.tumor_growth(n_patients=args.n_train, n_test=args.n_test, gamma=args.gamma,
                                   key=jax.random.fold_in(key, 0))
    models = {
        "BNCDE": bd.models.BNCDE(state_dim=8, width=args.width, train_paths=10, sigma=args.sigma),
        "TECDE_MC_dropout": bd.models.TECDE(state_dim=8, width=args.width, dropout=args.dropout),
    }
    if args.with_all:
        models["BNCDE_all_layers"] = bd.models.BNCDE(state_dim=8, width=args.width, train_paths=10,
                                                     stochastic="all", sigma=args.sigma)
    if args.models:
        keep = args.models.split(",")
        unknown = sorted(set(keep) - set(models))
        if unknown:
            raise SystemExit(f"--models: unknown {unknown}; choose from {sorted(models)}")
        models = {k: v for k, v in models.items() if k in keep}
    steps = max(1, int(round(args.epochs * args.n_train / args.batch_size)))
    results = {}
    plans = {"factual": sim.plan("factual"), "none": sim.plan("none"), "chemo": sim.plan("chemo"),
             }
    for name, model in models.items():
        print(f"== {name}", flush=True)
        r = {"config": model.config()}
        s = step_seconds(model, sim.train, args.batch_size, args.timing_steps, jax.random.fold_in(key, 1))
        r["train_s_per_step"] = s
        r["train_s_per_epoch_per_1000"] = s * 1000.0 / args.batch_size
        t = time.perf_counter()
        lr = args.lr if args.schedule == "constant" else optax.cosine_decay_schedule(args.lr, steps, alpha=0.05)
        post = bd.fit(model, sim.train, method="svi", num_steps=steps, batch_size=args.batch_size,
                      optimizer=bd.inference.default_optimizer(lr), key=jax.random.fold_in(key, 2), progress_bar=False, warn=False)
        r["fit_wall_s"] = time.perf_counter() - t
        r["fit_steps"] = steps
        r["final_loss_mean_last_20"] = float(np.nanmean(post.loss[-20:]))
        t = time.perf_counter()
        eff = bd.effects.counterfactual(post, sim.test, plans=plans, horizon=5,
                                        key=jax.random.fold_in(key, 3), num_samples=args.draws)
        r["predict_all_plans_wall_s"] = time.perf_counter() - t
        def predict_once(k):
            out = post.predict(eff.ts, key=jax.random.fold_in(key, k), data=sim.test,
                               treatments=plans["none"], num_samples=args.draws)
            return jax.block_until_ready(out.samples)

        t = time.perf_counter()
        predict_once(4)  # compiles for this query (the plans above may have had other shapes)
        r["predict_s_cold"] = time.perf_counter() - t
        t = time.perf_counter()
        predict_once(5)
        warm = time.perf_counter() - t
        r["predict_s_warm"] = warm
        r["predict_s_warm_per_1000_patients"] = warm * 1000.0 / args.n_test
        r["factual"] = per_tau(eff.outcomes["factual"], sim.factual)
        r["counterfactual"] = average([per_tau(eff.outcomes[p], sim.counterfactual(p))
                                       for p in ("none", "chemo")])
        r["speedup_train_vs_paper"] = PAPER["train_s_per_epoch_per_1000"] / r["train_s_per_epoch_per_1000"]
        r["speedup_predict_vs_paper"] = PAPER["predict_s_1000"] / r["predict_s_warm_per_1000_patients"]
        results[name] = r
        print(json.dumps({k: v for k, v in r.items() if k != "config"}, indent=1, default=float), flush=True)
    return sim, results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=8.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--schedule", choices=("constant", "cosine"), default="cosine",
                    help="learning rate: constant, or cosine decay to 5%% of --lr over the run")
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing-steps", type=int, default=5)
    ap.add_argument("--sigma", type=float, default=0.04,
                    help="BNCDE weight-SDE diffusion (0.04: chosen by bncde_sweep.py at this configuration)")
    ap.add_argument("--dropout", type=float, default=0.1, help="TE-CDE dropout rate (0.1 in the paper)")
    ap.add_argument("--models", default="", help="comma-separated subset of the models to run (default: all)")
    ap.add_argument("--with-all", action="store_true", help="also BNCDE with stochastic='all'")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--note", default="", help="saved with the machine record, e.g. 'shared with other jobs'")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bncde_cpu.json"))
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_test, args.epochs, args.width, args.draws, args.timing_steps = 64, 32, 1, 16, 20, 2
    t = time.perf_counter()
    _, results = run(args)
    out = {
        "benchmark": "BNCDE vs TE-CDE (MC dropout), tumour growth (Geng et al. 2017)",
        "command": "python benchmarks/bncde.py " + " ".join(
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("out", "quick", "note")),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "avx512": avx512(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "note": args.note},
        "paper_reference": PAPER,
        "total_wall_s": time.perf_counter() - t,
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=float)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
