"""How fast the `bayesde` command answers when it computes nothing: `--help`,
`fit --help`, and an error on a bad argument (target: under 1 s wall on 2 CPU cores).

    python benchmarks/cli_startup.py --repeats 7 --out benchmarks/results/cli_startup.json

Each case runs the installed console script (falling back to `python -m bayesde._cli`)
as a fresh process `--repeats` times; the JSON holds every wall time, the median and
the maximum, the CPU time (user + system) of each process (what the wall time
would be on an idle machine), whether JAX was imported (`python -X importtime` of the same command), the
machine and its load average. Timings are recorded here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import avx512  # noqa: E402

CASES = {
    "help": ["--help"],
    "fit_help": ["fit", "--help"],
    "bad_argument": ["fit", "--data", "x.csv", "--out", "r", "--method", "mcmc"],
    "version": ["--version"],
}


def command() -> list[str]:
    script = shutil.which("bayesde", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "bayesde._cli"]


def time_case(args: list[str], repeats: int) -> dict:
    base = command()
    walls, cpus, codes = [], [], set()
    for _ in range(repeats):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(base + args, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
        codes.add(proc.returncode)
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "bayesde._cli", *args],
                           capture_output=True, text=True)
    imported = {line.split("|")[-1].strip() for line in probe.stderr.splitlines() if line.startswith("import time:")}
    return {
        "args": args,
        "exit_codes": sorted(codes),
        "wall_s": [round(w, 4) for w in walls],
        "median_s": round(statistics.median(walls), 4),
        "max_s": round(max(walls), 4),
        "cpu_s": [round(c, 4) for c in cpus],
        "median_cpu_s": round(statistics.median(cpus), 4),
        "imports_jax": "jax" in imported,
        "imports_numpy": "numpy" in imported,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/cli_startup.json")
    a = p.parse_args()
    import typer

    import bayesde

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = {name: time_case(args, a.repeats) for name, args in CASES.items()}
    out = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runner": " ".join(command()),
        "target": "every case under 1 s wall (median) on 2 CPU cores",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "avx512": avx512(),
                    "python": platform.python_version(), "load_average_before": load,
                    "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "versions": {"bayesde": bayesde.__version__, "typer": typer.__version__},
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    for name, r in results.items():
        print(f"{name:14s} median {r['median_s']:.3f} s  max {r['max_s']:.3f} s  cpu {r['median_cpu_s']:.3f} s  "
              f"exit {r['exit_codes']}  "
              f"jax imported: {r['imports_jax']}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
