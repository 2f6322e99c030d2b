"""Fixed-grid SDE solves stepped by `lax.scan`.

Diffrax's general loop costs far more than a bare scan for the small fixed-step solves
inside an ELBO (see `benchmarks/`), and its grid Brownian path refuses reverse-mode
gradients. Here the Brownian increments are drawn on the grid from an explicit key and
the solver is a scan: this is the training path of every SDE model. Adaptive and
reference solves stay with diffrax (`solve_sde_diffrax`).
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Union

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._grid import interp_linear
from ._schemes import AbstractSDEScheme, as_sde_scheme, renamed_keyword

__all__ = ["brownian_increments", "solve_sde_grid", "GridBrownianPath", "solve_sde_diffrax"]


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
    scheme: Union[str, AbstractSDEScheme] = "euler",
    noise: Literal["diagonal", "general"] = "diagonal",
    step_inputs=None,
    checkpoint: bool = False,
    method: Union[str, AbstractSDEScheme, None] = None,
):
    """Solve `dy = f(t, y, args) dt + g(t, y, args) dW` on the grid `ts`.

    **Arguments:**

    - `drift`, `diffusion`: `f(t, y, args)` returns an array shaped like `y`;
      `g(t, y, args)` returns an array shaped like `y` (`noise="diagonal"`: element-wise
      noise, `dW` shaped `(len(ts) - 1, *y.shape)`) or a matrix `(y.size, m)`
      (`noise="general"`, `dW` shaped `(len(ts) - 1, m)`). With `diffusion=None`,
      `drift(t, y, args)` returns the pair `(f, g)`: one call per stage, for models
      whose drift and diffusion share work (a latent SDE's drift contains `g ⊙ u`).
    - `y0`: initial state (any array shape).
    - `ts`: the grid, shape `(n,)`; the solver takes one step per interval.
    - `dW`: Brownian increments on the grid (`brownian_increments`).
    - `scheme`: an `AbstractSDEScheme` or its name: `"euler"` (Itô Euler–Maruyama),
      `"heun"` (Stratonovich Heun) or `"milstein"` (Itô, diagonal noise). (`method` is
      its deprecated name.)
    - `step_inputs`: optional PyTree of per-step values with leading axis `len(ts) - 1`
      (e.g. an encoder's context, piecewise constant over each step). When given, `f`
      and `g` are called with `(args, inputs_n)` in place of `args` on step `n`.
    - `checkpoint`: recompute each step's intermediate values in the backward pass
      instead of storing them (`jax.checkpoint`): less memory traffic, which on CPU
      makes reverse-mode gradients of wide networks faster as well as smaller.

    **Returns:** the states at every grid time, shape `(n, *y0.shape)`.
    """
    ts = jnp.asarray(ts)
    y0 = jnp.asarray(y0)

    def noise_term(g, dw):
        if noise == "diagonal":
            return g * dw
        return (g @ dw).reshape(y0.shape)

    if diffusion is None:
        terms = drift
    else:
        def terms(t, y, a):
            return drift(t, y, a), diffusion(t, y, a)

    scheme = renamed_keyword("solve_sde_grid", "method", "scheme", scheme, method)
    scheme = as_sde_scheme(scheme, "solve_sde_grid.scheme")
    if scheme.diagonal_only and noise != "diagonal":
        raise ValueError(f"solve_sde_grid: scheme={scheme.name!r} needs noise='diagonal'.")

    def step(y, inp):
        t0, t1, dw, extra = inp
        a = args if step_inputs is None else (args, extra)
        y1 = scheme.step(terms, t0, t1, y, dw, a, noise_term)
        return y1, y1

    if checkpoint:
        step = jax.checkpoint(step)
    extra = jnp.zeros((ts.shape[0] - 1,), ts.dtype) if step_inputs is None else step_inputs
    _, ys = jax.lax.scan(step, y0, (ts[:-1], ts[1:], dW, extra))
    return jnp.concatenate([y0[None], ys], axis=0)


class GridBrownianPath(diffrax.AbstractBrownianPath):
    """A Brownian path given by its increments on a grid, linear in between.

    It lets diffrax step *exactly the same* Brownian path as `solve_sde_grid` (so that
    the two solvers can be compared path by path) and, unlike diffrax's own grid
    path, it is differentiable in reverse mode.

    **Arguments:**

    - `ts`: the grid, shape `(n,)`.
    - `dW`: increments, shape `(n - 1, *shape)` (`brownian_increments`).
    """

    ts: jax.Array
    W: jax.Array
    levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

    def __init__(self, ts, dW):
        self.ts = jnp.asarray(ts)
        dW = jnp.asarray(dW)
        self.W = jnp.concatenate([jnp.zeros_like(dW[:1]), jnp.cumsum(dW, axis=0)], axis=0)

    @property
    def t0(self):
        return self.ts[0]

    @property
    def t1(self):
        return self.ts[-1]

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        del left
        if t1 is not None:
            dw = self.evaluate(t1) - self.evaluate(t0)
            if use_levy:
                return diffrax.BrownianIncrement(dt=t1 - t0, W=dw)
            return dw
        return interp_linear(self.ts, self.W, t0)


def solve_sde_diffrax(
    drift: Callable,
    diffusion: Callable,
    y0,
    ts,
    dW=None,
    args=None,
    *,
    key=None,
    scheme: Union[str, AbstractSDEScheme] = "euler",
    noise: Literal["diagonal", "general"] = "diagonal",
    brownian_shape: Optional[tuple] = None,
    dt0: Optional[float] = None,
    tol: Optional[float] = None,
    max_steps: int = 16384,
    method: Union[str, AbstractSDEScheme, None] = None,
):
    """Reference SDE solve through `diffrax.diffeqsolve` (same semantics as
    `solve_sde_grid`, for checks and for solves off the training path).

    `dy = f(t, y, args) dt + g(t, y, args) dW`, with `f`, `g`, `scheme` and `noise`
    as in `solve_sde_grid` (`method` is the deprecated name of `scheme`).

    **Arguments:**

    - `ts`: save times `(n,)`.
    - `dW`: Brownian increments on `ts`: the solve then steps exactly `ts` with a
      `GridBrownianPath` and returns the same path as `solve_sde_grid` for the same
      increments. Otherwise pass `key` for a `diffrax.VirtualBrownianTree`
      (`brownian_shape`: the noise shape, default `y0.shape` for diagonal noise;
      `tol`: its tolerance, default `dt0 / 10`) and `dt0` for a constant step.

    **Returns:** the states at `ts`, shape `(n, *y0.shape)`.
    """
    import lineax

    scheme = renamed_keyword("solve_sde_diffrax", "method", "scheme", scheme, method)
    scheme = as_sde_scheme(scheme, "solve_sde_diffrax.scheme")
    ts = jnp.asarray(ts)
    y0 = jnp.asarray(y0)
    if dW is not None:
        path = GridBrownianPath(ts, dW)
        controller = diffrax.StepTo(ts=ts)
        step = None
    else:
        if key is None or dt0 is None:
            raise ValueError("solve_sde_diffrax: pass either dW, or both key=... and dt0=....")
        shape = brownian_shape if brownian_shape is not None else y0.shape
        path = diffrax.VirtualBrownianTree(
            ts[0], ts[-1], tol=tol if tol is not None else dt0 / 10, shape=shape, key=key
        )
        controller = diffrax.ConstantStepSize()
        step = dt0
    if noise == "diagonal":
        vf = lambda t, y, a: lineax.DiagonalLinearOperator(diffusion(t, y, a))  # noqa: E731
    else:
        vf = diffusion
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(vf, path))
    sol = diffrax.diffeqsolve(
        terms,
        scheme.diffrax_solver(),
        ts[0],
        ts[-1],
        step,
        y0,
        args=args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    return sol.ys
