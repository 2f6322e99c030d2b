"""LatentSDE: the path-space KL, fitting, forecasting irregular series, and the data."""

import copy
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import bayesde as bd
from bayesde.datasets._sde_sims import gbm_moments
from bayesde.models._base import Query
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
        ({"forecast_holdout": 1.0}, "forecast_holdout"),
        ({"forecast_holdout": "0.25"}, "forecast_holdout"),  # a string, not a fraction
        ({"forecast_series_every": 0}, "forecast_series_every"),
        ({"window": 1}, "window"),
        ({"seasons": (12.0, -1.0)}, "seasons"),
        ({"seasons": "yearly"}, "seasons"),
        ({"linear_drift": "yes"}, "linear_drift"),
        ({"posterior_drift": "separate"}, "posterior_drift"),
        ({"forecast_score": "energy"}, "forecast_score"),
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
    model = bd.models.LatentSDE(latent_dim=3, context_dim=8, width=16, substeps=1)
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


# ------------------------------------------------------------- the forecast scale κ
KAPPA = "latent_sde.forecast_log_scale"
RHO = "latent_sde.forecast_log_discrepancy"


def test_the_forecast_scale_is_fitted_by_the_held_back_score_and_moves_nothing_else(irregular_fit):
    _, hist, _, post = irregular_fit
    assert abs(float(post.params[KAPPA])) > 1e-3  # fitted, not left at κ = 1
    assert np.all(np.abs(np.asarray(post.params[RHO]) - np.log(1e-2)) > 1e-3)  # nor ρ at its start

    def score(params):
        program = numpyro.handlers.seed(numpyro.handlers.substitute(post.model.program, data=params), 0)
        site = numpyro.handlers.trace(program).get_trace(hist.batch())["forecast_score"]
        return -site["fn"].log_factor

    grads = jax.grad(score)(dict(post.params))
    moved = sorted(k for k, g in grads.items() if float(jnp.max(jnp.abs(g))) > 0)
    assert moved == sorted([KAPPA, RHO])
    assert np.isfinite(float(score(dict(post.params))))


def _with_params(post, **params):
    other = copy.copy(post)
    other.params = {**post.params, **params}
    return other


def test_the_forecast_scale_and_discrepancy_widen_the_forecast_and_leave_the_history(irregular_fit):
    _, hist, fut, post = irregular_fit
    q = np.concatenate([hist.ts[:, :3], fut.ts[:, :4]], axis=1)
    draws = {}
    for k in (1.0, 3.0):
        pred = _with_params(post, **{KAPPA: jnp.log(k), RHO: jnp.full(3, -9.0)}).predict(
            q, key=jax.random.key(4), num_samples=32)
        draws[k] = np.asarray(pred.f_samples)
    np.testing.assert_allclose(draws[3.0][:, :, :3], draws[1.0][:, :, :3], rtol=1e-5, atol=1e-5)
    assert draws[3.0][:, :, 4:].std(axis=0).mean() > 1.5 * draws[1.0][:, :, 4:].std(axis=0).mean()
    # The discrepancy ρ widens the forecast too, and leaves the history alone.
    wide = _with_params(post, **{KAPPA: jnp.zeros(()), RHO: jnp.zeros(3)}).predict(q, key=jax.random.key(4), num_samples=32)
    wide = np.asarray(wide.f_samples)
    np.testing.assert_allclose(wide[:, :, :3], draws[1.0][:, :, :3], rtol=1e-5, atol=1e-5)
    assert wide[:, :, 4:].std(axis=0).mean() > 1.2 * draws[1.0][:, :, 4:].std(axis=0).mean()
    # A run saved before κ and ρ existed has neither parameter nor the config field:
    # it loads without the discrepancy and forecasts with κ = 1, as when it was saved.
    config = {k: v for k, v in post.model.config().items() if k != "forecast_discrepancy"}
    old = copy.copy(post)
    old.model = type(post.model).from_config(config)
    old.params = {k: v for k, v in post.params.items() if k not in (KAPPA, RHO)}
    assert old.model.forecast_discrepancy is False
    plain = _with_params(post, **{KAPPA: jnp.zeros(()), RHO: jnp.full(3, -jnp.inf)})
    np.testing.assert_allclose(np.asarray(old.predict(q, key=jax.random.key(4), num_samples=32).f_samples),
                               np.asarray(plain.predict(q, key=jax.random.key(4), num_samples=32).f_samples),
                               rtol=1e-5, atol=1e-5)


def test_forecast_holdout_zero_adds_no_score_so_kappa_stays_one():
    data = bd.datasets.ornstein_uhlenbeck(n_series=4, n_times=12, key=jax.random.key(0))
    for holdout, scored in ((0.0, False), (0.25, True)):
        model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, forecast_holdout=holdout).adapt(data)
        sites = []  # traced abstractly (jax.eval_shape): the sites, without running the solver
        jax.eval_shape(lambda: sites.extend(numpyro.handlers.trace(
            numpyro.handlers.seed(model.program, 0)).get_trace(data.batch())))
        assert KAPPA in sites and ("forecast_score" in sites) is scored


def test_the_scored_series_tails_are_hidden_from_the_elbo_so_kappa_is_fitted_out_of_sample():
    data = bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=12, key=jax.random.key(0))

    def scores(every, series):
        """ELBO log-likelihood and forecast score before and after moving the last value
        of `series` (inside its held-back tail)."""
        model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, forecast_series_every=every).adapt(data)
        out = []
        for bump in (0.0, 5.0):
            batch = data.batch()
            batch = batch._replace(ys=batch.ys.at[series, -1].add(bump))
            tr = numpyro.handlers.trace(numpyro.handlers.seed(model.program, 0)).get_trace(batch)
            score = tr["forecast_score"]
            out.append((float(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum()), float(score["fn"].log_factor)))
        return out

    (y0, s0), (y1, s1) = scores(4, 3)  # series 3 is scored: its tail only reaches the score
    assert y1 == y0 and s1 != s0
    (y0, s0), (y1, s1) = scores(4, 2)  # series 2 trains on its whole span and is not scored
    assert y1 != y0 and s1 == s0
    for series in (2, 3):  # fewer series than 16: every series' tail is held back and scored
        (y0, s0), (y1, s1) = scores(16, series)
        assert y1 == y0 and s1 != s0


