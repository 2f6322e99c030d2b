"""Control paths from irregular, partly missing data, and the fixed-grid CDE step.

A neural controlled differential equation (Kidger et al. 2020)

    dz = f(t, z) dX_t

is driven by a continuous path `X` built from the observations. Here the path is built
from NaN-aware data in two steps: (1) *fill* the missing values (causally, by carrying
the last observation forward, or by linear interpolation between observations), with
running observation-count channels so that informative sampling stays visible to the
model; (2) *interpolate* between the grid times, either piecewise linearly or with
backward-difference Hermite cubics (the derivative at each knot is the slope of the
interval before it, so the path on `[t_j, t_{j+1}]` only uses data up to `t_{j+1}`).

The solve is Euler on a fixed grid, stepped by `lax.scan`:
`z_{j+1} = z_j + f(t_j, z_j) (X(t_{j+1}) - X(t_j))`. On the data grid itself the
interpolation scheme does not matter (every scheme passes through the knots); it does
on a finer grid (`refine`).
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp

__all__ = [
    "fill_missing",
    "observation_counts",
    "hermite_coefficients",
    "evaluate_path",
    "refine",
    "solve_cde_grid",
]


def fill_missing(values, mask, *, ts=None, method: Literal["forward", "linear"] = "forward", initial=0.0):
    """Fill missing values along the time axis (axis `-2` of `(..., T, C)`).

    **Arguments:**

    - `values`: `(..., T, C)`; entries where `mask` is False are ignored.
    - `mask`: boolean `(..., T, C)`, True where observed.
    - `ts`: times `(..., T)`; needed for `method="linear"`.
    - `method`: `"forward"` carries the last observation forward (causal: the path at
      `t` uses only data up to `t`); `"linear"` interpolates linearly between
      observations in time and carries the last one forward after it (looks ahead
      inside gaps: use it only when the whole path is history).
    - `initial`: the value before a channel's first observation.

    **Returns:** the filled array, shape of `values`.
    """
    values = jnp.asarray(values)
    mask = jnp.asarray(mask, dtype=bool)
    if method not in ("forward", "linear"):
        raise ValueError(f"fill_missing: method must be 'forward' or 'linear', got {method!r}.")
    t_len = values.shape[-2]
    idx = jnp.arange(t_len).reshape((t_len, 1))
    idx = jnp.broadcast_to(idx, values.shape)
    # Index of the last observation at or before each time (-1 when none yet).
    last = jax.lax.cummax(jnp.where(mask, idx, -1), axis=values.ndim - 2)
    prev_val = jnp.take_along_axis(values, jnp.maximum(last, 0), axis=-2)
    filled = jnp.where(last >= 0, prev_val, initial)
    if method == "forward":
        return filled
    if ts is None:
        raise ValueError("fill_missing: method='linear' needs ts.")
    ts = jnp.broadcast_to(jnp.asarray(ts)[..., None], values.shape)
    big = t_len
    # Index of the next observation at or after each time (T when none).
    nxt = jax.lax.cummin(jnp.where(mask, idx, big), axis=values.ndim - 2, reverse=True)
    has_both = (last >= 0) & (nxt < big)
    next_val = jnp.take_along_axis(values, jnp.minimum(nxt, t_len - 1), axis=-2)
    t0 = jnp.take_along_axis(ts, jnp.maximum(last, 0), axis=-2)
    t1 = jnp.take_along_axis(ts, jnp.minimum(nxt, t_len - 1), axis=-2)
    lam = jnp.where(t1 > t0, (ts - t0) / jnp.where(t1 > t0, t1 - t0, 1.0), 0.0)
    interp = prev_val + lam * (next_val - prev_val)
    before_first = (last < 0) & (nxt < big)
    out = jnp.where(has_both, interp, filled)
    return jnp.where(before_first, next_val, out)


def observation_counts(mask, scale: float = 1.0):
    """Running number of observations per channel, `(..., T, C)`, divided by `scale`:
    the channel through which a CDE sees *when* (and how often) a series was measured."""
    mask = jnp.asarray(mask)
    return jnp.cumsum(mask.astype(jnp.result_type(float)), axis=-2) / scale


def hermite_coefficients(ts, xs):
    """Backward-difference Hermite cubic coefficients of the path through `(ts, xs)`.

    On `[t_j, t_{j+1}]`, `X(t) = a + b s + c s² + d s³` with `s = t - t_j`, matching the
    knots and, at each knot, the slope of the interval *before* it (zero at the first):
    the path is continuous with a continuous derivative at the knots and causal up to
    the right end of each interval.

    **Arguments:** `ts (T,)`, `xs (T, C)`.

    **Returns:** `(a, b, c, d)`, each `(T - 1, C)`.
    """
    ts = jnp.asarray(ts)
    xs = jnp.asarray(xs)
    dt = jnp.diff(ts)[:, None]
    dx = jnp.diff(xs, axis=0)
    slope = dx / dt
    m0 = jnp.concatenate([jnp.zeros_like(slope[:1]), slope[:-1]], axis=0)
    m1 = slope
    a = xs[:-1]
    b = m0
    c = (3 * slope - 2 * m0 - m1) / dt
    d = (m0 + m1 - 2 * slope) / dt**2
    return a, b, c, d


def evaluate_path(ts, xs, t, kind: Literal["hermite", "linear"] = "hermite"):
    """The interpolated control path at times `t` (any shape), for one series
    `ts (T,)`, `xs (T, C)` (times outside `[ts[0], ts[-1]]` are clamped).

    **Returns:** `(*t.shape, C)`.
    """
    ts = jnp.asarray(ts)
    t = jnp.clip(jnp.asarray(t), ts[0], ts[-1])
    j = jnp.clip(jnp.searchsorted(ts, t, side="right") - 1, 0, ts.shape[0] - 2)
    s = (t - ts[j])[..., None]
    if kind == "linear":
        dt = (ts[j + 1] - ts[j])[..., None]
        return xs[j] + s / dt * (xs[j + 1] - xs[j])
    if kind != "hermite":
        raise ValueError(f"evaluate_path: kind must be 'hermite' or 'linear', got {kind!r}.")
    a, b, c, d = hermite_coefficients(ts, xs)
    return a[j] + b[j] * s + c[j] * s**2 + d[j] * s**3


def refine(ts, xs, substeps: int, kind: Literal["hermite", "linear"] = "hermite"):
    """An Euler grid with `substeps` equal steps per data interval, and the path on it.

    **Returns:** `(ts_fine ((T-1)·substeps + 1,), xs_fine (…, C))`.
    """
    ts = jnp.asarray(ts)
    if substeps < 1:
        raise ValueError(f"refine: substeps must be >= 1, got {substeps}.")
    if substeps == 1:
        return ts, jnp.asarray(xs)
    frac = jnp.arange(substeps) / substeps
    fine = (ts[:-1, None] + frac[None] * jnp.diff(ts)[:, None]).reshape(-1)
    fine = jnp.concatenate([fine, ts[-1:]])
    return fine, evaluate_path(ts, xs, fine, kind)


def solve_cde_grid(
    vector_field: Callable,
    z0,
    ts,
    xs,
    extra=None,
    *,
    return_all: bool = True,
    unroll: int = 1,
):
    """Euler solve of `dz = f(t, z, X_t, e_t) dX_t` on the grid of `ts`.

    **Arguments:**

    - `vector_field`: `f(t_j, z_j, x_j, e_j)` returning a matrix `(..., H, C)` (one
      column per control channel) for a state `z_j (..., H)`.
    - `z0`: initial state `(..., H)`; any leading batch shape.
    - `ts`: the grid, `(T, ...)` (time first; trailing batch axes allowed).
    - `xs`: the control path on the grid, `(T, ..., C)` (time first).
    - `extra`: optional PyTree of per-step inputs, leading axis `T - 1` (e.g. weights of
      a stochastic vector field at each step, or the treatment active over the step).
    - `unroll`: steps per scan iteration (speed only).

    **Returns:** the states at every grid time, `(T, ..., H)` (or only the last state
    with `return_all=False`).
    """
    ts = jnp.asarray(ts)
    xs = jnp.asarray(xs)
    dxs = xs[1:] - xs[:-1]

    def step(z, inp):
        t, x, dx, e = inp
        g = vector_field(t, z, x, e)
        z1 = z + jnp.einsum("...hc,...c->...h", g, dx)
        return z1, (z1 if return_all else None)

    z_last, zs = jax.lax.scan(step, z0, (ts[:-1], xs[:-1], dxs, extra), unroll=unroll)
    if not return_all:
        return z_last
    return jnp.concatenate([jnp.asarray(z0)[None], zs], axis=0)
