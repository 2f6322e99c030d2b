"""`bd.backtest`: rolling-origin coverage / width / CRPS per horizon step, and the
conformal adjustment computed from it."""

import warnings

import jax
import matplotlib
import numpy as np
import pytest
from scipy import stats

import bayesde as bd
from _programs import normal_mean
from bayesde.models._function import FunctionModel

matplotlib.use("Agg")


class _Amortised(FunctionModel):
    amortized = True


class FixedPosterior(bd.Posterior):
    """A Posterior whose predictive is the same known draws at every point, so the
    scores can be computed by hand."""

    def __init__(self, draws, data, amortized=True):
        self.draws = np.asarray(draws, dtype=float)
        self.data = data
        self.model = _Amortised(normal_mean) if amortized else FunctionModel(normal_mean)

    def predict(self, ts, *, key, num_samples=None, data=None, treatments=None, devices=None):
        data = self.data if data is None else data
        ts = np.broadcast_to(np.asarray(ts, dtype=float), (data.n_series, np.shape(ts)[-1]))
        samples = np.broadcast_to(self.draws[:, None, None, None], (len(self.draws),) + ts.shape + (data.dim,))
        return bd.Prediction(samples, ts, series_ids=data.series_ids)


def _one_series():
    ys = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 30.0, 46.0, 60.0, -100.0])
    return bd.TimeSeries(np.arange(10.0), ys)


def _crps_brute(x, y):
    return np.mean(np.abs(x - y)) - 0.5 * np.mean(np.abs(x[:, None] - x[None]))


def test_scores_of_a_known_predictive_by_hand():
    draws = np.arange(-50.0, 51.0)  # 101 draws: median 0, 90% interval [-45, 45]
    post = FixedPosterior(draws, _one_series())
    bt = bd.backtest(post, _one_series(), key=jax.random.key(0), origins=[4.0], horizon=3, levels=(0.5, 0.9))
    assert bt.mode == "condition" and list(bt.origins) == [4.0]
    np.testing.assert_array_equal(bt.n, [1, 1, 1])
    np.testing.assert_allclose(bt.lead, [1.0, 2.0, 3.0])
    # the next three values are 10, 30, 46: inside [-25, 25]? [-45, 45]?
    np.testing.assert_array_equal(bt.coverage, [[1, 1], [0, 1], [0, 0]])
    np.testing.assert_allclose(bt.width, [[50, 90]] * 3)
    np.testing.assert_allclose(bt.crps, [_crps_brute(draws, y) for y in (10, 30, 46)], rtol=1e-5)
    table = bt.table()
    assert list(table.columns) == ["step", "lead", "n", "crps", "coverage_50", "coverage_90", "width_50", "width_90"]
    assert bt.overall()["coverage"][0.9] == pytest.approx(2 / 3)
    text = repr(bt)
    assert text.splitlines()[0] == "Backtest(mode='condition', origins=1, horizon=3, points=3)"
    assert "cov90" in text and "wid50" in text


