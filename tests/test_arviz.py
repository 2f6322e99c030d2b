"""ArviZ as a first-class citizen: `Posterior.to_arviz()` feeds `az.loo`, `az.waic`,
`az.compare`, `az.plot_ppc`, `az.plot_trace` and `az.summary` as it is; the saved
`posterior.nc` is an InferenceData; the fit's diagnostics are ArviZ's numbers."""

import json
import warnings

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesde as bd

matplotlib.use("Agg")
az = pytest.importorskip("arviz")


def decay(batch, query=None):
    """Exponential decay per series, Normal noise: a plain NumPyro program with the
    sites the core reads (observed `y`, predicted `y_out`)."""
    n, _, d = batch.ys.shape
    rate = numpyro.sample("rate", dist.LogNormal(0.0, 0.5))
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
    with numpyro.plate("series", n):
        y0 = numpyro.sample("y0", dist.Normal(1.0, 1.0).expand([d]).to_event(1))

    def mean(ts):
        return y0[:, None, :] * jnp.exp(-rate * ts)[..., None]

    numpyro.sample("y", dist.Normal(mean(batch.ts), sigma).mask(batch.mask), obs=batch.ys)
    if query is not None:
        numpyro.sample("y_out", dist.Normal(mean(query.ts), sigma))


def _data(missing=False):
    ts = np.linspace(0.0, 2.0, 6)
    rng = np.random.default_rng(0)
    ys = np.stack([(1.0 + i) * np.exp(-0.7 * ts) for i in range(2)])[..., None]
    ys = ys + 0.05 * rng.normal(size=ys.shape)
    if missing:
        ys[1, 2, 0] = np.nan
    return bd.TimeSeries(ts, ys, names=["x"], series_ids=["north", "south"])


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def nuts(data):
    return bd.fit(decay, data, method="nuts", num_warmup=40, num_samples=40, num_chains=2,
                  chain_method="vectorized", key=jax.random.key(0), progress_bar=False, warn=False)


@pytest.fixture(scope="module")
def svi(data):
    return bd.fit(decay, data, method="svi", num_steps=100, num_samples=40, learning_rate=5e-2,
                  key=jax.random.key(1), progress_bar=False, warn=False)


@pytest.fixture(scope="module")
def idata(nuts):
    return nuts.to_arviz()


def _quiet(fn, *args, **kwargs):
    # Tiny fits give Pareto k warnings; the numbers are what these tests check.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_groups_dims_and_coords(idata, data):
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                  "observed_data", "constant_data"):
        assert group in idata.groups(), group
    for group in ("log_likelihood", "posterior_predictive"):
        y = idata[group]["y"]
        assert y.dims == ("chain", "draw", "series", "time", "variable")
        assert y.shape == (2, 40, 2, 6, 1)
    obs = idata.observed_data["y"]
    assert obs.dims == ("series", "time", "variable")
    assert list(obs["series"].values) == ["north", "south"]
    assert list(obs["variable"].values) == ["x"]
    np.testing.assert_array_equal(obs["time"].values, data.ts[0])
    np.testing.assert_array_equal(obs.values, data.ys)
    assert "y_out" not in idata.posterior_predictive


def test_log_likelihood_is_numpyro_pointwise(nuts, idata, data):
    flat = {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in nuts.samples.items()}
    ref = numpyro.infer.log_likelihood(decay, flat, data.batch())["y"]
    np.testing.assert_allclose(idata.log_likelihood["y"].values.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["nuts", "svi"])
def test_loo_and_waic_are_finite(which, request, data):
    idata = request.getfixturevalue(which).to_arviz()
    loo, waic = _quiet(az.loo, idata), _quiet(az.waic, idata)
    assert np.isfinite(loo.elpd_loo) and np.isfinite(waic.elpd_waic)
    assert loo.n_data_points == data.ys.size


def test_compare_nuts_with_svi(idata, svi):
    table = _quiet(az.compare, {"nuts": idata, "svi": svi.to_arviz()})
    assert sorted(table.index) == ["nuts", "svi"]
    assert np.all(np.isfinite(table["elpd_loo"]))
    np.testing.assert_allclose(table["weight"].sum(), 1.0, rtol=1e-6)


def test_missing_values_are_left_out_of_the_likelihood(nuts, idata):
    from bayesde.inference._engines import EngineResult
    from bayesde.inference._posterior import Posterior

    # The same draws, judged against the data with one value missing (south, t=0.8).
    data = _data(missing=True)
    result = EngineResult(samples=nuts.samples, params={}, sample_stats=nuts.sample_stats, loss=None, info={})
    post = Posterior(nuts.model, data, nuts.method, result, key_data=nuts.key_data, method_name="nuts")
    gaps = post.to_arviz()
    n_obs = int(data.mask.sum())
    assert n_obs == data.ys.size - 1
    for group in ("log_likelihood", "posterior_predictive"):
        assert gaps[group]["y"].dims == ("chain", "draw", "obs")
        assert gaps[group]["y"].shape == (2, 40, n_obs)
    obs = gaps.observed_data["y"]
    np.testing.assert_array_equal(obs.values, data.ys[data.mask])
    south = obs["series"].values == "south"
    assert 0.8 not in np.round(obs["time"].values[south], 6)
    # Every kept value has the log-likelihood it has in the complete data.
    full = idata.log_likelihood["y"].values
    np.testing.assert_allclose(gaps.log_likelihood["y"].values, full[:, :, data.mask], rtol=1e-6)
    loo = _quiet(az.loo, gaps)
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == n_obs


