"""Rolling-origin backtests of the posterior predictive, and the conformal adjustment of
interval widths that such a backtest makes possible.

A backtest (Tashman 2000, "Out-of-sample tests of forecasting accuracy") cuts each series
at several *origins* in its history, forecasts the next `horizon` observation times from
what came before, and scores every horizon step against the values that followed:
coverage and mean width of the equal-tailed intervals at each level, and the CRPS. It is
what a user reads before trusting a forecast.

```python
bt = bd.backtest(model, data, key=jax.random.key(0), origins=4, num_steps=500)
bt                         # coverage / width / CRPS per horizon step
bt.table()                 # the same as a pandas DataFrame
adj = bt.conformalize(pred, level=0.9)   # opt-in: widen/narrow pred's intervals
```

Given a model, every origin refits it on the data up to the origin (honest and slow).
Given a fitted amortised `Posterior`, every origin conditions on the history up to it
(fast, but the weights saw the whole of the data they were fitted on).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Optional, Sequence

import jax
import numpy as np

from ._checks import check_int, check_real, is_int
from ._data import TimeSeries
from .inference import Posterior, Prediction, fit
from .metrics import _crps_each

__all__ = ["backtest", "Backtest", "conformalize"]

#: Nominal levels scored by default.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Observed times a series needs before an origin to be forecast from it.
MIN_HISTORY = 2


# ----------------------------------------------------------------- the record
@dataclasses.dataclass(eq=False)
class Backtest:
    """What `bd.backtest` returns: scores per horizon step, pooled over origins, series
    and value columns (observed values only).

    - `levels`: the nominal levels `(L,)`; `steps`: horizon steps `1..H`.
    - `coverage` `(H, L)`: fraction of observed values inside the equal-tailed interval.
    - `width` `(H, L)`: mean interval width, in the data's units.
    - `crps` `(H,)`: mean sample CRPS (lower is better); `n` `(H,)`: values scored.
    - `lead` `(H,)`: median time between the origin and the scored value.
    - `origins`: the origin times used; `mode`: `"refit"` (a model refitted at every
      origin) or `"condition"` (a fitted Posterior conditioned on each history).
    - `points`: the scored values one by one (dict of arrays: `step`, `lead`, `origin`,
      `series`, `y`, `median`, `lo`/`hi` `(P, L)`, `crps`), from which `conformalize`
      computes its factors.
    - `last_times`: dict series id -> last real time of the backtested data.
    """

    levels: np.ndarray
    coverage: np.ndarray
    width: np.ndarray
    crps: np.ndarray
    n: np.ndarray
    lead: np.ndarray
    origins: np.ndarray
    mode: str
    points: dict
    last_times: dict

    @property
    def steps(self) -> np.ndarray:
        return np.arange(1, len(self.n) + 1)

    @property
    def horizon(self) -> int:
        return len(self.n)

    def table(self):
        """One row per horizon step: `step, lead, n, crps`, then `coverage_<level>` and
        `width_<level>` for each level (`coverage_90`, `width_90`, ...).

        **Returns:** a `pandas.DataFrame`.
        """
        import pandas as pd

        frame = {"step": self.steps, "lead": self.lead, "n": self.n, "crps": self.crps}
        for j, lv in enumerate(self.levels):
            frame[f"coverage_{_pct(lv)}"] = self.coverage[:, j]
        for j, lv in enumerate(self.levels):
            frame[f"width_{_pct(lv)}"] = self.width[:, j]
        return pd.DataFrame(frame)

    def overall(self) -> dict:
        """Scores pooled over every horizon step: `coverage` and `width` per level
        (dicts level -> number), `crps` and `n`."""
        w = self.n / max(int(self.n.sum()), 1)
        return {
            "coverage": {float(lv): float(w @ self.coverage[:, j]) for j, lv in enumerate(self.levels)},
            "width": {float(lv): float(w @ self.width[:, j]) for j, lv in enumerate(self.levels)},
            "crps": float(w @ self.crps),
            "n": int(self.n.sum()),
        }

    def plot(self, ax=None):
        """Observed coverage against the horizon step, one line per level, with the
        nominal levels dashed; returns the `ax`."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        for j, lv in enumerate(self.levels):
            line = ax.plot(self.steps, self.coverage[:, j], "o-", label=f"{_pct(lv)}% interval")[0]
            ax.axhline(lv, color=line.get_color(), ls="--", lw=1)
        ax.set_xlabel("horizon step")
        ax.set_ylabel("observed coverage")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"backtest ({self.mode}, {len(self.origins)} origins)")
        ax.legend(fontsize="small", loc="lower left")
        return ax

    def conformalize(self, pred: Prediction, level: float = 0.9, *, start=None) -> Prediction:
        """An opt-in, clearly labelled correction of `pred`'s interval widths from a backtest.

        Every future draw is stretched around the median of its point, `m + s·(x − m)`, by
        the split-conformal factor `s` of its horizon (`s > 1` widens, `s < 1` narrows):
        with the normalised score `r = max((m − y)/(m − lo), (y − m)/(hi − m))` of every
        backtest value `y` of that step (the stretch its `level` interval `[lo, hi]` needs
        to reach `y`; Romano, Patterson & Candès 2019 score the same distance), `s` is the
        `⌈(n + 1)·level⌉`-th smallest of the step's `n` scores (split conformal), so that
        the stretched `level` intervals would have covered at least `level` of the
        backtest's values. Factors are matched by lead time (time past `start`),
        interpolated between the backtest's steps and held beyond its last one. Points at
        or before `start` (the history) are left as they are. This corrects the widths, not
        the model: the result says so in `adjusted` (and its `repr`), next to the model's
        own backtest coverage; only the `level` interval is calibrated by construction.

        **Arguments:**

        - `pred`: a `bd.Prediction`, e.g. from `post.predict` or `post.forecast(...,
          return_prediction=True)`.
        - `level`: the interval level to calibrate; one of the backtest's `levels`.
        - `start`: the time each forecast starts from (its last observed time), a number or
          one per series; default: each series' last time in the backtested data, matched
          by series id.

        **Returns:** a `bd.Prediction` with attributes `adjusted` (a label) and `factors`
        (the factor at each point, 1 in the history); `f_samples` are dropped, as the
        adjusted draws no longer come from the model's noise-free paths.
        """
        return conformalize(pred, self, level=level, start=start)

    def __repr__(self) -> str:
        head = ["step", "lead", "n", "crps"] + [f"cov{_pct(lv)}" for lv in self.levels] + [
            f"wid{_pct(lv)}" for lv in self.levels
        ]
        rows = []
        for h in range(self.horizon):
            rows.append(
                [str(h + 1), f"{self.lead[h]:.3g}", str(int(self.n[h])), f"{self.crps[h]:.3g}"]
                + [f"{c:.2f}" for c in self.coverage[h]]
                + [f"{w:.3g}" for w in self.width[h]]
            )
        widths = [max(len(head[c]), *(len(r[c]) for r in rows)) if rows else len(head[c]) for c in range(len(head))]
        lines = [
            f"Backtest(mode={self.mode!r}, origins={len(self.origins)}, horizon={self.horizon}, "
            f"points={int(self.n.sum())})"
        ]
        lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)


