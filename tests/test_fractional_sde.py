"""FractionalSDE (Daems et al. ICLR 2024) and its data sets: specifications.

The default suite runs one small shared fit (smoke test of the contract); the
H-recovery runs on 32 × 200 fOU paths are marked slow.

Measured with the earlier plain-Euler OU stepping (2 shared CPU cores, heavily loaded;
300 SVI steps, K = 5, γ_max = 20, contract configuration; not yet re-measured with the
current exponential-midpoint stepping): true H 0.3 → 0.295 [0.286, 0.304]; 0.5 → 0.440
[0.431, 0.450]; 0.7 → 0.603 [0.596, 0.610]. The K = 5 approximation itself has a
pseudo-true H of about 0.63 for true H = 0.7 on this grid (exact Gaussian KL between
the fBM and MA-fBM covariances), so part of the bias at large H is the approximation,
part the variational family: H = 0.5 and 0.7 miss the ±0.05 target (marked xfail).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import bayesde as bd


@pytest.fixture(scope="module")
def small():
    return bd.datasets.fractional_ou(hurst=0.3, n_series=6, n_times=30, key=jax.random.key(0))


@pytest.fixture(scope="module")
def post(small):
    model = bd.models.FractionalSDE(latent_dim=1, num_ou=5, learn_hurst=True, width=8, control_width=8, steps_per_obs=2)
    return bd.fit(model, small, method="svi", num_steps=40, num_samples=50, key=jax.random.key(1), progress_bar=False, warn=False)


def _trace(model, data, query=None):
    model = model.adapt(data)
    batch = data.batch()
    with numpyro.handlers.seed(rng_seed=0):
        return numpyro.handlers.trace(model.program).get_trace(batch, query)


# ------------------------------------------------------------------- data sets
def test_fractional_ou_is_a_timeseries_with_truth():
    paths = bd.datasets.fractional_ou(hurst=0.7, n_series=3, n_times=20, key=jax.random.key(0), theta=2.0)
    assert isinstance(paths, bd.TimeSeries)
    assert paths.ys.shape == (3, 20, 1) and paths.ts.shape == (3, 20)
    assert paths.truth["hurst"] == 0.7 and paths.truth["theta"] == 2.0
    assert paths.truth["x"].shape == (3, 20)
    np.testing.assert_allclose(paths.ys[..., 0], paths.truth["x"], atol=1e-6)  # no noise by default
    with pytest.raises(ValueError, match="hurst"):
        bd.datasets.fractional_ou(hurst=1.0, key=jax.random.key(0))
    assert "fractional_ou" in bd.datasets.names()


def test_nile_is_shipped_with_a_card():
    nile = bd.datasets.load("nile")
    assert nile.ys.shape == (1, 100, 1) and nile.ts[0, 0] == 0 and nile.ts[0, -1] == 99
    assert nile.names == ["volume"]
    assert "Hurst" in bd.datasets.card("nile")


# ----------------------------------------------------------------------- model
def test_program_sites_and_shapes(small):
    q = bd.models.Query(ts=jnp.asarray(np.broadcast_to(np.linspace(0, 12, 7), (6, 7)), jnp.float32))
    tr = _trace(bd.models.FractionalSDE(width=4, control_width=4, steps_per_obs=1), small, q)
    assert tr["hurst"]["value"].shape == ()
    assert tr["diffusion"]["value"].shape == (1,)
    assert tr["y_out"]["value"].shape == (6, 7, 1)
    assert np.all(np.isfinite(tr["f_out"]["value"]))
    assert np.all(np.isfinite(tr["kl_path"]["fn"].log_factor))


def test_brownian_variant_and_general_latent(small):
    tr = _trace(bd.models.FractionalSDE(learn_hurst=False, hurst=0.5, width=4, control_width=4, steps_per_obs=1), small)
    assert "hurst" not in tr
    tr = _trace(
        bd.models.FractionalSDE(latent_dim=2, fbm_type="II", neural_diffusion=True, width=4, control_width=4, steps_per_obs=1),
        small,
    )
    assert np.isfinite(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum())


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="fbm_type"):
        bd.models.FractionalSDE(fbm_type="III")
    with pytest.raises(ValueError, match="hurst"):
        bd.models.FractionalSDE(learn_hurst=False, hurst=1.5)
    with pytest.raises(ValueError, match="latent_dim"):
        bd.models.FractionalSDE(latent_dim=0)


def test_contract_smoke(post, small):
    h = np.asarray(post.samples["hurst"])
    assert h.ndim == 2 and h.shape[0] == 1
    assert np.all((h > 0) & (h < 1))
    assert np.isfinite(post.loss if hasattr(post, "loss") else 0.0).all()
    pred = post.predict(small.ts, key=jax.random.key(2), num_samples=20)
    assert pred.samples.shape == (20, 6, 30, 1)
    assert np.all(np.isfinite(pred.samples))
    # Forecast past the window: the prior continues the paths.
    fut = post.predict(np.linspace(0.0, 13.0, 40), key=jax.random.key(3), num_samples=20)
    assert fut.samples.shape == (20, 6, 40, 1) and np.all(np.isfinite(fut.samples))


# ----------------------------------------------------------------- recovery
@pytest.mark.slow
@pytest.mark.parametrize(
    "hurst",
    [
        0.3,
        pytest.param(0.5, marks=pytest.mark.xfail(reason="measured 0.44 (VI bias), see module docstring", strict=False)),
        pytest.param(0.7, marks=pytest.mark.xfail(reason="measured 0.60 (K=5 approximation + VI bias)", strict=False)),
    ],
)
def test_recovers_hurst_on_fou(hurst):
    paths = bd.datasets.fractional_ou(hurst=hurst, n_series=32, n_times=200, key=jax.random.key(0))
    model = bd.models.FractionalSDE(latent_dim=1, num_ou=5, learn_hurst=True)
    post = bd.fit(model, paths, method="svi", num_steps=300, key=jax.random.key(1), progress_bar=False, warn=False)
    h = np.asarray(post.samples["hurst"])
    assert abs(h.mean() - hurst) < 0.05, h.mean()
