"""What a program's sites are, found once by an abstract trace."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro


def site_kinds(program, batch, key) -> dict[str, str]:
    """The program's sites in the order it makes them, each with its kind: `"param"`
    (`numpyro.param`), `"latent"` (an unobserved sample site that is not a `Delta`),
    `"observed"`, or `"other"` (factors, deterministic sites, `Delta` samples).

    The trace is abstract (`jax.eval_shape`): nothing is compiled or computed, so an
    engine can ask before it builds anything.

    **Arguments:**

    - `program`: `fn(batch)`, a NumPyro program bound to its training options.
    - `batch`: its data; `key`: a PRNG key for its `numpyro.prng_key()` calls.
    """
    kinds: dict[str, str] = {}

    def run(k):
        with numpyro.handlers.block(), numpyro.handlers.seed(rng_seed=k):
            tr = numpyro.handlers.trace(program).get_trace(batch)
        for name, site in tr.items():
            if site["type"] == "param":
                kinds[name] = "param"
            elif site["type"] != "sample" or isinstance(site["fn"], numpyro.distributions.Delta):
                kinds[name] = "other"
            else:
                kinds[name] = "observed" if site["is_observed"] else "latent"
        return jnp.zeros(())

    jax.eval_shape(run, key)
    return kinds
