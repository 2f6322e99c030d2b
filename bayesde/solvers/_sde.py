"""Fixed-grid SDE solves stepped by `lax.scan`.

Diffrax's general loop costs far more than a bare scan for the small fixed-step solves
inside an ELBO (see `benchmarks/`), and its grid Brownian path refuses reverse-mode
gradients. Here the Brownian increments are drawn on the grid from an explicit key and
the solver is a scan: this is the training path of every SDE model. Adaptive and
reference solves stay with diffrax (`solve_sde_diffrax`).
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import jax
import jax.numpy as jnp

__all__ = ["brownian_increments", "solve_sde_grid"]


def brownian_increments(key, ts, shape=(), dtype=None):
    """Increments `W(t_{n+1}) - W(t_n) ~ N(0, t_{n+1} - t_n)` on the grid `ts`.

    **Returns:** an array of shape `(len(ts) - 1, *shape)`.
    """
    ts = jnp.asarray(ts)
    dtype = dtype or ts.dtype
    dt = jnp.diff(ts)
    z = jax.random.normal(key, (dt.shape[0], *shape), dtype=dtype)
    return z * jnp.sqrt(dt).reshape((-1,) + (1,) * len(shape)).astype(dtype)


def solve_sde_grid(
    drift: Callable,
    diffusion: Callable,
    y0,
    ts,
    dW,
    args=None,
    *,
    method: Literal["euler", "heun", "milstein"] = "euler",
    noise: Literal["diagonal", "general"] = "diagonal",
):
    """Solve `dy = f(t, y, args) dt + g(t, y, args) dW` on the grid `ts`.

    **Arguments:**

    - `drift`, `diffusion`: `f(t, y, args)` returns an array shaped like `y`;
      `g(t, y, args)` returns an array shaped like `y` (`noise="diagonal"`: element-wise
      noise, `dW` shaped `(len(ts) - 1, *y.shape)`) or a matrix `(y.size, m)`
      (`noise="general"`, `dW` shaped `(len(ts) - 1, m)`).
    - `y0`: initial state (any array shape).
    - `ts`: the grid, shape `(n,)`; the solver takes one step per interval.
    - `dW`: Brownian increments on the grid (`brownian_increments`).
    - `method`: `"euler"` (Itô Euler–Maruyama), `"heun"` (Stratonovich Heun) or
      `"milstein"` (Itô, diagonal noise).

    **Returns:** the states at every grid time, shape `(n, *y0.shape)`.
    """
    ts = jnp.asarray(ts)
    y0 = jnp.asarray(y0)

    def noise_term(g, dw):
        if noise == "diagonal":
            return g * dw
        return (g @ dw).reshape(y0.shape)

    def step(y, inp):
        t0, t1, dw = inp
        dt = t1 - t0
        f = drift(t0, y, args)
        g = diffusion(t0, y, args)
        if method == "euler":
            y1 = y + f * dt + noise_term(g, dw)
        elif method == "heun":
            y_pred = y + f * dt + noise_term(g, dw)
            f1 = drift(t1, y_pred, args)
            g1 = diffusion(t1, y_pred, args)
            y1 = y + 0.5 * (f + f1) * dt + 0.5 * (noise_term(g, dw) + noise_term(g1, dw))
        elif method == "milstein":
            if noise != "diagonal":
                raise ValueError("solve_sde_grid: method='milstein' needs noise='diagonal'.")
            _, dg = jax.jvp(lambda z: diffusion(t0, z, args), (y,), (jnp.ones_like(y),))
            y1 = y + f * dt + g * dw + 0.5 * g * dg * (dw**2 - dt)
        else:
            raise ValueError(
                f"solve_sde_grid: unknown method {method!r}; use 'euler', 'heun' or 'milstein'."
            )
        return y1, y1

    _, ys = jax.lax.scan(step, y0, (ts[:-1], ts[1:], dW))
    return jnp.concatenate([y0[None], ys], axis=0)