def test_a_single_record_holds_back_earlier_stretches_cut_into_equal_blocks():
    from bayesde.models._common import holdout_stretches
    # 708 monthly rows: blocks of 177, each holding back its last 45 rows (a 16th of the record, as the tail)
    assert holdout_stretches(708, 0.25, 4, 4, 64) == (64, 45, (132, 309, 486))
    assert holdout_stretches(708, 0.25, 4, 4, None) == (132, 45, (132, 309, 486))  # no window: all before the first
    assert holdout_stretches(100, 0.25, 4, 2, 64) == (43, 7, (43,))
    assert holdout_stretches(30, 0.25, 4, 4, 64) == (13, 2, (13, 20))  # the first block is too short
    assert holdout_stretches(20, 0.25, 4, 4, 64) == (8, 2, (8, 13))
    assert holdout_stretches(10, 0.25, 4, 4, 64) == (0, 0, ())  # no block has 8 rows before its stretch
    assert holdout_stretches(708, 0.25, 4, 1, 64) == (0, 0, ())  # the tail alone
    assert holdout_stretches(708, 0.0, 4, 4, 64) == (0, 0, ())
    with pytest.raises(ValueError, match=r"LatentSDE\.forecast_stretches: expected a positive integer, got 0\."):
        bd.models.LatentSDE(forecast_stretches=0)


def test_a_single_records_stretches_are_hidden_from_the_elbo_and_forecast_from_before_them_only():
    """One record of 80 rows, windows of 10: blocks of 20 rows hold back rows 15-19, 35-39 and
    55-59, each forecast from the 10 rows before it. A value inside a stretch moves the score
    and not the ELBO; a value just after a stretch moves the ELBO and not the score (nothing
    after a stretch's start informs its forecast, and the tail's forecast starts from another
    window); a value in a stretch's head moves both."""
    data = bd.datasets.ornstein_uhlenbeck(n_series=1, n_times=80, irregular=False, key=jax.random.key(0))

    def scores(row, stretches=4):
        model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, window=10,
                                    forecast_stretches=stretches).adapt(data)
        out = []
        for bump in (0.0, 5.0):
            batch = data.batch()
            batch = batch._replace(ys=batch.ys.at[0, row].add(bump))
            tr = numpyro.handlers.trace(numpyro.handlers.seed(model.program, 0)).get_trace(batch)
            out.append((float(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum()),
                        float(tr["forecast_score"]["fn"].log_factor)))
        return out

    (y0, s0), (y1, s1) = scores(17)  # inside the first stretch
    assert y1 == y0 and s1 != s0
    (y0, s0), (y1, s1) = scores(21)  # after it, before the second stretch's head (rows 25-34)
    assert y1 != y0 and s1 == s0
    (y0, s0), (y1, s1) = scores(12)  # in the first stretch's head
    assert y1 != y0 and s1 != s0
    (y0, s0), (y1, s1) = scores(17, stretches=1)  # the tail alone (the default): row 17 trains like any other
    assert y1 != y0 and s1 == s0


def test_keep_best_keeps_the_parameters_where_the_held_out_forecasts_scored_best(tmp_path):
    """SVI(keep_best=True) only chooses which parameters to return: the loss trajectory is
    the plain run's, the kept parameters are exactly those of a run stopped at
    `info.best_step`, and a checkpointed, resumed run keeps the same ones."""
    data = bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=12, key=jax.random.key(0))
    model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, substeps=1)
    kw = dict(key=jax.random.key(1), progress_bar=False, warn=False, chunk_size=10, learning_rate=3e-2, best_from=0)
    best = bd.fit(model, data, num_steps=60, **kw)
    plain = bd.fit(model, data, num_steps=60, keep_best=False, **kw)
    assert plain.info.best_step is None and best.info.best_step in range(10, 61, 10)
    assert best.diagnostics()["best_step"] == best.info.best_step
    np.testing.assert_array_equal(best.loss, plain.loss)
    stopped = plain if best.info.best_step == 60 else bd.fit(
        model, data, num_steps=best.info.best_step, keep_best=False, **kw)
    for k in plain.params:
        np.testing.assert_array_equal(best.params[k], stopped.params[k])
    ck = str(tmp_path / "ck")
    bd.fit(model, data, num_steps=30, checkpoint_every=30, checkpoint_dir=ck, **kw)
    resumed = bd.fit(model, data, num_steps=60, resume=ck, **kw)
    assert resumed.info.best_step == best.info.best_step
    for k in plain.params:
        np.testing.assert_array_equal(best.params[k], resumed.params[k])
    # a single record holds back its own tail, so there is a held-out score to choose by too
    one = bd.fit(model, data.select(np.arange(1)), num_steps=60, **kw)
    assert one.info.best_step in range(10, 61, 10)


def test_keep_best_chooses_among_the_steps_from_best_from():
    """The parameters of the first steps are not a fitted forecast: `best_from` keeps the
    lowest held-back score from that step on (the same trajectory), and a run shorter than
    `best_from` keeps its last step."""
    data = bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=12, key=jax.random.key(0))
    model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, substeps=1)
    kw = dict(key=jax.random.key(1), progress_bar=False, warn=False, chunk_size=10, learning_rate=3e-2)
    free = bd.fit(model, data, num_steps=60, best_from=0, **kw)
    later = min(free.info.best_step + 10, 60)
    late = bd.fit(model, data, num_steps=60, best_from=later, **kw)
    assert late.info.best_step in range(later, 61, 10)
    # What the free run kept is no longer eligible (unless it was the last step).
    assert late.info.best_step != free.info.best_step or free.info.best_step == 60
    np.testing.assert_array_equal(late.loss, free.loss)
    short = bd.fit(model, data, num_steps=40, best_from=500, **kw)  # best_from past the end
    assert bd.SVI().best_from == 0 and short.info.best_step == 40
    with pytest.raises(ValueError, match="SVI.best_from"):
        bd.SVI(best_from=-1)


