"""LatentSDE: the path-space KL, fitting, forecasting irregular series, and the data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesde as bd
from bayesde.datasets._sde_sims import gbm_moments
from bayesde.models._latent_sde import posterior_sde_with_kl


@pytest.fixture
def getkey():
    keys = iter(jax.random.split(jax.random.key(7), 64))
    return lambda: next(keys)


# ------------------------------------------------------------------- path-space KL
def test_kl_estimator_matches_the_closed_form_between_two_ou_processes(getkey):
    """Posterior dz = −a z dt + σ dW, prior dz = −b z dt + σ dW, z(0) = x0:
    KL = ½ (b − a)²/σ² ∫₀ᵀ E z² dt with E z² = x0² e^{−2at} + σ²(1 − e^{−2at})/(2a)."""
    a, b, sigma, x0, T = 1.0, 2.5, 0.5, 1.0, 1.0
    n_steps, n_paths = 400, 20000
    ts = jnp.linspace(0.0, T, n_steps + 1)
    noise = jax.random.normal(getkey(), (n_steps, n_paths, 1))
    zs, kl = posterior_sde_with_kl(
        lambda t, z, _: -b * z,
        lambda t, z, _: (b - a) * z / sigma,
        lambda t, z, _: jnp.full_like(z, sigma),
        jnp.full((n_paths, 1), x0),
        ts,
        noise,
    )
    e = np.exp(-2 * a * T)
    integral = x0**2 * (1 - e) / (2 * a) + sigma**2 / (2 * a) * (T - (1 - e) / (2 * a))
    closed = 0.5 * (b - a) ** 2 / sigma**2 * integral
    assert zs.shape == (n_steps + 1, n_paths, 1)
    np.testing.assert_allclose(float(jnp.mean(kl)), closed, rtol=0.03)
    # The posterior path itself is the OU process with rate a.
    np.testing.assert_allclose(float(jnp.mean(zs[-1])), x0 * np.exp(-a * T), atol=0.01)


# ----------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"family": "brownian"}, "family"),
        ({"encoder": "lstm"}, "encoder"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"likelihood": "cauchy"}, "likelihood"),
        ({"noise": -1.0}, "noise"),
        ({"substeps": 0}, "substeps"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        bd.models.LatentSDE(**kwargs)


def test_a_never_observed_column_is_refused():
    ys = np.random.default_rng(0).normal(size=(2, 5, 2))
    ys[:, :, 1] = np.nan
    data = bd.TimeSeries(np.linspace(0, 1, 5), ys)
    with pytest.raises(ValueError, match="column 1"):
        bd.models.LatentSDE().adapt(data)


# ----------------------------------------------------- small fit, irregular + missing
@pytest.fixture(scope="module")
def irregular_fit():
    data = bd.datasets.stochastic_lorenz(
        n_series=24, n_times=30, irregular=True, missing=0.2, key=jax.random.key(0), dt=1e-2
    )
    hist, fut = data.split(at=1.5)
    model = bd.models.LatentSDE(latent_dim=3, context_dim=8, hidden=16, substeps=1)
    post = bd.fit(model, hist, method="svi", num_steps=150, learning_rate=1e-2,
                  key=jax.random.key(1), progress_bar=False, warn=False)
    return data, hist, fut, post


def test_elbo_improves_on_irregular_partly_missing_lorenz(irregular_fit):
    _, hist, _, post = irregular_fit
    assert hist.ts.shape[0] == 24 and not np.allclose(hist.ts[0], hist.ts[1])
    assert not hist.mask.all()
    loss = np.asarray(post.loss)
    assert np.all(np.isfinite(loss))
    assert loss[-20:].mean() < 0.5 * loss[:20].mean()


def test_forecast_at_irregular_per_series_times_including_the_history(irregular_fit):
    _, hist, fut, post = irregular_fit
    # Per-series query: two times inside each series' history, then its own future times.
    q = np.concatenate([hist.ts[:, :2], fut.ts[:, :5]], axis=1)
    pred = post.predict(q, key=jax.random.key(2), num_samples=16)
    assert pred.samples.shape == (16, 24, 7, 3)
    assert np.all(np.isfinite(np.asarray(pred.samples)))
    # Inside the history the posterior follows the data closely; far ahead the prior spreads.
    spread = np.asarray(pred.samples).std(axis=0).mean(axis=(0, 2))
    assert spread[-1] > spread[0]


def test_predict_reads_another_history_because_the_model_is_amortised(irregular_fit):
    data, _, _, post = irregular_fit
    other = bd.datasets.stochastic_lorenz(
        n_series=3, n_times=30, irregular=True, key=jax.random.key(5), dt=1e-2
    ).split(at=1.5)[0]
    pred = post.predict(np.linspace(1.6, 2.0, 4), key=jax.random.key(3), num_samples=8, data=other)
    assert pred.samples.shape == (8, 3, 4, 3)


# ------------------------------------------------------------------------ the data
def test_stochastic_lorenz_is_normalised_with_small_noise():
    data = bd.datasets.stochastic_lorenz(n_series=64, n_times=50, key=jax.random.key(0))
    assert data.shape == (64, 50, 3)
    np.testing.assert_allclose(np.nanmean(data.ys, axis=(0, 1)), 0.0, atol=0.01)
    np.testing.assert_allclose(np.nanstd(data.ys, axis=(0, 1)), 1.0, atol=0.01)
    resid = data.ys - data.truth["clean"]
    assert 0.008 < resid.std() < 0.012


def test_gbm_simulator_has_the_known_moments():
    data = bd.datasets.geometric_brownian_motion(n_series=4000, n_times=11, key=jax.random.key(0))
    m, v = gbm_moments(1.0, 1.0, 0.0, 0.5, 0.3)
    x = data.ys[:, -1, 0]
    assert abs(x.mean() / m - 1) < 0.02
    assert abs(x.var() / v - 1) < 0.1


def test_named_data_sets_and_the_co2_card():
    names = bd.datasets.names()
    for name in ("stochastic_lorenz", "geometric_brownian_motion", "double_well", "co2"):
        assert name in names
    co2 = bd.datasets.load("co2")
    assert co2.shape == (1, 2225, 1)
    gaps = np.diff(co2.ts[0]) * 365.25 / 7
    assert gaps.max() > 2.0  # missing weeks make the times irregular
    assert "Mauna Loa" in bd.datasets.card("co2")
    full = bd.datasets.load("co2", drop_missing=False, start=1964.0, end=1965.0)
    assert not full.mask.all()
    dw = bd.datasets.double_well(n_series=8, n_times=20, key=jax.random.key(0))
    assert dw.shape == (8, 20, 1)


# ---------------------------------------------------------------- slow: calibration
@pytest.mark.slow
def test_lorenz_contract_forecast_is_calibrated():
    data = bd.datasets.stochastic_lorenz(n_series=64, n_times=100, key=jax.random.key(0))
    hist, fut = data.split(at=1.5)
    model = bd.models.LatentSDE(latent_dim=4, context_dim=16, hidden=32, encoder="gru", family="neural")
    post = bd.fit(model, hist, method="svi", num_steps=200, key=jax.random.key(1), progress_bar=False, warn=False)
    loss = np.asarray(post.loss)
    assert loss[-20:].mean() < loss[:20].mean()
    pred = post.predict(fut.ts, key=jax.random.key(2), num_samples=64)
    cov = bd.metrics.coverage(pred, fut, level=0.9)
    assert 0.8 <= cov <= 0.97


@pytest.mark.slow
def test_gbm_predictive_mean_and_variance_match_the_truth():
    mu, sigma = 0.5, 0.3
    data = bd.datasets.geometric_brownian_motion(
        n_series=64, n_times=41, key=jax.random.key(0), mu=mu, sigma=sigma, noise_std=0.01
    )
    hist, _ = data.split(at=0.7)
    j = int(np.sum(data.ts[0] <= 0.7)) - 1
    model = bd.models.LatentSDE(latent_dim=2, context_dim=8, hidden=32, family="geometric", substeps=1)
    post = bd.fit(model, hist, method="svi", num_steps=800, key=jax.random.key(1), progress_bar=False, warn=False)
    pred = post.predict(np.array([1.0]), key=jax.random.key(2), num_samples=400)
    x = np.asarray(pred.samples[:, :, 0, 0])
    m, v = gbm_moments(1.0, data.truth["clean"][:, j, 0], data.ts[:, j], mu, sigma)
    assert abs(x.mean(0).mean() / m.mean() - 1) < 0.1
    assert np.corrcoef(x.mean(0), m)[0, 1] > 0.95
    assert 0.25 < x.var(0).mean() / v.mean() < 4.0


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["gru", "ncde"])
@pytest.mark.parametrize("family", ["neural", "langevin", "linear-noise", "geometric"])
def test_every_family_and_encoder_fits_and_forecasts(family, encoder):
    data = bd.datasets.stochastic_lorenz(n_series=16, n_times=20, irregular=True, missing=0.1,
                                         key=jax.random.key(0), dt=1e-2)
    hist, fut = data.split(at=1.5)
    model = bd.models.LatentSDE(latent_dim=3, context_dim=8, hidden=16, family=family, encoder=encoder,
                                num_paths=2, likelihood="laplace", kl_anneal_steps=30)
    post = bd.fit(model, hist, method="svi", num_steps=60, key=jax.random.key(1), progress_bar=False, warn=False)
    assert np.all(np.isfinite(post.loss))
    assert post.loss[-10:].mean() < post.loss[:10].mean()
    pred = post.predict(fut.ts, key=jax.random.key(2), num_samples=8)
    assert np.all(np.isfinite(np.asarray(pred.samples)))