def _pct(level: float) -> str:
    p = 100 * float(level)
    return f"{p:.0f}" if abs(p - round(p)) < 1e-9 else f"{p:g}".replace(".", "_")


# ------------------------------------------------------------- validation
def _check_levels(levels) -> np.ndarray:
    try:
        arr = np.asarray(levels, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1 or arr.size == 0 or not np.all((arr > 0) & (arr < 1)):
        raise ValueError(
            f"backtest: levels must be a list of numbers in (0, 1), e.g. (0.5, 0.9); got {levels!r}."
        )
    return np.unique(arr)


def _observed_counts(data: TimeSeries, before: np.ndarray) -> np.ndarray:
    obs = data.mask.any(axis=2) & (np.arange(data.n_times)[None] < data.lengths[:, None])
    return (obs & before).sum(axis=1)


def _default_origins(data: TimeSeries, count: int, horizon: int) -> np.ndarray:
    """`count` origin times spread over the second half of the data, each leaving
    `horizon` real times after it: per series, indices from the middle to
    `length − 1 − horizon`, then the median time over series at each index."""
    lengths = data.lengths
    hi = lengths - 1 - horizon
    lo = np.minimum(np.maximum(np.ceil(lengths / 2).astype(int) - 1, MIN_HISTORY - 1), hi)
    ok = hi >= MIN_HISTORY - 1
    if not ok.any():
        raise ValueError(
            f"backtest: horizon={horizon} leaves no room for an origin: every series has at most "
            f"{int(lengths.max())} times, and an origin needs {MIN_HISTORY} before it and the horizon "
            "after it; pass a smaller horizon."
        )
    frac = np.linspace(0.0, 1.0, count) if count > 1 else np.ones(1)
    idx = np.rint(lo[ok, None] + frac[None] * (hi[ok] - lo[ok])[:, None]).astype(int)
    times = np.median(np.take_along_axis(data.ts[ok], idx, axis=1), axis=0)
    return np.unique(times)


def _resolve_origins(data: TimeSeries, origins, horizon: int) -> np.ndarray:
    if is_int(origins):
        if origins < 1:
            raise ValueError(f"backtest: origins must be a positive integer or a list of times, got {origins!r}.")
        return _default_origins(data, int(origins), horizon)
    try:
        times = np.asarray(origins, dtype=float)
    except (TypeError, ValueError):
        times = None
    if times is None or times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)):
        raise ValueError(
            f"backtest: origins must be a positive integer or a list of finite times, got {origins!r}."
        )
    real = np.arange(data.n_times)[None] < data.lengths[:, None]
    t_lo, t_hi = float(data.ts[:, 0].min()), float(np.max(data.ts[real]))
    for i, t in enumerate(times):
        before = data.ts <= t
        usable = (_observed_counts(data, before) >= MIN_HISTORY) & ((~before & real).sum(axis=1) >= 1)
        if not usable.any():
            raise ValueError(
                f"backtest: origins[{i}]={t:g} leaves no series with {MIN_HISTORY} observed times "
                f"at or before it and one time after it; choose origins inside the data's "
                f"time range ({t_lo:g}, {t_hi:g})."
            )
    return np.unique(times)


