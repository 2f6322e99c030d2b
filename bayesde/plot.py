"""Plots of predictions, counterfactuals, calibration and sampler traces.

Every function takes a matplotlib `ax` (or axes) and returns it, never calls `show()`
and works with the Agg backend, so it runs the same in a notebook, a script and the
command line:

```python
from matplotlib.figure import Figure
fig = Figure(figsize=(7, 3)); ax = fig.subplots()
bd.plot.forecast(ax, pred, history=data)
fig.savefig("forecast.png")
```

`plot` reads `bd.Prediction`s and `bd.TimeSeries`, nothing else (duck-typed on their
attributes).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ._checks import is_int

__all__ = ["forecast", "counterfactual", "calibration", "trace"]

_COLORS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9")


def _check_ax(ax, owner):
    if not hasattr(ax, "fill_between"):
        raise TypeError(
            f"plot.{owner}: ax must be a matplotlib Axes (e.g. fig.subplots()), got "
            f"{type(ax).__name__}."
        )


def _index(names: Sequence[str], variable, owner: str) -> list[int]:
    if variable is None:
        return list(range(len(names)))
    items = variable if isinstance(variable, (list, tuple)) else [variable]
    out = []
    for v in items:
        if isinstance(v, str):
            if v not in names:
                raise ValueError(f"plot.{owner}: variable {v!r} is not one of {list(names)}.")
            out.append(list(names).index(v))
        else:
            v = int(v)
            if not 0 <= v < len(names):
                raise ValueError(
                    f"plot.{owner}: variable index {v} out of range for {len(names)} variables."
                )
            out.append(v)
    return out


def _series_index(series, n: int, ids: Sequence, owner: str) -> int:
    if is_int(series):
        if not 0 <= int(series) < n:
            raise ValueError(f"plot.{owner}: series {series} out of range for {n} series.")
        return int(series)
    ids = list(ids)
    if series in ids:
        return ids.index(series)
    raise ValueError(f"plot.{owner}: series {series!r} is not an index or one of the ids {ids[:10]}.")


def _bands(ax, ts, q, mid, color, levels, label):
    """Shaded central intervals (widest first) and the median line."""
    for level, (lo, hi) in sorted(zip(levels, q), key=lambda x: -x[0]):
        alpha = 0.15 + 0.25 * (1 - level)
        ax.fill_between(ts, lo, hi, color=color, alpha=alpha, linewidth=0,
                        label=f"{label} {int(round(level * 100))}%" if label else None)
    ax.plot(ts, mid, color=color, lw=1.6, label=f"{label} median" if label else None)


def _history_points(ax, data, i, k, color, marker, label):
    if i >= data.ys.shape[0]:
        return
    length = int(np.asarray(getattr(data, "lengths", [data.ys.shape[1]] * data.ys.shape[0]))[i])
    t = np.asarray(data.ts)[i, :length]
    y = np.asarray(data.ys)[i, :length, k]
    ok = np.asarray(data.mask)[i, :length, k]
    ax.scatter(t[ok], y[ok], s=14, color=color, marker=marker, zorder=3,
               edgecolor="black" if marker != "o" else None, linewidth=0.5, label=label)


def forecast(
    ax,
    pred,
    history=None,
    *,
    series=0,
    variable=None,
    truth=None,
    levels: Sequence[float] = (0.5, 0.9),
    colors: Optional[Sequence[str]] = None,
    legend: bool = True,
):
    """Fan chart of a posterior predictive: median line and shaded central intervals,
    with the history (and held-out truth) as points.

    **Arguments:**

    - `ax`: a matplotlib `Axes`.
    - `pred`: a `bd.Prediction` (`samples (S, N, T, D)`, `ts (N, T)`).
    - `history`: optional `bd.TimeSeries` whose observed values are drawn as dots.
    - `series`: which series (index, or an id from `pred.series_ids`).
    - `variable`: a name/index or a list of them (default: every variable).
    - `truth`: optional `bd.TimeSeries` of held-out values, drawn as diamonds.
    - `levels`: central interval levels to shade (default 50% and 90%).
    - `colors`: one matplotlib colour per variable.
    - `legend`: draw a legend.

    **Returns:** `ax`.
    """
    _check_ax(ax, "forecast")
    levels = [float(x) for x in levels]
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"plot.forecast: every level must lie in (0, 1), got {level}.")
    i = _series_index(series, pred.samples.shape[1], pred.series_ids, "forecast")
    ks = _index(pred.names, variable, "forecast")
    colors = list(colors) if colors is not None else list(_COLORS)
    qs = sorted({q for level in levels for q in ((1 - level) / 2, (1 + level) / 2)} | {0.5})
    qv = np.asarray(pred.quantiles(qs))[:, i]  # (len(qs), T, D)
    ts = np.asarray(pred.ts)[i]
    for c, k in enumerate(ks):
        color = colors[c % len(colors)]
        pairs = [(qv[qs.index((1 - lv) / 2), :, k], qv[qs.index((1 + lv) / 2), :, k]) for lv in levels]
        _bands(ax, ts, pairs, qv[qs.index(0.5), :, k], color, levels, pred.names[k])
        if history is not None:
            hi = _series_in(history, pred.series_ids[i], i)
            if hi is not None:
                _history_points(ax, history, hi, _name_index(history, pred.names[k], k), color, "o",
                                 f"{pred.names[k]} observed")
        if truth is not None:
            ti = _series_in(truth, pred.series_ids[i], i)
            if ti is not None:
                _history_points(ax, truth, ti, _name_index(truth, pred.names[k], k), color, "D",
                                f"{pred.names[k]} held out")
    ax.set_xlabel("time")
    if len(ks) == 1:
        ax.set_ylabel(pred.names[ks[0]])
    ax.set_title(f"series {pred.series_ids[i]}")
    if legend:
        ax.legend(fontsize="small", ncol=max(1, len(ks)), frameon=False)
    return ax


def _series_in(data, sid, fallback):
    ids = list(getattr(data, "series_ids", []))
    if sid in ids:
        return ids.index(sid)
    return fallback if fallback < data.ys.shape[0] else None


def _name_index(data, name, fallback):
    names = list(getattr(data, "names", []))
    return names.index(name) if name in names else fallback


def counterfactual(
    ax,
    eff,
    *,
    series=0,
    variable=0,
    plans: Optional[Sequence[str]] = None,
    level: float = 0.9,
    history=None,
    colors: Optional[Sequence[str]] = None,
    legend: bool = True,
):
    """Counterfactual outcome distributions of one series under several treatment plans:
    for each plan, its median and central `level` interval over the future times.

    **Arguments:**

    - `ax`: a matplotlib `Axes`.
    - `eff`: the result of `bd.effects.counterfactual` (anything with an `outcomes`
      dict of plan name -> `bd.Prediction`).
    - `series`: which series (index or id); `variable`: which outcome (name or index).
    - `plans`: which plans to draw (default all, in order).
    - `level`: the interval level.
    - `history`: optional `bd.TimeSeries`; its observed values are drawn as dots.
    - `colors`: one colour per plan; `legend`: draw a legend.

    **Returns:** `ax`.
    """
    _check_ax(ax, "counterfactual")
    outcomes = getattr(eff, "outcomes", None)
    if not isinstance(outcomes, dict) or not outcomes:
        raise TypeError("plot.counterfactual: eff must have an `outcomes` dict of plan -> Prediction.")
    names = list(outcomes) if plans is None else list(plans)
    for p in names:
        if p not in outcomes:
            raise ValueError(f"plot.counterfactual: unknown plan {p!r}; the plans are {list(outcomes)}.")
    first = outcomes[names[0]]
    i = _series_index(series, first.samples.shape[1], first.series_ids, "counterfactual")
    (k,) = _index(first.names, variable, "counterfactual")
    colors = list(colors) if colors is not None else list(_COLORS)
    if history is not None:
        hi = _series_in(history, first.series_ids[i], i)
        if hi is not None:
            _history_points(ax, history, hi, _name_index(history, first.names[k], k), "0.3", "o", "observed")
    for c, p in enumerate(names):
        pred = outcomes[p]
        a = (1 - level) / 2
        q = np.asarray(pred.quantiles([a, 0.5, 1 - a]))[:, i, :, k]
        ts = np.asarray(pred.ts)[i]
        color = colors[c % len(colors)]
        ax.fill_between(ts, q[0], q[2], color=color, alpha=0.2, linewidth=0)
        ax.plot(ts, q[1], color=color, lw=1.6, marker=".", label=f"{p} (median, {int(round(level * 100))}%)")
    ax.set_xlabel("time")
    ax.set_ylabel(first.names[k])
    ax.set_title(f"series {first.series_ids[i]}: outcome under each plan")
    if legend:
        ax.legend(fontsize="small", frameon=False)
    return ax


def calibration(
    ax,
    pred,
    truth,
    *,
    levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
    label: Optional[str] = None,
    color: Optional[str] = None,
):
    """Calibration plot: nominal level of the central predictive interval against the
    fraction of the truth it covers (`bd.metrics.calibration_curve`). A calibrated
    predictive lies on the diagonal; below it is overconfident.

    **Arguments:**

    - `ax`: a matplotlib `Axes`.
    - `pred`: a `bd.Prediction` aligned with `truth`.
    - `truth`: a `bd.TimeSeries` (its mask is used) or an array `(N, T, D)`.
    - `levels`: nominal levels; `label`, `color`: for the curve.

    **Returns:** `ax`.
    """
    _check_ax(ax, "calibration")
    from . import metrics

    nominal, observed = metrics.calibration_curve(pred, truth, levels=levels)
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="ideal")
    ax.plot(nominal, observed, marker="o", color=color, label=label or "observed")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.set_aspect("equal", adjustable="box")
    ax.legend(fontsize="small", frameon=False, loc="upper left")
    return ax


def trace(post, *, var_names: Optional[Sequence[str]] = None, axes=None, max_vars: int = 6, **kwargs):
    """ArviZ trace plot (`az.plot_trace`) of a posterior: density and trace per chain.

    **Arguments:**

    - `post`: a `bd.Posterior` (converted with `post.to_arviz()`) or an ArviZ
      `InferenceData`.
    - `var_names`: sites to draw (default: up to `max_vars` scalar sites).
    - `axes`: optional array of axes shaped `(len(var_names), 2)`.
    - `**kwargs`: passed to `az.plot_trace`.

    **Returns:** the axes array.
    """
    import arviz as az

    idata = post.to_arviz() if hasattr(post, "to_arviz") else post
    if not hasattr(idata, "posterior"):
        raise ValueError("plot.trace: the posterior has no sampled sites to draw (e.g. a pure point estimate).")
    if var_names is None:
        scalars = [k for k, v in idata.posterior.data_vars.items() if v.ndim == 2]
        var_names = (scalars or list(idata.posterior.data_vars))[:max_vars]
    var_names = list(var_names)
    return az.plot_trace(idata, var_names=var_names, axes=axes, **kwargs)
