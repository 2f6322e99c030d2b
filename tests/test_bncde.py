"""BNCDE (Hess et al., ICLR 2024), the TE-CDE / MC-dropout baseline, and the CDE
control-path tools they stand on."""

import copy
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import bayesde as bd
from bayesde._data import Batch
from bayesde.models._base import Query
from bayesde.models._bncde import exposures, mixture_log_score, ou_kl_closed_form, weight_sde
from bayesde.solvers._cde import (
    evaluate_path,
    fill_missing,
    hermite_coefficients,
    observation_counts,
    refine,
    solve_cde_grid,
)

# ----------------------------------------------------------------- control paths


def test_fill_missing_forward_is_causal_and_linear_interpolates():
    ts = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0])
    v = jnp.array([[np.nan], [2.0], [np.nan], [np.nan], [8.0]])
    m = ~jnp.isnan(v)
    fwd = fill_missing(jnp.nan_to_num(v), m, method="forward", initial=-1.0)
    np.testing.assert_allclose(fwd[:, 0], [-1.0, 2.0, 2.0, 2.0, 8.0])
    lin = fill_missing(jnp.nan_to_num(v), m, ts=ts, method="linear")
    np.testing.assert_allclose(lin[:, 0], [2.0, 2.0, 4.0, 6.0, 8.0])
    np.testing.assert_allclose(observation_counts(m)[:, 0], [0, 1, 1, 1, 2])


def test_backward_hermite_passes_knots_with_continuous_slope():
    ts = jnp.array([0.0, 0.5, 1.7, 2.0, 3.5])
    xs = jnp.stack([jnp.sin(ts), ts**2], -1)
    np.testing.assert_allclose(evaluate_path(ts, xs, ts), xs, atol=1e-6)
    a, b, c, d = hermite_coefficients(ts, xs)
    dt = jnp.diff(ts)[:, None]
    right_slope = b + 2 * c * dt + 3 * d * dt**2  # derivative at the right end of each piece
    np.testing.assert_allclose(right_slope[:-1], b[1:], atol=1e-5)
    # linear interpolation is exact for a linear path
    lin = jnp.stack([2 * ts + 1], -1)
    np.testing.assert_allclose(evaluate_path(ts, lin, jnp.array([0.25, 1.0, 3.0]), "linear")[:, 0],
                               [1.5, 3.0, 7.0], atol=1e-6)


def test_cde_euler_converges_to_the_exact_solution():
    # dz = z dX with X(t) = sin t has z(T) = z0 exp(X(T) - X(0)).
    ts = jnp.linspace(0.0, 2.0, 9)
    xs = jnp.sin(ts)[:, None]
    fine_ts, fine_xs = refine(ts, xs, 64, "hermite")
    z = solve_cde_grid(lambda t, z, x, e: z[..., None], jnp.array([1.0]), fine_ts, fine_xs)
    assert z.shape == (fine_ts.shape[0], 1)
    np.testing.assert_allclose(z[-1, 0], np.exp(np.sin(2.0)), rtol=2e-2)


# ----------------------------------------------------------------- weight SDE KL


def test_girsanov_kl_matches_the_ou_closed_form():
    """Posterior `dw = (h − w) ds + σ dB` with `h = −κ w` is OU with rate 1 + κ; the KL to
    the OU prior is `½ κ²/σ² ∫ E[w²] ds` in closed form."""
    kappa, sigma, m0, p = 0.7, 0.3, 0.8, 1500
    s = jnp.linspace(0.0, 1.0, 201)
    mu0 = jnp.full((p,), m0)
    solve = jax.jit(lambda k, mu: weight_sde(k, mu, sigma, s, lambda s_, w_: -kappa * w_, num_paths=2))
    w, kl = solve(jax.random.key(0), mu0)
    assert w.shape == (2, 201, p) and kl.shape == (2,)
    w_again, _ = solve(jax.random.key(0), mu0)
    np.testing.assert_array_equal(w, w_again)  # same key, same paths
    assert not np.allclose(w[0], w[1])  # independent paths
    per_coord = float(jnp.mean(kl)) / p
    exact = ou_kl_closed_form(m0, sigma**2, kappa, sigma, 1.0)
    assert per_coord == pytest.approx(exact, rel=0.04)
    # zero control: the posterior is the prior, KL = 0
    _, kl0 = weight_sde(jax.random.key(1), mu0[:10], sigma, s, lambda s_, w_: 0.0 * w_, num_paths=1)
    assert float(kl0[0]) == 0.0


