"""`BayesianNeuralODE`'s forecast walk: `ρ` is fitted only by forecasts of held-back
tails the likelihood does not see, the walk widens forecasts past the last observation
and leaves the history alone, and engines that only sample fit the model without it."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import bayesde as bd

from bayesde.models._ode import WALK_PARAM


@pytest.fixture(scope="module")
def ou():
    return bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=12, key=jax.random.key(0))


@pytest.fixture(scope="module")
def walk_fit(ou):
    model = bd.models.BayesianNeuralODE(state_dim=1, width=4, depth=1)
    return bd.fit(model, ou, num_steps=150, key=jax.random.key(1), progress_bar=False, warn=False)


def _trace(model, batch, params=None):
    program = model.program if params is None else numpyro.handlers.substitute(model.program, data=params)
    return numpyro.handlers.trace(numpyro.handlers.seed(program, 0)).get_trace(batch)


def test_the_walk_is_fitted_by_the_held_back_score_and_moves_nothing_else(ou, walk_fit):
    post = walk_fit
    assert abs(float(post.params[WALK_PARAM][0]) - np.log(0.3)) > 1e-3  # fitted, not left at its start
    latent = {k: jnp.asarray(np.asarray(v)[0, 0]) for k, v in post.samples.items()}

    def score(values):
        return -_trace(post.model, ou.batch(), values)["forecast_score"]["fn"].log_factor

    grads = jax.grad(score)({**post.params, **latent})
    moved = sorted(k for k, g in grads.items() if float(jnp.max(jnp.abs(g))) > 0)
    assert moved == [WALK_PARAM]


def test_the_held_back_tails_reach_the_score_and_not_the_likelihood(ou):
    def scores(every, series):
        model = bd.models.BayesianNeuralODE(state_dim=1, width=4, depth=1, forecast_series_every=every).adapt(ou)
        out = []
        for bump in (0.0, 5.0):
            batch = ou.batch()
            tr = _trace(model, batch._replace(ys=batch.ys.at[series, -1].add(bump)))
            out.append((float(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum()),
                        float(tr["forecast_score"]["fn"].log_factor)))
        return out

    (y0, s0), (y1, s1) = scores(4, 3)  # series 3 is held back: its tail reaches only the score
    assert y1 == y0 and s1 != s0
    (y0, s0), (y1, s1) = scores(4, 2)  # series 2 is fitted on its whole span and not scored
    assert y1 != y0 and s1 == s0
    (y0, s0), (y1, s1) = scores(16, 2)  # fewer series than 16: every series' tail is held back
    assert y1 == y0 and s1 != s0


def _with_walk(post, log_rho):
    other = copy.copy(post)
    other.params = {**post.params, WALK_PARAM: jnp.full((1,), log_rho)}
    return other


def test_the_walk_widens_the_forecast_with_the_horizon_and_leaves_the_history(ou, walk_fit):
    q = np.concatenate([ou.ts[:, :3], ou.ts[:, -1:] + np.array([0.5, 2.0, 8.0])], axis=1)
    narrow = np.asarray(_with_walk(walk_fit, -20.0).predict(q, key=jax.random.key(4), num_samples=64).f_samples)
    wide = np.asarray(_with_walk(walk_fit, 0.0).predict(q, key=jax.random.key(4), num_samples=64).f_samples)
    np.testing.assert_allclose(wide[:, :, :3], narrow[:, :, :3], rtol=1e-5, atol=1e-6)
    extra = wide[:, :, 3:].std(axis=0).mean(axis=(0, 2)) - narrow[:, :, 3:].std(axis=0).mean(axis=(0, 2))
    assert 0 < extra[0] < extra[1] < extra[2]  # the walk's spread grows with the horizon


def test_engines_that_only_sample_fit_the_model_without_the_walk(ou):
    model = bd.models.BayesianNeuralODE(state_dim=1, width=2, depth=1)
    assert model.for_engine(bd.SVI()) is model
    off = model.for_engine(bd.NUTS())
    assert off.forecast_holdout == 0.0 and model.forecast_holdout == 0.25
    sites = _trace(off.adapt(ou), ou.batch())
    assert WALK_PARAM not in sites and "forecast_score" not in sites
    post = bd.fit(model, ou, "nuts", num_warmup=10, num_samples=10, num_chains=1, key=jax.random.key(0),
                  progress_bar=False, warn=False)
    assert post.model.forecast_holdout == 0.0 and post.params == {}


def test_walk_settings_are_checked_and_old_runs_load_without_it(walk_fit):
    with pytest.raises(ValueError, match=r"BayesianNeuralODE\.forecast_holdout: expected a fraction in \[0, 1\)"):
        bd.models.BayesianNeuralODE(state_dim=1, forecast_holdout=1.0)
    with pytest.raises(ValueError, match=r"BayesianNeuralODE\.forecast_series_every: expected an integer >= 1"):
        bd.models.BayesianNeuralODE(state_dim=1, forecast_series_every=0)
    config = {k: v for k, v in walk_fit.model.config().items() if k != "forecast_holdout"}
    assert type(walk_fit.model).from_config(config).forecast_holdout == 0.0
    with_ou = bd.models.BayesianNeuralODE(state_dim=1, discrepancy="ou")
    assert with_ou._walk_split() == (0.0, 1)  # the OU discrepancy continues the residuals instead
