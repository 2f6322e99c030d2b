"""Inference engines: configuration objects and the functions that run them.

An engine sees a NumPyro program and a `Batch`; it never names a model.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import MCMC, Predictive, Trace_ELBO
from numpyro.infer import NUTS as _NumPyroNUTS
from numpyro.infer import SVI as _NumPyroSVI
from numpyro.infer import autoguide

__all__ = ["SVI", "NUTS", "BlackJAXNUTS", "ENGINES", "register_engine", "resolve_method", "EngineResult", "default_optimizer"]


def _fast() -> bool:
    return os.environ.get("BAYESDE_FAST", "") not in ("", "0")


def _check_int(owner: str, name: str, value, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum >= 1 else "a non-negative integer"
        raise ValueError(
            f"{owner}.{name}: expected {what}{' or None' if optional else ''}, got {value!r}."
        )


def _check_real(owner: str, name: str, value, low: float, high: float, *, open_low=True, open_high=True) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = np.isfinite(v) and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not ok:
        lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
        raise ValueError(f"{owner}.{name}: expected a number in {lo}{low}, {high}{hi}, got {value!r}.")


def _check_sampler(owner: str, m, *, min_warmup: int = 0) -> None:
    """The options every MCMC engine shares (and `max_tree_depth` where it has one)."""
    _check_int(owner, "num_warmup", m.num_warmup, min_warmup)
    _check_int(owner, "num_samples", m.num_samples, 1)
    _check_int(owner, "num_chains", m.num_chains, 1)
    _check_real(owner, "target_accept_prob", m.target_accept_prob, 0.0, 1.0)
    if hasattr(m, "max_tree_depth"):
        _check_int(owner, "max_tree_depth", m.max_tree_depth, 1)


@dataclasses.dataclass(frozen=True)
class SVI:
    """Stochastic variational inference (NumPyro SVI with an optax optimiser).

    **Arguments:**

    - `optimizer`: an optax `GradientTransformation`; default Adam at `learning_rate`
      with gradient clipping at norm 10.
    - `num_steps`: optimisation steps.
    - `guide`: `"normal"` (AutoNormal, default), `"mvn"` (AutoMultivariateNormal),
      `"delta"` (MAP), a NumPyro guide callable, or `None` for the model's own guide.
    - `num_particles`: ELBO Monte Carlo particles per step.
    - `batch_size`: series per step (minibatch SVI; models rescale the likelihood).
    - `num_samples`: posterior draws taken from the fitted guide.
    - `learning_rate`: used when `optimizer` is None.
    - `chunk_size`: steps compiled into one `lax.scan` between progress-bar updates.
    - `checkpoint_every`: save the optimiser state every this many steps into
      `checkpoint_dir`, so that an interrupted run can continue.
    - `checkpoint_dir`: folder for checkpoints (required with `checkpoint_every`).
    - `resume`: a checkpoint folder to continue from; the result equals the
      uninterrupted run with the same key.
    - `devices`: `None` (one device), or a list of JAX devices or a mesh from
      `bd.distributed.mesh(...)` for data parallelism: each step's minibatch (the whole
      batch when `batch_size` is None) is split over the devices along the series axis,
      parameters and optimiser state are replicated, and XLA sums the ELBO and its
      gradients across devices. The minibatch is drawn as on one device, so the same key
      gives the same loss trajectory up to the order of floating-point sums. The
      batch must divide evenly over the devices. Across hosts call
      `bd.distributed.initialize()` first and pass `jax.devices()`.
    - `process_local`: with `devices` in a multi-process job, `data` holds only this
      process's series (the same count on every process; the global data set is the
      concatenation in process order; the guide's set-up gathers it once on every host,
      the steps read only the devices' shards). Default `False`: every process passes
      the same, whole data set.
    """

    optimizer: Any = None
    num_steps: int = 2000
    guide: Any = None
    num_particles: int = 1
    batch_size: Optional[int] = None
    num_samples: int = 500
    learning_rate: float = 1e-2
    chunk_size: int = 100
    checkpoint_every: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    resume: Optional[str] = None
    devices: Any = None
    process_local: bool = False

    name = "svi"

    def __post_init__(self):
        _check_int("SVI", "num_steps", self.num_steps, 1)
        _check_int("SVI", "num_particles", self.num_particles, 1)
        _check_int("SVI", "num_samples", self.num_samples, 1)
        _check_int("SVI", "chunk_size", self.chunk_size, 1)
        _check_int("SVI", "batch_size", self.batch_size, 1, optional=True)
        _check_int("SVI", "checkpoint_every", self.checkpoint_every, 1, optional=True)
        _check_real("SVI", "learning_rate", self.learning_rate, 0.0, np.inf)
        if self.optimizer is not None and not (
            hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")
        ):
            raise ValueError(
                f"SVI.optimizer: expected an optax GradientTransformation such as "
                f"optax.adam(1e-2), got {self.optimizer!r}."
            )
        if isinstance(self.guide, str) and self.guide not in ("normal", "mvn", "delta"):
            raise ValueError(
                f"SVI.guide: unknown guide {self.guide!r}; choose 'normal', 'mvn', 'delta', a "
                "NumPyro guide callable, or None."
            )
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("SVI.checkpoint_dir: checkpoint_every needs a folder; pass checkpoint_dir=...")
        if self.devices is not None:
            from jax.sharding import Mesh

            if isinstance(self.devices, jax.Device):
                object.__setattr__(self, "devices", (self.devices,))
            elif not isinstance(self.devices, Mesh):
                if isinstance(self.devices, str):
                    raise ValueError(
                        f"SVI.devices: expected a list of JAX devices or a Mesh, got the text "
                        f"{self.devices!r}; pass jax.devices()."
                    )
                try:
                    devs = tuple(self.devices)
                except TypeError:
                    raise ValueError(
                        f"SVI.devices: expected a list of JAX devices or a Mesh, got "
                        f"{type(self.devices).__name__}; pass jax.devices()."
                    ) from None
                if not devs:
                    raise ValueError("SVI.devices: the list is empty; pass jax.devices() or None.")
                for i, d in enumerate(devs):
                    # Text entries are the record a saved run keeps (see `_io._method_config`).
                    if not isinstance(d, (jax.Device, str)):
                        raise ValueError(
                            f"SVI.devices[{i}]: {d!r} is not a JAX device; pass jax.devices()."
                        )
                object.__setattr__(self, "devices", devs)
        if not isinstance(self.process_local, bool):
            raise ValueError(f"SVI.process_local: expected True or False, got {self.process_local!r}.")
        if self.process_local and self.devices is None:
            raise ValueError("SVI.process_local: only means something with devices=...; pass devices=jax.devices().")


@dataclasses.dataclass(frozen=True)
class NUTS:
    """NumPyro's No-U-Turn sampler.

    `chain_method`: `"parallel"` (one chain per device), `"vectorized"` or
    `"sequential"`; default `"parallel"` when there are enough devices, else
    `"vectorized"`.
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 1
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    chain_method: Optional[str] = None
    dense_mass: bool = False

    name = "nuts"

    def __post_init__(self):
        _check_sampler("NUTS", self)
        if self.chain_method not in (None, "parallel", "vectorized", "sequential"):
            raise ValueError(
                f"NUTS.chain_method: {self.chain_method!r} is not one of 'parallel', "
                "'vectorized', 'sequential' (or None to choose from the devices)."
            )


