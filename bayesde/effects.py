"""Treatment-effect analysis: counterfactual outcome distributions under treatment plans
and their contrasts, for any fitted model with treatment inputs.

A *plan* is the treatment sequence to apply after each series' history: an array
`(horizon, K)` (the same for every series) or `(N, horizon, K)` (per series), row `τ−1`
being the treatment acting over the step that ends at the `τ`-th future time (the
`TimeSeries` convention: treatments in a row act over the step ending at that row).

```python
eff = bd.effects.counterfactual(post, history, plans={"chemo": ..., "none": ...},
                                horizon=5, key=jax.random.key(0))
eff.outcomes["chemo"].interval(0.95)            # counterfactual outcome distribution
eff.contrast("chemo", "none").interval(0.95)    # effect of chemo vs none, paired draws
```

Every plan is predicted with the *same* key, so the posterior draws (weight paths,
dropout masks, parameters) and the observation noise are shared between plans (common
random numbers): a contrast is the distribution of the difference of paired outcomes,
not of two independent draws.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Optional

import numpy as np

from ._checks import check_int, check_real
from ._data import TimeSeries
from .inference import Posterior, Prediction

__all__ = ["counterfactual", "Effects", "query_times", "overlap"]

#: Below this estimated share of similar training histories that received a plan's
#: treatment (at its least common step), `counterfactual` warns that the plan is an
#: extrapolation. Set where BNCDE's intervals were measured to fail on the plan itself
#: (`docs/backtest.md`); K binary treatment channels assigned at random give each
#: combination a share of 2^-K, so a randomised design with four or more channels
#: warns: pass a lower `overlap_threshold` there.
OVERLAP_THRESHOLD = 0.10


def query_times(data: TimeSeries, horizon: int, step: Optional[float] = None) -> np.ndarray:
    """The `horizon` future times after each series' last real time,
    `t_last + step · (1..horizon)`, shape `(N, horizon)`.

    `step` defaults to the median spacing of the data's grid.
    """
    last = data.ts[np.arange(data.n_series), data.lengths - 1]
    if step is None:
        diffs = np.diff(data.ts, axis=1)
        step = float(np.median(diffs)) if diffs.size else 1.0
    if not step > 0:
        raise ValueError(f"counterfactual: step must be positive, got {step!r}.")
    return last[:, None] + step * np.arange(1, horizon + 1)[None]


class Effects:
    """Counterfactual outcome distributions per plan, with paired contrasts.

    - `outcomes`: dict plan name -> `bd.Prediction` `(S, N, horizon, D)`.
    - `plans`: dict plan name -> treatments `(N, horizon, K)`.
    - `ts`: the query times `(N, horizon)`.
    - `overlap`: dict plan name -> the `overlap` estimate (`share`, `per_series`,
      `series_below`, `threshold`, `below_threshold`: whether it warned), or `None` when
      the check was off.
    """

    def __init__(self, outcomes: dict, plans: dict, ts, overlap: Optional[dict] = None):
        self.outcomes = outcomes
        self.plans = plans
        self.ts = ts
        self.overlap = overlap

    def contrast(self, a: str, b: str) -> Prediction:
        """The distribution of `outcome(a) − outcome(b)` per series and time, from paired
        draws (same posterior draw and same noise under both plans).

        **Returns:** a `bd.Prediction` of the differences.
        """
        for name in (a, b):
            if name not in self.outcomes:
                raise ValueError(
                    f"Effects.contrast: unknown plan {name!r}; the plans are {sorted(self.outcomes)}."
                )
        return self.outcomes[a] - self.outcomes[b]

    def average(self, a: str, b: str) -> Prediction:
        """The average treatment effect over the series: the contrast averaged over the
        series axis per draw, as a `Prediction` with one series."""
        c = self.contrast(a, b)
        import jax.numpy as jnp

        return Prediction(jnp.mean(c.samples, axis=1, keepdims=True), c.ts[:1], names=c.names,
                          series_ids=["average"])

    def __repr__(self):
        s = next(iter(self.outcomes.values())).samples.shape
        text = f"Effects(plans={list(self.outcomes)}, draws={s[0]}, series={s[1]}, horizon={s[2]}"
        if self.overlap:  # the check's verdict where a reader looks first
            parts = []
            for name, res in self.overlap.items():  # (an estimate made by `overlap` itself has no verdict)
                low = res.get("below_threshold", False)
                parts.append(f"{name} {res['share']:.2f}" + (f" (below {res['threshold']:.2f})" if low else ""))
            text += "; overlap share " + ", ".join(parts)
        return text + ")"


def _plan_array(name, plan, n, horizon, k):
    arr = np.asarray(plan, dtype=float)
    given = arr.shape
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (n,) + arr.shape)
    if arr.ndim != 3 or arr.shape[0] != n or arr.shape[2] != k:
        raise ValueError(
            f"counterfactual: plan {name!r} has shape {given}; expected ({horizon}, {k}) or "
            f"({n}, {horizon}, {k}) (time steps, treatment channels)."
        )
    if arr.shape[1] < horizon:
        raise ValueError(
            f"counterfactual: plan {name!r} covers {arr.shape[1]} steps but horizon={horizon}; "
            "give a treatment for every future step."
        )
    if not np.all(np.isfinite(arr)):
        i, t, c = (int(x) for x in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(
            f"counterfactual: plan {name!r} has a non-finite value at series {i}, step {t}, "
            f"channel {c}; use 0 for no treatment."
        )
    return np.ascontiguousarray(arr[:, :horizon])


def _last_observed(data: TimeSeries, upto: np.ndarray) -> np.ndarray:
    """Each series' last observed value per column at or before time index `upto[i]`,
    `(N, D)` (NaN where nothing was observed yet)."""
    idx = np.arange(data.n_times)[None, :, None]
    seen = data.mask & (idx <= upto[:, None, None])
    last = np.where(seen, idx, -1).max(axis=1)  # (N, D)
    vals = np.take_along_axis(data.ys, np.maximum(last, 0)[:, None, :], axis=1)[:, 0]
    return np.where(last >= 0, vals, np.nan)


def overlap(
    train: TimeSeries,
    data: TimeSeries,
    plans: Mapping[str, object],
    *,
    horizon: int,
    tolerance: float = 0.1,
    neighbours: Optional[int] = None,
) -> dict:
    """How often training histories like each series' received treatments like each
    plan's: a nearest-neighbour propensity estimate per plan step (overlap/positivity).

    Every window of `horizon` treatment rows in `train` (after a time index with an
    observed value) is a candidate. Its history is summarised by the last observed value
    of each column, turned into ranks among all windows so that scales do not matter;
    for each series of `data` the `neighbours` windows with the nearest ranks are its
    similar histories. At plan step `τ`, a window agrees with the plan when the mean
    absolute difference of its step-`τ` treatments, each channel divided by its range in
    `train`, is at most `tolerance`; the step's share is the fraction of similar
    histories that agree. Sequential positivity asks every step to be possible, so a
    series' estimate is its smallest step share. A plan with a small estimate asks the
    model about treatments that such histories rarely received: its counterfactual is an
    extrapolation, not an interpolation.

    **Arguments:**

    - `train`: the training data (`post.data`), with treatments.
    - `data`: the histories to be treated, with treatments of the same channels.
    - `plans`: dict name -> treatments `(horizon', K)` or `(N, horizon', K)`.
    - `horizon`: the number of plan steps compared.
    - `tolerance`: the largest mean normalised difference of one step's treatments
      that counts as the same treatment (0.1: 0/1 treatments must agree).
    - `neighbours`: similar histories per series (default: 2 % of the windows, at least
      50, at most all).

    **Returns:** dict name -> `{"share": mean estimate over the series, "per_series":
    (N,) estimates, "per_step": (N, horizon) step shares, "neighbours": k, "windows":
    number of candidate windows}`.
    """
    if train.treatments is None or data.treatments is None:
        raise ValueError("overlap: train and data both need treatments (TimeSeries(..., treatments=...)).")
    k = train.treatments.shape[2]
    if data.treatments.shape[2] != k:
        raise ValueError(
            f"overlap: data has {data.treatments.shape[2]} treatment channels, train has {k}."
        )
    check_int("overlap.horizon", horizon)
    check_real("overlap.tolerance", tolerance, 0.0)
    n = data.n_series
    arrays = {str(name): _plan_array(name, plan, n, horizon, k) for name, plan in plans.items()}
    u = train.treatments
    starts = np.arange(train.n_times - horizon)
    if starts.size == 0:
        raise ValueError(
            f"overlap: train has {train.n_times} times, too few for windows of horizon={horizon}."
        )
    # window (series j, start s) holds rows s+1..s+horizon: what was given after time index s
    win = np.lib.stride_tricks.sliding_window_view(u[:, 1:], horizon, axis=1)  # (Nt, S, K, h)
    win = np.moveaxis(win, -1, 2)[:, : starts.size]  # (Nt, S, h, K)
    feats = np.stack([_last_observed(train, np.full(train.n_series, s)) for s in starts], axis=1)
    valid = (starts[None] + horizon < train.lengths[:, None]) & np.isfinite(feats).any(axis=2)
    win, feats = win[valid], feats[valid]  # (W, h, K), (W, D)
    total = win.shape[0]
    if total == 0:
        raise ValueError(f"overlap: train has no observed window of horizon={horizon} treatment steps.")
    span = u.max(axis=(0, 1)) - u.min(axis=(0, 1))
    span = np.where(span > 0, span, 1.0)
    sorted_feats = np.sort(feats, axis=0)

    def rank(x):  # empirical CDF per column among the windows; missing -> middle
        r = np.stack([np.searchsorted(sorted_feats[:, d], x[:, d], side="right") for d in range(x.shape[1])], 1)
        counts = np.isfinite(sorted_feats).sum(axis=0)
        return np.where(np.isfinite(x), r / np.maximum(counts, 1), 0.5)

    k_nn = min(total, max(50, total // 50)) if neighbours is None else int(neighbours)
    if k_nn < 1:
        raise ValueError(f"overlap: neighbours must be a positive integer, got {neighbours!r}.")
    k_nn = min(k_nn, total)
    r_train = rank(feats)
    r_data = rank(_last_observed(data, data.lengths - 1))
    chunk = max(1, 2**22 // total)  # bounds the (series, windows) distance block
    near = np.concatenate([
        np.argpartition(np.abs(r_data[i : i + chunk, None, :] - r_train[None]).sum(axis=2), k_nn - 1, axis=1)[:, :k_nn]
        for i in range(0, n, chunk)
    ])  # (N, k) nearest windows of each series
    out = {}
    for name, arr in arrays.items():
        diff = np.abs(win[near] - arr[:, None]) / span  # (N, k, h, K)
        step_share = (diff.mean(axis=3) <= tolerance + 1e-12).mean(axis=1)  # (N, h)
        per = step_share.min(axis=1)
        out[name] = {
            "share": float(per.mean()), "per_series": per, "per_step": step_share,
            "neighbours": int(k_nn), "windows": int(total),
        }
    return out


def counterfactual(
    post: Posterior,
    data: TimeSeries,
    *,
    plans: Mapping[str, object],
    horizon: int,
    key,
    num_samples: Optional[int] = None,
    step: Optional[float] = None,
    overlap_threshold: Optional[float] = OVERLAP_THRESHOLD,
) -> Effects:
    """Counterfactual outcome distributions of each series in `data` under each plan.

    For every plan, `post.predict(ts, key=key, data=data, treatments=plan,
    num_samples=num_samples)` at the `horizon` times after each series' history
    (`query_times`), with the same `key` for every plan so that contrasts pair draws.

    **Arguments:**

    - `post`: a fitted `bd.Posterior` of a model with treatment inputs (amortised, so it
      can condition on new histories).
    - `data`: the histories (a `TimeSeries` with treatments, and the static covariates
      the model was fitted with).
    - `plans`: dict name -> treatments `(horizon', K)` or `(N, horizon', K)`, `horizon' ≥
      horizon` (only the first `horizon` steps are used).
    - `horizon`: number of future steps.
    - `key`: a JAX PRNG key (same key, same numbers).
    - `num_samples`: predictive draws (default: the posterior's).
    - `step`: time between future steps (default: the median spacing of `data`).
    - `overlap_threshold`: before predicting, estimate for each plan how often training
      histories like these received the plan's treatments (`overlap`, on
      `post.data`) and warn (`UserWarning`) when the mean share is below this; `None`
      skips the check.

    **Returns:** an `Effects` with `.outcomes[plan]` (`bd.Prediction`),
    `.contrast(a, b)` and `.overlap[plan]`.
    """
    if not isinstance(post, Posterior):
        raise TypeError(f"counterfactual: post must be a bd.Posterior, got {type(post).__name__}.")
    if not isinstance(data, TimeSeries):
        raise TypeError(f"counterfactual: data must be a bd.TimeSeries, got {type(data).__name__}.")
    model = post.model
    if not getattr(model, "needs_treatments", False):
        raise ValueError(
            f"counterfactual: {type(model).__name__} takes no treatment inputs, so plans cannot "
            "change its predictions; fit a model with treatments (e.g. bd.models.BNCDE)."
        )
    check_int("counterfactual.horizon", horizon)
    if not isinstance(plans, Mapping) or not plans:
        raise ValueError("counterfactual: plans must be a non-empty dict name -> treatments.")
    if data.treatments is None:
        raise ValueError(
            "counterfactual: data has no treatments; the history must carry the treatments "
            "given so far (TimeSeries(..., treatments=(N, T, K)))."
        )
    k = data.treatments.shape[2]
    n = data.n_series
    arrays = {str(name): _plan_array(name, plan, n, horizon, k) for name, plan in plans.items()}
    ts = query_times(data, horizon, step)
    checked = None
    if overlap_threshold is not None:
        check_real("counterfactual.overlap_threshold", overlap_threshold, 0.0, 1.0, optional=True)
        train = post.data
        if train.treatments is not None and train.treatments.shape[2] == k and train.n_times > horizon:
            checked = overlap(train, data, arrays, horizon=horizon)
            for name, res in checked.items():
                res["threshold"] = float(overlap_threshold)
                res["series_below"] = int(np.sum(res["per_series"] < overlap_threshold))
                res["below_threshold"] = bool(res["share"] < overlap_threshold)
                if res["below_threshold"]:
                    warnings.warn(
                        f"counterfactual: plan {name!r} is rarely seen in the training data: on average only "
                        f"{100 * res['share']:.1f}% of training histories like these received its "
                        f"treatment at its least common step ({res['series_below']} of {n} series below "
                        f"{100 * overlap_threshold:g}%). Its outcomes extrapolate beyond the data "
                        "(weak overlap/positivity); read them with caution (eff.overlap has the numbers).",
                        UserWarning,
                        stacklevel=2,
                    )
    outcomes = {
        name: post.predict(ts, key=key, data=data, treatments=arr, num_samples=num_samples)
        for name, arr in arrays.items()
    }
    return Effects(outcomes, arrays, ts, overlap=checked)
