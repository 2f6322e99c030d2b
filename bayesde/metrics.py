"""Scores of a `Prediction` against the truth, each respecting the truth's mask.

`truth` is a `bd.TimeSeries` (its mask is used) or an array `(N, T, D)` (NaN = missing),
aligned with the prediction's `(N, T, D)`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ._data import TimeSeries
from .inference._prediction import Prediction

__all__ = [
    "coverage",
    "interval_width",
    "crps",
    "nll",
    "rmse",
    "interval_score",
    "pit",
    "calibration_curve",
    "pehe",
]


def _aligned(pred: Prediction, truth):
    if not isinstance(pred, Prediction):
        raise TypeError(f"metrics: pred must be a bd.Prediction, got {type(pred).__name__}.")
    if isinstance(truth, TimeSeries):
        y, mask = truth.ys, truth.mask
    else:
        y = np.asarray(truth, dtype=float)
        mask = np.isfinite(y)
    target = tuple(pred.samples.shape[1:])
    if y.shape != target:
        raise ValueError(
            f"metrics: truth has shape {y.shape} but the prediction is {target} "
            "(series, time, dim); predict at the truth's times (e.g. post.predict(truth.ts))."
        )
    if not mask.any():
        raise ValueError("metrics: the truth has no observed values to score.")
    return jnp.asarray(np.where(mask, y, 0.0), dtype=pred.samples.dtype), jnp.asarray(mask)


def _masked_mean(x, mask):
    return float(jnp.sum(jnp.where(mask, x, 0.0)) / jnp.sum(mask))


def coverage(pred: Prediction, truth, level: float = 0.9) -> float:
    """Fraction of observed truth values inside the equal-tailed `level` interval."""
    y, mask = _aligned(pred, truth)
    lo, hi = pred.interval(level)
    return _masked_mean((y >= lo) & (y <= hi), mask)


def interval_width(pred: Prediction, truth=None, level: float = 0.9) -> float:
    """Mean width of the `level` interval (over the truth's observed entries if given)."""
    if not isinstance(pred, Prediction):
        raise TypeError(f"metrics: pred must be a bd.Prediction, got {type(pred).__name__}.")
    lo, hi = pred.interval(level)
    if truth is None:
        return float(jnp.mean(hi - lo))
    _, mask = _aligned(pred, truth)
    return _masked_mean(hi - lo, mask)


def _crps_each(samples, y):
    # CRPS = E|X - y| - ½ E|X - X'|, with the second term from the sorted draws in O(S log S).
    s = samples.shape[0]
    term1 = jnp.mean(jnp.abs(samples - y[None]), axis=0)
    x = jnp.sort(samples, axis=0)
    i = jnp.arange(1, s + 1, dtype=samples.dtype).reshape((s,) + (1,) * (samples.ndim - 1))
    term2 = jnp.sum((2 * i - s - 1) * x, axis=0) / (s * s)
    return term1 - term2


def crps(pred: Prediction, truth) -> float:
    """Mean sample-based continuous ranked probability score (lower is better)."""
    y, mask = _aligned(pred, truth)
    return _masked_mean(_crps_each(pred.samples, y), mask)


def nll(pred: Prediction, truth) -> float:
    """Mean negative log density of the truth under a Gaussian with the draws' mean and
    variance at each point (a moment-matched predictive)."""
    y, mask = _aligned(pred, truth)
    m, v = pred.mean, jnp.var(pred.samples, axis=0) + 1e-12
    return _masked_mean(0.5 * (jnp.log(2 * jnp.pi * v) + (y - m) ** 2 / v), mask)


def rmse(pred: Prediction, truth) -> float:
    """Root mean squared error of the predictive mean."""
    y, mask = _aligned(pred, truth)
    return float(np.sqrt(_masked_mean((pred.mean - y) ** 2, mask)))


def interval_score(pred: Prediction, truth, level: float = 0.9) -> float:
    """Mean interval score (Gneiting & Raftery 2007) of the `level` interval: its width
    plus `2/α` times the distance by which the truth falls outside (lower is better)."""
    y, mask = _aligned(pred, truth)
    lo, hi = pred.interval(level)
    a = 1 - level
    score = (hi - lo) + 2 / a * (jnp.maximum(lo - y, 0) + jnp.maximum(y - hi, 0))
    return _masked_mean(score, mask)


def pit(pred: Prediction, truth) -> np.ndarray:
    """Probability integral transform values (fraction of draws below the truth) of every
    observed entry; uniform on [0, 1] for a calibrated predictive."""
    y, mask = _aligned(pred, truth)
    u = jnp.mean(pred.samples < y[None], axis=0)
    return np.asarray(u)[np.asarray(mask)]


def calibration_curve(
    pred: Prediction, truth, levels: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
):
    """Nominal levels and the observed coverage at each: `(levels, observed)`."""
    levels = np.asarray(levels, dtype=float)
    return levels, np.array([coverage(pred, truth, float(l)) for l in levels])


def pehe(effect: Prediction, true_effect) -> float:
    """Precision in estimating heterogeneous effects: RMSE of the mean predicted
    effect against the true effect."""
    return rmse(effect, true_effect)
