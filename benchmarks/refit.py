"""What a refit costs when only its length changes: the same small `LatentSDE` fitted by SVI
in one process with JAX's persistent compilation cache on (as `bayesde fit` runs), first
cold, then again with the same `num_steps` (the baseline: everything the cache can save is
saved), then with other lengths. A run's length is an argument of the compiled SVI chunk,
so the other lengths should cost what the same-length refit does.

    python benchmarks/refit.py --out benchmarks/results/refit_cpu.json

The JSON holds every fit's wall time, its ratio to the same-length refit, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import machine  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="the first fit's (and the baseline's) num_steps")
    ap.add_argument("--others", type=int, nargs="+", default=[30, 100], help="other run lengths refitted")
    ap.add_argument("--out", default="benchmarks/results/refit_cpu.json")
    args = ap.parse_args(argv)

    import jax

    import bayesde as bd

    cache = tempfile.mkdtemp(prefix="bayesde-refit-")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    data = bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=12, key=jax.random.key(0))
    model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8)
    kw = dict(key=jax.random.key(1), progress_bar=False, warn=False, chunk_size=10)

    def timed(num_steps):
        t0 = time.perf_counter()
        bd.fit(model, data, num_steps=num_steps, **kw)
        return time.perf_counter() - t0

    cold = timed(args.steps)
    same = timed(args.steps)
    others = {str(n): timed(n) for n in args.others}
    out = dict(
        what="wall seconds of bd.fit(LatentSDE(latent_dim=2, context_dim=4, width=8), OU 8x12, method='svi') "
             "in one process with the persistent compilation cache on",
        cold_s=cold, same_length_refit_s=same,
        other_length_refit_s=others,
        other_over_same=({k: v / same for k, v in others.items()}),
        load_average=os.getloadavg(), machine=machine(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({k: out[k] for k in ("cold_s", "same_length_refit_s", "other_length_refit_s", "other_over_same")},
                     indent=1))
    return out


if __name__ == "__main__":
    main()
