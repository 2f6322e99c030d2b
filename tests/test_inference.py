"""`fit` over every engine on Lotka–Volterra and the Bayesian neural ODE: recovery,
calibration, agreement between engines, determinism, save/load, checkpoint/resume."""

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesde as bd

from bayesde.inference._fit import _check_samplable
from bayesde.models._ode import WALK_PARAM

PARAMS = ("alpha", "beta", "gamma", "delta")


def lv_model():
    return bd.models.ODE(bd.models.lotka_volterra_field, bd.models.lotka_volterra_priors())


@pytest.fixture(scope="module")
def lv():
    data = bd.datasets.lotka_volterra(n_series=3, n_times=40, t_max=15.0, key=jax.random.key(0))
    hist, fut = data.split(at=10.0)
    return data, hist, fut


@pytest.fixture(scope="module")
def lv_nuts(lv):
    _, hist, _ = lv
    # A dense mass matrix: Lotka–Volterra's four rates are strongly correlated, and with a diagonal one
    # these draws gave an ESS of 114, just over the test's 100, in 50 s; dense: 370 in 36 s.
    return bd.fit(lv_model(), hist, method="nuts", num_warmup=250, num_samples=250, num_chains=2,
                  dense_mass=True, key=jax.random.key(1), progress_bar=False)


@pytest.fixture(scope="module")
def lv_blackjax(lv):
    _, hist, _ = lv
    return bd.fit(lv_model(), hist, method="blackjax-nuts", num_warmup=150, num_samples=200,
                  num_chains=2, key=jax.random.key(1), progress_bar=False)


