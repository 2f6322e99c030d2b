"""Data-parallel SVI scaling: SVI steps per second of `bd.fit(..., devices=...)` on 1, 2
and 4 devices, for the BNCDE and the latent SDE, against the single-device program in
the same run, and the fraction of the machine's measured matrix-product rate each step
reaches.

    python benchmarks/scaling.py                    # forced CPU devices -> results/scaling_cpu.json
    python benchmarks/scaling.py --quick            # small sizes, a couple of minutes
    python benchmarks/scaling.py --devices real --quick --out benchmarks/results/scaling_gpu.json

Each device count runs in its own subprocess. `--devices forced` (default) splits the
host CPU into N XLA devices (`--xla_force_host_platform_device_count=N`, set before
JAX starts); `--devices real` uses the first N of the real devices (GPUs) and skips
counts above what the machine has.

What is measured, per device count N:

- `steps_per_second`: `1 / post.info.seconds_per_step` of a short `bd.fit` (the
  median of the full compiled chunks after the first, which compiles), with
  `devices=jax.devices()[:N]`; for N = 1 the plain single-device program
  (`devices=None`) is the baseline, and outside `--quick` the one-device mesh is timed
  too (the cost of the data-parallel machinery alone).
- `matmul_gflops`: a dense float32 matrix product `(N, n, n) @ (N, n, n)` split over the
  N devices (one `n x n` product per device), `2 N n^3 / seconds`: the rate the N
  devices reach on the kernel they are best at.
- `fraction_of_matmul_rate`: `flops_per_step * steps_per_second / matmul rate`. The
  FLOPs of one step are XLA's count for the compiled single-device step,
  `jax.jit(svi.update).lower(...).compile().cost_analysis()["flops"]`. XLA counts the
  body of a `lax.scan`/`while` loop once, not once per iteration, and the time stepping
  of both models is a scan, so this count, and the fraction, are lower bounds.

Forced CPU devices share the same cores: they show that the sharded program runs and
what its communication costs, never a speed-up (expect ratios <= 1). A speed-up needs
real devices (`--devices real`) or hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few steps (< 2 minutes on an idle machine)")
    p.add_argument("--devices", choices=("forced", "real"), default="forced",
                   help="forced host-CPU devices (default) or the machine's real devices")
    p.add_argument("--counts", default=None, help="device counts, comma-separated (default 1,2,4; real: 1,2,4,8)")
    p.add_argument("--models", default="bncde,latent_sde")
    p.add_argument("--note", default="", help="saved with the machine record, e.g. 'shared with other jobs'")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per device count")
    p.add_argument("--out", default=None, help="default benchmarks/results/scaling_<cpu|gpu>[_quick].json")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _sizes(quick: bool) -> dict:
    if quick:
        return {
            "bncde": dict(n_patients=128, hidden=8, width=32, train_paths=4, batch_size=32, chunk=2),
            "latent_sde": dict(n_series=128, n_times=40, latent_dim=4, context_dim=16, hidden=32,
                               batch_size=32, chunk=2),
            "matmul_n": 512,
        }
    # Close to benchmarks/bncde.py (width 128, 10 paths, batch 64) and
    # benchmarks/latent_sde.py (torchsde's Lorenz configuration, 1024 series x 100 times).
    return {
        "bncde": dict(n_patients=1000, hidden=8, width=128, train_paths=10, batch_size=64, chunk=5),
        "latent_sde": dict(n_series=1024, n_times=100, latent_dim=4, context_dim=64, hidden=128,
                           batch_size=256, chunk=3),
        "matmul_n": 2048,
    }


# ------------------------------------------------------------------------ worker
def _worker(args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    import bayesde as bd

    n_dev = args.worker
    available = jax.devices()
    if len(available) < n_dev:
        return {"skipped": f"{len(available)} devices available"}
    devices = available[:n_dev]
    sizes = _sizes(args.quick)
    out = {"available_devices": len(available), "devices": [str(d) for d in devices],
           "device_kind": devices[0].device_kind,
           "backend": jax.default_backend(), "load_average_at_start": os.getloadavg()}

    # The machine's matrix-product rate on these devices.
    n = sizes["matmul_n"]
    mesh = bd.distributed.mesh(devices)
    sh = NamedSharding(mesh, P("d"))
    a = jax.device_put(jax.random.normal(jax.random.key(0), (n_dev, n, n), jnp.float32), sh)
    b = jax.device_put(jax.random.normal(jax.random.key(1), (n_dev, n, n), jnp.float32), sh)
    mm = jax.jit(jnp.matmul, out_shardings=sh)
    jax.block_until_ready(mm(a, b))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        times.append(time.perf_counter() - t0)
    out["matmul"] = {"n": n, "seconds": float(np.median(times)),
                     "gflops": 2.0 * n_dev * n**3 / float(np.median(times)) / 1e9}
    print(f"[{n_dev} devices] matmul {out['matmul']['gflops']:.1f} GFLOP/s", file=sys.stderr, flush=True)

    for name in args.models.split(","):
        model, data, cfg = _problem(name, sizes[name], bd, jax)
        # On one device: the plain program (the baseline) and, outside --quick, the
        # one-device mesh (what the data-parallel machinery alone costs).
        runs = {"mesh": devices} if n_dev > 1 else {"single": None, **({} if args.quick else {"mesh": devices})}
        res = {"config": cfg}
        for label, devs in runs.items():
            kw = dict(method="svi", num_steps=4 * cfg["chunk"], chunk_size=cfg["chunk"],
                      batch_size=cfg["batch_size"], num_samples=2, key=jax.random.key(1),
                      progress_bar=False, warn=False)
            t0 = time.perf_counter()
            post = bd.fit(model, data, devices=devs, **kw)
            s = post.info.seconds_per_step
            res[label] = {"seconds_per_step": s, "steps_per_second": 1.0 / s, "fit_wall_s": time.perf_counter() - t0,
                          "first_chunk_s": post.info.first_chunk_seconds,
                          "loss_first": float(post.loss[0]), "loss_last": float(post.loss[-1])}
            print(f"[{n_dev} devices] {name} {label}: {1.0 / s:.2f} steps/s", file=sys.stderr, flush=True)
        if n_dev == 1:
            res["flops_per_step"] = _step_flops(model, data, cfg["batch_size"], jax)
        out[name] = res
    out["load_average_at_end"] = os.getloadavg()
    return out


def _problem(name, cfg, bd, jax):
    cfg = dict(cfg)
    if name == "bncde":
        sim = bd.datasets.tumor_growth(n_patients=cfg["n_patients"], n_test=8, gamma=2.0, key=jax.random.key(0))
        model = bd.models.BNCDE(state_dim=cfg["hidden"], width=cfg["width"], train_paths=cfg["train_paths"])
        return model, sim.train, cfg
    if name == "latent_sde":
        data = bd.datasets.stochastic_lorenz(n_series=cfg["n_series"], n_times=cfg["n_times"], key=jax.random.key(0))
        model = bd.models.LatentSDE(latent_dim=cfg["latent_dim"], context_dim=cfg["context_dim"],
                                    width=cfg["hidden"], encoder="gru", family="neural", substeps=2,
                                    scheme="euler")
        return model, data, cfg
    raise SystemExit(f"--models: unknown {name!r}; choose bncde, latent_sde")


def _step_flops(model, data, batch_size, jax):
    """XLA's FLOP count of one compiled single-device SVI step (loop bodies counted once)."""
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO

    from bayesde.inference._registry import _bind
    from bayesde.inference._sites import site_kinds
    from bayesde.inference._svi import _make_guide, default_optimizer

    model = model.adapt(data)
    batch = data.batch()
    program = _bind(model, batch_size, batch)
    latent = [n for n, k in site_kinds(program, batch, jax.random.key(2)).items() if k == "latent"]
    guide = _make_guide(model.guide(), program, latent, model.init_strategy())
    svi = SVI(program, guide, numpyro.optim.optax_to_numpyro(default_optimizer(1e-2)), Trace_ELBO())
    state = svi.init(jax.random.key(3), batch)
    cost = jax.jit(svi.update).lower(state, batch).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", float("nan")))


