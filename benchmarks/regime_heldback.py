"""How representative are the held-back tails of the panel's regime-switching series?

`LatentSDE` (every family and encoder) and `BayesianNeuralODE` fit their forecast spread
on the last quarter of every fourth series' history, which the networks never train on
(`bd.models` `held_back` / `holdout_split`). On the panel's `regime` process the future
of a series is calm or holds a switch of level, and a spread fitted on tails that hold
no switch is too narrow for a future that does. This script counts, on the panel's own
data sets (full sizes, the panel's seeds and missing fractions) and on `--draws` more:

- the share of the held-back series whose tail (as the models cut it) holds a switch;
- the share of all series whose future (the panel's last 25% of the window, the part
  that is forecast and scored) holds one;

and puts the panel's 90% coverage of every configuration beside them (from the committed
CSVs named in `--csv`; where several hold a configuration, the last one listed).

    python benchmarks/regime_heldback.py --draws 200

Writes `benchmarks/results/regime_heldback_cpu.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bayesde as bd  # noqa: E402
from bayesde.models._common import held_back, holdout_split  # noqa: E402
from calibration import panel_cut, panel_data_key, panel_missing, panel_split  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CSVS = [
    "calibration_panel_full_minsteps_cpu.csv", "calibration_panel_full_others_cpu.csv",
    "calibration_panel_full_others3_cpu.csv", "calibration_panel_full_geometric_floor_cpu.csv",
    "calibration_panel_full_linear_noise_cpu.csv", "calibration_panel_full_fractional_cpu.csv",
    "calibration_panel_full_bnode_walk_cpu.csv", "calibration_panel_full_ncde_cpu.csv",
    # this version's reruns (another draw of the initial weights since commit 981dae7) come last and win
    "calibration_panel_full_default_cpu.csv", "calibration_panel_full_langevin_v2_cpu.csv",
    "calibration_panel_full_linear_noise_v2_cpu.csv", "calibration_panel_full_geometric_v2_cpu.csv",
    "calibration_panel_full_fractional_v2_cpu.csv",
]


def _switched(regime, before, after):
    """Per series: whether the regime at any observed row in `after` differs from the
    regime at the last observed row in `before` (NaN where either is empty)."""
    out = np.full(regime.shape[0], np.nan)
    for i in range(regime.shape[0]):
        b, a = np.flatnonzero(before[i]), np.flatnonzero(after[i])
        if b.size and a.size:
            out[i] = float(np.any(regime[i, a] != regime[i, b[-1]]))
    return out


def shares(data, every: int = 4, holdout: float = 0.25):
    """`(held-back tails with a switch, futures with a switch, number held back)` of one
    panel data set: the history and future as `calibration.panel_split` cuts them (the
    rows at `t <= panel_cut`, then the rest), the held-back tails as the models cut the history."""
    hist, _, _ = panel_split(data)
    regime = np.asarray(data.truth["regime"])
    seen = data.mask.any(-1) & (np.arange(data.n_times)[None, :] < data.lengths[:, None])
    cut = panel_cut(data)
    before, after = seen & (data.ts <= cut), seen & (data.ts > cut)
    # `split` keeps each series' history rows first and in order, so history column j is row j.
    head, tail = holdout_split(jnp.asarray(hist.ts), jnp.asarray(hist.mask), holdout, hist.n_series, every)
    pad = data.n_times - hist.n_times
    head = np.pad(np.asarray(head).any(-1), ((0, 0), (0, pad)))
    tail = np.pad(np.asarray(tail).any(-1), ((0, 0), (0, pad)))
    rows = held_back(np.arange(data.n_series), data.n_series, every)
    tails = _switched(regime, head, tail)[rows]
    futures = _switched(regime, before, after)
    return float(np.nanmean(tails)), float(np.nanmean(futures)), int(rows.sum())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=200, help="data sets beyond the panel's seeds")
    p.add_argument("--seeds", type=int, default=3, help="the panel's seeds")
    p.add_argument("--csv", nargs="*", default=DEFAULT_CSVS, help="panel CSVs (benchmarks/results/) for coverage")
    p.add_argument("--out", default=str(RESULTS / "regime_heldback_cpu.json"))
    args = p.parse_args(argv)
    case = bd.datasets.panel()["regime"]
    key = jax.random.key(0)

    def simulate(seed):
        return case.simulate(key=panel_data_key(key, "regime", seed),
                             missing=panel_missing(seed), quick=False)

    panel_rows = []
    for seed in range(args.seeds):
        t, f, k = shares(simulate(seed))
        panel_rows.append(dict(seed=seed, heldback_tails_switched=t, futures_switched=f, heldback_series=k))
    coverage = {}
    try:
        import pandas as pd

        frames = [pd.read_csv(RESULTS / c) for c in args.csv if (RESULTS / c).exists()]
        df = pd.concat(frames)
        df = df[(df.process == "regime") & (df.level == 0.9) & (df.status == "ok")]
        df = df.drop_duplicates(["model", "seed"], keep="last")
        for (model, seed), c in df.set_index(["model", "seed"]).coverage.items():
            coverage.setdefault(model, {})[int(seed)] = float(c)
    except ImportError:
        pass
    for r in panel_rows:
        r["coverage_90"] = {m: v.get(r["seed"]) for m, v in coverage.items()}
    draws = np.array([shares(simulate(args.seeds + d))[:2] for d in range(args.draws)])
    tails, futures = draws[:, 0], draws[:, 1]
    first = panel_rows[0]
    out = dict(
        benchmark="regime_heldback", command=" ".join(["python benchmarks/regime_heldback.py"] + (argv or sys.argv[1:])),
        panel=panel_rows,
        draws=dict(n=args.draws, tails_mean=float(tails.mean()), tails_sd=float(tails.std()),
                   futures_mean=float(futures.mean()), futures_sd=float(futures.std()),
                   share_of_draws_with_tails_at_most_seed0=float(np.mean(tails <= first["heldback_tails_switched"] + 1e-9)),
                   tails_quantiles={q: float(np.quantile(tails, q)) for q in (0.05, 0.5, 0.95)}),
    )
    Path(args.out).write_text(json.dumps(out, indent=1))
    for r in panel_rows:
        cov = ", ".join(f"{m} {c:.2f}" for m, c in sorted(r["coverage_90"].items()) if c is not None)
        print(f"seed {r['seed']}: held-back tails with a switch {r['heldback_tails_switched']:.2f} "
              f"(of {r['heldback_series']}), futures {r['futures_switched']:.2f}; 90% coverage: {cov}")
    d = out["draws"]
    print(f"{args.draws} more data sets: held-back tails {d['tails_mean']:.2f} ± {d['tails_sd']:.2f}, futures "
          f"{d['futures_mean']:.2f} ± {d['futures_sd']:.2f}; tails as calm as seed 0's or calmer: "
          f"{d['share_of_draws_with_tails_at_most_seed0']:.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