def test_held_out_refit_fits_the_forecast_scales_to_the_kept_networks():
    """With `held_out_refit`, SVI refits the forecast scales (κ, ρ: the parameters only
    the held-back score moves) to the kept networks after choosing the kept step: the
    same trajectory and kept step, the same networks, other scales, and a lower
    held-back score. Off by default."""
    from bayesde.inference._svi import _held_out_fn

    data = bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=12, key=jax.random.key(0))
    model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, substeps=1)
    kw = dict(key=jax.random.key(1), progress_bar=False, warn=False, chunk_size=10, learning_rate=3e-2)
    plain = bd.fit(model, data, num_steps=40, **kw)
    refit = bd.fit(model, data, num_steps=40, held_out_refit=200, **kw)
    assert bd.SVI().held_out_refit == 0
    assert refit.info.best_step == plain.info.best_step
    np.testing.assert_array_equal(refit.loss, plain.loss)
    scales = set(model.held_out_params)
    assert scales == {"latent_sde.forecast_log_scale", "latent_sde.forecast_log_discrepancy"} <= set(plain.params)
    for k in plain.params:
        if k not in scales:
            np.testing.assert_array_equal(refit.params[k], plain.params[k])
    assert all(not np.allclose(refit.params[k], plain.params[k]) for k in scales)
    score = _held_out_fn(refit.model, data.batch(), model.held_out_site, 256)
    assert float(score(refit.params, jax.random.key(9))) < float(score(plain.params, jax.random.key(9)))
    with pytest.raises(ValueError, match=r"SVI.held_out_refit: expected a non-negative integer, got -1."):
        bd.SVI(held_out_refit=-1)


def test_patience_ends_the_run_so_that_more_steps_keep_the_same_parameters(tmp_path):
    """SVI(patience=P) stops P steps after the held-out score's last improvement: the
    losses are the first steps of the longer run's, and a run asked for five times the
    steps (or resumed from a checkpoint) stops at the same step with the same parameters."""
    data = bd.datasets.ornstein_uhlenbeck(n_series=8, n_times=12, key=jax.random.key(0))
    # Euler steps: with these keys the held-out score stops improving well inside 100 steps
    model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, substeps=1, scheme="euler")
    kw = dict(key=jax.random.key(1), progress_bar=False, warn=False, chunk_size=10, learning_rate=3e-2, patience=20,
              min_steps=0, best_from=0)
    short = bd.fit(model, data, num_steps=100, **kw)
    stop, kept = short.info.patience_stop, short.info.best_step
    assert stop is not None and stop == kept + 20 and len(short.loss) == stop == short.info.num_steps_run
    assert short.diagnostics()["patience_stop"] == stop
    long = bd.fit(model, data, num_steps=500, **kw)
    assert (long.info.patience_stop, long.info.best_step) == (stop, kept)
    np.testing.assert_array_equal(long.loss, short.loss)
    ck = str(tmp_path / "ck")
    bd.fit(model, data, num_steps=10, checkpoint_every=10, checkpoint_dir=ck, **kw)
    resumed = bd.fit(model, data, num_steps=500, resume=ck, **kw)
    assert (resumed.info.patience_stop, resumed.info.best_step) == (stop, kept)
    for k in short.params:
        np.testing.assert_array_equal(long.params[k], short.params[k])
        np.testing.assert_array_equal(resumed.params[k], short.params[k])
    from bayesde._cli._fit import health_line

    assert f"stopped early: the forecasts of the held-back data had not scored better since step {kept}" in health_line(short)
    # min_steps: patience cannot end the run before it; the steps run are the same trajectory
    floor = stop + 30
    late = bd.fit(model, data, num_steps=500, **dict(kw, min_steps=floor))
    assert late.info.patience_stop is None or late.info.patience_stop >= floor
    assert late.info.num_steps_run >= floor and late.info.best_step >= kept
    np.testing.assert_array_equal(late.loss[:stop], short.loss)
    every = bd.fit(model, data, num_steps=100, **dict(kw, min_steps=100))
    assert every.info.patience_stop is None and every.info.num_steps_run == 100


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
    model = bd.models.LatentSDE(latent_dim=4, context_dim=16, width=32, encoder="gru", family="neural")
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
    model = bd.models.LatentSDE(latent_dim=2, context_dim=8, width=32, family="geometric", substeps=1)
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
    model = bd.models.LatentSDE(latent_dim=3, context_dim=8, width=16, family=family, encoder=encoder,
                                num_paths=2, likelihood="laplace", kl_anneal_steps=30)
    post = bd.fit(model, hist, method="svi", num_steps=60, key=jax.random.key(1), progress_bar=False, warn=False)
    assert np.all(np.isfinite(post.loss))
    assert post.loss[-10:].mean() < post.loss[:10].mean()
    pred = post.predict(fut.ts, key=jax.random.key(2), num_samples=8)
    assert np.all(np.isfinite(np.asarray(pred.samples)))


# ------------------------------------------------------ choices are objects, saved as names
def test_choices_take_a_name_or_an_object_and_save_the_name():
    fam, enc, lik = bd.models.families, bd.models.encoders, bd.models.likelihoods
    by_name = bd.models.LatentSDE(family="linear-noise", encoder="ncde", likelihood="laplace", scheme="milstein")
    by_object = bd.models.LatentSDE(family=fam.LinearNoise(), encoder=enc.NCDE(), likelihood=lik.Laplace(),
                                    scheme=bd.solvers.Milstein())
    for m in (by_name, by_object):
        assert isinstance(m.family, fam.LinearNoise) and isinstance(m.encoder, enc.NCDE)
        assert isinstance(m.likelihood, lik.Laplace) and isinstance(m.scheme, bd.solvers.Milstein)
    config = by_object.config()
    assert (config["family"], config["encoder"], config["likelihood"], config["scheme"]) == (
        "linear-noise", "ncde", "laplace", "milstein")
    again = bd.models.LatentSDE.from_config(config)
    assert again.config() == config and isinstance(again.family, fam.LinearNoise)
    assert set(fam.FAMILIES) == {"neural", "langevin", "linear-noise", "geometric"}


def test_auto_scheme_is_heun_without_seasons_and_euler_with_them():
    """`scheme="auto"` (the default) solves with Heun unless the adapted model has seasons;
    a named scheme is kept either way, and a saved run resolves the same way on load."""
    data = bd.datasets.ornstein_uhlenbeck(n_series=4, n_times=10, key=jax.random.key(0))
    plain = bd.models.LatentSDE()
    assert plain.scheme == "auto" and plain.config()["scheme"] == "auto"
    assert isinstance(plain.adapt(data).solver_scheme, bd.solvers.Heun)
    assert isinstance(bd.models.LatentSDE(seasons=(1.0,)).adapt(data).solver_scheme, bd.solvers.Euler)
    for name, cls in (("heun", bd.solvers.Heun), ("euler", bd.solvers.Euler), ("milstein", bd.solvers.Milstein)):
        for seasons in ((), (1.0,)):
            assert isinstance(bd.models.LatentSDE(scheme=name, seasons=seasons).adapt(data).solver_scheme, cls)
    loaded = bd.models.LatentSDE.from_config(bd.models.LatentSDE(seasons=(1.0,)).adapt(data).config())
    assert loaded.scheme == "auto" and isinstance(loaded.solver_scheme, bd.solvers.Euler)
    with pytest.raises(ValueError, match="LatentSDE.scheme"):
        bd.models.LatentSDE(scheme="rk4")
    with pytest.raises(ValueError, match=r"LatentSDE.solver_scheme: scheme='auto' depends on the seasons, and "
                                         r"seasons='auto' is read from the data: adapt the model first"):
        plain.solver_scheme