@dataclasses.dataclass(frozen=True)
class BlackJAXNUTS:
    """BlackJAX NUTS after BlackJAX's window adaptation, chains vmapped, on the log
    density NumPyro derives from the model."""

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    chunk_size: int = 50

    name = "blackjax-nuts"

    def __post_init__(self):
        _check_sampler("BlackJAXNUTS", self)
        _check_int("BlackJAXNUTS", "chunk_size", self.chunk_size, 1)


Method = Union[SVI, NUTS, BlackJAXNUTS]
#: Every engine by name: `fit`, the save format and the command line read this one table.
#: An engine is a frozen dataclass of options with a `name`, registered with its runner
#: by `register_engine` (see `_chees.py` for one that lives in its own file).
ENGINES: dict[str, type] = {}


def resolve_method(method, overrides: dict) -> Method:
    """A method object from a string or object plus keyword overrides."""
    if isinstance(method, str):
        if method not in ENGINES:
            raise ValueError(
                f"fit: unknown method {method!r}; choose one of {sorted(ENGINES)} or pass "
                "bd.SVI(...), bd.NUTS(...), bd.BlackJAXNUTS(...)."
            )
        cls = ENGINES[method]
        base = cls()
    elif isinstance(method, tuple(ENGINES.values())):
        cls, base = type(method), method
    else:
        raise TypeError(
            f"fit: method must be a name or a method object, got {type(method).__name__}."
        )
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"fit: {unknown[0]!r} is not an option of method {cls.name!r}; its options are "
            f"{sorted(fields)}."
        )
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass
class EngineResult:
    samples: dict  # (chain, draw, ...)
    params: dict
    sample_stats: dict  # (chain, draw) arrays
    loss: Optional[np.ndarray]
    info: dict