# ----------------------------------------------------------------- the models

SIM_KW = dict(n_patients=400, n_test=80, n_days=30, min_history=10, gamma=2.0)


@pytest.fixture(scope="module")
def sim():
    return bd.datasets.tumor_growth(**SIM_KW, key=jax.random.key(0))


@pytest.fixture(scope="module")
def bncde_post(sim):
    model = bd.models.BNCDE(state_dim=4, width=16, train_paths=2, ahead_starts=8)
    return bd.fit(model, sim.train, method="svi", num_steps=600, batch_size=32, learning_rate=1e-2,
                  key=jax.random.key(1), progress_bar=False, warn=False)


def test_adapt_validates_and_sets_constants(sim):
    m = bd.models.BNCDE(state_dim=4).adapt(sim.train)
    assert m.log_outcome and m.n_treatments == 2 and m.n_static == 3 and m.rows == 31
    assert bd.models.BNCDE.amortized and bd.models.BNCDE.needs_treatments
    no_tr = bd.TimeSeries(sim.train.ts, sim.train.ys)
    with pytest.raises(ValueError, match="treatments"):
        bd.models.BNCDE().adapt(no_tr)
    neg = bd.TimeSeries(sim.train.ts, np.where(np.isnan(sim.train.ys), np.nan, -1.0),
                        treatments=sim.train.treatments)
    with pytest.raises(ValueError, match=r"transform='log'.*ys\[0, 0, 0\]"):
        bd.models.BNCDE(transform="log").adapt(neg)
    with pytest.raises(ValueError, match="stochastic"):
        bd.models.BNCDE(stochastic="first").adapt(sim.train)
    with pytest.raises(ValueError, match="dropout"):
        bd.models.TECDE(dropout=1.0).adapt(sim.train)


def _site_shapes(program, *args, types=("sample", "deterministic")):
    """Shapes of every site of these types, traced abstractly (nothing is compiled or run)."""

    def run():
        tr = numpyro.handlers.trace(numpyro.handlers.seed(program, jax.random.key(0))).get_trace(*args)
        return {k: v["value"] for k, v in tr.items() if v["type"] in types}

    return {k: v.shape for k, v in jax.eval_shape(run).items()}


@pytest.mark.parametrize("stochastic", ["last", "all"])
def test_program_sites_and_shapes(sim, stochastic):
    model = bd.models.BNCDE(state_dim=4, width=8, train_paths=3, stochastic=stochastic).adapt(sim.train)
    batch = sim.train.select(np.arange(6)).batch()
    shapes = _site_shapes(model.program, batch)
    assert shapes["y"] == (6, 3, 31, 1)  # (series, paths, time, dim)
    assert shapes["y_ahead"][:2] == (6, 3)
    q = Query(ts=jnp.tile(jnp.arange(31.0, 34.0), (6, 1)), treatments=jnp.ones((6, 3, 2)))
    shapes = _site_shapes(model.program, batch, q)
    assert shapes["y_out"] == (6, 3, 1) and shapes["f_out"] == (6, 3, 1)


@pytest.fixture(scope="module")
def effects(sim, bncde_post):
    plans = {"none": sim.plan("none"), "chemo": sim.plan("chemo")}
    return bd.effects.counterfactual(bncde_post, sim.test, plans=plans, horizon=5,
                                     key=jax.random.key(2), num_samples=100)


def test_small_bncde_is_calibrated_on_counterfactuals(sim, bncde_post, effects):
    """A small BNCDE trained for a few hundred steps: 90% counterfactual intervals
    cover 80-97% of the true outcomes (averaged over the two plans, of which one,
    chemo every day, is rare in the confounded training data)."""
    covs = [bd.metrics.coverage(effects.outcomes[k], sim.counterfactual(k), level=0.9)
            for k in ("none", "chemo")]
    assert 0.8 <= np.mean(covs) <= 0.97, covs
    assert bool(jnp.all(effects.outcomes["chemo"].samples > 0))  # LogNormal head
    fact = bncde_post.predict(sim.factual.ts, key=jax.random.key(3), data=sim.test,
                              treatments=sim.factual.treatments, num_samples=100)
    assert 0.75 <= bd.metrics.coverage(fact, sim.factual, level=0.9) <= 0.99
    # the model has learned that chemotherapy shrinks tumours
    assert float(jnp.mean(effects.contrast("chemo", "none").mean[:, -1])) < 0