@pytest.fixture(scope="module")
def bnode_svi(lv):
    _, hist, _ = lv
    model = bd.models.BayesianNeuralODE(state_dim=2, width=16, depth=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return bd.fit(model, hist, method="svi", num_steps=1500, key=jax.random.key(1), progress_bar=False)


def test_nuts_recovers_lotka_volterra_parameters(lv, lv_nuts):
    data = lv[0]
    assert lv_nuts.samples["alpha"].shape == (2, 250)
    for k in PARAMS:
        lo, hi = np.quantile(lv_nuts.samples[k], [0.05, 0.95])
        assert lo <= data.truth[k] <= hi, (k, lo, hi, data.truth[k])
    d = lv_nuts.diagnostics()
    assert d["divergences"] == 0 and d["max_rhat"] < 1.05 and d["min_ess"] > 100


def test_nuts_forecast_coverage(lv, lv_nuts):
    _, _, fut = lv
    pred = lv_nuts.predict(fut.ts, key=jax.random.key(2))
    assert pred.samples.shape == (500, 3, fut.n_times, 2)
    cov = bd.metrics.coverage(pred, fut, level=0.9)
    assert 0.8 <= cov <= 1.0, cov


@pytest.mark.slow
def test_blackjax_agrees_with_numpyro(lv_nuts, lv_blackjax):
    for k in PARAMS + ("sigma",):
        a, b = lv_nuts.samples[k], lv_blackjax.samples[k]
        sd = max(a.std(), b.std())
        assert abs(a.mean() - b.mean()) < 3 * sd, (k, a.mean(), b.mean(), sd)
    assert lv_blackjax.diagnostics()["divergences"] == 0


def test_bayesian_neural_ode_svi_forecast_coverage(lv, bnode_svi):
    _, _, fut = lv
    pred = bnode_svi.predict(fut.ts, key=jax.random.key(2))
    cov = bd.metrics.coverage(pred, fut, level=0.9)
    assert 0.75 <= cov <= 1.0, cov
    assert bnode_svi.loss[-100:].mean() < bnode_svi.loss[:100].mean()


@pytest.mark.slow
def test_bayesian_neural_ode_nuts_forecast_coverage(lv):
    _, hist, fut = lv
    model = bd.models.BayesianNeuralODE(state_dim=2, width=8, depth=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        post = bd.fit(model, hist, method="nuts", num_warmup=150, num_samples=150, max_tree_depth=6,
                      key=jax.random.key(3), progress_bar=False)
    pred = post.predict(fut.ts, key=jax.random.key(2))
    cov = bd.metrics.coverage(pred, fut, level=0.9)
    assert 0.75 <= cov <= 1.0, cov


def test_same_key_same_numbers_and_save_load(tmp_path, lv, bnode_svi):
    _, hist, fut = lv
    a = bnode_svi.predict(fut.ts, key=jax.random.key(5), num_samples=50)
    b = bnode_svi.predict(fut.ts, key=jax.random.key(5), num_samples=50)
    c = bnode_svi.predict(fut.ts, key=jax.random.key(6), num_samples=50)
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)
    bnode_svi.save(tmp_path / "run")
    again = bd.load(tmp_path / "run")
    assert isinstance(again.model, bd.models.BayesianNeuralODE)
    for k, v in bnode_svi.samples.items():
        assert np.array_equal(v, again.samples[k])
    assert np.array_equal(again.loss, bnode_svi.loss)
    d = again.predict(fut.ts, key=jax.random.key(5), num_samples=50)
    assert np.array_equal(a.samples, d.samples)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        bnode_svi.save(tmp_path / "run")
    bnode_svi.save(tmp_path / "run", overwrite=True)


def test_mechanistic_run_save_load(tmp_path, lv, lv_nuts):
    _, _, fut = lv
    lv_nuts.save(tmp_path / "lv")
    again = bd.load(tmp_path / "lv")
    assert again.model.vector_field is bd.models.lotka_volterra_field
    assert np.array_equal(again.sample_stats["diverging"], lv_nuts.sample_stats["diverging"])
    a = lv_nuts.predict(fut.ts, key=jax.random.key(7), num_samples=20)
    b = again.predict(fut.ts, key=jax.random.key(7), num_samples=20)
    assert np.array_equal(a.samples, b.samples)


@pytest.mark.slow  # the default suite checks this on every engine in test_determinism.py
def test_same_key_same_fit(lv):
    _, hist, _ = lv
    model = bd.models.BayesianNeuralODE(state_dim=2, width=4, depth=1)
    kw = dict(method="svi", num_steps=30, key=jax.random.key(4), progress_bar=False, warn=False)
    a, b = bd.fit(model, hist, **kw), bd.fit(model, hist, **kw)
    assert np.array_equal(a.loss, b.loss)
    for k in a.samples:
        assert np.array_equal(a.samples[k], b.samples[k])


def _gauss_program(batch, query=None):
    # A closed-form program for the engine-mechanics tests: they test the SVI loop, not a
    # model, so they should not pay for compiling an ODE solver.
    import numpyro

    mu = numpyro.sample("mu", dist.Normal(0, 100).expand([2]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(50.0))
    numpyro.sample("y", dist.Normal(mu, s).mask(batch.mask), obs=batch.ys)


def _ordered_program(batch, query=None):
    # Sites named against the alphabet (a compiled result comes back sorted), one constrained.
    import numpyro

    z = numpyro.sample("z", dist.Normal(0, 10).expand([2]).to_event(1))
    a = numpyro.sample("a", dist.LogNormal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(z, a).mask(batch.mask), obs=batch.ys)


def test_the_compiled_initialisation_finds_numpyros_starting_point_in_the_models_order(lv):
    """`initialize` runs NumPyro's search for a starting point as one compiled program;
    its values, their order (an autoguide draws its sites in that order) and its energy are
    those of NumPyro's eager single-key call, and `compiled_initialisation` hands NumPyro's
    callers their own function back, also after an error."""
    import numpyro.infer.autoguide
    import numpyro.infer.hmc
    from numpyro.infer import init_to_median
    from numpyro.infer.util import initialize_model

    from bayesde.inference._init import compiled_initialisation, initialize

    batch = lv[1].batch()
    kw = dict(model_args=(batch,), init_strategy=init_to_median(num_samples=15))
    eager, compiled = (fn(jax.random.key(3), _ordered_program, **kw) for fn in (initialize_model, initialize))
    assert list(compiled.param_info.z) == list(eager.param_info.z) == ["z", "a"]
    for part in ("z", "z_grad"):
        for name in ("z", "a"):
            np.testing.assert_allclose(getattr(compiled.param_info, part)[name],
                                       getattr(eager.param_info, part)[name], rtol=1e-6)
    np.testing.assert_allclose(compiled.param_info.potential_energy, eager.param_info.potential_energy, rtol=1e-6)
    keys = jax.random.split(jax.random.key(3), 2)  # a batch of keys is NumPyro's own call
    np.testing.assert_array_equal(initialize(keys, _ordered_program, **kw).param_info.z["z"],
                                  initialize_model(keys, _ordered_program, **kw).param_info.z["z"])

    with pytest.raises(RuntimeError, match="inside"):
        with compiled_initialisation():
            assert numpyro.infer.autoguide.initialize_model is initialize
            assert numpyro.infer.hmc.initialize_model is initialize
            raise RuntimeError("inside")
    assert numpyro.infer.autoguide.initialize_model is initialize_model
    assert numpyro.infer.hmc.initialize_model is initialize_model


def test_resume_equals_uninterrupted(tmp_path, lv):
    _, hist, _ = lv
    kw = dict(method="svi", key=jax.random.key(4), progress_bar=False, warn=False, chunk_size=10)
    full = bd.fit(_gauss_program, hist, num_steps=40, **kw)
    # An "interrupted" run: it checkpointed at step 20 and stopped.
    bd.fit(_gauss_program, hist, num_steps=20, checkpoint_every=20, checkpoint_dir=str(tmp_path / "ck"), **kw)
    resumed = bd.fit(_gauss_program, hist, num_steps=40, resume=str(tmp_path / "ck"), **kw)
    assert np.array_equal(full.loss, resumed.loss)
    assert sorted(full.params) == sorted(resumed.params) and full.params
    for k in full.params:
        assert np.array_equal(full.params[k], resumed.params[k])


def test_runs_of_any_length_compile_the_same_program(lv, monkeypatch):
    """The run's length is an argument of the compiled SVI chunk, not a constant in it, so
    a refit with another `num_steps` reuses the compiled program (XLA's persistent cache
    keys on the program's text). The last chunk of a run still stops at `num_steps`."""
    from bayesde.inference import _svi

    _, hist, _ = lv
    calls = []

    def recording(svi, chunk, dp):
        fn = real(svi, chunk, dp)

        def run(*args):
            calls.append((fn, args))
            return fn(*args)

        return run

    real = _svi._chunk_fn
    monkeypatch.setattr(_svi, "_chunk_fn", recording)
    kw = dict(method="svi", key=jax.random.key(4), progress_bar=False, warn=False, chunk_size=10)
    short, long = bd.fit(_gauss_program, hist, num_steps=15, **kw), bd.fit(_gauss_program, hist, num_steps=30, **kw)
    assert len(short.loss) == 15 and len(long.loss) == 30
    np.testing.assert_array_equal(short.loss, long.loss[:15])
    texts = {fn.lower(*args).as_text() for fn, args in calls}
    assert len(calls) == 5 and len(texts) == 1


def test_nan_loss_stops_and_keeps_finite_params(lv):
    _, hist, _ = lv
    with pytest.warns(RuntimeWarning, match="the SVI loss became NaN/inf at step") as caught:
        post = bd.fit(_gauss_program, hist, method="svi", num_steps=200, learning_rate=1e6,
                      optimizer=None, key=jax.random.key(0), progress_bar=False, warn=False,
                      chunk_size=50)
    # The warning points at the line that called `fit`, not into the engine.
    assert [w.filename for w in caught if "NaN/inf" in str(w.message)] == [__file__]
    assert post.info.stopped_early and post.info.stopped_at == len(post.loss)
    assert all(np.all(np.isfinite(v)) for v in post.params.values())
    assert len(post.loss) < 200 and np.all(np.isfinite(post.loss))
    assert np.all(np.isfinite(post.samples["s"])) and np.all(post.samples["s"] > 0)


def test_plain_numpyro_function(lv):
    import numpyro

    _, hist, _ = lv

    def program(batch, query=None):
        mu = numpyro.sample("mu", dist.Normal(0, 100).expand([2]).to_event(1))
        s = numpyro.sample("s", dist.HalfNormal(50.0))
        numpyro.sample("y", dist.Normal(mu, s).mask(batch.mask), obs=batch.ys)
        if query is not None:
            n, t = query.ts.shape
            numpyro.sample("y_out", dist.Normal(mu, s).expand([n, t, 2]))

    post = bd.fit(program, hist, method="nuts", num_warmup=100, num_samples=100,
                  key=jax.random.key(0), progress_bar=False)
    mean = np.nanmean(hist.ys, axis=(0, 1))
    assert np.allclose(post.samples["mu"].mean(axis=(0, 1)), mean, rtol=0.1)


def _diverging_program(batch, query=None):
    """A constant mean whose forecast draws blow up after time 5 (a stand-in for a path
    that diverges over the horizon)."""
    import jax.numpy as jnp
    import numpyro

    d = batch.ys.shape[-1]
    mu = numpyro.sample("mu", dist.Normal(0, 100).expand([d]).to_event(1))
    numpyro.sample("y", dist.Normal(mu, 1.0).mask(batch.mask), obs=batch.ys)
    if query is not None:
        blow = jnp.where(query.ts > 5.0, jnp.inf, 0.0)[..., None]
        numpyro.sample("y_out", dist.Normal(mu + blow, 1.0))


def test_predict_warns_when_draws_diverge(lv):
    _, hist, _ = lv
    post = bd.fit(_diverging_program, hist, method="svi", num_steps=20, key=jax.random.key(0),
                  progress_bar=False, warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # finite, ordinary draws: no warning
        post.predict(np.array([1.0, 2.0]), key=jax.random.key(1), num_samples=20)
    with pytest.warns(RuntimeWarning) as caught:
        post.predict(np.array([1.0, 6.0]), key=jax.random.key(1), num_samples=20)
    msg = [str(w.message) for w in caught if "diverged" in str(w.message)]
    assert msg == [
        "predict: 20 of 20 draws diverged (not finite, or more than 1000 data sds from the data's median), "
        f"first at series 0, time 6, {hist.names[0]!r}; intervals read from them are not a forecast. Try a "
        "shorter horizon, another model or family (LatentSDE: family='langevin'), or refit with another key "
        "and check post.info."
    ]
    assert [w.filename for w in caught if "diverged" in str(w.message)] == [__file__]


def test_predict_counts_draws_far_outside_the_data_as_diverged(lv):
    from bayesde.inference._predictive import DIVERGED_SDS, warn_if_diverged

    _, hist, _ = lv
    vals = np.where(hist.mask, hist.ys, np.nan)
    centre, sd = np.nanmedian(vals, axis=(0, 1)), np.nanstd(vals, axis=(0, 1))
    n, d = hist.n_series, hist.dim
    y = np.broadcast_to(centre, (4, n, 3, d)).copy()
    ts = np.tile(np.arange(3.0), (n, 1))
    y[2, 1, 2, 1] = centre[1] + 0.99 * DIVERGED_SDS * sd[1]  # far, but inside the bound
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warn_if_diverged(y, ts, hist)
    y[3, 1, 2, 1] = centre[1] - 1.01 * DIVERGED_SDS * sd[1]
    with pytest.warns(RuntimeWarning, match=rf"1 of 4 draws diverged .* first at series 1, time 2, {hist.names[1]!r}"):
        warn_if_diverged(y, ts, hist)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"method": "hmc-please"}, ValueError, "fit: unknown method 'hmc-please'"),
        ({"method": "svi", "num_steps": 0}, ValueError, "SVI.num_steps: expected a positive integer, got 0."),
        ({"method": "nuts", "target_accept_prob": 1.5}, ValueError, "NUTS.target_accept_prob: expected a number in (0, 1), got 1.5."),
        ({"method": "svi", "batch_size": True}, ValueError, "SVI.batch_size: expected a positive integer or None, got True."),
        ({"method": "svi", "checkpoint_every": 0}, ValueError, "SVI.checkpoint_every: expected a positive integer or None, got 0."),
        ({"method": "svi", "patience": 0}, ValueError, "SVI.patience: expected a positive integer or None, got 0."),
        ({"method": "svi", "min_steps": -1}, ValueError, "SVI.min_steps: expected a non-negative integer, got -1."),
        ({"method": "svi", "optimizer": "adam"}, ValueError, "SVI.optimizer: expected an optax GradientTransformation"),
        ({"method": "blackjax-nuts", "max_tree_depth": 0}, ValueError, "BlackJAXNUTS.max_tree_depth: expected a positive integer, got 0."),
        ({"method": "nuts", "num_steps": 5}, ValueError, "fit: 'num_steps' is not an option of method 'nuts'"),
        ({"method": "svi", "batch_size": 99}, ValueError, "fit: batch_size=99 exceeds the 3 series in data."),
        ({"method": "svi", "key": 0}, TypeError, "fit: key must be a JAX PRNG key"),
    ],
)
def test_fit_refuses_bad_arguments_before_compiling(lv, kwargs, exc, message):
    _, hist, _ = lv
    kwargs = {"key": jax.random.key(0), **kwargs}
    with pytest.raises(exc) as e:
        bd.fit(bd.models.BayesianNeuralODE(state_dim=2), hist, **kwargs)
    assert str(e.value).startswith(message)


