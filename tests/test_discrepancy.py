"""The Ornstein–Uhlenbeck discrepancy of `BayesianNeuralODE`: its Kalman filter is the
Gaussian process it stands for, its draws are that process's conditionals, and the model
uses it to widen forecasts over the horizon."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro.handlers import seed, substitute, trace
from scipy.stats import multivariate_normal

import bayesde as bd

from bayesde.models._discrepancy import OUDiscrepancy, ou_draw, ou_filter


def _problem(seed_=0, n=2, t=7, d=2):
    rng = np.random.default_rng(seed_)
    ts = np.sort(rng.uniform(0.0, 3.0, (n, t)), axis=1)
    mask = rng.uniform(size=(n, t, d)) > 0.3
    r = rng.normal(size=(n, t, d))
    return ts, mask, r, np.array([0.3, 0.5]), np.array([1.2, 0.7]), 0.8


def _kernel(x, y, rho, ell):
    return rho**2 * np.exp(-np.abs(x[:, None] - y[None]) / ell)


def test_the_filter_gives_the_gaussian_process_likelihood():
    ts, mask, r, noise, rho, ell = _problem()
    lp, *_ = ou_filter(jnp.asarray(r), jnp.asarray(ts), jnp.asarray(mask), noise, rho, ell)
    dense = 0.0
    for i in range(r.shape[0]):
        for d in range(r.shape[2]):
            idx = np.flatnonzero(mask[i, :, d])
            cov = _kernel(ts[i, idx], ts[i, idx], rho[d], ell) + noise[d] ** 2 * np.eye(len(idx))
            dense += multivariate_normal(np.zeros(len(idx)), cov).logpdf(r[i, idx, d])
    assert float(lp.sum()) == pytest.approx(dense, rel=1e-4)
    assert np.all(np.asarray(lp)[~mask] == 0.0)


def test_draws_are_the_process_conditionals_inside_and_after_the_history():
    ts, mask, r, noise, rho, ell = _problem()
    tq = np.stack([np.linspace(-0.5, 4.5, 6)] * ts.shape[0])  # before, inside and after the history
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = np.asarray(jax.vmap(lambda k: ou_draw(k, jnp.asarray(r), jnp.asarray(ts), jnp.asarray(mask),
                                                   jnp.asarray(tq), noise, rho, ell))(keys))
    for i, d in ((0, 0), (1, 1)):
        idx = np.flatnonzero(mask[i, :, d])
        t = ts[i, idx]
        k = _kernel(t, t, rho[d], ell) + noise[d] ** 2 * np.eye(len(idx))
        ks = _kernel(tq[i], t, rho[d], ell)
        mean = ks @ np.linalg.solve(k, r[i, idx, d])
        cov = _kernel(tq[i], tq[i], rho[d], ell) - ks @ np.linalg.solve(k, ks.T)
        got = draws[:, i, :, d]
        assert np.abs(got.mean(0) - mean).max() < 0.06, (got.mean(0), mean)
        assert np.abs(np.cov(got.T) - cov).max() < 0.08, (np.cov(got.T), cov)
    # after the history the spread grows with the horizon, towards rho
    sd = draws[:, 0, 3:, 0].std(0)
    assert np.all(np.diff(sd) > 0) and sd[-1] < rho[0] * 1.05


def test_sampled_observations_have_the_process_covariance():
    ts, _, _, noise, rho, ell = _problem()
    obs = OUDiscrepancy(jnp.zeros((2, 7, 2)), jnp.asarray(ts), noise, rho, ell, jnp.ones((2, 7, 2), bool))
    y = np.asarray(obs.sample(jax.random.key(1), (4000,)))
    want = _kernel(ts[0], ts[0], rho[0], ell) + noise[0] ** 2 * np.eye(7)
    assert np.abs(np.cov(y[:, 0, :, 0].T) - want).max() < 0.12


def _series(key):
    """A random walk observed with noise: 8 series, 30 times each."""
    k1, k2 = jax.random.split(key)
    steps = 0.3 * jax.random.normal(k1, (8, 30, 1))
    ys = np.asarray(jnp.cumsum(steps, axis=1) + 0.05 * jax.random.normal(k2, (8, 30, 1)))
    return bd.TimeSeries(ts=np.tile(np.arange(30.0), (8, 1)), ys=ys)


def test_a_neural_ode_forecast_widens_over_the_horizon_with_its_discrepancy_and_not_without():
    data = _series(jax.random.key(0))
    batch = data.batch()
    query = bd.models.Query(ts=jnp.tile(jnp.arange(30.0, 60.0), (8, 1)))
    width = {}
    for disc in ("ou", None):  # None: no discrepancy and no forecast walk either
        model = bd.models.BayesianNeuralODE(state_dim=1, width=4, depth=1, discrepancy=disc,
                                            forecast_holdout=0.0).adapt(data)
        # one draw of every parameter, held fixed: only the discrepancy varies between forecasts
        fixed = {k: v["value"] for k, v in trace(seed(model.program, 0)).get_trace(batch).items()
                 if v["type"] == "sample" and not v["is_observed"]}
        fixed.update(sigma=0.1, discrepancy_sd=jnp.array([1.0]), discrepancy_time=0.5)
        forecast = substitute(model.program, data=fixed)
        draws = jax.vmap(lambda k: trace(seed(forecast, k)).get_trace(batch, query)["f_out"]["value"])(
            jax.random.split(jax.random.key(1), 200))
        width[disc] = np.asarray(draws).std(0).mean(0)[:, 0]  # by horizon
    assert width["ou"][-1] > 2.0 * width["ou"][0] > 0.0, width["ou"]
    assert np.all(width[None] < 1e-4), width[None]  # solver round-off only


@pytest.mark.parametrize("owner", ["BayesianNeuralODE", "ODE"])
def test_the_discrepancy_is_checked_and_off_by_default(owner):
    def build(**kw):
        if owner == "ODE":
            return bd.models.ODE(bd.models.lotka_volterra_field, bd.models.lotka_volterra_priors(), **kw)
        return bd.models.BayesianNeuralODE(state_dim=2, **kw)

    with pytest.raises(ValueError, match=rf"{owner}.discrepancy: expected 'ou' \(an Ornstein–Uhlenbeck "
                                         r"discrepancy\) or None \(none\), got 'gp'."):
        build(discrepancy="gp")
    with pytest.raises(ValueError, match=rf"{owner}.discrepancy_scale: expected a number > 0, got 0"):
        build(discrepancy_scale=0)
    assert build().discrepancy is None
    model = build(discrepancy="ou")
    assert type(model).from_config(model.config()).discrepancy == "ou"


@pytest.mark.parametrize("engine", ["svi", pytest.param("nuts", marks=pytest.mark.slow)])
def test_a_fit_with_the_discrepancy_predicts_converts_and_reloads(tmp_path, engine):
    """Fit → ArviZ (the pointwise log-likelihood is the filter's one-step terms) → save/load:
    a neural ODE by SVI, the mechanistic Lotka–Volterra ODE by NUTS (slow)."""
    hist, fut = bd.datasets.load("hare_lynx").split(15.5)
    if engine == "svi":
        model = bd.models.BayesianNeuralODE(state_dim=2, width=4, depth=1, observation="lognormal", discrepancy="ou")
        options = dict(num_steps=30, num_samples=20)
    else:
        model = bd.models.ODE(bd.models.lotka_volterra_field,
                              bd.models.lotka_volterra_priors(beta=0.025, delta=0.025), discrepancy="ou")
        options = dict(num_warmup=20, num_samples=20, num_chains=1)
    post = bd.fit(model, hist, method=engine, key=jax.random.key(0), progress_bar=False, warn=False, **options)
    assert post.samples["discrepancy_sd"].shape == (1, 20, 2) and post.samples["discrepancy_time"].shape == (1, 20)
    ll = post.to_arviz().log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "series", "time", "variable")
    assert np.all(np.isfinite(ll.values))
    a = post.predict(fut.ts, key=jax.random.key(1), num_samples=20)
    assert np.all(np.asarray(a.samples) > 0)
    post.save(tmp_path / "run")
    again = bd.load(tmp_path / "run")
    assert again.model.discrepancy == "ou"
    b = again.predict(fut.ts, key=jax.random.key(1), num_samples=20)
    assert np.array_equal(a.samples, b.samples)
