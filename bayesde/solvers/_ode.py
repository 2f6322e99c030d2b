"""ODE solves over diffrax, with failure returned as a value."""

from __future__ import annotations

from typing import Callable, Optional

import diffrax
import jax.numpy as jnp

from ._schemes import ODE_SOLVERS, renamed_keyword

__all__ = ["solve_ode"]


def solve_ode(
    vector_field: Callable,
    y0,
    ts,
    args=None,
    *,
    t0=None,
    scheme: str = "tsit5",
    rtol: float = 1e-4,
    atol: float = 1e-6,
    dt: Optional[float] = None,
    max_steps: int = 4096,
    adjoint: Optional[diffrax.AbstractAdjoint] = None,
    solver: Optional[str] = None,
):
    """Solve `dy/dt = f(t, y, args)` from `t0` and return the states at `ts`.

    **Arguments:**

    - `vector_field`: `f(t, y, args)`.
    - `y0`: the state at `t0` (any array shape).
    - `ts`: save times, shape `(T,)`, non-decreasing, `>= t0` (irregular is fine).
    - `t0`: the initial time; default `ts[0]`.
    - `scheme`: the diffrax solver by name, one of `"tsit5"` (default), `"dopri5"`,
      `"dopri8"`, `"heun"`, `"euler"`, `"kvaerno5"` (stiff). (`solver` is its deprecated
      name.)
    - `rtol`, `atol`: adaptive step tolerances; ignored when `dt` is given.
    - `dt`: a constant step size instead of adaptive stepping (required for `"euler"`).
    - `max_steps`: the step budget; exceeding it is a failure, not an error.
    - `adjoint`: a diffrax adjoint; default `RecursiveCheckpointAdjoint`.

    **Returns:** `(ys, ok)`: states of shape `(T, *y0.shape)` and a boolean that is
    `False` when the solve failed (step budget exhausted, non-finite state). Failed
    states are replaced by zeros so that gradients stay finite; a likelihood should map
    `ok == False` to `-inf` (see `failure_log_prob`).
    """
    scheme = renamed_keyword("solve_ode", "solver", "scheme", scheme, solver)
    if scheme not in ODE_SOLVERS:
        raise ValueError(f"solve_ode: unknown scheme {scheme!r}; choose one of {sorted(ODE_SOLVERS)}.")
    if dt is None and scheme == "euler":
        raise ValueError(
            "solve_ode: scheme='euler' has no error estimate, so it cannot choose its own "
            "steps; pass a constant step `dt=...` or pick an adaptive solver such as 'tsit5'."
        )
    ts = jnp.asarray(ts)
    t0 = ts[0] if t0 is None else t0
    t1 = ts[-1]
    if dt is None:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = None
    else:
        controller = diffrax.ConstantStepSize()
        dt0 = dt
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        ODE_SOLVERS[scheme](),
        t0,
        # A zero-length interval is legal for a single save time at t0.
        jnp.maximum(t1, t0 + 1e-6),
        dt0 if dt0 is not None else None,
        y0,
        args=args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint if adjoint is not None else diffrax.RecursiveCheckpointAdjoint(),
        throw=False,
    )
    ys = sol.ys
    ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(ys))
    ys = jnp.where(ok, jnp.nan_to_num(ys), jnp.zeros_like(ys))
    return ys, ok


def failure_log_prob(ok):
    """`0` where a solve succeeded, `-inf` where it failed: add it to a log density."""
    return jnp.where(ok, 0.0, -jnp.inf)