def test_same_key_same_predictions(sim, bncde_post, effects):
    """Same key, same numbers: predicting the chemo plan again reproduces the draws that
    `counterfactual` made (and reuses its compiled predictive)."""
    again = bncde_post.predict(effects.ts, key=jax.random.key(2), data=sim.test,
                               treatments=sim.plan("chemo"), num_samples=100)
    np.testing.assert_array_equal(np.asarray(again.samples), np.asarray(effects.outcomes["chemo"].samples))


def test_each_series_forecast_depends_only_on_its_own_history(sim, bncde_post, effects):
    """The decoder reads each series' own weight rows (histories of different lengths):
    a series predicted alone gets the same noise-free paths as in the whole test set (the
    decoder's forecast; a rollout's later steps read draws keyed by the series' place in
    the batch, and its first step is the decoder's)."""
    plan = sim.plan("chemo")
    starts = np.asarray(effects.ts[:, 0])
    i, j = int(np.argmin(starts)), int(np.argmax(starts))
    assert starts[i] < starts[j]  # the test set mixes forecast origins
    dec = copy.copy(bncde_post)
    dec.model = dataclasses.replace(bncde_post.model, forecast="decoder")
    predict = lambda post, rows: post.predict(effects.ts[rows], key=jax.random.key(2),  # noqa: E731
                                              data=sim.test.select(rows), treatments=plan[rows], num_samples=100)
    together = predict(dec, np.arange(sim.test.n_series)).f_samples
    for k in (i, j):
        alone = predict(dec, [k]).f_samples
        np.testing.assert_allclose(np.asarray(alone), np.asarray(together[:, k : k + 1]), rtol=1e-5)
    first = effects.outcomes["chemo"].f_samples[:, :, 0]
    np.testing.assert_allclose(np.asarray(first), np.asarray(together[:, :, 0]), rtol=1e-5)


def test_runs_saved_under_the_old_field_names_load(sim):
    m = bd.models.BNCDE(state_dim=4).adapt(sim.train)
    config = m.config()
    assert config["state_dim"] == 4 and config["data_dim"] == 1 and len(config["loc"]["__array__"]) == 1
    old = {k: v for k, v in config.items() if k not in ("state_dim", "data_dim", "time_scale", "loc", "scale")}
    old.update(hidden=4, dim=1, t_scale=m.time_scale, y_loc=[float(m.loc[0])], y_scale=[float(m.scale[0])])
    with pytest.warns(DeprecationWarning, match="BNCDE.hidden is now called 'state_dim'"):
        again = bd.models.BNCDE.from_config(old)
    assert again.state_dim == 4 and again.data_dim == 1 and again.time_scale == m.time_scale
    np.testing.assert_array_equal(np.asarray(again.loc), m.loc)


# ----------------------------------------------------------------- held-back widening


def test_mixture_log_score_is_minus_the_log_mixture_density():
    """Minus the log of `Σ_s N(y; mu_s, sd_s²) / S`, also where one component alone
    carries the density (far in the tails, where a naive sum of densities underflows)."""
    from scipy import stats

    mu, sd = np.array([[-0.5, 0.3, 1.2]]), np.array([[0.4, 0.7, 0.2]])
    for y in (0.1, 2.0):
        want = -np.log(np.mean(stats.norm.pdf(y, mu[0], sd[0])))
        assert float(mixture_log_score(jnp.asarray(mu), jnp.asarray(sd), jnp.array([y]), axis=1)[0]) == (
            pytest.approx(want, rel=1e-5))
    far = float(mixture_log_score(jnp.asarray(mu), jnp.asarray(sd), jnp.array([40.0]), axis=1)[0])
    assert far == pytest.approx(-stats.norm.logpdf(40.0, 0.3, 0.7) + np.log(3.0), rel=1e-5)


def _trace(model, *args, params=None, key=0):
    prog = model.program if params is None else numpyro.handlers.substitute(model.program, data=params)
    return numpyro.handlers.trace(numpyro.handlers.seed(prog, jax.random.key(key))).get_trace(*args)