def test_missing_values_and_the_series_end_are_not_scored():
    ys = np.array([[0.0, 0.0, 0.0, 5.0, np.nan, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    data = bd.TimeSeries(np.arange(6.0), ys[..., None])
    post = FixedPosterior(np.linspace(-1, 1, 11), data)
    bt = bd.backtest(post, data, key=jax.random.key(0), origins=[2.0, 4.0], horizon=3)
    # a step is the k-th time after the origin. Origin 2: series 0 scores steps 1 and 3
    # (t=4 is missing), series 1 steps 1-3; origin 4: both score step 1 only (t=5 ends them)
    np.testing.assert_array_equal(bt.n, [4, 1, 2])


def test_refits_a_model_at_every_origin(getkey):
    rng = np.random.default_rng(0)
    data = bd.TimeSeries(np.arange(12.0), rng.normal(1.0, 2.0, (3, 12, 1)))
    bt = bd.backtest(normal_mean, data, key=getkey(), origins=2, horizon=3, num_steps=10, num_samples=20)
    assert bt.mode == "refit" and len(bt.origins) == 2
    np.testing.assert_array_equal(bt.n, [6, 6, 6])  # 3 series x 2 origins per step
    assert np.all((bt.coverage >= 0) & (bt.coverage <= 1))
    assert np.all(np.diff(bt.width, axis=1) >= 0)  # wider levels, wider intervals
    assert np.all(np.isfinite(bt.crps)) and np.all(bt.crps > 0)
    ax = bt.plot()
    assert ax.get_xlabel() == "horizon step"


def test_default_origins_lie_in_the_second_half_and_leave_the_horizon():
    data = bd.TimeSeries(np.arange(20.0), np.zeros((2, 20, 1)))
    post = FixedPosterior(np.linspace(-1, 1, 5), data)
    bt = bd.backtest(post, data, key=jax.random.key(0), progress_bar=False)
    assert bt.horizon == 5  # a quarter of 20 times
    np.testing.assert_allclose(bt.origins, [9.0, 11.0, 12.0, 14.0])


def test_conformal_factor_makes_the_backtest_coverage_nominal():
    rng = np.random.default_rng(1)
    n = 40
    data = bd.TimeSeries(np.arange(10.0), rng.normal(0.0, 2.0, (n, 10, 1)))
    draws = stats.norm.ppf((np.arange(200) + 0.5) / 200)  # N(0, 1): too narrow for sd 2
    post = FixedPosterior(draws, data)
    with pytest.warns(UserWarning, match="coverage is optimistic"):
        bt = bd.backtest(post, data, key=jax.random.key(0), origins=[5.0], horizon=3)
    assert bt.coverage[:, list(bt.levels).index(0.9)].max() < 0.85
    future = bd.TimeSeries(np.arange(6.0, 9.0), data.ys[:, 6:9])
    pred = post.predict(future.ts, key=jax.random.key(1))
    adj = bt.conformalize(pred, level=0.9, start=5.0)
    assert isinstance(adj, bd.Prediction)
    assert adj.adjusted.startswith("conformal(0.9) from backtest of 120 points; model's own backtest coverage")
    assert "adjusted='conformal(0.9)" in repr(adj) or 'adjusted="conformal(0.9)' in repr(adj)
    for h in range(3):
        step = bd.TimeSeries(future.ts[:, h : h + 1], future.ys[:, h : h + 1])
        one = bd.Prediction(adj.samples[:, :, h : h + 1], step.ts)
        c = bd.metrics.coverage(one, step, level=0.9)
        assert 0.9 - 1e-6 <= c <= 0.9 + 1 / n + 1e-6
    # the median is untouched and only the future is rescaled
    np.testing.assert_allclose(np.median(adj.samples, 0), np.median(pred.samples, 0), atol=1e-9)
    assert np.all(adj.factors > 1)


def test_conformalize_leaves_the_history_alone():
    data = _one_series()
    post = FixedPosterior(np.arange(-50.0, 51.0), data)
    bt = bd.backtest(post, data, key=jax.random.key(0), origins=[4.0], horizon=3, levels=(0.9,))
    pred = post.predict(np.arange(12.0), key=jax.random.key(1))
    adj = bt.conformalize(pred, level=0.9)  # start: the series' last time, 9
    np.testing.assert_array_equal(adj.factors[0, :10], 1.0)
    np.testing.assert_array_equal(np.asarray(adj.samples[:, 0, :10]), np.asarray(pred.samples[:, 0, :10]))
    assert np.all(adj.factors[0, 10:] != 1.0)


# ------------------------------------------------------------------- refusals
def test_a_posterior_with_per_series_parameters_is_refused():
    data = _one_series()
    post = FixedPosterior(np.zeros(3), data, amortized=False)
    with pytest.raises(ValueError, match=r"backtest: FunctionModel has per-series parameters, so its Posterior "
                                         r"was fitted on the very futures a backtest scores; pass the model "
                                         r"instead"):
        bd.backtest(post, data, key=jax.random.key(0))


def test_fit_options_with_a_posterior_are_refused():
    data = _one_series()
    post = FixedPosterior(np.zeros(3), data)
    with pytest.raises(ValueError, match=r"backtest: num_steps only apply when refitting a model"):
        bd.backtest(post, data, key=jax.random.key(0), num_steps=10)


def test_bad_origins_horizon_and_levels_name_the_field():
    data = _one_series()
    post = FixedPosterior(np.zeros(3), data)
    kw = dict(key=jax.random.key(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"backtest: origins\[1\]=9 leaves no series with 2 observed times at "
                                             r"or before it and one time after it; choose origins inside the "
                                             r"data's time range \(0, 9\)\."):
            bd.backtest(post, data, origins=[4.0, 9.0], **kw)
        with pytest.raises(ValueError, match=r"backtest: origins must be a positive integer or a list of times, got 0"):
            bd.backtest(post, data, origins=0, **kw)
        with pytest.raises(ValueError, match=r"backtest: horizon=9 leaves no room for an origin"):
            bd.backtest(post, data, horizon=9, **kw)
        with pytest.raises(ValueError, match=r"^backtest.horizon: expected a positive integer \(future times per origin\), got 1\.5\.$"):
            bd.backtest(post, data, horizon=1.5, **kw)
        with pytest.raises(ValueError, match=r"backtest: levels must be a list of numbers in \(0, 1\)"):
            bd.backtest(post, data, levels=(0.5, 1.0), **kw)
        bt = bd.backtest(post, data, origins=[4.0], horizon=2, levels=(0.5, 0.9), **kw)
    pred = post.predict(np.arange(12.0), key=jax.random.key(1))
    with pytest.raises(ValueError, match=r"conformalize: level=0.8 was not scored by the backtest \(levels \[0.5, 0.9\]\)"):
        bt.conformalize(pred, level=0.8)
    other = bd.Prediction(pred.samples, pred.ts, series_ids=["x"])
    with pytest.raises(ValueError, match=r"conformalize: series 'x' of pred was not in the backtested data; pass start="):
        bt.conformalize(other)
