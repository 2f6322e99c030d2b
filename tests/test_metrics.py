"""`bd.metrics` against closed forms, with masks respected."""

import jax
import numpy as np
import pytest
from scipy import stats

import bayesde as bd


@pytest.fixture(scope="module")
def gaussian():
    # 4000 draws of N(0, 1) at 2 series x 50 times x 1 dim; truth from the same law.
    key = jax.random.key(0)
    k1, k2 = jax.random.split(key)
    draws = jax.random.normal(k1, (4000, 2, 50, 1))
    truth = np.asarray(jax.random.normal(k2, (2, 50, 1)), dtype=float)
    return bd.Prediction(draws, np.arange(50.0)), truth


def test_crps_matches_gaussian_closed_form(gaussian):
    pred, truth = gaussian
    z = truth
    closed = z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    assert bd.metrics.crps(pred, truth) == pytest.approx(closed.mean(), rel=0.02)


def test_coverage_and_width_of_a_calibrated_predictive(gaussian):
    pred, truth = gaussian
    assert 0.8 <= bd.metrics.coverage(pred, truth, 0.9) <= 0.98
    assert bd.metrics.interval_width(pred, truth, 0.9) == pytest.approx(2 * 1.6449, rel=0.05)
    levels, observed = bd.metrics.calibration_curve(pred, truth)
    assert np.all(np.abs(observed - levels) < 0.15)
    u = bd.metrics.pit(pred, truth)
    assert u.shape == (100,) and stats.kstest(u, "uniform").pvalue > 0.001


def test_nll_and_rmse(gaussian):
    pred, truth = gaussian
    assert bd.metrics.rmse(pred, np.zeros_like(truth)) < 0.05
    expected = 0.5 * np.log(2 * np.pi) + 0.5 * (truth**2).mean()
    assert bd.metrics.nll(pred, truth) == pytest.approx(expected, rel=0.05)


def test_mask_is_respected(gaussian):
    pred, truth = gaussian
    far = truth.copy()
    far[0, :10] = np.nan  # missing entries are ignored...
    assert bd.metrics.coverage(pred, far, 0.9) == pytest.approx(
        bd.metrics.coverage(bd.Prediction(pred.samples[:, :, :], pred.ts), far, 0.9)
    )
    wrong = truth.copy()
    wrong[0, :10] = 100.0  # ...while observed outliers count
    assert bd.metrics.coverage(pred, wrong, 0.9) < bd.metrics.coverage(pred, far, 0.9)
    series = bd.TimeSeries(np.arange(50.0), far)
    assert bd.metrics.crps(pred, series) == pytest.approx(bd.metrics.crps(pred, far))


def test_interval_score_penalises_misses():
    draws = np.tile(np.linspace(-1, 1, 101)[:, None, None, None], (1, 1, 1, 1))
    pred = bd.Prediction(draws, [0.0])
    inside = bd.metrics.interval_score(pred, np.zeros((1, 1, 1)), 0.9)
    outside = bd.metrics.interval_score(pred, np.full((1, 1, 1), 3.0), 0.9)
    assert inside == pytest.approx(1.8, rel=1e-3)
    assert outside == pytest.approx(1.8 + 2 / 0.1 * (3.0 - 0.9), rel=1e-3)


def test_shape_mismatch_is_refused(gaussian):
    pred, _ = gaussian
    with pytest.raises(ValueError, match=r"metrics: truth has shape \(2, 49, 1\) but the prediction is \(2, 50, 1\)"):
        bd.metrics.coverage(pred, np.zeros((2, 49, 1)))
    with pytest.raises(ValueError, match=r"^Prediction.interval.level: expected a number in \(0, 1\) \(e.g. 0.9\), got 1.5\.$"):
        pred.interval(1.5)