def _params(model, *args):
    """The program's parameters at their initial values (traced under `jit`: run op by op
    the program would compile each of its operations)."""
    tr = jax.jit(lambda *a: {k: v["value"] for k, v in _trace(model, *a).items() if v["type"] == "param"})
    return tr(*args)


def _likelihood(tr):
    return sum(jnp.sum(tr[s]["fn"].log_prob(tr[s]["value"])) for s in ("y", "y_ahead"))


def test_held_back_series_reach_the_score_and_not_the_likelihood(sim):
    """Every fourth series (3 and 7 of 8) is left out of the likelihood; its forecasts
    alone make the score, and only the widening `κ` learns from that score."""
    model = bd.models.BNCDE(state_dim=4, width=8, train_paths=2).adapt(sim.train)
    batch = sim.train.select(np.arange(8)).batch()
    params = _params(model, batch)
    assert "head.forecast_widening" in params

    @jax.jit
    def parts(ys, params):  # (likelihood, score) with these values and parameters
        tr = _trace(model, batch._replace(ys=ys), params=params)
        return _likelihood(tr), -tr["forecast_score"]["fn"].log_factor

    def moved(i):  # series i's values at rows 12-20 doubled
        return parts(batch.ys.at[i, 12:20].multiply(2.0), params)

    (lik, score), held, kept = parts(batch.ys, params), moved(3), moved(0)
    assert held[0] == lik and held[1] != score
    assert kept[0] != lik and kept[1] == score

    grads = jax.jit(jax.grad(lambda p: parts(batch.ys, p)[1]))(params)
    moving = {k for k, g in grads.items() if float(jnp.max(jnp.abs(g))) > 0}
    assert moving == {"head.forecast_widening"}


def test_the_widening_scales_the_forecast_sd_per_horizon(sim):
    model = bd.models.BNCDE(state_dim=4, width=8, train_paths=2, horizon=3, forecast="decoder").adapt(sim.train)
    batch = sim.train.select(np.arange(4)).batch()
    params = _params(model, batch)
    q = Query(ts=jnp.tile(jnp.arange(31.0, 35.0), (4, 1)), treatments=jnp.zeros((4, 4, 2)))

    @jax.jit
    def sd(theta):
        p = dict(params, **{"head.forecast_widening": theta})
        return _trace(model, batch, q, params=p)["y_out"]["fn"].scale

    unit = np.log(np.e - 1.0) / 10.0  # κ = 1 + softplus(10 θ) = 2
    ratio = np.asarray(sd(jnp.array([unit, -0.5, unit])) / sd(jnp.array([-0.5, -0.5, -0.5])))
    k0 = 1.0 + np.log1p(np.exp(-5.0))  # κ = (2, ≈1, 2); horizon 4 keeps κ_3
    np.testing.assert_allclose(ratio[0, :, 0], [2 / k0, 1.0, 2 / k0, 2 / k0], rtol=1e-5)


def test_min_widening_lets_the_score_narrow_the_forecast(sim):
    """`κ = min_widening + softplus(10 θ)`: every fit starts at the same `κ` whatever the
    floor, and with a floor below one the held-back score can narrow the head's sd."""
    kw = dict(state_dim=4, width=8, train_paths=2, horizon=2, forecast="decoder")
    batch = sim.train.select(np.arange(4)).batch()
    q = Query(ts=jnp.tile(jnp.arange(31.0, 33.0), (4, 1)), treatments=jnp.zeros((4, 2, 2)))

    def sd(least, theta=None):
        model = bd.models.BNCDE(**kw, min_widening=least).adapt(sim.train)
        params = _params(model, batch)
        if theta is not None:
            params = dict(params, **{"head.forecast_widening": jnp.full((2,), theta)})
        return np.asarray(_trace(model, batch, q, params=params)["y_out"]["fn"].scale)

    start = sd(1.0)
    np.testing.assert_allclose(sd(0.0), start, rtol=1e-5)  # the same start, κ = 1 + softplus(−5)
    np.testing.assert_allclose(sd(0.5), start, rtol=1e-5)
    k0 = 1.0 + np.log1p(np.exp(-5.0))
    half = np.log(np.expm1(0.5)) / 10.0  # softplus(10 θ) = 0.5
    np.testing.assert_allclose(sd(0.0, half) / start, 0.5 / k0, rtol=1e-5)  # narrowed to half
    np.testing.assert_allclose(sd(1.0, half) / start, 1.5 / k0, rtol=1e-5)  # the same θ only widens
    for bad in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match=r"^BNCDE.min_widening: expected a number in \[0, 1\] .* got "
                                             + repr(bad).replace(".", r"\.") + r"\.$"):
            bd.models.BNCDE(min_widening=bad).adapt(sim.train)