# ----------------------------------------------------------------------------- SVI
def _latent_sites(program, batch, key) -> list[str]:
    with numpyro.handlers.block(), numpyro.handlers.seed(rng_seed=key):
        tr = numpyro.handlers.trace(program).get_trace(batch)
    return [
        name
        for name, site in tr.items()
        if site["type"] == "sample" and not site["is_observed"]
        and not isinstance(site["fn"], numpyro.distributions.Delta)
    ]


def _empty_guide(*args, **kwargs):
    return None


def _make_guide(spec, program, latent: list[str], init_strategy):
    if callable(spec) and not isinstance(spec, str):
        return spec
    if not latent:
        return _empty_guide
    spec = spec or "normal"
    if spec == "normal":
        return autoguide.AutoNormal(program, init_loc_fn=init_strategy, init_scale=0.05)
    if spec == "mvn":
        return autoguide.AutoMultivariateNormal(program, init_loc_fn=init_strategy, init_scale=0.05)
    if spec == "delta":
        return autoguide.AutoDelta(program, init_loc_fn=init_strategy)
    raise ValueError(f"fit: unknown guide {spec!r}; use 'normal', 'mvn', 'delta' or a callable.")


def default_optimizer(learning_rate):
    """The optimiser `SVI` uses when none is given: Adam at `learning_rate` (a number or an
    optax schedule) after clipping the global gradient norm to 10."""
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(learning_rate))


class _ShardSeriesPlate(numpyro.primitives.Messenger):
    """Lays the indices of the `"series"` plate (the minibatch a model gathers, or
    `arange(N)` for the whole batch) out over the devices, so that everything the model
    computes per series is split the same way. Only inside a trace: the eager first
    trace that initialises the guide runs on one device as without `devices`."""

    def __init__(self, fn, sharding):
        self.sharding = sharding
        super().__init__(fn)

    def postprocess_message(self, msg):
        if (
            msg["type"] == "plate"
            and msg["name"] == "series"
            and isinstance(msg["value"], jax.core.Tracer)
        ):
            msg["value"] = jax.lax.with_sharding_constraint(msg["value"], self.sharding)


class _DataParallel:
    """Where the pieces of a data-parallel SVI run live: series split over the mesh,
    everything else replicated."""

    def __init__(self, method: SVI, batch, model):
        from .. import distributed

        self.sharding = distributed.series_sharding(method.devices)
        self.mesh = self.sharding.mesh
        self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self.n_devices = int(self.mesh.size)
        local = int(batch.ts.shape[0])
        if method.process_local:
            distributed._check_same_on_every_process(
                "fit: the number of local series (process_local=True)", str(local).encode(),
                "give every process the same number of series.",
            )
            distributed._check_same_on_every_process(
                f"fit: the adapted {type(model).__name__} (process_local=True)", _fingerprint(model),
                "its data-derived constants come from each process's own series; pass the whole "
                "data set on every process (process_local=False) or data whose local statistics agree.",
            )
        n = local * (jax.process_count() if method.process_local else 1)
        per_step = n if method.batch_size is None else method.batch_size
        if per_step % self.n_devices:
            lower = per_step // self.n_devices * self.n_devices
            hint = f"e.g. batch_size={lower}" if lower else f"at least {self.n_devices}"
            if method.batch_size is None:
                fix = (
                    f"pass a batch_size that is a multiple of {self.n_devices} ({hint}) or use"
                    if getattr(model, "minibatch", True) else "use"
                )
                raise ValueError(
                    f"fit: batch_size=None puts all {n} series in every step, which do not divide "
                    f"evenly over {self.n_devices} devices; {fix} a device count that divides {n}."
                )
            raise ValueError(
                f"fit: batch_size={method.batch_size} does not divide evenly over "
                f"{self.n_devices} devices; use a multiple of {self.n_devices} ({hint})."
            )
        # What the eager set-up (site discovery, guide initialisation) sees: the whole
        # data, so that it equals the single-process run.
        self.host_batch = distributed._gather_series(batch) if method.process_local else batch
        if method.process_local:
            self.batch = distributed._place_series(batch, self.sharding, process_local=True)
        elif method.batch_size is None:
            self.batch = distributed._place_series(batch, self.sharding)
        else:
            # Replicated, so that gathering a random minibatch needs no communication;
            # the gathered rows are then split by `_ShardSeriesPlate`.
            self.batch = distributed._replicated(batch, self.mesh)

    def wrap(self, fn):
        if fn is None:
            return None
        return _ShardSeriesPlate(fn, self.sharding)

    def replicate(self, tree):
        from .. import distributed

        return distributed._replicated(tree, self.mesh)