# ------------------------------------------------------------- one origin
def _cut(data: TimeSeries, origin: float, horizon: int):
    """The series usable at `origin`, their history (`t <= origin`), the query times of
    the next `horizon` real times (padded past a series' end), and the truth there."""
    real = np.arange(data.n_times)[None] < data.lengths[:, None]
    before = data.ts <= origin
    after = ~before & real
    keep = np.flatnonzero((_observed_counts(data, before) >= MIN_HISTORY) & (after.sum(axis=1) >= 1))
    sub = data.select(keep)
    history, _ = sub.split(origin)
    n = len(keep)
    ts = np.empty((n, horizon))
    ys = np.full((n, horizon, data.dim), np.nan)
    tr = None if data.treatments is None else np.empty((n, horizon, data.treatments.shape[2]))
    gaps = np.concatenate([np.diff(data.ts[i, : data.lengths[i]]) for i in range(data.n_series)])
    step = float(np.median(gaps)) if gaps.size else 1.0
    for r, i in enumerate(keep):
        idx = np.flatnonzero(after[i])[:horizon]
        c = len(idx)
        ts[r, :c] = data.ts[i, idx]
        ys[r, :c] = np.where(data.mask[i, idx], data.ys[i, idx], np.nan)
        if c < horizon:  # past the series' end: increasing times, nothing to score
            ts[r, c:] = ts[r, c - 1] + step * np.arange(1, horizon - c + 1)
        if tr is not None:
            tr[r, :c] = data.treatments[i, idx]
            tr[r, c:] = data.treatments[i, idx[-1]]
    return keep, history, ts, ys, tr


