"""Many-chain HMC: BlackJAX's ChEES adaptation, then jittered (dynamic) HMC, all chains
in one vectorised program laid out over the devices along a chain axis.

The engine registers itself in the one table of engines (`_registry.ENGINES`), so that
the imports run one way: `_chees` -> `_registry`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._checks import check_int, check_real
from ._registry import (AbstractEngine, EngineInfo, EngineResult, _bind,
                        _check_sampler, _progress, register_engine)

__all__ = ["Chees", "CheesInfo", "run_chees"]


@dataclasses.dataclass(frozen=True)
class CheesInfo(EngineInfo):
    """What a ChEES run reports: `seconds` in all, `warmup_seconds` of the adaptation,
    the adapted `step_size`, the `mean_leapfrog_steps` per transition and the
    `num_devices` the chains were laid out over."""

    warmup_seconds: Optional[float] = None
    step_size: Optional[float] = None
    mean_leapfrog_steps: Optional[float] = None
    num_devices: int = 1


@dataclasses.dataclass(frozen=True)
class Chees(AbstractEngine):
    """Many-chain adaptive HMC: BlackJAX's ChEES adaptation (Hoffman, Radul & Sountsov
    2021, "An adaptive MCMC scheme for setting trajectory lengths in Hamiltonian Monte
    Carlo") followed by jittered HMC (`blackjax.dynamic_hmc`), on the log density NumPyro
    derives from the model.

    Every chain takes the same number of leapfrog steps at each iteration (the jittered
    trajectory length is shared), so the chains run in lockstep as one vectorised
    program with no per-chain control flow. The step size is tuned by dual averaging on
    the harmonic mean of the chains' acceptance probabilities, the trajectory length by
    following the gradient of the ChEES criterion
    $\\tfrac14\\,\\mathbb{E}\\big[(\\lVert\\theta' - \\mathbb{E}\\theta\\rVert^2 -
    \\lVert\\theta - \\mathbb{E}\\theta\\rVert^2)^2\\big]$ estimated across the chains,
    and a diagonal mass matrix is estimated from the pooled chains in the second half
    of warmup. The chains are laid out over the local devices along a `"chain"` mesh
    axis (`jax.sharding.NamedSharding`); with one device that is the plain case.

    **When to pick it:** many chains on an accelerator (GPU/TPU), for small and medium
    models whose log density vectorises well: 64 chains cost about as much wall time as
    one there, and many short chains give a large effective sample size quickly. On a
    CPU the cost grows with the number of chains; use `"nuts"` (NumPyro NUTS) there.

    **Arguments:**

    - `num_warmup`: adaptation steps (all chains together).
    - `num_samples`: draws kept per chain after warmup.
    - `num_chains`: chains. Default 64: the adaptation estimates its step-size and
      trajectory-length signals by averaging over the chains, which is noisy with a
      handful (the paper uses tens to hundreds), and on an accelerator 64 chains of a
      small model fill the device for about the cost of one.
    - `target_accept_prob`: target of the harmonic-mean acceptance probability; default
      0.651, the optimal rate for HMC (Beskos et al. 2013). Raise it (e.g. 0.8) when
      there are divergences.
    - `learning_rate`: Adam learning rate of the trajectory-length adaptation.
    - `initial_step_size`: leapfrog step size at the start of warmup.
    - `max_leapfrog_steps`: cap on the leapfrog steps of one transition.
    - `chunk_size`: draws compiled into one `lax.scan` between progress-bar updates.

    The `Posterior` holds draws shaped `(chain, draw, ...)`, and `sample_stats` holds
    `diverging`, `acceptance_rate`, `lp` (log density), `n_steps` (leapfrog steps) and
    `step_size` per draw, with ArviZ's names as for NUTS.
    """

    num_warmup: int = 500
    num_samples: int = 200
    num_chains: int = 64
    target_accept_prob: float = 0.651
    learning_rate: float = 0.025
    initial_step_size: float = 0.1
    max_leapfrog_steps: int = 1000
    chunk_size: int = 50

    name = "chees"
    info_type = CheesInfo

    def __post_init__(self):
        _check_sampler("Chees", self, min_warmup=1)
        if self.num_chains < 2:
            raise ValueError(
                f"Chees.num_chains: expected at least 2 chains, got {self.num_chains}; the adaptation "
                "averages over the chains (use 32 or more), or use method='nuts' for one chain."
            )
        check_real("Chees.learning_rate", self.learning_rate, 0.0, open_low=True)
        check_real("Chees.initial_step_size", self.initial_step_size, 0.0, open_low=True)
        check_int("Chees.max_leapfrog_steps", self.max_leapfrog_steps, 1)
        check_int("Chees.chunk_size", self.chunk_size, 1)

    def run(self, model, batch, *, key, progress_bar: bool) -> EngineResult:
        """Run this sampler; see `AbstractEngine.run` and `run_chees`."""
        return run_chees(model, batch, self, key=key, progress_bar=progress_bar)


def _chain_sharding(num_chains: int) -> NamedSharding:
    """Chains split evenly over as many local devices as divide `num_chains`."""
    devices = jax.local_devices()
    n = math.gcd(num_chains, len(devices))
    return NamedSharding(Mesh(np.asarray(devices[:n]), ("chain",)), PartitionSpec("chain"))


def _start(model, batch, n: int, key, sharding):
    """`(positions, logdensity, unravel, postprocess_fn, sites)`: the initial points of
    the `n` chains as one flat `(chain, dim)` array laid out by `sharding` (one leaf to
    lay out over the chain axis, and the shape BlackJAX's cross-chain statistics are
    written for), the log density of a flat point and the maps back."""
    from numpyro.infer.util import initialize_model

    program = _bind(model, None, batch)
    init = initialize_model(
        jax.random.split(key, n), program, model_args=(batch,), init_strategy=model.init_strategy()
    )
    potential_fn = init.potential_fn
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], init.param_info.z))
    positions = jax.device_put(jax.vmap(lambda z: ravel_pytree(z)[0])(init.param_info.z), sharding)

    def logdensity(x):
        return -potential_fn(unravel(x))

    return positions, logdensity, unravel, init.postprocess_fn, set(init.param_info.z)


def run_chees(model, batch, method: Chees, *, key, progress_bar: bool) -> EngineResult:
    """Run `method` on `model`'s program for `batch`.

    **Arguments:**

    - `model`, `batch`: the adapted model and the data it is fitted to.
    - `method`: a `Chees` configuration.
    - `key`: split into the initial points, the warmup and the draws; the key of draw
      `i` is `fold_in(draw_key, i)`, so `chunk_size` changes no number.
    - `progress_bar`: a tqdm bar (warmup in one step, then per chunk of draws).

    **Returns:** an `EngineResult` with draws `(chain, draw, ...)` in the constrained
    space and the per-draw statistics.
    """
    import blackjax

    n = method.num_chains
    k_init, k_warm, k_sample = jax.random.split(key, 3)
    sharding = _chain_sharding(n)
    positions, logdensity, unravel, postprocess_fn, sites = _start(model, batch, n, k_init, sharding)
    t0 = time.perf_counter()
    bar = _progress(progress_bar, method.num_warmup + method.num_samples, "chees")
    warmup = blackjax.chees_adaptation(
        logdensity,
        n,
        target_acceptance_rate=method.target_accept_prob,
        max_leapfrog_steps=method.max_leapfrog_steps,
        mass_matrix_estimation="diagonal",
    )
    chunk = int(min(method.chunk_size, method.num_samples))
    n_chunks = -(-method.num_samples // chunk)

    # Not under one `jit`: `run` returns the jittered step-count function with the tuned
    # numbers; its warmup loop is one `lax.scan`, compiled as a whole all the same.
    (states, params), _ = warmup.run(
        k_warm, positions, method.initial_step_size, optax.adam(method.learning_rate),
        method.num_warmup, max_sampling_steps=n_chunks * chunk,
    )
    jax.block_until_ready(states)
    t_warm = time.perf_counter() - t0
    if bar is not None:
        bar.update(method.num_warmup)
    kernel = blackjax.dynamic_hmc(logdensity, **params)

    @jax.jit
    def run_chunk(states, start):
        def step(st, i):
            keys = jax.random.split(jax.random.fold_in(k_sample, i), n)
            st, inf = jax.vmap(kernel.step)(keys, st)
            st = jax.lax.with_sharding_constraint(st, sharding)
            return st, (st.position, inf.is_divergent, inf.num_integration_steps, inf.acceptance_rate, st.logdensity)

        return jax.lax.scan(step, states, start + jnp.arange(chunk))

    outs = []
    for c in range(n_chunks):
        states, out = run_chunk(states, c * chunk)
        outs.append(jax.tree_util.tree_map(np.asarray, out))
        if bar is not None:
            bar.update(min(chunk, method.num_samples - c * chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    # (draw, chain, ...) -> (chain, draw, ...)
    pos, div, nsteps, acc, lp = (np.swapaxes(np.concatenate(x, axis=0)[: method.num_samples], 0, 1) for x in zip(*outs))
    constrained = jax.jit(jax.vmap(jax.vmap(lambda x: postprocess_fn(unravel(x)))))(pos)
    samples = {k: np.asarray(v) for k, v in constrained.items() if k in sites}
    step_size = float(params["step_size"])
    stats = {"diverging": div, "n_steps": nsteps, "acceptance_rate": acc, "lp": lp,
             "step_size": np.full(div.shape, step_size, dtype=np.float32)}
    return EngineResult(
        samples=samples,
        params={},
        sample_stats=stats,
        loss=None,
        info=CheesInfo(
            seconds=seconds,
            warmup_seconds=t_warm,
            step_size=step_size,
            mean_leapfrog_steps=float(np.mean(nsteps)),
            num_devices=int(sharding.mesh.size),
        ),
    )


register_engine(Chees)