def test_old_keywords_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="LatentSDE.hidden is now called 'width'"):
        m = bd.models.LatentSDE(hidden=8)
    assert m.width == 8
    with pytest.warns(DeprecationWarning, match="LatentSDE.method is now called 'scheme'"):
        assert isinstance(bd.models.LatentSDE(method="heun").scheme, bd.solvers.Heun)
    with pytest.raises(ValueError, match="got both 'hidden' and 'width'"):
        bd.models.LatentSDE(hidden=8, width=8)
    # A run saved under the old names loads.
    old = {**bd.models.LatentSDE().config(), "hidden": 12, "method": "heun"}
    del old["width"], old["scheme"]
    with pytest.warns(DeprecationWarning):
        m = bd.models.LatentSDE.from_config(old)
    assert m.width == 12 and isinstance(m.scheme, bd.solvers.Heun)
    with pytest.warns(DeprecationWarning, match="BayesianNeuralODE.dim is now called 'state_dim'"):
        assert bd.models.BayesianNeuralODE(dim=3).state_dim == 3
    with pytest.warns(DeprecationWarning, match="FractionalSDE.steps_per_obs is now called 'substeps'"):
        assert bd.models.FractionalSDE(steps_per_obs=3).substeps == 3


# ------------------------------------------------------------- one shared model module
def test_scaling_is_fitted_once_for_every_model():
    from bayesde.models._common import fit_scaling, time_span

    ts = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 4.0, 9.0]])
    ys = np.array([[1.0, 2.0, np.nan, 4.0], [3.0, np.nan, np.nan, np.nan]])[..., None]
    data = bd.TimeSeries(ts, ys, lengths=[4, 3])
    sc = fit_scaling(data)
    # The span is the longest series (padding excluded), not the whole window.
    assert time_span(data) == 3.0 and sc.time_scale == 3.0 and sc.t_ref == 0.0
    np.testing.assert_allclose(sc.loc, [2.5])
    np.testing.assert_allclose(sc.scale, [np.std([1, 2, 4, 3])])
    log = fit_scaling(data, log=True)
    np.testing.assert_allclose(log.loc, [np.mean(np.log([1, 2, 4, 3]))], rtol=1e-6)
    for model in (bd.models.LatentSDE(), bd.models.BayesianNeuralODE(state_dim=1)):
        m = model.adapt(data)
        np.testing.assert_array_equal(m.loc, sc.loc)
        np.testing.assert_array_equal(m.scale, sc.scale)
        assert m.time_scale == sc.time_scale


def test_gaussian_kl_matches_numpyro():
    import numpyro.distributions as dist
    from numpyro.distributions.kl import kl_divergence

    from bayesde.models._common import gaussian_kl

    qm, qs, pm, ps = jnp.array([0.3, -1.0]), jnp.array([0.5, 2.0]), jnp.array([0.0, 1.0]), jnp.array([1.0, 0.7])
    ref = jnp.sum(kl_divergence(dist.Normal(qm, qs), dist.Normal(pm, ps)))
    np.testing.assert_allclose(gaussian_kl(qm, qs, pm, ps), ref, rtol=1e-6)


def test_concrete_models_override_only_abstract_hooks():
    """equinox's abstract/final pattern: a concrete model implements abstract methods
    (and `adapt` and `for_engine`, the documented data and engine hooks); it never
    overrides a concrete method."""
    import inspect

    for name in ("ODE", "BayesianNeuralODE", "LatentSDE", "FractionalSDE", "BNCDE", "TECDE"):
        cls = getattr(bd.models, name)
        for attr, value in vars(cls).items():
            if attr in ("adapt", "for_engine") or attr.startswith("__") or not inspect.isfunction(value):
                continue
            for base in cls.__mro__[1:]:
                if attr in vars(base):
                    assert getattr(vars(base)[attr], "__isabstractmethod__", False), (
                        f"{name}.{attr} overrides the concrete {base.__name__}.{attr}")
                    break


# ------------------------------------------- gaps: absent rows and empty cells are one thing
def _absent_and_empty(ts, ys, gap_rows):
    """The same observations twice: with the rows `gap_rows` of a grid absent, and
    present with every value missing."""
    keep = np.setdiff1d(np.arange(len(ts)), gap_rows)
    mask = np.ones(ys.shape, bool)
    mask[gap_rows] = False
    return (ts[keep], ys[keep], mask[keep]), (ts, np.where(mask, ys, 0.0), mask)


@pytest.mark.parametrize("encoder", ["gru", "forward-gru", "ncde"])
def test_encoders_read_empty_rows_as_if_they_were_absent(encoder, getkey):
    ts = np.linspace(0.0, 1.0, 9)
    ys = np.asarray(jax.random.normal(getkey(), (9, 2)))
    gaps = np.array([2, 3, 6])
    (ta, ya, ma), (te, ye, me) = _absent_and_empty(ts, ys, gaps)
    net = bd.models.encoders.as_encoder(encoder).make(2, 8, 4, key=getkey())
    absent = net(jnp.asarray(ta), jnp.asarray(ya), jnp.asarray(ma))
    empty = net(jnp.asarray(te), jnp.asarray(ye), jnp.asarray(me))
    keep = np.setdiff1d(np.arange(9), gaps)
    np.testing.assert_allclose(np.asarray(empty)[keep], np.asarray(absent), rtol=1e-5, atol=1e-6)


