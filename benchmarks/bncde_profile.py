"""Where the BNCDE training step spends its time, and how far it is from this CPU's roofline.

At the configuration of `benchmarks/bncde.py` (hidden 8, width 128, 10 weight paths,
batch 64, tumour growth with 59 days; σ = 0.04) this script

1. times the compiled SVI step and its sub-programs, each forward + backward (as in
   training): the weight paths (weight SDE with its Girsanov KL), the random normals
   they use alone, the likelihood given the weight paths (encoder CDE, decoder, head),
   and the encoder CDE alone; and the same normals drawn with JAX's default
   Threefry-2x32 (what the model used before it switched to Threefry-4x32). Every program is timed in rounds that alternate between
   the programs (the machine may be shared), and the median per program is reported;
2. counts the work of one step from its jaxpr (scan bodies multiplied by their length):
   matmul FLOPs, element-wise operations, random 32-bit words, and bytes: the bytes
   every operation reads and writes if nothing were fused (an upper bound) and the
   compulsory bytes (the weight paths and their cotangent, written and read once each;
   the parameters, Adam state and gradients; a lower bound);
3. measures, in the same run, the machine's dense float32 matmul GFLOP/s (2048² @ 2048²),
   its matmul GFLOP/s at the shapes the step uses (batched 64×14 @ 14×128 and
   64×128 @ 128×40), its element-wise throughput (a fused chain of multiply-adds on a
   cache-sized array), its random-number throughput (threefry normals) and its memory
   bandwidth (a streaming `x * a + b` on 128 MiB, in place);
4. times the whole step again with the weight-path normals drawn as before this
   profile (JAX's default Threefry-2x32, a key per path) in the same rounds: the
   speed-up of the model's Threefry-4x32 draws, as the median of the per-round ratios;
5. hence the best possible step time on this CPU,
   `max(matmul FLOPs / peak + element-wise ops / element-wise rate, compulsory bytes / bandwidth)`,
   against the measured step time.

    python benchmarks/bncde_profile.py            # about 3 minutes on 2 cores
    python benchmarks/bncde_profile.py --quick    # smoke test (width 16)

Writes `benchmarks/results/bncde_profile.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.util import log_density

import bayesde as bd
from bayesde._data import Batch
import bayesde.models._bncde as bncde_module
from bayesde.models._bncde import _path_noise
from bayesde.solvers._sde import brownian_increments
from _machine import avx512

PAPER_TRAIN_S_PER_EPOCH_PER_1000 = 53.0


# ----------------------------------------------------------------- timing
def interleaved(fns, rounds, inner=1):
    """Median seconds per call of each zero-argument function, timed in `rounds` rounds
    that call every function in turn (so that load from other jobs hits all alike)."""
    times = {k: [] for k in fns}
    for f in fns.values():  # compile and warm up
        jax.block_until_ready(f())
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in order:
            t = time.perf_counter()
            for _ in range(inner):
                out = fns[k]()
            jax.block_until_ready(out)
            times[k].append((time.perf_counter() - t) / inner)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "all_s": v} for k, v in times.items()}


# ----------------------------------------------------------------- counting
ELEMENTWISE_FREE = {
    "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose", "slice", "dynamic_slice",
    "dynamic_update_slice", "concatenate", "gather", "scatter", "scatter-add", "scatter_add", "pad",
    "convert_element_type", "bitcast_convert_type", "copy", "copy_p", "select_n", "iota", "rev",
    "squeeze", "random_wrap", "random_unwrap", "random_split", "random_fold_in", "random_seed",
    "stop_gradient", "device_put", "pjit", "jit", "closed_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "checkpoint", "scan", "while", "cond", "split", "sharding_constraint",
}
# Threefry-2x32 (20 rounds of add/rotate/xor plus 5 key injections) per 32-bit word.
THREEFRY_OPS_PER_WORD = 58


def _size(aval):
    return int(np.prod(aval.shape)) if hasattr(aval, "shape") else 1


def _nbytes(aval):
    try:
        return _size(aval) * np.dtype(aval.dtype).itemsize
    except TypeError:  # key types
        return _size(aval) * 8


def count(jaxpr, mult=1, acc=None):
    """Matmul FLOPs, element-wise ops, random words and unfused bytes of a jaxpr, with
    scan bodies counted `length` times."""
    if acc is None:
        acc = {"matmul_flops": 0.0, "elementwise_ops": 0.0, "transcendental_ops": 0.0,
               "random_words": 0.0, "unfused_bytes": 0.0, "while_loops": 0}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        subs = []
        for k, v in eqn.params.items():
            vs = v if isinstance(v, (tuple, list)) else (v,)
            for x in vs:
                if isinstance(x, jex_core.ClosedJaxpr):
                    subs.append((k, x.jaxpr))
                elif isinstance(x, jex_core.Jaxpr):
                    subs.append((k, x))
        if subs:
            if name == "scan":
                m = mult * eqn.params["length"]
                for _, s in subs:
                    count(s, m, acc)
            elif name == "cond":
                # the most expensive branch
                best = None
                for _, s in subs:
                    c = count(s, mult)
                    if best is None or c["matmul_flops"] + c["elementwise_ops"] > best["matmul_flops"] + best["elementwise_ops"]:
                        best = c
                for k in acc:
                    acc[k] += best[k]
            else:
                if name == "while":
                    acc["while_loops"] += 1
                for _, s in subs:
                    count(s, mult, acc)
            continue
        outs = eqn.outvars
        out_elems = sum(_size(o.aval) for o in outs)
        io = sum(_nbytes(v.aval) for v in eqn.invars if hasattr(v, "aval")) + sum(_nbytes(o.aval) for o in outs)
        acc["unfused_bytes"] += mult * io
        if name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = int(np.prod([lhs[i] for i in lc])) if lc else 1
            acc["matmul_flops"] += mult * 2.0 * _size(outs[0].aval) * k
        elif name in ("random_bits", "threefry2x32"):
            acc["random_words"] += mult * out_elems
            acc["elementwise_ops"] += mult * out_elems * THREEFRY_OPS_PER_WORD
        elif name in ("tanh", "exp", "log", "log1p", "expm1", "erf_inv", "logistic", "sqrt", "rsqrt",
                      "pow", "erf", "sin", "cos"):
            acc["transcendental_ops"] += mult * out_elems
            acc["elementwise_ops"] += mult * out_elems
        elif name in ("reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin", "cumsum"):
            acc["elementwise_ops"] += mult * sum(_size(v.aval) for v in eqn.invars if hasattr(v, "aval"))
        elif name not in ELEMENTWISE_FREE:
            acc["elementwise_ops"] += mult * out_elems
    return acc


# ----------------------------------------------------------------- machine
def machine_rates(rounds):
    """Dense matmul GFLOP/s, matmul GFLOP/s at the step's shapes, element-wise Gop/s,
    threefry normals per second and streaming bandwidth (GB/s), measured now."""
    k = jax.random.key(0)
    n = 2048
    a = jax.random.normal(k, (n, n))
    b = jax.random.normal(jax.random.fold_in(k, 1), (n, n))
    mm = jax.jit(lambda a, b: a @ b)
    # The step's shapes: 10 paths x batch 64, field in 14 -> width 128 -> 8 x 5 outputs.
    x1 = jax.random.normal(k, (10, 64, 14))
    w1 = jax.random.normal(k, (14, 128))
    w2 = jax.random.normal(k, (10, 128, 40))
    small = jax.jit(lambda x, w1, w2: jnp.einsum("snw,swo->sno", jnp.tanh(jnp.einsum("sni,iw->snw", x, w1)), w2))
    small_flops = 2 * 10 * 64 * (14 * 128 + 128 * 40)
    small_rep = 200

    def small_loop(x):
        def body(c, _):  # each product depends on the last, so none is hoisted
            return c + 1e-3 * small(c, w1, w2)[..., :14], None
        return jax.lax.scan(body, x, None, length=small_rep)[0]

    small_loop = jax.jit(small_loop)
    # Element-wise: 32 fused multiply-adds on a 1 MiB array, repeated.
    e = jax.random.normal(k, (256 * 1024,))
    n_fma, e_rep = 32, 50

    def elem(x):
        def body(c, _):
            for _ in range(n_fma):
                c = c * 0.999 + 1e-4
            return c, None
        return jax.lax.scan(body, x, None, length=e_rep)[0]

    elem = jax.jit(elem)
    elem_ops = 2 * n_fma * e_rep * e.size
    big = jnp.ones((32 * 1024 * 1024,), jnp.float32)  # 128 MiB, far beyond the caches
    s_rep = 8

    def stream(x):  # in place inside the loop: no page faults from fresh buffers
        return jax.lax.scan(lambda c, _: (c * 1.0001 + 1e-6, None), x, None, length=s_rep)[0]

    stream = jax.jit(stream)
    n_norm = 10 * 64 * 8256
    normals = jax.jit(lambda k: jax.random.normal(k, (n_norm,)))
    t = interleaved({
        "matmul": lambda: mm(a, b),
        "small": lambda: small_loop(x1),
        "elementwise": lambda: elem(e),
        "stream": lambda: stream(big),
        "normals": lambda: normals(k),
    }, rounds)
    return {
        "dense_matmul_gflops": 2 * n**3 / t["matmul"]["median_s"] / 1e9,
        "step_shape_matmul_gflops": small_flops * small_rep / t["small"]["median_s"] / 1e9,
        "elementwise_gops": elem_ops / t["elementwise"]["median_s"] / 1e9,
        "bandwidth_gbs": 2 * s_rep * big.nbytes / t["stream"]["median_s"] / 1e9,
        "threefry2x32_normals_per_s": n_norm / t["normals"]["median_s"],
        "nominal_peak_gflops": nominal_peak_gflops(),
        "seconds": {k: v["median_s"] for k, v in t.items()},
    }


def nominal_peak_gflops():
    """Cores x clock x float32 FLOPs per cycle with two FMA units (64 with AVX-512,
    32 with AVX2): the datasheet ceiling, which XLA's matmuls rarely reach."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        mhz = float(info.split("cpu MHz")[1].split(":")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None
    per_cycle = 64 if avx512() else 32
    return os.cpu_count() * mhz / 1e3 * per_cycle