def test_prediction_at_new_times_goes_to_predictions(nuts, data):
    pred = nuts.predict(np.linspace(0.0, 3.0, 4), key=jax.random.key(5))
    idata = nuts.to_arviz(pred)
    assert idata.predictions["y"].dims == ("chain", "draw", "series", "time", "variable")
    np.testing.assert_array_equal(idata.predictions["time"].values, np.linspace(0.0, 3.0, 4))
    np.testing.assert_array_equal(idata.predictions["y"].values.reshape(pred.samples.shape), pred.samples)
    assert idata.posterior_predictive["y"].shape == (2, 40, 2, 6, 1)  # still at the training times
    same = nuts.predict(data.ts, key=jax.random.key(6))
    in_sample = nuts.to_arviz(same, log_likelihood=False)
    assert "predictions" not in in_sample.groups() and "log_likelihood" not in in_sample.groups()
    np.testing.assert_array_equal(in_sample.posterior_predictive["y"].values.reshape(same.samples.shape),
                                  same.samples)


def test_plot_ppc_and_plot_trace_run(idata):
    import matplotlib.pyplot as plt

    ax = _quiet(az.plot_ppc, idata, num_pp_samples=10)
    assert np.size(ax) >= 1
    axes = az.plot_trace(idata, var_names=["rate", "sigma"])
    assert axes.shape == (2, 2)
    plt.close("all")


def test_diagnostics_and_summary_are_arviz_numbers(nuts, idata):
    table = nuts.summary()
    ref = az.summary(idata)
    assert list(table.columns) == list(ref.columns) and list(table.index) == list(ref.index)
    np.testing.assert_array_equal(table.to_numpy(), ref.to_numpy())
    exact = az.summary(idata, round_to="none")
    d = nuts.diagnostics()
    assert d["max_rhat"] == exact["r_hat"].max()
    assert d["min_ess"] == d["min_ess_bulk"] == exact["ess_bulk"].min()
    assert d["min_ess_tail"] == exact["ess_tail"].min()
    assert d["max_rhat_param"] == exact["r_hat"].idxmax()
    assert d["divergences"] == int(idata.sample_stats["diverging"].sum())


def test_saved_posterior_nc_is_inference_data(nuts, tmp_path):
    nuts.save(tmp_path / "run")
    saved = az.from_netcdf(str(tmp_path / "run" / "posterior.nc"))
    assert "posterior" in saved.groups() and "sample_stats" in saved.groups()
    assert sorted(saved.posterior.data_vars) == sorted(nuts.samples)
    for k, v in nuts.samples.items():
        np.testing.assert_array_equal(saved.posterior[k].values, v)
    np.testing.assert_array_equal(saved.sample_stats["diverging"].values, nuts.sample_stats["diverging"])
    loaded = bd.load(tmp_path / "run")
    for k, v in nuts.samples.items():
        np.testing.assert_array_equal(loaded.samples[k], v)
    assert loaded.diagnostics() == nuts.diagnostics()


def test_svi_run_keeps_its_loss_and_runs_in_the_old_layout_still_load(svi, tmp_path):
    import xarray as xr

    from bayesde._io import _sha256

    run = tmp_path / "run"
    svi.save(run)
    saved = az.from_netcdf(str(run / "posterior.nc"))
    np.testing.assert_array_equal(saved["loss"]["loss"].values, svi.loss)
    # A run written before posterior.nc was an InferenceData: flat `sample:`/`loss` variables.
    flat = {f"sample:{k}": xr.Variable(("chain", "draw") + tuple(f"{k}_dim_{i}" for i in range(np.ndim(v) - 2)), v)
            for k, v in svi.samples.items()}
    flat["loss"] = xr.Variable(("step",), np.asarray(svi.loss))
    (run / "posterior.nc").unlink()
    xr.Dataset(flat).to_netcdf(run / "posterior.nc", engine="h5netcdf")
    meta = json.loads((run / "bayesde.json").read_text())
    meta["checksums"]["posterior.nc"] = _sha256(run / "posterior.nc")
    (run / "bayesde.json").write_text(json.dumps(meta))
    old = bd.load(run)
    for k, v in svi.samples.items():
        np.testing.assert_array_equal(old.samples[k], v)
    np.testing.assert_array_equal(old.loss, svi.loss)


@pytest.mark.slow
def test_hare_lynx_mechanistic_vs_neural_ode_by_loo():
    """The issue's must-show: az.compare between the Lotka–Volterra ODE and a Bayesian
    neural ODE, both fitted by NUTS on the hare–lynx pelts (tiny sizes)."""
    hist, _ = bd.datasets.load("hare_lynx").split(at=15.0)
    sizes = dict(method="nuts", num_warmup=40, num_samples=40, num_chains=2, chain_method="vectorized",
                 progress_bar=False, warn=False)
    lv = bd.models.ODE(bd.models.lotka_volterra_field,
                       priors=bd.models.lotka_volterra_priors(beta=0.025, delta=0.025), observation="lognormal")
    node = bd.models.BayesianNeuralODE(dim=2, width=4, depth=1, observation="lognormal")
    posts = {"lotka_volterra": bd.fit(lv, hist, key=jax.random.key(0), **sizes),
             "neural_ode": bd.fit(node, hist, key=jax.random.key(0), **sizes)}
    idatas = {k: p.to_arviz() for k, p in posts.items()}
    for k, idata in idatas.items():
        assert idata.log_likelihood["y"].dims == ("chain", "draw", "series", "time", "variable"), k
        assert list(idata.observed_data["variable"].values) == ["hare", "lynx"]
        assert list(idata.observed_data["series"].values) == ["hudson_bay"]
    table = _quiet(az.compare, idatas)
    assert sorted(table.index) == ["lotka_volterra", "neural_ode"]
    assert np.all(np.isfinite(table["elpd_loo"]))