def test_model_refuses_mismatched_data(lv):
    _, hist, _ = lv
    with pytest.raises(ValueError, match=r"BayesianNeuralODE\.(state_)?dim: the model has (state_)?dim=3 but the data has 2"):
        bd.fit(bd.models.BayesianNeuralODE(state_dim=3), hist, key=jax.random.key(0))


def test_to_arviz_groups(lv, lv_nuts):
    idata = lv_nuts.to_arviz()
    for group in ("posterior", "posterior_predictive", "sample_stats", "observed_data", "constant_data"):
        assert hasattr(idata, group), group
    assert idata.posterior["alpha"].shape == (2, 250)
    assert idata.observed_data["y"].shape == (3, lv[1].n_times, 2)
    assert "diverging" in idata.sample_stats


# ------------------------------------------------------- BayesianNeuralODE's forecast walk
# `ρ` is fitted only by forecasts of held-back tails the likelihood does not see; the walk
# widens forecasts past the last observation and leaves the history alone; engines that
# only sample fit the model without it.


def _trace(model, batch, params=None):
    program = model.program if params is None else numpyro.handlers.substitute(model.program, data=params)
    return numpyro.handlers.trace(numpyro.handlers.seed(program, 0)).get_trace(batch)


def test_the_walk_is_fitted_by_the_held_back_score_and_moves_nothing_else(lv, bnode_svi):
    _, hist, _ = lv
    post = bnode_svi
    assert np.all(np.abs(np.asarray(post.params[WALK_PARAM]) - np.log(0.3)) > 1e-3)  # fitted, not left at its start
    latent = {k: jnp.asarray(np.asarray(v)[0, 0]) for k, v in post.samples.items()}

    def score(values):
        return -_trace(post.model, hist.batch(), values)["forecast_score"]["fn"].log_factor

    grads = jax.grad(score)({**post.params, **latent})
    moved = sorted(k for k, g in grads.items() if float(jnp.max(jnp.abs(g))) > 0)
    assert moved == [WALK_PARAM]