def test_held_back_widening_settings_and_old_runs(sim):
    with pytest.raises(ValueError, match=r"BNCDE.forecast_series_every: expected 0 .* got 1"):
        bd.models.BNCDE(forecast_series_every=1).adapt(sim.train)
    # off, or fewer series than the rule needs: no score, no widening parameter
    batch = sim.train.select(np.arange(8)).batch()
    sites = lambda every: _site_shapes(  # noqa: E731
        bd.models.BNCDE(state_dim=4, width=8, forecast_series_every=every).adapt(sim.train).program, batch,
        types=("sample", "param"))
    assert "forecast_score" in sites(4) and "head.forecast_widening" in sites(4)
    assert "forecast_score" not in sites(0) and "head.forecast_widening" not in sites(0)
    assert "forecast_score" not in sites(9)
    # a large cohort keeps nearly all of its series: at most 64 are held back
    back = bd.models.BNCDE()._is_held_back(np.arange(1000))
    assert back.sum() == 64 and back[3] and not back[4] and not back[259]
    # runs saved before the widening existed predict as they did: without it
    config = bd.models.BNCDE(state_dim=4).adapt(sim.train).config()
    del config["forecast_series_every"]
    assert bd.models.BNCDE.from_config(config).forecast_series_every == 0
    # runs saved before `min_widening` existed read their widening as κ ≥ 1
    config = bd.models.BNCDE(state_dim=4, min_widening=0.0).adapt(sim.train).config()
    assert bd.models.BNCDE.from_config(config).min_widening == 0.0
    del config["min_widening"]
    assert bd.models.BNCDE.from_config(config).min_widening == 1.0


# ----------------------------------------------------------------- learned weight spread


def test_learned_weight_spread_pays_its_kl_against_the_layers_initial_scale(sim):
    """`weight_spread="learned"`: the initial weights are `N(μ_0, sd0²)` with `sd0` a
    parameter (starting at σ) and the KL to `N(μ_0, sd_p²)`, `sd_p` the layer's initial
    scale, joins the path KL (zero at the initial drift). The draws have that sd."""
    with pytest.raises(ValueError, match=r"^BNCDE.weight_spread: must be 'fixed' or 'learned', got 'wide'.$"):
        bd.models.BNCDE(weight_spread="wide").adapt(sim.train)
    # the default spread; without the weight prior, whose term for the mean μ_0 joins the same KL
    model = bd.models.BNCDE(state_dim=4, width=8, train_paths=2, weight_prior="none",
                            stochastic="last").adapt(sim.train)
    batch = sim.train.select(np.arange(4)).batch()
    params = _params(model, batch)
    p_enc, p_dec = (model._layer_shapes(part)["W2"][1] for part in ("enc", "dec"))
    sizes = {"enc": 8 * p_enc + p_enc, "dec": 8 * p_dec + p_dec}  # W2 and b2 of each field
    assert params["w.log_sd0"].shape == (sizes["enc"] + sizes["dec"],)
    np.testing.assert_allclose(params["w.log_sd0"], np.log(0.01), rtol=1e-6)
    prior_sd = 0.3 / np.sqrt(8)  # both fields' output layers read the width-8 hidden layer

    fixed = bd.models.BNCDE(state_dim=4, width=8, train_paths=2, weight_spread="fixed",
                            weight_prior="none", stochastic="last").adapt(sim.train)

    @jax.jit
    def kl(log_sd0):  # the learned spread's KL at these sds, and the fixed spread's
        tr = _trace(model, batch, params=dict(params, **{"w.log_sd0": log_sd0}))
        p_fixed = {k: v for k, v in params.items() if k != "w.log_sd0"}
        return -tr["kl_weights"]["fn"].log_factor, -_trace(fixed, batch, params=p_fixed)["kl_weights"]["fn"].log_factor

    n = params["w.log_sd0"].shape[0]
    at_prior, kl_fixed = kl(jnp.full(n, np.log(prior_sd)))
    assert float(at_prior) == pytest.approx(0.0, abs=1e-3)
    assert float(kl_fixed) == 0.0  # the paper's spread has no such term (and no path KL at the initial drift)
    half = float(kl(jnp.full(n, np.log(0.5 * prior_sd)))[0])
    assert half == pytest.approx(n * (np.log(2.0) + 0.125 - 0.5), rel=1e-4)
    # the initial weights are drawn with sd0
    s = jnp.linspace(0.0, 1.0, 3)
    w, _ = weight_sde(jax.random.key(0), jnp.zeros(4000), 0.01, s, lambda s_, w_: 0.0 * w_, 2,
                      sd0=jnp.full(4000, 0.05))
    assert float(jnp.std(w[:, 0])) == pytest.approx(0.05, rel=0.03)
    # runs saved before the option existed draw as they did
    config = model.config()
    del config["weight_spread"]
    assert bd.models.BNCDE.from_config(config).weight_spread == "fixed"


