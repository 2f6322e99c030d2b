"""FractionalSDE (Daems et al. ICLR 2024) and its data sets: specifications.

The default suite runs one small shared fit (smoke test of the contract) and checks the
guide's backward filter against a brute-force Kalman filter; the H-recovery runs on
32 × 200 fOU paths are marked slow.

Measured (idle 2-core CPU, 300 SVI steps, contract configuration, full data):
true H 0.3 → 0.324 [0.315, 0.334]; 0.5 → 0.520 [0.511, 0.529] (K = 5, γ_max = 20);
0.7 → 0.693 [0.686, 0.700] with K = 10, γ_max = 40 (K = 5 gives 0.635: the K = 5
approximation's pseudo-true H — the H whose MA-fBM covariance is closest, in Gaussian
KL, to that of the fBM on the observation grid — is about 0.65 for a true 0.7, 0.68
with K = 10, γ_max = 40). Before the backward-filter guide (a bridge to the next
observation only): 0.3 → 0.295, 0.5 → 0.43, 0.7 → 0.60."""

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
    model = bd.models.FractionalSDE(latent_dim=1, num_ou=5, learn_hurst=True, width=8, control_width=8, substeps=2)
    return bd.fit(model, small, method="svi", num_steps=40, num_samples=50, key=jax.random.key(1), progress_bar=False, warn=False)


def _trace(model, data, query=None):
    """Each sample site's value and summed log density, from one compiled run of the
    program (tracing it eagerly op by op takes several times longer)."""
    model = model.adapt(data)
    batch = data.batch()

    def run():
        with numpyro.handlers.seed(rng_seed=0):
            tr = numpyro.handlers.trace(model.program).get_trace(batch, query)
        return {name: {"value": site["value"], "log_prob": jnp.sum(site["fn"].log_prob(site["value"]))}
                if site["type"] == "sample" else {"value": site["value"]}
                for name, site in tr.items() if site["type"] in ("sample", "deterministic")}

    return jax.jit(run)()


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
    tr = _trace(bd.models.FractionalSDE(width=4, control_width=4, substeps=1), small, q)
    assert tr["hurst"]["value"].shape == ()
    assert tr["diffusion"]["value"].shape == (1,)
    assert tr["y_out"]["value"].shape == (6, 7, 1)
    assert np.all(np.isfinite(tr["f_out"]["value"]))
    assert np.all(np.isfinite(tr["kl_path"]["log_prob"]))


def test_brownian_variant_and_general_latent(small):
    tr = _trace(bd.models.FractionalSDE(learn_hurst=False, hurst=0.5, width=4, control_width=4, substeps=1), small)
    assert "hurst" not in tr
    tr = _trace(
        bd.models.FractionalSDE(latent_dim=2, fbm_type="II", neural_diffusion=True, width=4, control_width=4, substeps=1),
        small,
    )
    assert np.isfinite(tr["y"]["log_prob"])


def _forward_loglik(z0, grid, obs_val, obs_has, g, w, s, noise, beta):
    """log p(observations at grid indices >= 0 | z(0) = z0) by a float64 Kalman filter on
    the auxiliary linear step (one channel), the brute-force check of the filter."""
    K = len(g)
    m, P, ll = np.asarray(z0, float), np.zeros((K + 1, K + 1)), 0.0
    for j in range(len(grid)):
        if j > 0:
            dt = grid[j] - grid[j - 1]
            decay, half = np.exp(-g * dt), np.exp(-0.5 * g * dt)
            Phi = np.zeros((K + 1, K + 1))
            Phi[0, 0] = 1 + beta[1] * dt
            Phi[0, 1:] = s * w * (decay - 1)
            Phi[1:, 1:] = np.diag(decay)
            c = np.zeros(K + 1)
            c[0] = beta[0] * dt
            v = np.sqrt(dt) * np.concatenate([[s * np.sum(w * half)], half])
            m, P = Phi @ m + c, Phi @ P @ Phi.T + np.outer(v, v)
        if obs_has[j]:
            S = P[0, 0] + noise**2
            r = obs_val[j] - m[0]
            ll += -0.5 * np.log(2 * np.pi * S) - 0.5 * r**2 / S
            gain = P[:, 0] / S
            m, P = m + gain * r, P - np.outer(gain, P[0])
    return ll


