"""MCMC engines: NumPyro's NUTS and BlackJAX's NUTS, on the log density NumPyro derives
from the model's program."""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC
from numpyro.infer import NUTS as _NumPyroNUTS

from .._checks import check_int
from ._init import compiled_initialisation
from ._registry import AbstractEngine, EngineInfo, EngineResult, _bind, _check_sampler, _progress, register_engine

__all__ = ["NUTS", "BlackJAXNUTS", "NUTSInfo", "BlackJAXNUTSInfo", "run_nuts", "run_blackjax_nuts"]


@dataclasses.dataclass(frozen=True)
class NUTSInfo(EngineInfo):
    """What a NumPyro NUTS run reports: `seconds`, the `chain_method` it used and the
    `max_tree_depth` it ran with."""

    chain_method: Optional[str] = None
    max_tree_depth: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class BlackJAXNUTSInfo(EngineInfo):
    """What a BlackJAX NUTS run reports: `seconds`, the adapted `step_size` of each chain
    and the `max_tree_depth` it ran with."""

    step_size: Optional[list] = None
    max_tree_depth: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class NUTS(AbstractEngine):
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
    info_type = NUTSInfo

    def __post_init__(self):
        _check_sampler("NUTS", self)
        if self.chain_method not in (None, "parallel", "vectorized", "sequential"):
            raise ValueError(
                f"NUTS.chain_method: {self.chain_method!r} is not one of 'parallel', "
                "'vectorized', 'sequential' (or None to choose from the devices)."
            )

    def run(self, model, batch, *, key, progress_bar: bool) -> EngineResult:
        """Run this sampler; see `AbstractEngine.run`."""
        return run_nuts(model, batch, self, key=key, progress_bar=progress_bar)


@dataclasses.dataclass(frozen=True)
class BlackJAXNUTS(AbstractEngine):
    """BlackJAX NUTS after BlackJAX's window adaptation, chains vmapped, on the log
    density NumPyro derives from the model."""

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    chunk_size: int = 50

    name = "blackjax-nuts"
    info_type = BlackJAXNUTSInfo

    def __post_init__(self):
        _check_sampler("BlackJAXNUTS", self)
        check_int("BlackJAXNUTS.chunk_size", self.chunk_size, 1)

    def run(self, model, batch, *, key, progress_bar: bool) -> EngineResult:
        """Run this sampler; see `AbstractEngine.run`."""
        return run_blackjax_nuts(model, batch, self, key=key, progress_bar=progress_bar)


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
        with compiled_initialisation():
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
        info=NUTSInfo(seconds=seconds, chain_method=chain_method, max_tree_depth=method.max_tree_depth),
    )


def _blackjax_start(model, batch, method: BlackJAXNUTS, key):
    """`(position, logdensity, postprocess_fn, sites)`: one initial point per chain
    (stacked), the log density and the map back to the constrained space."""
    from numpyro.infer.util import initialize_model

    program = _bind(model, None, batch)
    # All chains' starting points in one compiled search (a batch of keys), not one
    # eager search per chain.
    info = initialize_model(jax.random.split(key, method.num_chains), program, model_args=(batch,),
                            init_strategy=model.init_strategy())
    potential_fn = info.potential_fn

    def logdensity(z):
        return -potential_fn(z)

    return info.param_info.z, logdensity, info.postprocess_fn, set(info.param_info.z)


def _blackjax_chunk_fn(logdensity, method: BlackJAXNUTS, chunk: int):
    """`chunk` NUTS transitions of every chain (vmapped), each chain with its adapted
    step size and mass matrix; returns the states and the per-draw records."""
    import blackjax

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

    return run_chunk


def run_blackjax_nuts(model, batch, method: BlackJAXNUTS, *, key, progress_bar: bool) -> EngineResult:
    """BlackJAX's window adaptation, then NUTS in chunks of draws; see `BlackJAXNUTS`."""
    import blackjax

    k_init, k_warm, k_sample = jax.random.split(key, 3)
    position, logdensity, postprocess_fn, sites = _blackjax_start(model, batch, method, k_init)
    t0 = time.perf_counter()
    warmup = blackjax.window_adaptation(
        blackjax.nuts, logdensity, target_acceptance_rate=method.target_accept_prob,
        max_num_doublings=method.max_tree_depth,
    )
    bar = _progress(progress_bar, method.num_warmup + method.num_samples, "blackjax-nuts")
    run_warmup = jax.jit(jax.vmap(lambda k, p: warmup.run(k, p, num_steps=method.num_warmup)))
    (states, params), _ = run_warmup(jax.random.split(k_warm, method.num_chains), position)
    if bar is not None:
        bar.update(method.num_warmup)
    chunk = int(min(method.chunk_size, method.num_samples))
    run_chunk = _blackjax_chunk_fn(logdensity, method, chunk)
    outs = []
    for c in range(-(-method.num_samples // chunk)):
        states, (pos, *per_draw) = run_chunk(states, params, jax.random.fold_in(k_sample, c))
        outs.append((pos, *(np.asarray(x) for x in per_draw)))  # waits for the chunk
        if bar is not None:
            bar.update(min(chunk, method.num_samples - c * chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    draws, div, nsteps, acc, lp = zip(*outs)
    cat = lambda xs: np.concatenate(xs, axis=1)[:, : method.num_samples]  # noqa: E731
    z = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=1)[:, : method.num_samples], *draws)
    constrained = jax.vmap(jax.vmap(postprocess_fn))(z)
    ns = cat(nsteps)
    stats = {"diverging": cat(div), "n_steps": ns, "acceptance_rate": cat(acc), "lp": cat(lp),
             "tree_depth": np.floor(np.log2(ns + 1)).astype(int)}
    info = BlackJAXNUTSInfo(seconds=seconds, step_size=np.asarray(params["step_size"]).tolist(),
                            max_tree_depth=method.max_tree_depth)
    return EngineResult(samples={k: np.asarray(v) for k, v in constrained.items() if k in sites},
                        params={}, sample_stats=stats, loss=None, info=info)


register_engine(NUTS)
register_engine(BlackJAXNUTS)