# ------------------------------------------------------------------- weight prior
def test_the_gaussian_weight_prior_pays_for_every_point_estimated_weight(sim):
    """`weight_prior="gaussian"`: each point-estimated weight array (embedding, head weights,
    the fields' deterministic layers) adds `−½ Σ (w / sd)²` to the program's log density, and
    the stochastic layers' mean `μ_0` adds `½ Σ (μ_0 / sd_p)²` to their KL; `"none"` adds
    neither. TECDE, whose every field layer is a point estimate, pays for all of them."""
    with pytest.raises(ValueError, match=r"^BNCDE.weight_prior: must be 'none' or 'gaussian', got 'l2'.$"):
        bd.models.BNCDE(weight_prior="l2").adapt(sim.train)
    batch = sim.train.select(np.arange(4)).batch()
    kw = dict(state_dim=4, width=8, train_paths=2, stochastic="last")  # the first layers point-estimated
    with_prior = bd.models.BNCDE(weight_prior="gaussian", **kw).adapt(sim.train)
    without = bd.models.BNCDE(weight_prior="none", **kw).adapt(sim.train)
    params = _params(with_prior, batch)
    assert set(params) == set(_params(without, batch))  # a prior, not new parameters
    keys = dict(zip(params, jax.random.split(jax.random.key(3), len(params))))  # off the initial (zero) biases
    params = {k: v + 0.1 * jax.random.normal(keys[k], v.shape) for k, v in params.items()}

    @jax.jit
    def factors(params):
        t_with, t_without = _trace(with_prior, batch, params=params), _trace(without, batch, params=params)
        return (t_with["weight_prior"]["fn"].log_factor,
                t_with["kl_weights"]["fn"].log_factor - t_without["kl_weights"]["fn"].log_factor,
                "weight_prior" in t_without)

    c_in = 1 + 2 * 1 + 2 + 3  # time, outcome, its count, 2 treatments; 3 static covariates
    f_in = 1 + 4 + 2 + 3  # time, state, treatments, static covariates: the fields' first layer
    sd_p = 0.3 / np.sqrt(8)  # the output layers read the width-8 hidden layer

    def want(p, layers):  # −½ Σ (w / sd)² over the embedding, the head's weights and these field layers
        sds = {"embed.W": 1 / np.sqrt(c_in + 1), "embed.b": 1.0, "head.W": 1 / np.sqrt(4)}
        sds.update({f"{part}.{nm}": (1 / np.sqrt(f_in) if nm[1] == "1" else sd_p)
                    for part in ("enc", "dec") for nm in layers})
        return -0.5 * sum(float(jnp.sum((p[name] / sd) ** 2)) for name, sd in sds.items())

    point, kl_gap, none_has_it = factors(params)
    assert float(point) == pytest.approx(want(params, ("W1", "b1")), rel=1e-5) and not none_has_it
    assert float(-kl_gap) == pytest.approx(0.5 * float(jnp.sum((params["w.mu0"] / sd_p) ** 2)), rel=1e-4)
    # TECDE: every field layer is a point estimate and pays
    tecde = bd.models.TECDE(state_dim=4, width=8, weight_prior="gaussian").adapt(sim.train)
    p_t = {k: v + 0.1 for k, v in _params(tecde, batch).items()}
    got = float(jax.jit(lambda p: _trace(tecde, batch, params=p)["weight_prior"]["fn"].log_factor)(p_t))
    assert got == pytest.approx(want(p_t, ("W1", "b1", "W2", "b2")), rel=1e-5)
    assert bd.models.BNCDE().weight_prior == "gaussian" and bd.models.TECDE().weight_prior == "none"
    assert bd.models.BNCDE().stochastic == "all"
    # runs saved before the option existed fit and forecast as they did: without it
    config = with_prior.config()
    del config["weight_prior"]
    assert bd.models.BNCDE.from_config(config).weight_prior == "none"


