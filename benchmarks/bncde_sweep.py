"""BNCDE weight diffusion σ against MC-dropout rate: counterfactual calibration and
interval width on the tumour-growth benchmark, over several seeds (each seed draws new
patients and a new training run). Every setting is one `benchmarks/bncde.py` run at the
paper configuration, with `--run-args` passed through (default: none, i.e. bncde.py's
4000 training / 1000 test patients, 8 epochs, cosine learning-rate decay); this script
runs them and gathers the per-horizon counterfactual coverage, median 95% width and CRPS
into one JSON file and a coverage-against-width figure.

    python benchmarks/bncde_sweep.py                          # about 5 min per BNCDE setting and seed
    python benchmarks/bncde_sweep.py --aggregate-only DIR     # gather runs already in DIR

Writes `benchmarks/results/bncde_sweep_long.json` and `bncde_sweep_long.png` (runs in
`bncde_sweep_long_runs/`). The earlier, shorter sweep (`bncde_sweep.json`) was

    python benchmarks/bncde_sweep.py --sigmas 0.01,0.02,0.03,0.05 --dropouts 0.1,0.2 \\
        --seeds 0,1,2 --with-all 0.03 --run-args "--n-train 2000 --epochs 4 --schedule constant" \\
        --workdir benchmarks/results/bncde_sweep_runs --out benchmarks/results/bncde_sweep.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def settings(sigmas, dropouts, seeds, with_all):
    for seed in seeds:
        for s in sigmas:
            yield f"b_s{s}_seed{seed}", ["--sigma", str(s), "--models", "BNCDE", "--seed", str(seed)]
        for d in dropouts:
            yield f"d_{d}_seed{seed}", ["--dropout", str(d), "--models", "TECDE_MC_dropout", "--seed", str(seed)]
    for s in with_all:
        yield f"all_s{s}_seed0", ["--sigma", str(s), "--with-all", "--models", "BNCDE_all_layers", "--seed", "0"]


def gather(directory):
    rows = []
    for f in sorted(glob.glob(os.path.join(directory, "*.json"))):
        d = json.load(open(f))
        if "results" not in d:
            continue  # not a bncde.py run (e.g. a summary written into the same folder)
        args = dict(a.lstrip("-").split("=", 1) for a in d["command"].split()[2:] if "=" in a)
        for name, r in d["results"].items():
            cfg = r["config"]
            c = r["counterfactual"]
            rows.append({
                "model": name,
                "setting": (f"sigma={cfg['sigma']}" if "sigma" in cfg else f"dropout={cfg['dropout']}"),
                "seed": int(args.get("seed", 0)),
                "options": {k: args[k] for k in ("n-train", "n-test", "epochs", "schedule", "lr") if k in args},
                "coverage_0.95": c["coverage_0.95"], "coverage_0.90": c["coverage_0.90"],
                "median_width_0.95": c["median_width_0.95"], "crps": c["crps"],
                "factual_coverage_0.95": r["factual"]["coverage_0.95"],
                "train_s_per_epoch_per_1000": r["train_s_per_epoch_per_1000"],
            })
    summary = {}
    for row in rows:
        summary.setdefault(f"{row['model']} {row['setting']}", []).append(row)
    table = {}
    for k, rs in summary.items():
        # Coverages are multiples of 1/(2 plans x patients): round away float32 noise
        # before testing the band's edges.
        cov = np.round(np.array([r["coverage_0.95"] for r in rs]), 4)
        table[k] = {
            "seeds": [r["seed"] for r in rs],
            "coverage_0.95_mean": cov.mean(0).tolist(),
            "coverage_0.95_min_over_seeds": cov.min(0).tolist(),
            "coverage_0.95_max_over_seeds": cov.max(0).tolist(),
            "in_92_98_at_every_tau_every_seed": bool(np.all((cov >= 0.92) & (cov <= 0.98))),
            "mean_abs_error_to_0.95": float(np.mean(np.abs(cov - 0.95))),
            "median_width_0.95_mean": np.mean([r["median_width_0.95"] for r in rs], 0).tolist(),
            "crps_mean": np.mean([r["crps"] for r in rs], 0).tolist(),
        }
    return rows, table


def figure(table, path, runs=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, t in table.items():
        style = "o-" if k.startswith("BNCDE ") else ("s--" if k.startswith("TECDE") else "^:")
        taus = np.arange(1, len(t["coverage_0.95_mean"]) + 1)
        axes[0].plot(taus, t["coverage_0.95_mean"], style, label=k)
        axes[1].plot(t["median_width_0.95_mean"], t["coverage_0.95_mean"], style, label=k)
    for ax in axes:
        ax.axhspan(0.92, 0.98, color="0.9", zorder=0)
        ax.axhline(0.95, color="0.5", lw=0.8)
        ax.set_ylabel("counterfactual 95% coverage (mean over seeds)")
    axes[0].set_xlabel("horizon τ (days)")
    axes[1].set_xlabel("median 95% interval width (τ = 1..5)")
    axes[0].legend(fontsize=7)
    fig.suptitle("BNCDE weight diffusion σ vs MC dropout (tumour growth)" + (f"\nbncde.py {runs}" if runs else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigmas", default="0.02,0.03,0.04")
    ap.add_argument("--dropouts", default="0.1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--with-all", default="", help="σ values also run with stochastic='all' (seed 0)")
    ap.add_argument("--workdir", default=os.path.join(HERE, "results", "bncde_sweep_long_runs"))
    ap.add_argument("--aggregate-only", default=None, metavar="DIR")
    ap.add_argument("--run-args", default="",
                    help="passed to every bncde.py run, e.g. '--n-train 2000 --epochs 4 --schedule constant'")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bncde_sweep_long.json"))
    args = ap.parse_args()
    directory = args.aggregate_only or args.workdir
    if not args.aggregate_only:
        os.makedirs(directory, exist_ok=True)
        split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
        for name, extra in settings(split(args.sigmas), split(args.dropouts), [int(x) for x in split(args.seeds)],
                                    split(args.with_all)):
            out = os.path.join(directory, name + ".json")
            if os.path.exists(out):
                continue  # finished earlier: rerun by deleting it
            print("==", name, flush=True)
            subprocess.run([sys.executable, os.path.join(HERE, "bncde.py"), "--timing-steps", "2",
                            *args.run_args.split(), "--out", out, *extra], check=True)
    rows, table = gather(directory)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "BNCDE sigma vs MC-dropout rate (tumour growth)",
                   "command": "python benchmarks/bncde_sweep.py " + " ".join(sys.argv[1:]),
                   "summary": table, "runs": rows}, f, indent=1)
    opts = rows[0]["options"] if rows else {}
    runs = args.run_args if not args.aggregate_only else " ".join(f"--{k} {v}" for k, v in opts.items())
    figure(table, os.path.splitext(args.out)[0] + ".png", runs)
    for k, t in table.items():
        print(f"{k:28s} cov95 {' '.join(f'{x:.3f}' for x in t['coverage_0.95_mean'])}  "
              f"width {' '.join(f'{x:.3f}' for x in t['median_width_0.95_mean'])}  "
              f"in band: {t['in_92_98_at_every_tau_every_seed']}")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