def _score(pred: Prediction, ys: np.ndarray, ts: np.ndarray, origin: float, levels: np.ndarray, keep, o: int):
    samples = np.asarray(pred.samples, dtype=float)  # (S, n, H, D)
    a = (1 - levels) / 2
    qs = np.concatenate([a, 1 - a, [0.5]])
    q = np.quantile(samples, qs, axis=0)  # (2L + 1, n, H, D)
    nl = len(levels)
    observed = np.isfinite(ys)
    crps = np.asarray(_crps_each(pred.samples, np.nan_to_num(ys).astype(samples.dtype)))
    r, h, d = np.nonzero(observed)
    return {
        "step": h + 1,
        "lead": ts[r, h] - origin,
        "origin": np.full(r.shape, o),
        "series": np.asarray(keep)[r],
        "y": ys[r, h, d],
        "median": q[2 * nl, r, h, d],
        "lo": q[:nl, r, h, d].T,
        "hi": q[nl : 2 * nl, r, h, d].T,
        "crps": crps[r, h, d],
    }


def _summarise(points: dict, horizon: int, levels: np.ndarray):
    nl = len(levels)
    cov = np.full((horizon, nl), np.nan)
    wid = np.full((horizon, nl), np.nan)
    crps = np.full(horizon, np.nan)
    lead = np.full(horizon, np.nan)
    n = np.zeros(horizon, dtype=int)
    y = points["y"][:, None]
    inside = (y >= points["lo"]) & (y <= points["hi"])
    for h in range(horizon):
        sel = points["step"] == h + 1
        n[h] = int(sel.sum())
        if n[h]:
            cov[h] = inside[sel].mean(axis=0)
            wid[h] = (points["hi"][sel] - points["lo"][sel]).mean(axis=0)
            crps[h] = points["crps"][sel].mean()
            lead[h] = np.median(points["lead"][sel])
    return cov, wid, crps, lead, n