# ------------------------------------------------------------------- exposures
def test_an_exposure_halves_every_half_life_and_adds_each_dose():
    ts = jnp.array([[0.0, 1.0, 2.0, 4.0]])
    a = jnp.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0]]])  # two channels
    e = np.asarray(exposures(ts, a, (1.0, 2.0)))[0]  # channel-major: (ch0 h1, ch0 h2, ch1 h1, ch1 h2)
    np.testing.assert_allclose(e[:, 0], [1.0, 1.5, 0.75, 0.75 / 4 + 1.0])
    np.testing.assert_allclose(e[:, 1], [1.0, 1 + 2**-0.5, (1 + 2**-0.5) * 2**-0.5, (1 + 2**-0.5) * 2**-1.5 + 1.0])
    np.testing.assert_allclose(e[:, 2], [0.0, 0.0, 2.0, 0.5])
    assert exposures(ts, a, ()).shape == (1, 4, 0)


def test_exposure_halflives_are_refused_unless_positive(sim):
    with pytest.raises(ValueError, match=r"BNCDE.exposure_halflives: expected positive half-lives in the data's "
                                         r"time unit, e.g. \(0.5, 2.0, 8.0\), got -1.0."):
        bd.models.BNCDE(exposure_halflives=(2, -1)).adapt(sim.train)
    model = bd.models.BNCDE(exposure_halflives=[0.5, 2]).adapt(sim.train)
    assert model.exposure_halflives == (0.5, 2.0)
    assert type(model).from_config(model.config()).exposure_halflives == (0.5, 2.0)
    assert bd.models.BNCDE().exposure_halflives == ()  # off by default


def test_a_plan_continues_the_exposures_of_the_history(sim):
    """What the decoder reads at each query time is the treatment and the exposures of
    the history followed by the plan, as `exposures` gives them on the joined sequence."""
    seen = []

    class Recording(bd.models.BNCDE):
        def _decode_step(self, lay, u, t, a, dA, st, key):
            jax.debug.callback(lambda v: seen.append(np.asarray(v)), a[0, 0], ordered=True)
            return super()._decode_step(lay, u, t, a, dA, st, key)

    model = Recording(state_dim=4, width=8, train_paths=1, exposure_halflives=(0.5, 3.0)).adapt(sim.train)
    batch = sim.train.select(np.arange(2)).batch()
    plan = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 4, 2)), batch.ts.dtype)
    q = Query(ts=batch.ts[:, -1:] + jnp.arange(1.0, 5.0), treatments=plan)
    jax.jit(lambda: _trace(model, batch, q)["y_out"]["value"])()  # one compiled run
    jax.effects_barrier()
    got = np.stack(seen).reshape(2, 4, -1)  # series by series, step by step
    ts = np.concatenate([batch.ts, q.ts], 1)
    want = np.asarray(exposures(ts, jnp.concatenate([batch.treatments, plan], 1), (0.5, 3.0)))[:, -4:]
    np.testing.assert_allclose(got[..., :2], plan, rtol=1e-6)
    np.testing.assert_allclose(got[..., 2:], want, rtol=1e-5)


