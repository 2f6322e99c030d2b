"""Time grids shared by every fixed-grid solve: sub-step refinement and linear
interpolation of a path stored on a grid."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["refine_grid", "interp_linear"]


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
