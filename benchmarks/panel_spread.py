"""How far each committed panel run lands from the truth on the very same data sets.

    python benchmarks/panel_spread.py                       # every full-size LatentSDE run in RUNS
    python benchmarks/panel_spread.py --runs default=calibration_panel_full_heun_cpu.csv

The panel's must-show (90% coverage inside [0.85, 0.95] per process, mean over three
seeds, no seed below 0.80) is noisy twice over: the data set is one draw of the process,
and the fit is one draw of the initial weights and of the training noise. The first part
is known: `benchmarks/panel_oracle.py --full --seeds 3` forecasts every panel data set with
its true law and scores it exactly as the panel does. So the difference `d = c − o`
between a model's coverage `c` and the truth's `o` **on the same data set** removes most
of the data set's share and leaves what the model adds: a bias per process and a spread
from fit to fit. A configuration whose cells are as close to the truth's as its
neighbour's is no worse, whatever the count of cells in the band says.

For each run: the mean and the root mean square of `d` over its 21 cells, the spread of
`d` around its per-process means (pooled, 14 degrees of freedom: the fit-to-fit part),
the count of processes in the band and of seeds below 0.80 (the must-show's own
figures), and `p_meet`, the probability that a fresh run of the same configuration meets
the must-show if its cells were the truth's coverage on a fresh data set (Gaussian with
the oracle's sd over 50 data sets per process) plus the run's own per-process bias and
fit-to-fit spread — a smoother figure than one pass/fail, to set beside the truth's own
(`p_perfect_model_meets_must_show` in the oracle's JSON). It is a model of the cells, not
a measurement: biases from three seeds are themselves uncertain.

The truth's forecast starts from the true state at each series' last history time, so a
model, which must infer that state, can be honestly wider; `d > 0` is not a defect by
itself. The oracle draws 200 samples and the panel 500, which puts the truth's coverage
about 0.005 lower than a 500-draw forecast's; nothing here corrects for it.

Writes `benchmarks/results/panel_spread_cpu.json` and a figure of every run's `d`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

#: The committed full-size runs of the latent SDE's five configurations: each at today's
#: defaults (Heun's scheme, the runs `standing.py` reads) and, on Euler's scheme (the default
#: when they ran), with the CRPS for its held-back tails and with the log score
#: (`forecast_score="log"`); the default family with the linear drift term and with twice
#: the latent state, and deep ensembles of 4 (`calibration.py --members 4`, `--cross-fit`).
#: Name -> CSV in `benchmarks/results/`.
RUNS = {
    "neural/gru, Heun (default)": "calibration_panel_full_heun_cpu.csv",
    "neural/gru, Heun, latent_dim=8": "calibration_panel_full_ld8_cpu.csv",
    "langevin, Heun (default)": "calibration_panel_full_langevin_heunfix_cpu.csv",
    "ncde encoder, Heun (default)": "calibration_panel_full_ncde_heun_cpu.csv",
    "linear-noise, Heun (default)": "calibration_panel_full_linear_noise_heun_cpu.csv",
    "geometric, Heun (default)": "calibration_panel_full_geometric_heun_cpu.csv",
    "neural/gru, CRPS, Euler (then the default)": "calibration_panel_full_default_cpu.csv",
    "neural/gru, log score": "calibration_panel_full_logscore_cpu.csv",
    "neural/gru, linear drift": "calibration_panel_full_lineardrift_cpu.csv",
    "langevin, CRPS, Euler (then the default)": "calibration_panel_full_langevin_v2_cpu.csv",
    "langevin, log score": "calibration_panel_full_langevin_logscore_cpu.csv",
    "ncde encoder, CRPS, Euler (then the default)": "calibration_panel_full_ncde_cpu.csv",
    "ncde encoder, log score": "calibration_panel_full_ncde_logscore_cpu.csv",
    "linear-noise, CRPS, Euler (then the default)": "calibration_panel_full_linear_noise_v2_cpu.csv",
    "linear-noise, log score": "calibration_panel_full_linear_noise_logscore_cpu.csv",
    "geometric, CRPS, Euler (then the default)": "calibration_panel_full_geometric_v2_cpu.csv",
    "geometric, log score": "calibration_panel_full_geometric_logscore_cpu.csv",
    "neural/gru, ensemble of 4": "calibration_panel_full_ensemble4_cpu.csv",
    "neural/gru, ensemble of 4, cross-fitted": "calibration_panel_full_ensemble4_crossfit_cpu.csv",
    "ncde encoder, ensemble of 4": "calibration_panel_full_ncde_ensemble4_cpu.csv",
    "ncde encoder, ensemble of 4, cross-fitted": "calibration_panel_full_ncde_ensemble4_crossfit_cpu.csv",
    "neural/gru, cross-fitted, quantiles": "calibration_panel_full_ensemble4_crossfit_quantiles_cpu.csv",
    "ncde encoder, cross-fitted, quantiles": "calibration_panel_full_ncde_ensemble4_crossfit_quantiles_cpu.csv",
    "langevin, ensemble of 4, cross-fitted": "calibration_panel_full_langevin_ensemble4_crossfit_cpu.csv",
    "langevin, cross-fitted, quantiles": "calibration_panel_full_langevin_ensemble4_crossfit_quantiles_cpu.csv",
    "linear-noise, ensemble of 4, cross-fitted": "calibration_panel_full_linear_noise_ensemble4_crossfit_cpu.csv",
    "linear-noise, cross-fitted, quantiles": "calibration_panel_full_linear_noise_ensemble4_crossfit_quantiles_cpu.csv",
    "geometric, ensemble of 4, cross-fitted": "calibration_panel_full_geometric_ensemble4_crossfit_cpu.csv",
    "geometric, cross-fitted, quantiles": "calibration_panel_full_geometric_ensemble4_crossfit_quantiles_cpu.csv",
}
#: Paired comparisons (run, against run) on the cells both hold: how many cells the first is
#: closer to the truth on, and a two-sided sign test of that count.
PAIRS = [
    ("neural/gru, Heun, latent_dim=8", "neural/gru, Heun (default)"),
    ("neural/gru, log score", "neural/gru, CRPS, Euler (then the default)"),
    ("langevin, log score", "langevin, CRPS, Euler (then the default)"),
    ("ncde encoder, log score", "ncde encoder, CRPS, Euler (then the default)"),
    ("linear-noise, log score", "linear-noise, CRPS, Euler (then the default)"),
    ("geometric, log score", "geometric, CRPS, Euler (then the default)"),
    ("neural/gru, linear drift", "neural/gru, CRPS, Euler (then the default)"),
    ("neural/gru, ensemble of 4", "neural/gru, CRPS, Euler (then the default)"),
    ("neural/gru, ensemble of 4, cross-fitted", "neural/gru, CRPS, Euler (then the default)"),
    ("neural/gru, ensemble of 4, cross-fitted", "neural/gru, ensemble of 4"),
    ("ncde encoder, ensemble of 4", "ncde encoder, CRPS, Euler (then the default)"),
    ("ncde encoder, ensemble of 4, cross-fitted", "ncde encoder, ensemble of 4"),
    ("neural/gru, cross-fitted, quantiles", "neural/gru, ensemble of 4, cross-fitted"),
    ("neural/gru, cross-fitted, quantiles", "neural/gru, CRPS, Euler (then the default)"),
    ("ncde encoder, cross-fitted, quantiles", "ncde encoder, ensemble of 4, cross-fitted"),
    ("ncde encoder, cross-fitted, quantiles", "ncde encoder, CRPS, Euler (then the default)"),
    ("langevin, cross-fitted, quantiles", "langevin, ensemble of 4, cross-fitted"),
    ("langevin, cross-fitted, quantiles", "langevin, CRPS, Euler (then the default)"),
    ("linear-noise, cross-fitted, quantiles", "linear-noise, ensemble of 4, cross-fitted"),
    ("linear-noise, cross-fitted, quantiles", "linear-noise, CRPS, Euler (then the default)"),
    ("geometric, cross-fitted, quantiles", "geometric, ensemble of 4, cross-fitted"),
    ("geometric, cross-fitted, quantiles", "geometric, CRPS, Euler (then the default)"),
]
BAND = (0.85, 0.95)
FLOOR = 0.80


def read_cells(path):
    """`{(process, seed): 90% coverage}` of a panel CSV's forecast rows that scored."""
    import csv

    cells = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["region"] == "forecast" and row["status"] == "ok" and float(row["level"]) == 0.9:
                cells[(row["process"], int(row["seed"]))] = float(row["coverage"])
    return cells