def test_the_forward_gru_context_reads_the_past_and_the_backward_one_the_future(getkey):
    ts = jnp.linspace(0.0, 1.0, 7)
    ys = jax.random.normal(getkey(), (7, 2))
    mask = jnp.ones((7, 2), bool)
    changed = ys.at[4].add(1.0)  # a change at row 4 reaches rows <= 4 backwards, >= 4 forwards
    for name, same, moved in (("forward-gru", slice(0, 4), slice(4, 7)), ("gru", slice(5, 7), slice(0, 5))):
        net = bd.models.encoders.as_encoder(name).make(2, 8, 4, key=jax.random.key(0))
        a, b = np.asarray(net(ts, ys, mask)), np.asarray(net(ts, changed, mask))
        np.testing.assert_array_equal(a[same], b[same])
        assert np.all(np.abs(a[moved] - b[moved]).max(axis=-1) > 0), name
    assert bd.models.LatentSDE.from_config(bd.models.LatentSDE(encoder="forward-gru").config()).encoder.name == "forward-gru"


@pytest.mark.slow
def test_a_gappy_series_forecasts_alike_as_absent_rows_or_empty_cells():
    data = bd.datasets.ornstein_uhlenbeck(n_series=24, n_times=40, irregular=False, missing=0.0,
                                          key=jax.random.key(0))
    rng = np.random.default_rng(0)
    gaps = np.sort(rng.choice(np.arange(1, 29), 9, replace=False))  # 30% of the first 30 rows
    keep = np.setdiff1d(np.arange(30), gaps)
    mask = data.mask.copy()
    mask[:, gaps] = False
    grid = bd.TimeSeries(data.ts[:, :30], np.where(mask, data.ys, np.nan)[:, :30], mask[:, :30])
    absent = bd.TimeSeries(data.ts[:, keep], data.ys[:, keep], data.mask[:, keep])
    truth = data.ys[:, 30:]
    scores = []
    for hist in (absent, grid):
        post = bd.fit(bd.models.LatentSDE(), hist, method="svi", key=jax.random.key(1), progress_bar=False,
                      warn=False)
        pred = post.predict(data.ts[:, 30:], key=jax.random.key(2), num_samples=400)
        scores.append((bd.metrics.coverage(pred, truth, level=0.9), bd.metrics.crps(pred, truth)))
    (cov_a, crps_a), (cov_e, crps_e) = scores
    assert abs(cov_a - cov_e) <= 0.05
    assert abs(crps_a / crps_e - 1) <= 0.05


def test_the_time_unit_can_hold_a_fixed_number_of_observation_spacings():
    from bayesde.models._common import fit_scaling, median_spacing

    ts = np.broadcast_to(np.arange(0.0, 100.0, 2.0), (2, 50))
    data = bd.TimeSeries(ts, np.random.default_rng(0).normal(size=(2, 50, 1)))
    assert median_spacing(data) == 2.0
    assert fit_scaling(data).time_scale == 98.0  # the span
    assert fit_scaling(data, steps_per_unit=10).time_scale == 20.0
    assert bd.models.LatentSDE().adapt(data).time_scale == 98.0
    assert bd.models.LatentSDE(steps_per_unit=10).adapt(data).time_scale == 20.0
    # Linear multiplicative noise keeps the span: its paths can blow up over many units.
    assert bd.models.LatentSDE(steps_per_unit=10, family="linear-noise").adapt(data).time_scale == 98.0


# ------------------------------------------------------ long records are read in windows
def _long_record():
    return bd.datasets.ornstein_uhlenbeck(n_series=1, n_times=40, key=jax.random.key(0))


def test_a_series_no_longer_than_the_window_is_read_whole_with_the_same_numbers():
    data = _long_record()
    batch = data.batch()
    q = Query(ts=jnp.asarray(data.ts[:, -1:] + np.array([[0.1, 0.2]])))
    out = []
    for window in (None, 40, 64):  # (the same time unit for all: the window also sets it)
        model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, window=window,
                                    steps_per_unit=1000).adapt(data)
        run = numpyro.handlers.seed(model.program, 0)
        tr = numpyro.handlers.trace(run).get_trace(batch)
        fc = numpyro.handlers.trace(run).get_trace(batch, q)
        out.append([np.asarray(tr[k]["fn"].log_factor if k != "y" else tr[k]["fn"].log_prob(tr[k]["value"]))
                    for k in ("y", "kl_z0", "kl_path", "forecast_score")] + [np.asarray(fc["f_out"]["value"])])
    for other in out[1:]:
        for a, b in zip(out[0], other):
            np.testing.assert_array_equal(a, b)


def test_a_long_record_trains_in_windows_and_forecasts_from_its_last_window():
    """Past `window` rows a series is read in windows: every row is in the likelihood once
    (the site keeps the data's shape, at any offset), each window starts its own path,
    and a forecast depends on the last window only."""
    data = _long_record()
    batch = data.batch()
    model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, window=10, forecast_holdout=0).adapt(data)
    whole = dataclasses.replace(model, window=None)
    assert model.time_scale == pytest.approx(10 * float(np.median(np.diff(data.ts[0]))))
    for seed in range(3):  # three random offsets
        tr = numpyro.handlers.trace(numpyro.handlers.seed(model.program, seed)).get_trace(batch)
        assert tr["y"]["value"].shape == (1, 40, 1)
        assert np.isfinite(float(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum()))
    q = Query(ts=jnp.asarray(data.ts[:, -1:] + np.array([[0.05, 0.1, 0.2]])))

    def forecast(m, bump_row):
        b = batch._replace(ys=batch.ys.at[0, bump_row].add(3.0))
        tr = numpyro.handlers.trace(numpyro.handlers.seed(m.program, 0)).get_trace(b, q)
        return np.asarray(tr["f_out"]["value"])

    base = forecast(model, 0)  # bump row 0: outside the last window (rows 30-39)
    np.testing.assert_array_equal(base, forecast(model, 5))
    assert not np.allclose(base, forecast(model, 35))  # inside it
    assert not np.allclose(forecast(whole, 0), forecast(whole, 5))  # read whole, every row counts


def test_a_run_saved_before_windows_existed_reads_its_series_whole():
    config = bd.models.LatentSDE().config()
    assert bd.models.LatentSDE.from_config(config).window == 64
    old = {k: v for k, v in config.items() if k != "window"}
    assert bd.models.LatentSDE.from_config(old).window is None