def test_backward_filter_is_the_likelihood_of_all_later_observations():
    # h_0(z) = exp(-z'Hz/2 + F'z) must equal p(obs | z(0) = z) up to a constant in z.
    from bayesde.models._fractional import _backward_filter
    from bayesde.solvers import MarkovFBM

    jax.config.update("jax_enable_x64", True)
    try:
        fbm = MarkovFBM(0.7, num_ou=3, gamma_max=10.0, window=2.0, dtype=jnp.float64)
        g, w = np.asarray(fbm.speeds), np.asarray(fbm.weights)
        grid = np.sort(np.concatenate([[0.0], np.random.default_rng(0).uniform(0, 2, 11)]))
        has = np.array([False, True, False, True, True, False, False, True, False, True, False, True])
        val = np.random.default_rng(1).normal(size=12)
        s, noise, beta = 1.3, 0.2, np.array([0.1, -0.5])
        H0, F0, Hs, Fs = _backward_filter(
            jnp.asarray(grid), jnp.asarray(val)[:, None], jnp.asarray(has)[:, None], fbm.speeds,
            fbm.weights, jnp.asarray([s]), jnp.asarray([noise]), jnp.asarray(beta)[:, None],
        )
        assert Hs.shape == (11, 1, 4, 4) and Fs.shape == (11, 1, 4)
        zs = np.random.default_rng(2).normal(size=(4, 4))
        logh = [-0.5 * z @ np.asarray(H0[0]) @ z + np.asarray(F0[0]) @ z for z in zs]
        exact = [_forward_loglik(z, grid, val, has, g, w, s, noise, beta) for z in zs]
        np.testing.assert_allclose(np.diff(logh), np.diff(exact), rtol=1e-8, atol=1e-8)
    finally:
        jax.config.update("jax_enable_x64", False)


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
    "hurst, num_ou, gamma_max",
    [(0.3, 5, 20.0), (0.5, 5, 20.0), (0.7, 10, 40.0)],
)
def test_recovers_hurst_on_fou(hurst, num_ou, gamma_max):
    # At H = 0.7 the paper's K = 5 approximation itself points at H ≈ 0.65 (see the
    # module docstring), so there K and the speed range grow (γ_max stays ≤ 0.5 / dt).
    paths = bd.datasets.fractional_ou(hurst=hurst, n_series=32, n_times=200, key=jax.random.key(0))
    model = bd.models.FractionalSDE(latent_dim=1, num_ou=num_ou, gamma_max=gamma_max, learn_hurst=True)
    post = bd.fit(model, paths, method="svi", num_steps=300, key=jax.random.key(1), progress_bar=False, warn=False)
    h = np.asarray(post.samples["hurst"])
    assert abs(h.mean() - hurst) < 0.05, h.mean()


def test_time_scale_means_data_time_per_model_time_and_old_runs_load(small):
    m = bd.models.FractionalSDE().adapt(small)
    dt = float(np.median(np.diff(small.ts[0])))
    # As in every model: model time is (t - t_first) / time_scale.
    np.testing.assert_allclose(m.time_scale, dt / m.obs_spacing, rtol=1e-12)
    config = m.config()
    old = {k: v for k, v in config.items() if k != "substeps"}
    old.update(steps_per_obs=config["substeps"], time_scale=1.0 / config["time_scale"])
    with pytest.warns(DeprecationWarning, match="steps_per_obs"):
        again = bd.models.FractionalSDE.from_config(old)
    np.testing.assert_allclose(again.time_scale, m.time_scale, rtol=1e-12)
    assert again.substeps == m.substeps