def truth_cells(oracle):
    """The truth's 90% coverage on each panel data set, `{(process, seed): o}`, and its spread
    over fresh data sets, `{process: (mean, sd)}`, from `panel_oracle.py`'s JSON."""
    cells, spread = {}, {}
    for name, v in oracle["processes"].items():
        for r in v["panel_seeds"]:
            if "cov90" in r:
                cells[(name, int(r["seed"]))] = float(r["cov90"])
        spread[name] = (float(v["draws"]["cov90_mean"]), float(v["draws"]["cov90_sd"]))
    return cells, spread


def must_show(cov):
    """`(processes in the band, seeds below the floor)` of `{(process, seed): coverage}`."""
    by = {}
    for (p, _), c in cov.items():
        by.setdefault(p, []).append(c)
    inside = sum(BAND[0] <= np.mean(v) <= BAND[1] for v in by.values())
    return int(inside), int(sum(c < FLOOR for c in cov.values()))


def spread(model, truth, truth_spread, seeds=3, sims=20000, rng=None):
    """The paired differences of one run against the truth, and `p_meet` (module docstring)."""
    rng = np.random.default_rng(0) if rng is None else rng
    common = sorted(set(model) & set(truth))
    if not common:
        raise ValueError("no (process, seed) cell in both the run and the oracle")
    d = {k: model[k] - truth[k] for k in common}
    procs = sorted({p for p, _ in common})
    bias = {p: float(np.mean([d[k] for k in common if k[0] == p])) for p in procs}
    resid = np.array([d[k] - bias[k[0]] for k in common])
    dof = len(common) - len(procs)
    fit_sd = float(np.sqrt(np.sum(resid**2) / dof)) if dof > 0 else float("nan")
    # simulated fresh runs: truth's coverage on a fresh data set + the run's bias + fit noise
    ok = np.ones(sims, bool)
    for p in procs:
        mu, sd = truth_spread[p]
        c = mu + bias[p] + rng.normal(0.0, sd, (sims, seeds)) + rng.normal(0.0, fit_sd if dof > 0 else 0.0, (sims, seeds))
        m = c.mean(axis=1)
        ok &= (m >= BAND[0]) & (m <= BAND[1]) & (c.min(axis=1) >= FLOOR)
    inside, below = must_show({k: model[k] for k in common})
    v = np.array(list(d.values()))
    return dict(cells=len(common), mean_d=float(v.mean()), rms_d=float(np.sqrt(np.mean(v**2))),
                fit_sd=fit_sd, bias=bias, worst=dict(zip(("process", "seed"), min(d, key=d.get))) | {"d": float(min(d.values()))},
                processes_in_band=inside, seeds_below_floor=below, p_meet=float(ok.mean()),
                mean_coverage=float(np.mean([model[k] for k in common])))


