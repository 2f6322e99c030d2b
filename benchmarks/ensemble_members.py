"""Why a cross-fitted ensemble whose members' quantiles are averaged over-covers some panel
processes: each member's own forecast beside the combination, on the panel's full-size cases.

    python benchmarks/ensemble_members.py                       # the cases below
    python benchmarks/ensemble_members.py --cases gbm:LatentSDE:0 ou:LatentSDE-ncde:1 --out x.json

Each case `process:model:seed` is fitted exactly as `benchmarks/calibration.py --panel
--members 4 --cross-fit` fits it (same data, keys and draws). For the 90% interval it
reports every member's own coverage and width, the pooled mixture's and the averaged
quantiles' (`--combine quantiles`), and a decomposition of the squared errors of the
forecasts' centres (medians) over the held-out entries, in the training data's sds:

- `member_mse`: the members' mean squared error, averaged over members;
- `centre_spread`: the spread of the members' centres around their mean, `mean_k (m_k − m̄)²`;
- `ensemble_mse`: the squared error of the members' mean centre `m̄` (exactly
  `member_mse − centre_spread`);
- `member_var`: the members' own predictive variance, averaged over members.

A member whose spread matches its errors has `member_var ≈ member_mse`. The averaged quantiles
keep `member_var` while their centre's error is `ensemble_mse`: the part of the members'
error that averaging removes (`centre_spread`) is spread the combination still carries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration as C  # noqa: E402
from _machine import machine  # noqa: E402

import bayesde as bd  # noqa: E402

#: The over-covered cells of the cross-fitted GRU configurations, and a cell in the band for contrast.
CASES = ["gbm:LatentSDE:0", "gbm:LatentSDE:1", "regime:LatentSDE:0", "regime:LatentSDE:1", "ou:LatentSDE:0"]
MEMBERS = 4
NUM_PRED = 500


def score(case: str) -> dict:
    proc, model_name, seed = case.split(":")
    seed = int(seed)
    spec = bd.datasets.panel()[proc]
    k_data = C.panel_data_key(jax.random.key(0), proc, seed)
    k_fit, k_pred = C.panel_fit_keys(k_data, model_name)
    data = spec.simulate(key=k_data, missing=C.panel_missing(seed), quick=False)
    hist, fut, sd = C.panel_split(data)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bd.fit(C.PANEL_MODELS[model_name]["build"](data.dim), hist, key=k_fit, progress_bar=False,
                      warn=False, method="ensemble", num_members=MEMBERS, cross_fit=True)
        pred = post.predict(fut.ts, key=k_pred, num_samples=NUM_PRED)
    seconds = time.perf_counter() - t0
    s = np.asarray(pred.samples, float) / sd
    y = np.where(fut.mask, fut.ys, np.nan) / sd
    ok = np.isfinite(y)
    per = s.reshape((MEMBERS, s.shape[0] // MEMBERS) + s.shape[1:])
    members = []
    for k in range(MEMBERS):
        cov, width = C.band(per[k], y, 0.9)
        members.append(dict(coverage=cov, width=width))
    out = dict(case=case, seconds=seconds, members=members)
    for how in ("pool", "quantiles"):
        cov, width = C.band(C.combine_members(s, MEMBERS, how), y, 0.9)
        out[how] = dict(coverage=cov, width=width)
    centres = np.median(per, axis=1)  # (members, N, T, D)
    mean_centre = centres.mean(axis=0)
    out["member_mse"] = float(np.mean(((centres - y[None]) ** 2)[:, ok]))
    out["centre_spread"] = float(np.mean(((centres - mean_centre[None]) ** 2)[:, ok]))
    out["ensemble_mse"] = float(np.mean(((mean_centre - y) ** 2)[ok]))
    out["member_var"] = float(np.mean(np.var(per, axis=1)[:, ok]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="*", default=CASES, help="process:model:seed, e.g. gbm:LatentSDE:0")
    p.add_argument("--out", default=str(C.RESULTS / "ensemble_members_cpu.json"))
    args = p.parse_args(argv)
    rows = []
    for case in args.cases:
        r = score(case)
        rows.append(r)
        covers = " ".join(f"{m['coverage']:.2f}" for m in r["members"])
        print(f"{case}: members cover {covers}, "
              f"pooled {r['pool']['coverage']:.2f}, quantiles {r['quantiles']['coverage']:.2f}; "
              f"member mse {r['member_mse']:.3f} var {r['member_var']:.3f}, centre spread {r['centre_spread']:.3f}, "
              f"ensemble mse {r['ensemble_mse']:.3f} ({r['seconds']:.0f} s)", flush=True)
        Path(args.out).write_text(json.dumps(dict(
            command="python benchmarks/ensemble_members.py " + " ".join(sys.argv[1:]), machine=machine(),
            members=MEMBERS, num_pred=NUM_PRED, rows=rows), indent=1))


if __name__ == "__main__":
    main()
