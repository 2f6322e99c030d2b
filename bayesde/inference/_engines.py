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

__all__ = ["SVI", "NUTS", "BlackJAXNUTS", "resolve_method", "EngineResult", "default_optimizer"]


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


def _check_sampler(owner: str, m) -> None:
    _check_int(owner, "num_warmup", m.num_warmup, 0)
    _check_int(owner, "num_samples", m.num_samples, 1)
    _check_int(owner, "num_chains", m.num_chains, 1)
    _check_real(owner, "target_accept_prob", m.target_accept_prob, 0.0, 1.0)
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
_BY_NAME = {"svi": SVI, "nuts": NUTS, "blackjax-nuts": BlackJAXNUTS}


def resolve_method(method, overrides: dict) -> Method:
    """A method object from a string or object plus keyword overrides."""
    if isinstance(method, str):
        if method not in _BY_NAME:
            raise ValueError(
                f"fit: unknown method {method!r}; choose one of {sorted(_BY_NAME)} or pass "
                "bd.SVI(...), bd.NUTS(...), bd.BlackJAXNUTS(...)."
            )
        cls = _BY_NAME[method]
        base = cls()
    elif isinstance(method, tuple(_BY_NAME.values())):
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


def run_svi(model, batch, method: SVI, *, key, progress_bar: bool) -> EngineResult:
    program = _bind(model, method.batch_size, batch)
    k_init, k_latent, k_post = jax.random.split(key, 3)
    latent = _latent_sites(program, batch, k_latent)
    guide = _make_guide(method.guide if method.guide is not None else model.guide(), program, latent, model.init_strategy())
    tx = method.optimizer
    if tx is None:
        tx = default_optimizer(method.learning_rate)
    svi = _NumPyroSVI(
        program, guide, numpyro.optim.optax_to_numpyro(tx), loss=Trace_ELBO(num_particles=method.num_particles)
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

    @jax.jit
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
        state, verified, bad, ls = run_chunk(state, verified, c * chunk, batch)
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
        if method.checkpoint_every is not None and (done % method.checkpoint_every == 0 or done == method.num_steps):
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


RUNNERS: dict[type, Callable] = {SVI: run_svi, NUTS: run_nuts, BlackJAXNUTS: run_blackjax_nuts}


def _progress(enabled: bool, total: int, desc: str):
    if not enabled or _fast():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True)