def test_the_time_grid_is_the_rows_grid_on_evenly_spaced_rows_and_differs_across_gaps():
    """`grid="time"` spends the steps of `grid="rows"` by time: on evenly spaced rows the two
    are one grid; across gaps they differ. (A window padded at its start differs too: its
    zero-length intervals get one step each and the real ones the rest.)"""
    data = bd.datasets.ornstein_uhlenbeck(n_series=3, n_times=40, irregular=False, key=jax.random.key(0))
    gappy = bd.TimeSeries(data.ts[:, np.r_[0:10, 18:40]], data.ys[:, np.r_[0:10, 18:40]])

    def run(series, grid, forecast=True):
        model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, grid=grid, window=None).adapt(series)
        b = series.batch()
        tr = numpyro.handlers.trace(numpyro.handlers.seed(model.program, 3)).get_trace(b)
        out = [np.asarray(tr["y"]["fn"].log_prob(tr["y"]["value"])), np.asarray(tr["kl_path"]["fn"].log_factor),
               np.asarray(tr["forecast_score"]["fn"].log_factor)]
        if forecast:
            q = Query(ts=jnp.asarray(series.ts[:, -1:] + np.array([[0.1, 0.3]])))
            out.append(np.asarray(numpyro.handlers.trace(numpyro.handlers.seed(model.program, 3))
                                  .get_trace(b, q)["f_out"]["value"]))
        return out

    for a, b in zip(run(data, "time"), run(data, "rows")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(run(gappy, "time", False)[1], run(gappy, "rows", False)[1])


def test_the_training_grid_steps_a_fraction_of_the_median_spacing_whatever_the_gaps():
    """Gaps as absent rows or as empty rows: about the same number of steps over the same
    span (`substeps` per median spacing), so about the same step length."""
    data = bd.datasets.ornstein_uhlenbeck(n_series=2, n_times=60, irregular=False, key=jax.random.key(0))
    gaps = np.sort(np.random.default_rng(0).choice(np.arange(1, 59), 18, replace=False))
    keep = np.setdiff1d(np.arange(60), gaps)
    mask = data.mask.copy()
    mask[:, gaps] = False
    empty = bd.TimeSeries(data.ts, np.where(mask, data.ys, np.nan), mask)
    absent = bd.TimeSeries(data.ts[:, keep], data.ys[:, keep])
    a, e = (bd.models.LatentSDE(substeps=2, window=None).adapt(d) for d in (absent, empty))
    assert e.steps_per_interval == pytest.approx(2.0)  # evenly spaced rows: substeps per interval
    assert a.steps_per_interval > 2.5  # 42 rows over the same span
    steps_absent, steps_empty = (len(keep) - 1) * a.steps_per_interval, 59 * e.steps_per_interval
    assert abs(steps_absent / steps_empty - 1) < 0.05
    # calendar months (mean spacing below the median) keep `substeps` per interval
    months = np.concatenate([[0.0], np.cumsum([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] * 3)])[None]
    assert bd.models.LatentSDE(substeps=2).adapt(bd.TimeSeries(months, np.zeros((1, 37, 1)))).steps_per_interval == 2.0
    # a few very long gaps raise the cost at most 4-fold
    ts = np.concatenate([np.arange(50.0), 50.0 + 1000.0 * np.arange(1, 6)])[None]
    lumpy = bd.TimeSeries(ts, np.zeros((1, 55, 1)))
    assert bd.models.LatentSDE(substeps=2).adapt(lumpy).steps_per_interval == pytest.approx(8.0)


def test_a_run_saved_before_the_time_grid_keeps_its_rows_grid():
    config = bd.models.LatentSDE().config()
    assert bd.models.LatentSDE.from_config(config).grid == "time"
    old = {k: v for k, v in config.items() if k != "grid"}
    assert bd.models.LatentSDE.from_config(old).grid == "rows"
    with pytest.raises(ValueError, match="LatentSDE.grid: expected 'time' or 'rows', got 'uniform'"):
        bd.models.LatentSDE(grid="uniform")


# ------------------------------------------------------------ calendar seasons of dated data
def _dated(step_days, n, unit, n_series=1):
    import pandas as pd

    dates = pd.Timestamp("2000-01-01") + pd.to_timedelta(np.arange(n) * step_days, unit="D")
    df = pd.DataFrame({"date": dates, "y": np.sin(np.arange(n, dtype=float))})
    return bd.TimeSeries.from_pandas(df, time="date", series=None, time_unit=unit)


def test_dated_data_get_the_calendar_cycles_they_are_sampled_finely_enough_to_show():
    from bayesde.models._common import calendar_periods

    assert calendar_periods(_dated(30.44, 60, "years")) == (1.0,)  # monthly, 5 years
    assert calendar_periods(_dated(30.44, 60, "days")) == (365.25,)  # the same in days
    assert calendar_periods(_dated(30.44, 18, "years")) == ()  # 1.5 years: not two cycles
    assert calendar_periods(_dated(365.25, 40, "years")) == ()  # yearly: too coarse for a season
    assert calendar_periods(_dated(1 / 24, 24 * 7, "hours")) == (24.0,)  # hourly for a week: a daily cycle
    assert calendar_periods(_long_record()) == ()  # plain numbers carry no calendar
    assert bd.models.LatentSDE().adapt(_dated(30.44, 60, "years")).seasons == (1.0,)
    assert bd.models.LatentSDE(seasons=None).adapt(_dated(30.44, 60, "years")).seasons == ()
    assert bd.models.LatentSDE(seasons=[12, 6]).seasons == (12.0, 6.0)


def test_the_prior_drift_knows_the_time_of_year_and_nothing_else_about_dates():
    """With a yearly season the forecast depends on the phase of the year: moving every
    time by half a year changes it, by a whole year does not."""
    data = _long_record()
    q = data.ts[:, -1:] + np.array([[0.5, 1.0, 2.0]])

    def forecast(shift):
        d = bd.TimeSeries(data.ts + shift, data.ys, data.mask)
        model = bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, seasons=(1.0,)).adapt(d)
        tr = numpyro.handlers.trace(numpyro.handlers.seed(model.program, 0)).get_trace(
            d.batch(), Query(ts=jnp.asarray(q + shift)))
        return np.asarray(tr["f_out"]["value"])

    base = forecast(0.0)
    whole_year, half_year = np.abs(forecast(1.0) - base).max(), np.abs(forecast(0.5) - base).max()
    assert whole_year < 1e-5 and half_year > 100 * whole_year


def test_a_run_saved_before_seasons_existed_has_none():
    config = bd.models.LatentSDE(seasons=(1.0,)).config()
    assert bd.models.LatentSDE.from_config(config).seasons == (1.0,)
    old = {k: v for k, v in config.items() if k != "seasons"}
    assert bd.models.LatentSDE.from_config(old).seasons == ()