# ------------------------------------------------------------------------ parent
def _run_count(args, n_dev: int) -> dict:
    env = dict(os.environ)
    env["BAYESDE_FAST"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    if args.devices == "forced":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_dev}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n_dev), "--models", args.models]
    if args.quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if proc.returncode or not lines:
        return {"error": proc.stderr[-3000:]}
    res = json.loads(lines[-1][len("RESULT"):])
    res["subprocess_wall_s"] = time.perf_counter() - t0
    return res


def _summarise(per_count: dict, models) -> dict:
    base = per_count.get("1", {})
    out = {}
    for name in models:
        if name not in base:
            continue
        flops = base[name].get("flops_per_step")
        single = base[name]["single"]["steps_per_second"]
        rows = {}
        for count, res in per_count.items():
            if name not in res:
                continue
            r = res[name].get("mesh")
            if r is None:
                continue
            rows[count] = {
                "steps_per_second": r["steps_per_second"],
                "vs_single_device_program": r["steps_per_second"] / single,
                "fraction_of_matmul_rate": (flops * r["steps_per_second"] / (res["matmul"]["gflops"] * 1e9)
                                            if flops else None),
            }
        rows["single_device_program"] = {
            "steps_per_second": single,
            "fraction_of_matmul_rate": (flops * single / (base["matmul"]["gflops"] * 1e9) if flops else None),
        }
        out[name] = rows
    return out


def main(argv=None):
    args = _parse(argv)
    if args.worker is not None:
        print("RESULT" + json.dumps(_worker(args)), flush=True)
        return
    counts = [int(c) for c in (args.counts or ("1,2,4" if args.devices == "forced" else "1,2,4,8")).split(",")]
    if counts[0] != 1:
        counts = [1] + counts
    sys.path.insert(0, HERE)
    from _machine import avx512

    result = {
        "benchmark": "scaling",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv if argv is None else ["scaling.py"] + argv),
        "devices": args.devices,
        "quick": args.quick,
        "sizes": _sizes(args.quick),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "avx512": avx512(),
                    "load_average_at_start": os.getloadavg(), "note": args.note},
        "caveats": [
            "Forced CPU devices (--devices forced) split the same cores: they check that the sharded "
            "program runs and show its communication overhead, not a speed-up.",
            "flops_per_step is XLA's cost_analysis of the compiled single-device step, which counts a "
            "scan/while body once: the FLOPs and the fractions of the matmul rate are lower bounds.",
        ],
        "per_device_count": {},
    }
    out = args.out or os.path.join(
        HERE, "results", f"scaling_{'cpu' if args.devices == 'forced' else 'gpu'}{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    available = None
    for c in counts:
        if available is not None and c > available:
            result["per_device_count"][str(c)] = {"skipped": f"{available} devices available"}
            continue
        print(f"== {c} device(s)", flush=True)
        res = _run_count(args, c)
        result["per_device_count"][str(c)] = res
        if args.devices == "real" and "available_devices" in res:
            available = res["available_devices"]
        # Written after every device count, so that a run stopped by a time limit keeps
        # what it measured.
        result["summary"] = _summarise(result["per_device_count"], args.models.split(","))
        result["machine"]["load_average_at_end"] = os.getloadavg()
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