def _fingerprint(model) -> bytes:
    import json

    try:
        return json.dumps(model.config(), sort_keys=True, default=str).encode()
    except (ValueError, TypeError):
        return repr(model).encode()


def run_svi(model, batch, method: SVI, *, key, progress_bar: bool) -> EngineResult:
    program = _bind(model, method.batch_size, batch)
    dp = _DataParallel(method, batch, model) if method.devices is not None else None
    if dp is not None:
        batch = dp.host_batch
    k_init, k_latent, k_post = jax.random.split(key, 3)
    latent = _latent_sites(program, batch, k_latent)
    guide = _make_guide(method.guide if method.guide is not None else model.guide(), program, latent, model.init_strategy())
    tx = method.optimizer
    if tx is None:
        tx = default_optimizer(method.learning_rate)
    svi = _NumPyroSVI(
        program if dp is None else dp.wrap(program),
        guide if dp is None else dp.wrap(guide),
        numpyro.optim.optax_to_numpyro(tx),
        loss=Trace_ELBO(num_particles=method.num_particles),
    )
    t_start = time.perf_counter()
    state = svi.init(k_init, batch)
    chunk = int(min(method.chunk_size, method.num_steps))
    if method.checkpoint_every is not None:
        if method.checkpoint_dir is None:
            raise ValueError("fit: checkpoint_every needs checkpoint_dir=... (a folder to write to).")
        chunk = int(np.gcd(chunk, method.checkpoint_every))
    n_chunks = -(-method.num_steps // chunk)
    first_chunk, losses = 0, []
    if method.resume is not None:
        from ._checkpoint import load_checkpoint

        state, done, old_losses = load_checkpoint(method.resume, state, method.num_steps)
        if done % chunk:
            raise ValueError(
                f"fit: the checkpoint in {method.resume!r} is at step {done}, which is not a "
                f"multiple of the chunk size {chunk}; resume with the same chunk_size and "
                "checkpoint_every as the interrupted run."
            )
        first_chunk, losses = done // chunk, [old_losses]
    if dp is not None:
        state = dp.replicate(state)
        batch_in = dp.batch
        jit = lambda f: jax.jit(f, out_shardings=dp.replicated)  # noqa: E731
    else:
        batch_in = batch
        jit = jax.jit

    @jit
    def run_chunk(state, verified, start, batch):
        # `verified` is the last state whose loss was computed and finite. A step's loss
        # is that of the parameters going in, so when it is non-finite the run stops and
        # returns `verified`, never parameters that were not checked.
        def body(carry, i):
            st, ver, bad = carry
            new, loss = svi.update(st, batch)
            active = (start + i < method.num_steps) & ~bad
            take = active & jnp.isfinite(loss)
            ver = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), st, ver)
            st = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new, st)
            bad = bad | (active & ~jnp.isfinite(loss))
            return (st, ver, bad), jnp.where(active, loss, jnp.nan)

        (state, verified, bad), losses = jax.lax.scan(
            body, (state, verified, jnp.asarray(False)), jnp.arange(chunk)
        )
        return state, verified, bad, losses

    stopped = None
    bar = _progress(progress_bar, method.num_steps, "svi")
    verified = state
    if bar is not None and first_chunk:
        bar.update(first_chunk * chunk)
    chunk_seconds = []
    for c in range(first_chunk, n_chunks):
        t_chunk = time.perf_counter()
        state, verified, bad, ls = run_chunk(state, verified, c * chunk, batch_in)
        ls = np.asarray(ls)
        chunk_seconds.append(time.perf_counter() - t_chunk)
        losses.append(ls)
        if bar is not None:
            bar.update(int(np.sum(~np.isnan(ls))) if not bool(bad) else chunk)
            finite = ls[np.isfinite(ls)]
            if finite.size:
                bar.set_postfix(loss=f"{finite[-1]:.4g}")
        if bool(bad):
            stopped = c * chunk + int(np.argmax(~np.isfinite(ls)))
            state = verified
            break
        done = min((c + 1) * chunk, method.num_steps)
        if (
            method.checkpoint_every is not None
            and (done % method.checkpoint_every == 0 or done == method.num_steps)
            and jax.process_index() == 0
        ):
            from ._checkpoint import save_checkpoint

            save_checkpoint(method.checkpoint_dir, state, done, np.concatenate(losses)[:done])
    if bar is not None:
        bar.close()
    loss = np.concatenate(losses)[: method.num_steps]
    if stopped is not None:
        loss = loss[:stopped]
        warnings.warn(
            f"fit: the SVI loss became NaN/inf at step {stopped}; stopped and kept the "
            "parameters of the last finite step. Fixes: a smaller learning rate, "
            "gradient clipping, tighter priors or a rescaled data set.",
            RuntimeWarning,
            stacklevel=3,
        )
    params = svi.get_params(state)
    if dp is not None:
        # Host copies: drawing from the guide below runs on one device, as without `devices`.
        params = {k: np.asarray(v) for k, v in params.items()}
    seconds = time.perf_counter() - t_start
    if latent:
        if isinstance(guide, autoguide.AutoGuide):
            flat = guide.sample_posterior(k_post, params, sample_shape=(method.num_samples,))
        else:
            flat = Predictive(guide, params=params, num_samples=method.num_samples)(k_post, batch)
        samples = {k: np.asarray(v)[None] for k, v in flat.items() if k in latent}
    else:
        samples = {}
    guide_params = {k: np.asarray(v) for k, v in params.items()}
    return EngineResult(
        samples=samples,
        params=guide_params,
        sample_stats={},
        loss=loss,
        info={
            "seconds": seconds,
            # Steady seconds per step: full chunks after the first (which compiles).
            "seconds_per_step": (
                float(np.median(chunk_seconds[1:]) / chunk) if len(chunk_seconds) > 2 else None
            ),
            "first_chunk_seconds": float(chunk_seconds[0]) if chunk_seconds else None,
            "num_steps_run": int(len(loss)),
            "stopped_at": stopped,
            "guide": type(guide).__name__ if not isinstance(guide, type(_empty_guide)) else "none",
            "num_devices": 1 if dp is None else dp.n_devices,
        },
    )