def test_the_geometric_family_is_solved_in_log_coordinates_and_reads_a_positive_state():
    fam = bd.models.families.Geometric()
    x = jnp.array([-50.0, 0.0, 3.0])
    z = fam.readout(x)
    assert np.all(np.asarray(z) > 0) and np.all(np.isfinite(np.asarray(z)))
    np.testing.assert_allclose(np.asarray(z)[1:], np.exp([0.0, 3.0]), rtol=1e-6)
    net = fam.diffusion_net(3, 4, key=jax.random.key(0))
    # Additive noise in x = log z: the diffusion does not depend on the state.
    np.testing.assert_array_equal(np.asarray(fam.diffusion(net, 0.3, x)), np.asarray(fam.diffusion(net, 0.3, 2 * x)))


def test_a_run_saved_with_the_old_geometric_family_warns_on_load():
    config = bd.models.LatentSDE(family="geometric").config()
    assert bd.models.LatentSDE.from_config(config).family.name == "geometric"  # a new run: no warning
    old = {k: v for k, v in config.items() if k != "steps_per_unit"}
    with pytest.warns(UserWarning, match="old geometric family"):
        bd.models.LatentSDE.from_config(old)


def _sde_outputs(model, which, scale):
    """The Girsanov control `u` (`which="u"`) or the prior drift `h` (`"h"`) of `model` at a
    few states, that network's last layer scaled by `scale`."""
    name = {"u": "control", "h": "prior_drift"}[which]
    with numpyro.handlers.seed(rng_seed=0):
        nets = model._make_networks(1)
    last = getattr(nets, name).layers[-1]
    nets = eqx.tree_at(lambda n: getattr(n, name).layers[-1].weight, nets, scale * last.weight)
    h, u, _ = model._sde(nets)
    z = jnp.linspace(-30.0, 30.0, 7)[:, None] * jnp.ones((1, model.latent_dim))
    out = u(0.0, z, jnp.zeros((7, model.width))) if which == "u" else h(0.0, z, None)
    return np.asarray(out)


def _control_outputs(model, scale):
    return _sde_outputs(model, "u", scale)


def test_the_linear_noise_family_bounds_its_control():
    # g = σ(t) z, so an unbounded control makes the posterior drift's z ⊙ u grow like z²;
    # fits on an OU panel stopped on a non-finite loss within 100 steps before the bound.
    free = _control_outputs(bd.models.LatentSDE(family="linear-noise", control_bound=None), 1e3)
    bounded = _control_outputs(bd.models.LatentSDE(family="linear-noise"), 1e3)
    assert np.abs(free).max() > 100 and np.abs(bounded).max() <= 5.0
    # Small controls pass through (tanh is the identity near 0); the other families are free.
    small = _control_outputs(bd.models.LatentSDE(family="linear-noise"), 1e-3)
    np.testing.assert_allclose(small, _control_outputs(bd.models.LatentSDE(family="linear-noise",
                                                                            control_bound=None), 1e-3), rtol=2e-3)
    neural = _control_outputs(bd.models.LatentSDE(), 1e3)
    assert np.abs(neural).max() > 100
    assert np.abs(_control_outputs(bd.models.LatentSDE(control_bound=2.0), 1e3)).max() <= 2.0
    with pytest.raises(ValueError, match=r"LatentSDE.control_bound: expected 'auto' \(the family's own bound\), "
                                         r"None \(unbounded\) or a number > 0, got 0."):
        bd.models.LatentSDE(control_bound=0)


@pytest.mark.parametrize("family, field", [("linear-noise", "control_bound"), ("geometric", "diffusion_floor"),
                                           ("geometric", "drift_bound")])
def test_a_run_saved_before_a_family_default_existed_loads_without_it(family, field):
    config = bd.models.LatentSDE(family=family).config()
    assert getattr(bd.models.LatentSDE.from_config(config), field) == "auto"
    old = {k: v for k, v in config.items() if k != field}
    assert getattr(bd.models.LatentSDE.from_config(old), field) is None


def _diffusion_outputs(model, bias):
    """`g(t, z)` of `model` at a few times and states, the diffusion network's last bias set
    to `bias` (a large negative bias is a collapsed diffusion: σ ≈ 0)."""
    with numpyro.handlers.seed(rng_seed=0):
        nets = model._make_networks(1)
    nets = eqx.tree_at(lambda n: n.diffusion.mlp.layers[-1].bias, nets,
                       jnp.full_like(nets.diffusion.mlp.layers[-1].bias, bias))
    _, _, g = model._sde(nets)
    z = jnp.linspace(-1.0, 1.0, 5)[:, None] * jnp.ones((1, model.latent_dim))
    return np.asarray(jnp.stack([g(t, z, None) for t in (0.0, 0.5, 1.0)]))


def test_the_geometric_family_floors_its_diffusion():
    # Unfloored, the geometric family's ELBO drove σ(t) to 0.001 and left a damped ODE.
    collapsed = _diffusion_outputs(bd.models.LatentSDE(family="geometric", diffusion_floor=None), -30.0)
    floored = _diffusion_outputs(bd.models.LatentSDE(family="geometric"), -30.0)
    assert collapsed.max() < 1e-6
    np.testing.assert_allclose(floored, 0.05, rtol=1e-5)
    # Above the floor the scale maps linearly: floor + (1 − floor)·σ, never above 1.
    free = _diffusion_outputs(bd.models.LatentSDE(family="geometric", diffusion_floor=None), 0.3)
    np.testing.assert_allclose(_diffusion_outputs(bd.models.LatentSDE(family="geometric"), 0.3),
                               0.05 + 0.95 * free, rtol=1e-5)
    assert _diffusion_outputs(bd.models.LatentSDE(family="geometric"), 30.0).max() <= 1.0
    # The other families take no floor by default; any family takes one when asked.
    assert _diffusion_outputs(bd.models.LatentSDE(family="langevin"), -30.0).max() < 1e-6
    np.testing.assert_allclose(
        _diffusion_outputs(bd.models.LatentSDE(family="langevin", diffusion_floor=0.1), -30.0), 0.1, rtol=1e-5)
    with pytest.raises(ValueError, match=r"LatentSDE.diffusion_floor: expected 'auto' \(the family's own floor\), "
                                         r"None \(none\) or a number in \[0, 1\), got 1."):
        bd.models.LatentSDE(diffusion_floor=1)


def _drift_outputs(model, scale):
    return _sde_outputs(model, "h", scale)


