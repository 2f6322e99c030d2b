"""What `SVI(held_out_refit=...)` changes: panel fits scored with the forecast scales as
they were at the kept step (`held_out_refit=0`, the default) and refitted to the kept
networks (`--refit` steps, 200 unless told).

    python benchmarks/held_out_refit.py                         # the cases below
    python benchmarks/held_out_refit.py --cases ou:LatentSDE-ncde:0 seasonal:LatentSDE:0

Each case `process:model:seed` is the full-size panel case of `benchmarks/calibration.py`
(same data, keys and scoring). The two fits run the same trajectory and keep the same
step (the refit happens after the choice), so the rows differ only by `κ` and `ρ`.
Writes JSON: per case the kept step, 90% coverage, width and CRPS over the climatology's,
before and after, and the seconds of each fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration as C  # noqa: E402
from _machine import machine  # noqa: E402

import bayesde as bd  # noqa: E402

#: Fits that kept an early step (100-400) and fits that kept a late one, across configurations.
CASES = [
    "ou:LatentSDE-ncde:0", "seasonal:LatentSDE-linear-noise:2", "gbm:LatentSDE-ncde:2", "ou:LatentSDE-ncde:1",
    "oscillator:LatentSDE:1", "regime:LatentSDE:0", "lv_sde:LatentSDE:0", "seasonal:LatentSDE:0",
]


def score(case: str, refit: int) -> dict:
    proc, model, seed = case.split(":")
    t0 = time.perf_counter()
    _, scored, info = C._panel_case(bd.datasets.panel()[proc], model, int(seed), False, None, 500, jax.random.key(0),
                                    dict(held_out_refit=refit))
    row = next(r for r in scored["pool"]["forecast"] if r["level"] == 0.9)
    return dict(kept_step=info["best_step"], coverage=row["coverage"], width=row["width"],
                crps_over_climatology=row["crps"] / row["crps_climatology"], seconds=time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="*", default=CASES, help="process:model:seed, e.g. ou:LatentSDE-ncde:0")
    p.add_argument("--refit", type=int, default=200, help="held_out_refit steps of the second fit")
    p.add_argument("--out", default=str(C.RESULTS / "held_out_refit_cpu.json"))
    args = p.parse_args(argv)
    rows = []
    for case in args.cases:
        before, after = score(case, 0), score(case, args.refit)
        rows.append(dict(case=case, before=before, after=after))
        print(f"{case}: kept {after['kept_step']}, 90% coverage {before['coverage']:.3f} -> {after['coverage']:.3f}, "
              f"CRPS/climatology {before['crps_over_climatology']:.3f} -> {after['crps_over_climatology']:.3f}",
              flush=True)
        Path(args.out).write_text(json.dumps(dict(
            command="python benchmarks/held_out_refit.py " + " ".join(sys.argv[1:]), machine=machine(),
            held_out_refit=args.refit, rows=rows), indent=1))


if __name__ == "__main__":
    main()
