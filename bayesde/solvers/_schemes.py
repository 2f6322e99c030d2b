"""Solver schemes as small objects: one table for the fixed-grid SDE steps and one for
the diffrax ODE solvers, so that a scheme is named in one place and chosen once, at
the edge (a string in the CLI or a saved run becomes the object here)."""

from __future__ import annotations

import abc
import warnings
from typing import Callable, ClassVar, Union

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = [
    "AbstractSDEScheme",
    "Euler",
    "Heun",
    "Milstein",
    "SDE_SCHEMES",
    "as_sde_scheme",
    "renamed_keyword",
    "ODE_SOLVERS",
    "ADAPTIVE_ODE_SOLVERS",
]


class AbstractSDEScheme(eqx.Module):
    """One step of a fixed-grid SDE solver for `dy = f dt + g dW`.

    A concrete scheme says how to advance `y` over `[t0, t1]` given the Brownian
    increment `dw`; `name` is the string that names it in the CLI and in saved runs.
    """

    name: ClassVar[str]
    #: Whether the scheme needs diagonal noise (`g` shaped like `y`).
    diagonal_only: ClassVar[bool] = False

    @abc.abstractmethod
    def step(self, terms: Callable, t0, t1, y, dw, a, noise_term: Callable):
        """`terms(t, y, a) -> (f, g)`; `noise_term(g, dw)` is `g dW`. Returns `y(t1)`."""

    @abc.abstractmethod
    def diffrax_solver(self) -> diffrax.AbstractSolver:
        """The diffrax solver of the same scheme (for reference solves)."""


class Euler(AbstractSDEScheme):
    """Itô Euler–Maruyama: `y₁ = y + f Δt + g ΔW`."""

    name: ClassVar[str] = "euler"

    def step(self, terms, t0, t1, y, dw, a, noise_term):
        dt = t1 - t0
        f, g = terms(t0, y, a)
        return y + f * dt + noise_term(g, dw)

    def diffrax_solver(self):
        return diffrax.Euler()


class Heun(AbstractSDEScheme):
    """Stratonovich Heun: an Euler predictor, then the trapezoidal average of both
    stages' drift and noise."""

    name: ClassVar[str] = "heun"

    def step(self, terms, t0, t1, y, dw, a, noise_term):
        dt = t1 - t0
        f, g = terms(t0, y, a)
        y_pred = y + f * dt + noise_term(g, dw)
        f1, g1 = terms(t1, y_pred, a)
        return y + 0.5 * (f + f1) * dt + 0.5 * (noise_term(g, dw) + noise_term(g1, dw))

    def diffrax_solver(self):
        return diffrax.Heun()


class Milstein(AbstractSDEScheme):
    """Itô Milstein for diagonal (commutative) noise:
    `y₁ = y + f Δt + g ΔW + ½ g g' (ΔW² − Δt)`."""

    name: ClassVar[str] = "milstein"
    diagonal_only: ClassVar[bool] = True

    def step(self, terms, t0, t1, y, dw, a, noise_term):
        dt = t1 - t0
        f, g = terms(t0, y, a)
        _, dg = jax.jvp(lambda z: terms(t0, z, a)[1], (y,), (jnp.ones_like(y),))
        return y + f * dt + g * dw + 0.5 * g * dg * (dw**2 - dt)

    def diffrax_solver(self):
        return diffrax.ItoMilstein()


#: Every fixed-grid SDE scheme by name.
SDE_SCHEMES: dict[str, type[AbstractSDEScheme]] = {c.name: c for c in (Euler, Heun, Milstein)}


def as_sde_scheme(value: Union[str, AbstractSDEScheme], owner: str = "scheme") -> AbstractSDEScheme:
    """A scheme object from its name (or the object itself); `owner` names the field in
    the error message."""
    if isinstance(value, AbstractSDEScheme):
        return value
    if isinstance(value, str) and value in SDE_SCHEMES:
        return SDE_SCHEMES[value]()
    raise ValueError(
        f"{owner}: {value!r} is not an SDE scheme; use one of {sorted(SDE_SCHEMES)} or a "
        "bd.solvers.Euler()/Heun()/Milstein() object."
    )


def renamed_keyword(owner: str, old: str, new: str, new_value, old_value):
    """The value of a keyword argument renamed from `old` to `new`: `old_value` (with a
    `DeprecationWarning`) when the caller still passes the old name, else `new_value`."""
    if old_value is None:
        return new_value
    warnings.warn(
        f"{owner}: `{old}` is now called `{new}`; pass {new}=... ({old}=... will stop working "
        "in a future release).",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


#: Every diffrax ODE solver by name (`bd.solvers.solve_ode`, the ODE models).
ODE_SOLVERS: dict[str, type] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
    "kvaerno5": diffrax.Kvaerno5,
}
#: The ODE solvers with an error estimate (adaptive steps).
ADAPTIVE_ODE_SOLVERS: tuple[str, ...] = ("tsit5", "dopri5", "dopri8", "heun", "kvaerno5")
