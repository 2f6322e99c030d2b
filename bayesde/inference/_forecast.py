"""Forecast tables: the posterior predictive on a regular grid past each series' end,
summarised as a tidy quantile table. `Posterior.forecast` and `bayesde forecast` both
use this module, so the grid and the table are defined once."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .._checks import check_real
from .._data import TimeSeries

__all__ = ["QUANTILES", "median_step", "last_times", "forecast_grid", "hold_treatments", "tidy", "forecast"]

#: The quantiles of a forecast table (columns `q05, q25, q50, q75, q95`).
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def median_step(data: TimeSeries) -> float:
    """The median spacing of the observation times over every series (1 if a series
    has a single time)."""
    steps = [np.diff(data.ts[i, : data.lengths[i]]) for i in range(data.n_series)]
    steps = np.concatenate(steps) if steps else np.zeros(0)
    return float(np.median(steps)) if steps.size else 1.0


def last_times(data: TimeSeries) -> np.ndarray:
    """Each series' last real (non-padding) time, `(N,)`."""
    return data.ts[np.arange(data.n_series), data.lengths - 1]


def forecast_grid(post, horizon: float, every: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-series query times and where each series' forecast ends.

    Non-amortised models predict forward from each series' first time, so the grid
    runs from there to `horizon` past its last time (the history is then summarised
    too); models with treatment inputs get only the future steps.

    **Returns:** `ts (N, T')` and `end (N,)`; rows past a series' `end` are padding.
    """
    data = post.data
    first, last = data.ts[:, 0], last_times(data)
    if post.model.needs_treatments:
        k = max(int(math.floor(horizon / every + 1e-9)), 1)
        return last[:, None] + every * np.arange(1, k + 1)[None], last + horizon
    counts = np.floor((last + horizon - first) / every + 1e-9).astype(int) + 1
    k = int(counts.max())
    return first[:, None] + every * np.arange(k)[None], last + horizon


def hold_treatments(data: TimeSeries, ts: np.ndarray) -> np.ndarray:
    """Future treatments for a plain forecast: each series' last treatment, held."""
    last = data.treatments[np.arange(data.n_series), data.lengths - 1]  # (N, K)
    return np.repeat(last[:, None, :], ts.shape[1], axis=1)


def tidy(pred, data: TimeSeries, end=None, quantiles=QUANTILES):
    """`Prediction.to_pandas()` plus `part` (`history` up to each series' last
    observation, then `forecast`) and, when the data's times stand for dates, `date`;
    rows past `end` (per series) are dropped.

    **Returns:** a `pandas.DataFrame` with columns `series, time, [date,] variable,
    part, mean, q05 ... q95`.
    """
    df = pred.to_pandas(quantiles)
    last = dict(zip([str(s) for s in data.series_ids], last_times(data)))
    lastcol = df["series"].astype(str).map(last).to_numpy(dtype=float)
    df.insert(3, "part", np.where(df["time"].to_numpy() <= lastcol + 1e-9, "history", "forecast"))
    if end is not None:
        ends = dict(zip([str(s) for s in data.series_ids], np.asarray(end, dtype=float)))
        endcol = df["series"].astype(str).map(ends).to_numpy(dtype=float)
        df = df[df["time"].to_numpy() <= endcol + 1e-6].reset_index(drop=True)
    if getattr(data, "time_unit", None) is not None:
        df.insert(2, "date", data.to_dates(df["time"].to_numpy()))
    return df


def forecast(
    post,
    horizon: float,
    *,
    every: Optional[float] = None,
    key,
    num_samples: Optional[int] = None,
    quantiles=QUANTILES,
    return_prediction: bool = False,
):
    """The body of `Posterior.forecast` (see there)."""
    import pandas as pd  # noqa: F401 - fail early if pandas is missing

    check_real("forecast.horizon", horizon, 0.0, open_low=True, hint="in the data's time units")
    data = post.data
    step = median_step(data) if every is None else every
    check_real("forecast.every", step, 0.0, open_low=True)
    ts, end = forecast_grid(post, float(horizon), float(step))
    if ts.shape[1] > 20000:
        raise ValueError(f"forecast: every={step:g} gives {ts.shape[1]} times per series; use a larger every.")
    tr = hold_treatments(data, ts) if post.model.needs_treatments else None
    pred = post.predict(ts, key=key, num_samples=num_samples, treatments=tr)
    table = tidy(pred, data, end, quantiles)
    return (table, pred) if return_prediction else table