# ------------------------------------------------------------------- rollout
def test_a_rollout_reads_its_own_draws_as_the_data_would_show_them(sim):
    """`forecast="rollout"` forecasts one step at a time (the g-formula): its first step is
    the decoder's; the encoder then reads each draw as an observation at the rate the
    series' history was observed, else as a missing row. So the second step's law is the
    one-step forecast of the history with the first draw appended as an observed row (a
    fully observed history), or with a missing row appended, in about the share of draws
    its history left unobserved. (With the same key both runs draw the same weight paths:
    a longer history with a shorter plan spans the same rows.)"""
    with pytest.raises(ValueError, match=r"^TECDE.forecast: must be 'decoder' or 'rollout', got 'direct'.$"):
        bd.models.TECDE(forecast="direct").adapt(sim.train)
    kw = dict(state_dim=4, width=8, train_paths=1, exposure_halflives=(1.0,), transform="none")
    roll = bd.models.BNCDE(**kw).adapt(sim.train)
    dec = bd.models.BNCDE(**kw, forecast="decoder").adapt(sim.train)
    gappy = sim.train.select(np.arange(3)).batch()
    full = gappy._replace(ys=jnp.where(gappy.mask, gappy.ys, 2.0), mask=jnp.ones_like(gappy.mask))
    params = dict(_params(roll, gappy), **{"head.forecast_widening": jnp.full((5,), -5.0)})  # κ = 1
    plan = jnp.asarray(np.random.default_rng(1).integers(0, 2, (3, 3, 2)), gappy.ts.dtype)
    q = Query(ts=gappy.ts[:, -1:] + jnp.arange(1.0, 4.0), treatments=plan)
    rest = Query(ts=q.ts[:, 1:], treatments=plan[:, 1:])

    @eqx.filter_jit
    def forecast(model, batch, q, key, params=params):
        tr = numpyro.handlers.trace(numpyro.handlers.seed(
            numpyro.handlers.substitute(model.program, data=params), key)).get_trace(batch, q)
        return tr["y_out"]["value"], tr["f_out"]["value"]

    def extended(batch, y, seen):
        return Batch(ts=jnp.concatenate([batch.ts, q.ts[:, :1]], 1), ys=jnp.concatenate([batch.ys, y], 1),
                     mask=jnp.concatenate([batch.mask, jnp.full_like(batch.mask[:, :1], seen)], 1),
                     treatments=jnp.concatenate([batch.treatments, plan[:, :1]], 1), static=batch.static)

    key = jax.random.key(0)
    y, f = forecast(roll, full, q, key)
    _, f_dec = forecast(dec, full, q, key)
    np.testing.assert_allclose(f[:, 0], f_dec[:, 0], rtol=1e-6)
    assert not np.allclose(f[:, 1:], f_dec[:, 1:], rtol=1e-3)  # later steps differ: they read the draws
    _, f_next = forecast(dec, extended(full, y[:, :1], True), rest, key)
    np.testing.assert_allclose(f_next[:, 0], f[:, 1], rtol=1e-4)
    # κ_1 widens the first step's draw around its mean, and the encoder reads that widened draw
    unit = np.log(np.e - 1.0) / 10.0  # κ = 1 + softplus(10 θ) = 2
    y2, f2 = forecast(roll, full, q, key, dict(params, **{"head.forecast_widening": jnp.full((5,), unit)}))
    np.testing.assert_allclose(f2[:, 0], f[:, 0], rtol=1e-6)
    np.testing.assert_allclose(y2[:, 0] - f2[:, 0], 2.0 * (y[:, 0] - f[:, 0]), rtol=1e-4, atol=1e-6)
    assert not np.allclose(f2[:, 1], f[:, 1], rtol=1e-3)

    # a history with gaps: the first draw is read as missing in about its unobserved share of draws
    keys = jax.random.split(jax.random.key(1), 200)
    many = eqx.filter_vmap(forecast, in_axes=(None, None, None, 0))
    _, f_many = many(roll, gappy, q, keys)  # (200, 3, 3, 1)
    _, f_missing = many(dec, extended(gappy, jnp.zeros_like(gappy.ys[:, :1]), False), rest, keys)
    read_as_missing = np.isclose(f_many[:, :, 1, 0], f_missing[:, :, 0, 0], rtol=1e-5)
    unobserved = 1.0 - np.asarray(gappy.mask[..., 0]).mean(1)
    assert 0.1 < unobserved.max() and unobserved.min() < 0.9
    np.testing.assert_allclose(read_as_missing.mean(0), unobserved, atol=0.12)
    # BNCDE forecasts by rollout, TE-CDE (a baseline) as its paper; runs saved before the option use the decoder
    assert bd.models.BNCDE().forecast == "rollout" and bd.models.TECDE().forecast == "decoder"
    config = roll.config()
    del config["forecast"]
    assert bd.models.BNCDE.from_config(config).forecast == "decoder"