def compare(a, b, truth):
    """`a` against `b` (`{(process, seed): coverage}`), cell by cell on the cells both and the
    truth hold: RMS of each one's `d`, the count of cells where `a` is closer to the truth,
    and the two-sided sign test's p-value of that count (ties dropped)."""
    from math import comb

    common = sorted(set(a) & set(b) & set(truth))
    da = np.array([abs(a[k] - truth[k]) for k in common])
    db = np.array([abs(b[k] - truth[k]) for k in common])
    closer, farther = int(np.sum(da < db)), int(np.sum(da > db))
    n = closer + farther
    tail = sum(comb(n, i) for i in range(0, min(closer, farther) + 1)) / 2**n if n else 1.0
    return dict(cells=len(common), rms_a=float(np.sqrt(np.mean(da**2))), rms_b=float(np.sqrt(np.mean(db**2))),
                a_closer=closer, b_closer=farther, sign_test_p=float(min(1.0, 2 * tail)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=None,
                   help='"label=file.csv" (files in benchmarks/results/); default: the RUNS table')
    p.add_argument("--oracle", default=str(RESULTS / "panel_oracle_full_cpu.json"))
    p.add_argument("--out", default=str(RESULTS / "panel_spread_cpu.json"))
    p.add_argument("--plot", default=None, help="figure path (default: the JSON's, .png)")
    args = p.parse_args(argv)
    runs = RUNS if args.runs is None else dict(r.split("=", 1) for r in args.runs)
    oracle = json.loads(Path(args.oracle).read_text())
    truth, truth_spread = truth_cells(oracle)
    result = dict(benchmark="panel runs against the truth on the same data sets",
                  command="python benchmarks/panel_spread.py" + ("" if args.runs is None else " --runs " + " ".join(args.runs)),
                  oracle=Path(args.oracle).name, truth_p_meet=oracle.get("p_perfect_model_meets_must_show"),
                  truth_rms_from_0_9=float(np.sqrt(np.mean([(o - 0.9) ** 2 for o in truth.values()]))),
                  runs={})
    paths = {label: Path(name) if Path(name).is_absolute() else RESULTS / name for label, name in runs.items()}
    cells = {label: read_cells(path) for label, path in paths.items()}
    print(f"{'run':32s} cells  mean c   mean d  rms d  fit sd  in band  <0.80  p_meet")
    for label, path in paths.items():
        r = spread(cells[label], truth, truth_spread)
        result["runs"][label] = dict(file=path.name, **r)
        print(f"{label:32s} {r['cells']:5d}  {r['mean_coverage']:.3f}  {r['mean_d']:+.3f}  {r['rms_d']:.3f}  "
              f"{r['fit_sd']:.3f}  {r['processes_in_band']:7d}  {r['seeds_below_floor']:5d}  {r['p_meet']:.2f}")
    print(f"truth: p_meet {result['truth_p_meet']:.2f}, rms of its own cells from 0.90 {result['truth_rms_from_0_9']:.3f}")
    result["pairs"] = []
    for a, b in PAIRS:
        if a in cells and b in cells:
            c = compare(cells[a], cells[b], truth)
            result["pairs"].append(dict(a=a, b=b, **c))
            print(f"{a} vs {b}: closer to the truth on {c['a_closer']} of {c['cells']} cells "
                  f"(rms {c['rms_a']:.3f} vs {c['rms_b']:.3f}; sign test p = {c['sign_test_p']:.2f})")
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1))
    _plot(result, cells, truth, Path(args.plot) if args.plot else out.with_suffix(".png"))
    print(f"wrote {out}")


def _plot(result, cells_of, truth, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["runs"])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    for i, label in enumerate(labels):
        cells = cells_of[label]
        d = [cells[k] - truth[k] for k in sorted(set(cells) & set(truth))]
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(d))
        ax.scatter(d, i + jitter, s=10, alpha=0.6, color="C0" if label.endswith("(default)") else "C1")
        ax.plot([result["runs"][label]["mean_d"]] * 2, [i - 0.3, i + 0.3], color="k", lw=1.5)
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("90% coverage minus the truth's on the same data set (bar: mean)")
    ax.set_title("Full panel, latent SDE configurations: each dot a (process, seed) cell", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
