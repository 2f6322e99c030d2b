"""Time grids shared by every fixed-grid solve: sub-step refinement and linear
interpolation of a path stored on a grid."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["refine_grid", "time_grid", "interp_linear"]


def refine_grid(knots, substeps: int, *, skip_single: bool = True):
    """Split every interval of `knots` into `substeps` equal steps.

    **Arguments:**

    - `knots`: non-decreasing times `(T,)`.
    - `substeps`: steps per interval (a Python int, `>= 1`).
    - `skip_single`: with `substeps == 1`, return `knots` itself rather than evaluating
      the (equal-valued) interpolation; `False` keeps the same operations for every
      `substeps`, which a model may need to reproduce its earlier runs bit for bit.

    **Returns:** the grid `((T − 1)·substeps + 1,)`; knot `j` sits at index
    `j · substeps`, so the states at the knots are `path[::substeps]`.
    """
    knots = jnp.asarray(knots)
    if substeps < 1:
        raise ValueError(f"refine_grid: substeps must be >= 1, got {substeps}.")
    if substeps == 1 and skip_single:
        return knots
    frac = jnp.arange(substeps, dtype=knots.dtype) / substeps
    fine = (knots[:-1, None] + frac[None] * jnp.diff(knots)[:, None]).reshape(-1)
    return jnp.concatenate([fine, knots[-1:]])


def time_grid(knots, num_steps: int):
    """A grid of `num_steps` steps through `knots`, placed by time: each interval gets one
    step, and the other `num_steps − (T − 1)` are shared out in proportion to the
    intervals' lengths, so that a long gap between two observations is crossed in many
    steps and a short interval in few (no step much longer than the span over the
    steps shared out). With `num_steps = (T − 1)·substeps`, equal intervals get
    `substeps` steps each (the grid of `refine_grid`); zero-length intervals (repeated
    knots) get one, of length 0.

    **Arguments:**

    - `knots`: non-decreasing times `(T,)`, `T >= 2`.
    - `num_steps`: the grid's steps (a Python int, `>= T − 1`).

    **Returns:** `(grid, pos, seg)`: the grid `(num_steps + 1,)`, the index of each knot
    on it `pos (T,)` (`pos[0] = 0`, `pos[-1] = num_steps`), and the interval each step
    lies in `seg (num_steps,)` (for per-interval inputs).
    """
    knots = jnp.asarray(knots)
    n_int = knots.shape[0] - 1
    if n_int < 1:
        raise ValueError(f"time_grid: needs at least two knots, got {knots.shape[0]}.")
    if num_steps < n_int:
        raise ValueError(f"time_grid: num_steps must be >= the {n_int} intervals, got {num_steps}.")
    free = num_steps - n_int
    dt = jnp.diff(knots)
    total = jnp.sum(dt)
    share = jnp.where(total > 0, jnp.cumsum(dt) / jnp.where(total > 0, total, 1.0), jnp.arange(1, n_int + 1) / n_int)
    # cumulative rounding: every interval's share rounded so that the shares add up exactly
    ends = jnp.floor(free * share + 0.5).astype(jnp.int32).at[-1].set(free)
    steps = 1 + jnp.diff(ends, prepend=0)  # (T − 1,), each >= 1
    pos = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(steps).astype(jnp.int32)])
    s = jnp.arange(num_steps)
    seg = jnp.searchsorted(pos[1:], s, side="right")
    frac = (s - pos[seg]).astype(knots.dtype) / steps[seg].astype(knots.dtype)
    grid = jnp.concatenate([knots[seg] + frac * dt[seg], knots[-1:]])
    return grid, pos, seg


def interp_linear(grid, path, t):
    """Piecewise-linear interpolation of a path stored on a grid.

    **Arguments:**

    - `grid`: non-decreasing times `(G,)`.
    - `path`: values on the grid `(G, *shape)`.
    - `t`: query times, any shape; times outside `[grid[0], grid[-1]]` read the end
      values, and a zero-length interval reads its left end.

    **Returns:** `(*t.shape, *shape)`.
    """
    grid, path, t = jnp.asarray(grid), jnp.asarray(path), jnp.asarray(t)
    if grid.shape[0] == 1:
        return jnp.broadcast_to(path[0], t.shape + path.shape[1:])
    j = jnp.clip(jnp.searchsorted(grid, t, side="right") - 1, 0, grid.shape[0] - 2)
    width = grid[j + 1] - grid[j]
    lam = jnp.clip(jnp.where(width > 0, (t - grid[j]) / jnp.where(width > 0, width, 1.0), 0.0), 0.0, 1.0)
    lam = lam.reshape(lam.shape + (1,) * (path.ndim - 1))
    return path[j] + lam * (path[j + 1] - path[j])