# ---------------------------------------------------------------------------- NUTS
def _bind(model, subsample_size, batch):
    def program(batch, query=None):
        return model.program(batch, query, subsample_size=subsample_size)

    return program


def run_nuts(model, batch, method: NUTS, *, key, progress_bar: bool) -> EngineResult:
    program = _bind(model, None, batch)
    kernel = _NumPyroNUTS(
        program,
        init_strategy=model.init_strategy(),
        target_accept_prob=method.target_accept_prob,
        max_tree_depth=method.max_tree_depth,
        dense_mass=method.dense_mass,
    )
    chain_method = method.chain_method
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= method.num_chains else "vectorized"
    mcmc = MCMC(
        kernel,
        num_warmup=method.num_warmup,
        num_samples=method.num_samples,
        num_chains=method.num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*There are not enough devices.*")
        mcmc.run(key, batch, extra_fields=("diverging", "num_steps", "accept_prob", "potential_energy"))
    seconds = time.perf_counter() - t0
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {
        "diverging": np.asarray(extra["diverging"]),
        "n_steps": np.asarray(extra["num_steps"]),
        "acceptance_rate": np.asarray(extra["accept_prob"]),
        "lp": -np.asarray(extra["potential_energy"]),
        "tree_depth": np.floor(np.log2(np.asarray(extra["num_steps"]) + 1)).astype(int),
    }
    return EngineResult(
        samples=samples,
        params={},
        sample_stats=stats,
        loss=None,
        info={"seconds": seconds, "chain_method": chain_method, "max_tree_depth": method.max_tree_depth},
    )


def run_blackjax_nuts(model, batch, method: BlackJAXNUTS, *, key, progress_bar: bool) -> EngineResult:
    import blackjax
    from numpyro.infer.util import initialize_model

    program = _bind(model, None, batch)
    k_init, k_warm, k_sample = jax.random.split(key, 3)
    init_keys = jax.random.split(k_init, method.num_chains)
    positions = []
    for i in range(method.num_chains):
        info = initialize_model(
            init_keys[i], program, model_args=(batch,), init_strategy=model.init_strategy()
        )
        positions.append(info.param_info.z)
    potential_fn, postprocess_fn = info.potential_fn, info.postprocess_fn
    position = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *positions)

    def logdensity(z):
        return -potential_fn(z)

    t0 = time.perf_counter()
    warmup = blackjax.window_adaptation(
        blackjax.nuts,
        logdensity,
        target_acceptance_rate=method.target_accept_prob,
        max_num_doublings=method.max_tree_depth,
    )
    warm_keys = jax.random.split(k_warm, method.num_chains)
    bar = _progress(progress_bar, method.num_warmup + method.num_samples, "blackjax-nuts")

    @jax.jit
    def run_warmup(keys, pos):
        return jax.vmap(lambda k, p: warmup.run(k, p, num_steps=method.num_warmup))(keys, pos)

    (states, params), _ = run_warmup(warm_keys, position)
    if bar is not None:
        bar.update(method.num_warmup)

    chunk = int(min(method.chunk_size, method.num_samples))
    n_chunks = -(-method.num_samples // chunk)

    @jax.jit
    def run_chunk(states, params, key):
        def one_chain(state, p, k):
            kernel = blackjax.nuts(
                logdensity,
                step_size=p["step_size"],
                inverse_mass_matrix=p["inverse_mass_matrix"],
                max_num_doublings=method.max_tree_depth,
            )

            def step(st, kk):
                st, inf = kernel.step(kk, st)
                return st, (st.position, inf.is_divergent, inf.num_integration_steps, inf.acceptance_rate, st.logdensity)

            return jax.lax.scan(step, state, jax.random.split(k, chunk))

        keys = jax.random.split(key, method.num_chains)
        return jax.vmap(one_chain)(states, params, keys)

    draws, div, nsteps, acc, lp = [], [], [], [], []
    for c in range(n_chunks):
        states, (pos, d, ns, a, l) = run_chunk(states, params, jax.random.fold_in(k_sample, c))
        draws.append(pos)
        div.append(np.asarray(d))
        nsteps.append(np.asarray(ns))
        acc.append(np.asarray(a))
        lp.append(np.asarray(l))
        if bar is not None:
            bar.update(min(chunk, method.num_samples - c * chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    cat = lambda xs: np.concatenate(xs, axis=1)[:, : method.num_samples]  # noqa: E731
    z = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=1)[:, : method.num_samples], *draws)
    constrained = jax.vmap(jax.vmap(postprocess_fn))(z)
    samples = {k: np.asarray(v) for k, v in constrained.items() if k in positions[0]}
    ns = cat(nsteps)
    stats = {
        "diverging": cat(div),
        "n_steps": ns,
        "acceptance_rate": cat(acc),
        "lp": cat(lp),
        "tree_depth": np.floor(np.log2(ns + 1)).astype(int),
    }
    return EngineResult(
        samples=samples,
        params={},
        sample_stats=stats,
        loss=None,
        info={
            "seconds": seconds,
            "step_size": np.asarray(params["step_size"]).tolist(),
            "max_tree_depth": method.max_tree_depth,
        },
    )


RUNNERS: dict[type, Callable] = {}


def register_engine(cls: type, runner: Callable) -> type:
    """Record an engine: `cls` is its options dataclass (with a class attribute `name`,
    the string `fit(method=...)` accepts), `runner(model, batch, options, *, key,
    progress_bar) -> EngineResult` runs it. Adding an engine is one file that calls this."""
    if not dataclasses.is_dataclass(cls) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"register_engine: {cls!r} must be a dataclass with a string `name`.")
    ENGINES[cls.name] = cls
    RUNNERS[cls] = runner
    return cls


register_engine(SVI, run_svi)
register_engine(NUTS, run_nuts)
register_engine(BlackJAXNUTS, run_blackjax_nuts)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled or _fast():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True)
