"""Tiny plain NumPyro programs that follow bayesde's site contract (observe `"y"`,
predict `"y_out"` with its mean `"f_out"`), shared by tests. Importable, so that a run
fitted on one can be saved and loaded."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def normal_mean(batch, query=None):
    """Every value ~ Normal(mu[d], sigma): a constant mean per value column."""
    n, _, d = batch.ys.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([d]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(mu, sigma).mask(batch.mask), obs=batch.ys)
    if query is not None:
        f = numpyro.deterministic("f_out", jnp.broadcast_to(mu, query.ts.shape + (d,)))
        numpyro.sample("y_out", dist.Normal(f, sigma))
