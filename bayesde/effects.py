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

from typing import Mapping, Optional

import numpy as np

from ._data import TimeSeries
from .inference import Posterior, Prediction

__all__ = ["counterfactual", "Effects", "query_times"]


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
    """

    def __init__(self, outcomes: dict, plans: dict, ts):
        self.outcomes = outcomes
        self.plans = plans
        self.ts = ts

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
        return f"Effects(plans={list(self.outcomes)}, draws={s[0]}, series={s[1]}, horizon={s[2]})"


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


def counterfactual(
    post: Posterior,
    data: TimeSeries,
    *,
    plans: Mapping[str, object],
    horizon: int,
    key,
    num_samples: Optional[int] = None,
    step: Optional[float] = None,
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

    **Returns:** an `Effects` with `.outcomes[plan]` (`bd.Prediction`) and
    `.contrast(a, b)`.
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
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"counterfactual: horizon must be a positive integer, got {horizon!r}.")
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
    outcomes = {
        name: post.predict(ts, key=key, data=data, treatments=arr, num_samples=num_samples)
        for name, arr in arrays.items()
    }
    return Effects(outcomes, arrays, ts)
