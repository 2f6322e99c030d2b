"""Faults are values, and problems are said out loud.

- An ODE whose solution blows up for part of the prior: a failed solve inside the
  likelihood is a rejected proposal (log density -inf), never a crash.
- A NUTS run that keeps hitting the tree-depth limit warns with the fix.
- An SVI run whose loss turns NaN stops, keeps the last finite parameters and warns.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesde as bd


def riccati_field(t, y, params):
    """`dy/dt = r y²`: the solution `y0 / (1 - r y0 t)` blows up at `t = 1 / (r y0)`."""
    return params["r"] * y**2


def decay_program(batch, query=None):
    k = numpyro.sample("k", dist.LogNormal(0.0, 0.5))
    f = jnp.exp(-k * (batch.ts - batch.ts[:, :1]))[..., None]
    numpyro.sample("y", dist.Normal(f, 0.1).mask(batch.mask), obs=batch.ys)
    if query is not None:
        numpyro.sample("y_out", dist.Normal(jnp.exp(-k * (query.ts - batch.ts[:, :1]))[..., None], 0.1))


@pytest.fixture(scope="module")
def decay_data():
    rng = np.random.default_rng(0)
    ts = np.linspace(0.0, 2.0, 8)
    return bd.TimeSeries(ts, np.exp(-0.8 * ts)[None, :, None] + 0.1 * rng.standard_normal((2, 8, 1)))


@pytest.mark.slow
def test_solver_blow_up_is_a_rejected_proposal_not_a_crash():
    # Truth r = 0.2, y0 = 1: blows up at t = 5, after the data (t <= 2). The prior puts
    # r above 0.5 (blow-up inside the window) with probability ~0.2, so warmup and
    # initialisation meet failing solves.
    ts = np.linspace(0.0, 2.0, 6)
    truth = 1.0 / (1.0 - 0.2 * ts)
    rng = np.random.default_rng(1)
    ys = (truth * np.exp(0.05 * rng.standard_normal(ts.shape)))[None, :, None]
    data = bd.TimeSeries(ts, ys)
    model = bd.models.ODE(
        riccati_field, priors={"r": dist.LogNormal(np.log(0.2), 1.2)}, max_steps=64,
        noise_scale=0.1, init_scale=0.05,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergences are expected here
        post = bd.fit(
            model, data, method="nuts", key=jax.random.key(0), num_warmup=30, num_samples=30,
            progress_bar=False,
        )
    r = np.asarray(post.samples["r"])
    assert r.shape == (1, 30)
    assert np.all(np.isfinite(r))
    # Every kept draw is a parameter whose solve succeeds over the data window.
    y0 = np.asarray(post.samples["y0"])[..., 0, 0]
    assert np.all(r * y0 * 2.0 < 1.0)


@pytest.mark.filterwarnings("ignore:.*effective sample size")
def test_tree_depth_hits_warn_with_the_fix(decay_data):
    with pytest.warns(RuntimeWarning, match="maximum tree depth.*raise max_tree_depth"):
        post = bd.fit(
            decay_program, decay_data, method="nuts", key=jax.random.key(0), num_warmup=20,
            num_samples=20, max_tree_depth=1, progress_bar=False,
        )
    assert post.diagnostics()["max_tree_depth_hits"] > 0


def test_nan_loss_stops_keeping_finite_parameters(decay_data):
    with pytest.warns(RuntimeWarning, match="NaN/inf at step"):
        post = bd.fit(
            decay_program, decay_data, method="svi", learning_rate=1e3, num_steps=50,
            key=jax.random.key(0), progress_bar=False, num_samples=5,
        )
    assert post.info.stopped_at is not None and post.info.stopped_at < 50
    assert len(post.loss) == post.info.stopped_at
    assert np.all(np.isfinite(post.loss))
    for v in post.params.values():
        assert np.all(np.isfinite(np.asarray(v)))