def test_the_held_back_tails_reach_the_score_and_not_the_likelihood(lv):
    _, hist, _ = lv

    def scores(every, series):
        model = bd.models.BayesianNeuralODE(state_dim=2, width=4, depth=1, forecast_series_every=every).adapt(hist)
        out = []
        for bump in (0.0, 5.0):
            batch = hist.batch()
            tr = _trace(model, batch._replace(ys=batch.ys.at[series, -1].add(bump)))
            out.append((float(tr["y"]["fn"].log_prob(tr["y"]["value"]).sum()),
                        float(tr["forecast_score"]["fn"].log_factor)))
        return out

    (y0, s0), (y1, s1) = scores(2, 1)  # series 1 is held back: its tail reaches only the score
    assert y1 == y0 and s1 != s0
    (y0, s0), (y1, s1) = scores(2, 2)  # series 2 is fitted on its whole span and not scored
    assert y1 != y0 and s1 == s0
    (y0, s0), (y1, s1) = scores(4, 2)  # fewer series than 4: every series' tail is held back
    assert y1 == y0 and s1 != s0


def _with_walk(post, log_rho):
    other = copy.copy(post)
    other.params = {**post.params, WALK_PARAM: jnp.full_like(post.params[WALK_PARAM], log_rho)}
    return other