def test_the_geometric_family_bounds_its_prior_drift():
    # The decoder reads exp(x): an unbounded drift let forecasts of a growing process blow up.
    free = _drift_outputs(bd.models.LatentSDE(family="geometric", drift_bound=None, seasons=()), 1e3)
    bounded = _drift_outputs(bd.models.LatentSDE(family="geometric", seasons=()), 1e3)
    assert np.abs(free).max() > 100 and np.abs(bounded).max() <= 5.0
    small = _drift_outputs(bd.models.LatentSDE(family="geometric", seasons=()), 1e-3)
    np.testing.assert_allclose(small, _drift_outputs(
        bd.models.LatentSDE(family="geometric", drift_bound=None, seasons=()), 1e-3), rtol=2e-3, atol=1e-6)
    assert np.abs(_drift_outputs(bd.models.LatentSDE(family="langevin", seasons=()), 1e3)).max() > 100
    with pytest.raises(ValueError, match=r"LatentSDE.drift_bound: expected 'auto' \(the family's own bound\), "
                                         r"None \(unbounded\) or a number > 0, got -1."):
        bd.models.LatentSDE(drift_bound=-1)


def test_the_linear_drift_starts_at_zero_and_changes_no_other_initial_weight():
    # Paired comparisons on the panel rely on it: with `linear_drift` the networks start from
    # the very weights they start from without it, and the prior drift is the network's.
    def init(model):
        with numpyro.handlers.seed(rng_seed=3):
            nets = model._make_networks(2)
        return nets

    plain, linear = init(bd.models.LatentSDE(seasons=())), init(bd.models.LatentSDE(seasons=(), linear_drift=True))
    assert plain.linear_drift is None and linear.linear_drift.shape == (4, 4)
    assert not np.any(np.asarray(linear.linear_drift))
    without = eqx.tree_at(lambda n: n.linear_drift, linear, None)
    leaves = lambda nets: jax.tree_util.tree_leaves(eqx.filter(nets, eqx.is_array))  # noqa: E731
    for a, b in zip(leaves(plain), leaves(without), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    model = bd.models.LatentSDE(seasons=(), linear_drift=True)
    z = jnp.linspace(-2.0, 2.0, 12).reshape(3, 4)
    rotate = jnp.array([[0.0, -5.0, 0, 0], [5.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    h0 = model._sde(linear)[0](0.0, z, None)
    h1 = model._sde(eqx.tree_at(lambda n: n.linear_drift, linear, rotate))[0](0.0, z, None)
    np.testing.assert_allclose(np.asarray(h1 - h0), np.asarray(z @ rotate.T), rtol=1e-5, atol=1e-5)


def test_an_own_posterior_drift_frees_the_paths_from_the_prior_and_keeps_the_girsanov_kl():
    # `posterior_drift=b`: the paths follow b + g u whatever the prior drift h is, and the KL is
    # ½ ∫ |(b − h)/g + u|² dt on the Euler grid; so the prior drift's gradient is the fit of h
    # to the posterior drift (Li et al.), not a path sensitivity.
    from bayesde.models._latent_sde import posterior_sde_with_kl

    ts = jnp.linspace(0.0, 1.0, 9)
    z0 = jnp.array([[0.5, -1.0]])
    noise = jax.random.normal(jax.random.key(0), (8, 1, 2))
    g = lambda t, z, a: jnp.full_like(z, 0.4)  # noqa: E731
    u = lambda t, z, a: jnp.tanh(z)  # noqa: E731
    b = lambda t, z, a: -z  # noqa: E731

    def solve(a):
        return posterior_sde_with_kl(lambda t, z, _: a * z, u, g, z0, ts, noise, posterior_drift=b)

    (zs1, kl1), (zs2, kl2) = solve(0.3), solve(-2.0)
    np.testing.assert_array_equal(np.asarray(zs1), np.asarray(zs2))
    z, dt = np.asarray(zs1[:-1]), np.diff(np.asarray(ts))[:, None]
    for a, kl in ((0.3, kl1), (-2.0, kl2)):
        want = np.sum(0.5 * np.sum(((-z - a * z) / 0.4 + np.tanh(z)) ** 2, -1) * dt, 0)
        np.testing.assert_allclose(np.asarray(kl), want, rtol=1e-5)
    shared, _ = posterior_sde_with_kl(b, u, g, z0, ts, noise)  # the shared form with h = b: same paths
    np.testing.assert_allclose(np.asarray(shared), np.asarray(zs1), rtol=1e-6)
    model = bd.models.LatentSDE(seasons=(), posterior_drift="own", linear_drift=True)
    with numpyro.handlers.seed(rng_seed=3):
        nets = model._make_networks(2)
    leaves = lambda tree: jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))  # noqa: E731
    for x, y in zip(leaves(nets.prior_drift), leaves(nets.posterior_drift), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # the copy starts at the prior's weights
    assert nets.posterior_linear_drift.shape == (4, 4)
    assert bd.models.LatentSDE.from_config(model.config()).posterior_drift == "own"


def test_the_log_forecast_score_is_best_at_the_forecasts_own_spread():
    # Eight draws of a forecast N(0, s²) scored at y ~ N(0, 1): the score's best s is the truth's
    # 1, where a Gaussian with the draws' variance (Dawid–Sebastiani) picks about 1.18.
    from scipy.stats import norm

    from bayesde.models._common import sample_log_score

    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(8, 200_000)), rng.normal(size=200_000)
    every = jnp.ones(y.shape, bool)
    spreads = np.linspace(0.7, 1.5, 17)
    ours = [float(sample_log_score(jnp.asarray(s * z), jnp.asarray(y), every)) for s in spreads]
    plain = [-norm.logpdf(y, s * z.mean(0), s * z.std(0, ddof=1)).mean() for s in spreads]
    assert abs(spreads[np.argmin(ours)] - 1.0) <= 0.05
    assert 1.1 <= spreads[np.argmin(plain)] <= 1.25
    draws, yy = rng.normal(size=(8, 3, 5)), rng.normal(size=(3, 5))
    where = rng.random((3, 5)) < 0.7
    want = -norm.logpdf(yy, draws.mean(0), np.sqrt(7 / 5 * draws.var(0, ddof=1)))[where].mean()
    np.testing.assert_allclose(float(sample_log_score(jnp.asarray(draws), jnp.asarray(yy), jnp.asarray(where))),
                               want, rtol=1e-5)
