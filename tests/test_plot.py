"""bd.plot: fan charts, counterfactual plots, calibration and trace plots take and
return matplotlib axes, work under Agg and never show()."""

import types

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import bayesde as bd  # noqa: E402


@pytest.fixture(scope="module")
def pred_and_data():
    rng = np.random.default_rng(0)
    ts = np.arange(10.0)
    samples = 5 + np.sin(ts)[None, None, :, None] + rng.normal(size=(200, 2, 10, 2))
    pred = bd.Prediction(samples, ts, names=["a", "b"], series_ids=["s1", "s2"])
    ys = 5 + np.sin(ts)[None, :, None] + rng.normal(size=(2, 10, 2))
    ys[0, 3, 1] = np.nan
    data = bd.TimeSeries(ts, ys, names=["a", "b"], series_ids=["s1", "s2"])
    return pred, data


def _ax():
    return Figure().subplots()


def test_forecast_returns_ax_with_bands_median_and_points(pred_and_data, tmp_path):
    pred, data = pred_and_data
    ax = _ax()
    out = bd.plot.forecast(ax, pred, history=data, series="s2", variable="b", truth=data)
    assert out is ax
    assert len(ax.lines) == 1  # the median
    assert len(ax.collections) == 4  # 90% band, 50% band, history points, held-out points
    history_points = ax.collections[2].get_offsets()
    assert len(history_points) == 10
    ax.figure.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_forecast_draws_every_variable_by_default_and_skips_missing_points(pred_and_data):
    pred, data = pred_and_data
    ax = bd.plot.forecast(_ax(), pred, history=data, series=0)
    assert len(ax.lines) == 2
    # series 0, variable b has one missing value: 9 points drawn
    sizes = sorted(len(c.get_offsets()) for c in ax.collections if len(c.get_offsets()) in (9, 10))
    assert sizes == [9, 10]


def test_forecast_bands_are_nested(pred_and_data):
    pred, _ = pred_and_data
    ax = bd.plot.forecast(_ax(), pred, series=0, variable=0, levels=(0.5, 0.9), legend=False)
    outer, inner = (np.asarray(c.get_paths()[0].vertices) for c in ax.collections[:2])
    assert np.ptp(outer[:, 1]) >= np.ptp(inner[:, 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variable="zzz"), "variable 'zzz'"),
        (dict(series=5), "series 5 out of range"),
        (dict(levels=(1.5,)), "level"),
    ],
)
def test_forecast_refuses_bad_arguments(pred_and_data, kwargs, match):
    pred, _ = pred_and_data
    with pytest.raises(ValueError, match=match):
        bd.plot.forecast(_ax(), pred, **kwargs)


def test_forecast_refuses_a_non_axes(pred_and_data):
    pred, _ = pred_and_data
    with pytest.raises(TypeError, match="Axes"):
        bd.plot.forecast(None, pred)


def test_counterfactual_draws_one_band_and_median_per_plan(pred_and_data):
    pred, data = pred_and_data
    eff = types.SimpleNamespace(outcomes={"treat": pred, "none": pred})
    ax = _ax()
    assert bd.plot.counterfactual(ax, eff, series=1, variable="a", history=data) is ax
    assert len(ax.lines) == 2
    with pytest.raises(ValueError, match="unknown plan"):
        bd.plot.counterfactual(_ax(), eff, plans=["other"])
    with pytest.raises(TypeError, match="outcomes"):
        bd.plot.counterfactual(_ax(), object())


def test_calibration_plots_nominal_against_observed(pred_and_data):
    pred, data = pred_and_data
    ax = _ax()
    assert bd.plot.calibration(ax, pred, data, levels=(0.5, 0.9)) is ax
    ideal, curve = ax.lines
    x, y = curve.get_data()
    np.testing.assert_allclose(x, [0.5, 0.9])
    expected = [bd.metrics.coverage(pred, data, 0.5), bd.metrics.coverage(pred, data, 0.9)]
    np.testing.assert_allclose(y, expected)


def test_trace_uses_arviz_and_returns_axes():
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(1)
    idata = az.from_dict(posterior={"alpha": rng.normal(size=(2, 50)), "w": rng.normal(size=(2, 50, 3))})
    post = types.SimpleNamespace(to_arviz=lambda: idata)
    fig = Figure()
    axes = fig.subplots(1, 2, squeeze=False)
    out = bd.plot.trace(post, axes=axes)
    assert out.shape == (1, 2)  # only the scalar site by default
    assert out[0, 0] is axes[0, 0]