def test_the_walk_widens_the_forecast_with_the_horizon_and_leaves_the_history(lv, bnode_svi):
    _, hist, _ = lv
    walk_fit = bnode_svi
    q = np.concatenate([hist.ts[:, :3], hist.ts[:, -1:] + np.array([0.5, 2.0, 8.0])], axis=1)
    narrow = np.asarray(_with_walk(walk_fit, -20.0).predict(q, key=jax.random.key(4), num_samples=64).f_samples)
    wide = np.asarray(_with_walk(walk_fit, 0.0).predict(q, key=jax.random.key(4), num_samples=64).f_samples)
    np.testing.assert_allclose(wide[:, :, :3], narrow[:, :, :3], rtol=1e-5, atol=1e-6)
    extra = wide[:, :, 3:].std(axis=0).mean(axis=(0, 2)) - narrow[:, :, 3:].std(axis=0).mean(axis=(0, 2))
    assert 0 < extra[0] < extra[1] < extra[2]  # the walk's spread grows with the horizon


def test_engines_that_only_sample_fit_the_model_without_the_walk(lv):
    _, hist, _ = lv
    model = bd.models.BayesianNeuralODE(state_dim=2, width=2, depth=1)
    assert model.for_engine(bd.SVI()) is model
    off = model.for_engine(bd.NUTS())
    assert off.forecast_holdout == 0.0 and model.forecast_holdout == 0.25
    sites = _trace(off.adapt(hist), hist.batch())
    assert WALK_PARAM not in sites and "forecast_score" not in sites
    # What `fit` checks before NUTS runs: without `for_engine` the walk's parameter would be refused.
    with pytest.raises(ValueError, match=r"BayesianNeuralODE has 1 parameters that are point estimates "
                                         r"\(neural_ode\.forecast_log_walk\)"):
        _check_samplable(model.adapt(hist), hist, "nuts", jax.random.key(0))
    _check_samplable(model.adapt(hist).for_engine(bd.NUTS()), hist, "nuts", jax.random.key(0))


def test_walk_settings_are_checked_and_old_runs_load_without_it(bnode_svi):
    walk_fit = bnode_svi
    with pytest.raises(ValueError, match=r"BayesianNeuralODE\.forecast_holdout: expected a fraction in \[0, 1\)"):
        bd.models.BayesianNeuralODE(state_dim=1, forecast_holdout=1.0)
    with pytest.raises(ValueError, match=r"BayesianNeuralODE\.forecast_series_every: expected a positive integer"):
        bd.models.BayesianNeuralODE(state_dim=1, forecast_series_every=0)
    config = {k: v for k, v in walk_fit.model.config().items() if k != "forecast_holdout"}
    assert type(walk_fit.model).from_config(config).forecast_holdout == 0.0
    with_ou = bd.models.BayesianNeuralODE(state_dim=2, discrepancy="ou")
    assert with_ou._walk_split() == (0.0, 1)  # the OU discrepancy continues the residuals instead