# ------------------------------------------------------------------- entry
def backtest(
    model_or_post,
    data: TimeSeries,
    *,
    key,
    origins=4,
    horizon: Optional[int] = None,
    levels: Sequence[float] = LEVELS,
    method="svi",
    num_samples: Optional[int] = None,
    progress_bar: bool = True,
    **fit_options,
) -> Backtest:
    """Rolling-origin backtest: forecast from several cut-offs in the history and score
    each horizon step against what followed (Tashman 2000).

    At each origin `t₀` every series with at least two observed times `≤ t₀` and one
    time after it is cut there; the next `horizon` times of each series are forecast
    from the history and scored where a value was observed. For each step `h` and level
    `α`, coverage is the fraction of values inside the equal-tailed `α` interval, width
    its mean width, and CRPS `E|X − y| − ½E|X − X'|` over the predictive draws `X`.

    **Arguments:**

    - `model_or_post`: a `bd.models` model (or NumPyro function): refitted with
      `bd.fit(model, history, method, **fit_options)` at every origin, the honest way;
      or a fitted `bd.Posterior` of an amortised model, conditioned on each history
      with `post.predict(..., data=history)` (no refit: fast, but the weights have seen
      `post.data`, so score held-out series for an honest number). A Posterior of a
      model with per-series parameters is refused: its fit saw the futures.
    - `data`: the `bd.TimeSeries` to backtest on.
    - `key`: a JAX PRNG key (same key, same numbers).
    - `origins`: the number of origins, spread over the second half of each series
      (default 4), or a list of origin times.
    - `horizon`: the number of future observation times scored after each origin
      (default: a quarter of the median series length, at least 1).
    - `levels`: the nominal interval levels scored.
    - `method`, `**fit_options`: the engine and its options (`num_steps=...`), used when
      a model is given.
    - `num_samples`: predictive draws per forecast (default: every posterior draw).
    - `progress_bar`: a bar over the origins (off when `BAYESDE_FAST=1`).

    **Returns:** a `Backtest` (`repr` is a table; `.table()`, `.plot()`,
    `.conformalize(pred)`).
    """
    if not isinstance(data, TimeSeries):
        raise TypeError(f"backtest: data must be a bd.TimeSeries, got {type(data).__name__}.")
    if key is None:
        raise ValueError("backtest: key is required, e.g. key=jax.random.key(0).")
    is_post = isinstance(model_or_post, Posterior)
    if is_post:
        post = model_or_post
        if fit_options or method != "svi":
            given = sorted(fit_options) + (["method"] if method != "svi" else [])
            raise ValueError(
                f"backtest: {', '.join(given)} only apply when refitting a model; a Posterior is "
                "conditioned on each history as it is. Pass the model to refit at every origin."
            )
        if not post.model.amortized:
            raise ValueError(
                f"backtest: {type(post.model).__name__} has per-series parameters, so its Posterior "
                "was fitted on the very futures a backtest scores; pass the model instead, e.g. "
                "bd.backtest(model, data, key=...), to refit it at every origin."
            )
        if data is post.data:
            warnings.warn(
                "backtest: data is the Posterior's training data, so its weights saw the values "
                "being scored and the coverage is optimistic; backtest held-out series, or pass "
                "the model to refit at every origin.",
                UserWarning,
                stacklevel=2,
            )
    elif isinstance(model_or_post, Prediction):
        raise TypeError("backtest: pass a model or a fitted bd.Posterior, not a Prediction.")
    levels = _check_levels(levels)
    if horizon is None:
        horizon = max(1, int(np.median(data.lengths)) // 4)
    horizon = check_int("backtest.horizon", horizon, hint="future times per origin")
    check_int("backtest.num_samples", num_samples, optional=True)
    times = _resolve_origins(data, origins, horizon)

    bar = None
    if progress_bar and os.environ.get("BAYESDE_FAST", "") in ("", "0"):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(times), desc="backtest origins", leave=True)
    parts = []
    try:
        for o, t0 in enumerate(times):
            k_fit, k_pred = jax.random.split(jax.random.fold_in(key, o))
            keep, history, ts, ys, tr = _cut(data, float(t0), horizon)
            if is_post:
                pred = post.predict(ts, key=k_pred, data=history, treatments=tr, num_samples=num_samples)
            else:
                p = fit(model_or_post, history, method, key=k_fit, progress_bar=False, warn=False, **fit_options)
                pred = p.predict(ts, key=k_pred, treatments=tr, num_samples=num_samples)
            parts.append(_score(pred, ys, ts, float(t0), levels, keep, o))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    points = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if points["y"].size == 0:
        raise ValueError(
            "backtest: no observed value follows any origin within the horizon; pass a larger "
            "horizon or earlier origins."
        )
    cov, wid, crps, lead, n = _summarise(points, horizon, levels)
    last = data.ts[np.arange(data.n_series), data.lengths - 1]
    return Backtest(
        levels=levels, coverage=cov, width=wid, crps=crps, n=n, lead=lead, origins=times,
        mode="condition" if is_post else "refit", points=points,
        last_times={str(s): float(t) for s, t in zip(data.series_ids, last)},
    )


# ------------------------------------------------------------- conformal
class _AdjustedPrediction(Prediction):
    """A `Prediction` whose draws were rescaled after the fact; `adjusted` says how."""

    def __init__(self, samples, ts, *, adjusted: str, factors, names=None, series_ids=None):
        super().__init__(samples, ts, names=names, series_ids=series_ids)
        self.adjusted = adjusted
        self.factors = factors

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", adjusted={self.adjusted!r})"