# ----------------------------------------------------------------- the step
def _path_noise_2x32(key, num_paths, s_grid, p, dtype):
    """The weight-path normals as the model drew them before (Threefry-2x32, a key per path)."""
    def one(k):
        k0, k1 = jax.random.split(k)
        return jax.random.normal(k0, (p,), dtype), brownian_increments(k1, s_grid, (p + 1,), dtype=dtype)[:, :p]

    return jax.vmap(one)(jax.random.split(key, num_paths))


def build(args):
    key = jax.random.key(args.seed)
    sim = bd.datasets.tumor_growth(n_patients=args.n_train, n_test=8, gamma=2.0, key=jax.random.fold_in(key, 0))
    model = bd.models.BNCDE(state_dim=8, width=args.width, train_paths=10, sigma=args.sigma).adapt(sim.train)
    batch = sim.train.batch()
    bs = args.batch_size

    def prog(b, q=None):
        return model.program(b, q, subsample_size=bs)

    svi = SVI(prog, lambda *a, **k: None, numpyro.optim.optax_to_numpyro(optax.adam(1e-3)), Trace_ELBO())
    state = svi.init(jax.random.fold_in(key, 1), batch)
    params = svi.get_params(state)
    upd = jax.jit(svi.update)
    # A/B: the same step with the weight-path normals drawn as before (JAX's default
    # Threefry-2x32, one key per path), traced with the model's noise helper swapped.
    saved = bncde_module._path_noise
    bncde_module._path_noise = _path_noise_2x32
    try:
        upd_2x32 = jax.jit(lambda s, b: svi.update(s, b)).lower(state, batch).compile()
    finally:
        bncde_module._path_noise = saved
    n_rows = batch.ys.shape[1] + model.horizon
    sub = Batch(*(None if a is None else a[:bs] for a in batch))
    k_w, k_run = jax.random.split(jax.random.fold_in(key, 2))

    def draw(params):
        def fn():
            return model._draw(k_w, model.train_paths, n_rows)
        return numpyro.handlers.substitute(numpyro.handlers.seed(fn, k_w), data=params)()

    enc_rows, enc_fixed, dec_rows, dec_fixed, kl = jax.jit(draw)(params)
    ct = jax.tree_util.tree_map(lambda a: jax.random.normal(k_w, a.shape), (enc_rows, dec_rows))

    def weights_loss(params):
        er, _, dr, _, kl = draw(params)
        return jnp.mean(kl) + sum(jnp.vdot(a, c) for a, c in zip(jax.tree_util.tree_leaves((er, dr)),
                                                                   jax.tree_util.tree_leaves(ct)))

    weights_grad = jax.jit(jax.value_and_grad(weights_loss))
    p_dim = sum(int(np.prod(a.shape[2:])) for a in jax.tree_util.tree_leaves((enc_rows, dec_rows)))

    s_grid = jnp.arange(n_rows, dtype=jnp.float32) / float(model.rows)
    # The weight-path normals as the model draws them (Threefry-4x32) and as JAX's
    # default Threefry-2x32 would (what the model drew before).
    normals_model = jax.jit(lambda k: _path_noise(k, model.train_paths, s_grid, p_dim, jnp.float32))
    normals_2x32 = jax.jit(lambda k: jax.random.normal(k, (model.train_paths, n_rows, p_dim)))

    def lik_prog(b, rows):
        er, dr = rows
        p = model._common_params()
        ef = {nm: numpyro.param(f"enc.{nm}", None) for nm in enc_fixed}
        df = {nm: numpyro.param(f"dec.{nm}", None) for nm in dec_fixed}
        layers = (er, ef, dr, df)
        with numpyro.plate("series", b.ys.shape[0]):
            model._observe_train(b, *model._ahead(p, layers, b, k_run, model.train_paths), model.train_paths)

    def lik_loss(params, rows):
        fn = numpyro.handlers.seed(lik_prog, k_run)
        return -log_density(fn, (sub, rows), {}, params)[0]

    lik_grad = jax.jit(jax.value_and_grad(lik_loss, argnums=(0, 1)))
    rows = (enc_rows, dec_rows)
    t_len = sub.ys.shape[1]

    def enc_loss(params, er):
        p = {"embed_W": params["embed.W"], "embed_b": params["embed.b"]}
        ef = {nm: params[f"enc.{nm}"] for nm in enc_fixed}
        zs = jax.vmap(lambda r, k: model._encode(p, jax.tree_util.tree_map(lambda a: a[: t_len - 1], r), ef, sub, k))(
            er, jax.random.split(k_run, model.train_paths))
        return jnp.sum(jnp.sin(zs))

    enc_grad = jax.jit(jax.value_and_grad(enc_loss, argnums=(0, 1)))
    return dict(model=model, batch=batch, state=state, params=params, upd=upd, upd_2x32=upd_2x32, svi=svi,
                weights_grad=weights_grad, normals=normals_model, normals_2x32=normals_2x32, lik_grad=lik_grad, rows=rows,
                enc_grad=enc_grad, k_w=k_w, p_dim=p_dim, n_rows=n_rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--sigma", type=float, default=0.04)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="width 16, 3 rounds (smoke test)")
    ap.add_argument("--note", default="", help="saved with the machine record")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bncde_profile.json"))
    args = ap.parse_args()
    if args.quick:
        args.width, args.rounds, args.n_train = 16, 3, 128
    t0 = time.perf_counter()
    b = build(args)
    state, batch, params = b["state"], b["batch"], b["params"]

    # ---- work per step, from the jaxpr of the whole SVI update
    step_jaxpr = jax.make_jaxpr(b["svi"].update)(state, batch)
    work = count(step_jaxpr.jaxpr)
    n_weights = b["model"].train_paths * b["n_rows"] * b["p_dim"]
    param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(params))
    # weight paths (S, G, P) and their cotangent: each written once and read once; the
    # normals behind them: written once, read once; parameters: read, gradient written,
    # Adam's two moments read and written, parameters written.
    work["compulsory_bytes"] = 3 * 2 * 4 * n_weights + 7 * param_bytes
    work["weight_path_numbers"] = n_weights
    work["parameters_bytes"] = param_bytes
    compiled = jax.jit(b["svi"].update).lower(state, batch).compile()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    work["xla_cost_analysis_loop_bodies_once"] = {k: float(v) for k, v in ca.items()
                                                 if k in ("flops", "bytes accessed", "transcendentals")}
    print(json.dumps(work, indent=1), flush=True)

    # ---- time the step and its parts, interleaved
    upd = b["upd"]
    st = {"s": state}

    def step():
        st["s"], loss = upd(st["s"], batch)
        return loss

    st2 = {"s": state}

    def step_2x32():
        st2["s"], loss = b["upd_2x32"](st2["s"], batch)
        return loss

    progs = {
        "svi_step": step,
        "svi_step_if_threefry2x32": step_2x32,
        "weights_fwd_bwd": lambda: b["weights_grad"](params),
        "weights_normals_only": lambda: b["normals"](b["k_w"]),
        "normals_if_threefry2x32": lambda: b["normals_2x32"](b["k_w"]),
        "likelihood_fwd_bwd": lambda: b["lik_grad"](params, b["rows"]),
        "encoder_fwd_bwd": lambda: b["enc_grad"](params, b["rows"][0]),
    }
    t = interleaved(progs, args.rounds)
    med = {k: v["median_s"] for k, v in t.items()}
    med["decoder_head_loglik_fwd_bwd"] = med["likelihood_fwd_bwd"] - med["encoder_fwd_bwd"]
    med["weights_sde_without_normals"] = med["weights_fwd_bwd"] - med["weights_normals_only"]
    med["rest_adam_glue"] = med["svi_step"] - med["weights_fwd_bwd"] - med["likelihood_fwd_bwd"]
    ratios = [a / b_ for a, b_ in zip(t["svi_step_if_threefry2x32"]["all_s"], t["svi_step"]["all_s"])]
    med["threefry4x32_speedup_paired_median"] = statistics.median(ratios)
    med["threefry4x32_faster_in_rounds"] = f"{sum(r > 1 for r in ratios)}/{len(ratios)}"
    print(json.dumps(med, indent=1), flush=True)

    rates = machine_rates(max(3, args.rounds // 3))
    print(json.dumps(rates, indent=1), flush=True)
    t_mm = work["matmul_flops"] / (rates["dense_matmul_gflops"] * 1e9)
    t_mm_shape = work["matmul_flops"] / (rates["step_shape_matmul_gflops"] * 1e9)
    t_el = work["elementwise_ops"] / (rates["elementwise_gops"] * 1e9)
    t_mem = work["compulsory_bytes"] / (rates["bandwidth_gbs"] * 1e9)
    t_mem_unfused = work["unfused_bytes"] / (rates["bandwidth_gbs"] * 1e9)
    best = max(t_mm + t_el, t_mem)
    # The floor of this model's step on this machine: its matmuls at the rate this machine
    # reaches on the step's own shapes, its element-wise work, and the weight paths' normals
    # at the measured rate of the model's generator (the model needs every one of them),
    # counted as if nothing else ran beside them.
    floor = t_mm_shape + t_el + med["weights_normals_only"]
    step_s = med["svi_step"]
    roofline = {
        "matmul_s_at_dense_peak": t_mm,
        "matmul_s_at_step_shapes": t_mm_shape,
        "matmul_s_at_nominal_peak": (work["matmul_flops"] / (rates["nominal_peak_gflops"] * 1e9)
                                     if rates["nominal_peak_gflops"] else None),
        "elementwise_s": t_el,
        "compulsory_memory_s": t_mem,
        "unfused_memory_s_upper_bound": t_mem_unfused,
        "best_possible_step_s": best,
        "best_possible_step_s_at_step_shapes": max(t_mm_shape + t_el, t_mem),
        "floor_step_s_at_step_shapes_with_normals": floor,
        "floor_speedup_vs_paper": PAPER_TRAIN_S_PER_EPOCH_PER_1000 / (floor * 1000.0 / args.batch_size),
        "measured_step_s": step_s,
        "measured_over_best": step_s / best,
        "measured_train_s_per_epoch_per_1000": step_s * 1000.0 / args.batch_size,
        "speedup_vs_paper": PAPER_TRAIN_S_PER_EPOCH_PER_1000 / (step_s * 1000.0 / args.batch_size),
        "best_possible_speedup_vs_paper": PAPER_TRAIN_S_PER_EPOCH_PER_1000 / (best * 1000.0 / args.batch_size),
    }
    print(json.dumps(roofline, indent=1), flush=True)
    out = {
        "benchmark": "BNCDE training step: cost breakdown and roofline",
        "command": "python benchmarks/bncde_profile.py " + " ".join(
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("out", "quick", "note")),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "avx512": avx512(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "load_average_at_end": os.getloadavg(), "note": args.note},
        "work_per_step": work,
        "seconds_median": med,
        "seconds_all_rounds": {k: v["all_s"] for k, v in t.items()},
        "machine_rates": rates,
        "roofline": roofline,
        "total_wall_s": time.perf_counter() - t0,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=float)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