def conformal_factors(bt: Backtest, level: float) -> np.ndarray:
    """Split-conformal scale factors `(H,)`, one per horizon step, at a scored `level`.

    Each backtest value `y` with median `m` and `level` interval `[lo, hi]` has the
    normalised score `r = max((m − y)/(m − lo), (y − m)/(hi − m))`: the factor by which
    the interval must be stretched around the median to reach `y` (Romano, Patterson &
    Candès 2019 score the same distance for quantile regression). The factor of a step
    is the `⌈(n + 1)·level⌉`-th smallest of its `n` scores, so that the stretched
    intervals cover at least a `level` fraction of the backtest values.
    """
    j = _level_index(bt, level, "conformal_factors")
    p = bt.points
    m, lo, hi, y = p["median"], p["lo"][:, j], p["hi"][:, j], p["y"]
    tiny = 1e-12 * (1.0 + np.abs(m))
    below = (m - y) / np.maximum(m - lo, tiny)
    above = (y - m) / np.maximum(hi - m, tiny)
    score = np.maximum(np.maximum(below, above), 0.0)
    out = np.full(bt.horizon, np.nan)
    for h in range(bt.horizon):
        s = np.sort(score[p["step"] == h + 1])
        if s.size:
            k = min(s.size, int(math.ceil((s.size + 1) * level)))
            out[h] = s[k - 1]
    if np.all(np.isnan(out)):
        raise ValueError("conformal_factors: the backtest scored no values.")
    steps = np.arange(bt.horizon)
    have = ~np.isnan(out)
    return np.interp(steps, steps[have], out[have])


def _level_index(bt: Backtest, level, where: str) -> int:
    check_real(f"{where}.level", level, 0.0, 1.0, open_low=True, open_high=True, hint="e.g. 0.9")
    hit = np.flatnonzero(np.isclose(bt.levels, level))
    if hit.size == 0:
        raise ValueError(
            f"{where}: level={level:g} was not scored by the backtest (levels "
            f"{[float(v) for v in bt.levels]}); rerun bd.backtest(..., levels=[..., {level:g}])."
        )
    return int(hit[0])


def conformalize(pred: Prediction, bt: Backtest, level: float = 0.9, *, start=None) -> Prediction:
    """The function behind `Backtest.conformalize` (see there), with the backtest `bt`
    as an argument."""
    if not isinstance(pred, Prediction):
        raise TypeError(f"conformalize: pred must be a bd.Prediction, got {type(pred).__name__}.")
    if not isinstance(bt, Backtest):
        raise TypeError(f"conformalize: backtest must be a Backtest from bd.backtest, got {type(bt).__name__}.")
    j = _level_index(bt, level, "conformalize")
    factors = conformal_factors(bt, level)
    n = pred.samples.shape[1]
    if start is None:
        missing = [s for s in pred.series_ids if str(s) not in bt.last_times]
        if missing:
            raise ValueError(
                f"conformalize: series {missing[0]!r} of pred was not in the backtested data; pass "
                "start= (the time each forecast starts from, a number or one per series)."
            )
        start = np.array([bt.last_times[str(s)] for s in pred.series_ids])
    start = np.asarray(start, dtype=float)
    if start.ndim == 0:
        start = np.full(n, float(start))
    if start.shape != (n,) or not np.all(np.isfinite(start)):
        raise ValueError(f"conformalize: start must be a number or {n} finite times, one per series; got shape {start.shape}.")
    lead = pred.ts - start[:, None]  # (N, T)
    future = lead > 1e-9
    grid = np.where(np.isnan(bt.lead), np.arange(1, bt.horizon + 1), bt.lead)
    order = np.argsort(grid)
    s = np.where(future, np.interp(lead, grid[order], factors[order]), 1.0)
    x = np.asarray(pred.samples)
    m = np.median(x, axis=0, keepdims=True)
    scaled = m + s[None, :, :, None] * (x - m)
    own = float(bt.overall()["coverage"][float(bt.levels[j])])
    label = (
        f"conformal({level:g}) from backtest of {int(bt.n.sum())} points; "
        f"model's own backtest coverage {own:.2f}"
    )
    return _AdjustedPrediction(
        scaled.astype(x.dtype), pred.ts, adjusted=label, factors=s, names=pred.names,
        series_ids=pred.series_ids,
    )
