"""Diffusion families of `LatentSDE` (Oh, Lim & Kim, ICLR 2024): each says how the
diffusion network is built, what `g(t, z)` is, and which latent state the decoder reads.

`LatentSDE(family=...)` takes one of these objects or its name (`"neural"`,
`"langevin"`, `"linear-noise"`, `"geometric"`); a saved run stores the name.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Optional

import equinox as eqx
import jax.numpy as jnp

from ..networks._sde_nets import PerDimNet, TimeNet
from ._common import as_choice

__all__ = ["AbstractFamily", "Neural", "Langevin", "LinearNoise", "Geometric", "FAMILIES", "as_family"]


class AbstractFamily(eqx.Module):
    """A diffusion family: `diffusion_net` builds the network `g` reads, `diffusion`
    gives `g(t, z)`, `readout` the latent state the decoder reads. The prior drift is
    the drift network's output in every family. The diffusion network's output is a
    scale in (0, 1) (a sigmoid); `LatentSDE.diffusion_floor` lifts it to (floor, 1)
    before `diffusion` reads it."""

    name: ClassVar[str]
    #: Whether model time may run over many units (`LatentSDE.steps_per_unit`); a family
    #: whose paths can blow up over long model times keeps the series' span as the unit.
    many_time_units: ClassVar[bool] = True
    #: The bound `LatentSDE(control_bound="auto")` puts on the Girsanov control `u`
    #: (`c·tanh(u / c)`), or `None` for none: needed where `g` grows with the state.
    control_bound: ClassVar[Optional[float]] = None
    #: The least diffusion scale `LatentSDE(diffusion_floor="auto")` allows (the network's
    #: `σ ∈ (0, 1)` read as `floor + (1 − floor)·σ`), or `None` for none: needed where the
    #: ELBO drives the diffusion to zero and the SDE degenerates into an ODE.
    diffusion_floor: ClassVar[Optional[float]] = None
    #: The bound `LatentSDE(drift_bound="auto")` puts on the prior drift network's output
    #: (`b·tanh(h / b)`), or `None` for none: needed where the decoder reads a state that
    #: an unbounded drift would blow up.
    drift_bound: ClassVar[Optional[float]] = None

    @abc.abstractmethod
    def diffusion_net(self, latent_dim: int, width: int, *, key) -> eqx.Module:
        """The diffusion network for a latent state of size `latent_dim`."""

    @abc.abstractmethod
    def diffusion(self, net, t, z):
        """`g(t, z)`, shaped like `z` (diagonal noise), from the diffusion network."""

    @abc.abstractmethod
    def readout(self, z):
        """The latent state the decoder reads, from the solver's state `z`."""


class Neural(AbstractFamily):
    """`g_k(z) = sigmoid(MLP_k(z_k))`, one small MLP per coordinate (Li et al. 2020)."""

    name: ClassVar[str] = "neural"

    def diffusion_net(self, latent_dim, width, *, key):
        return PerDimNet(latent_dim, width, key=key)

    def diffusion(self, net, t, z):
        return net(z)

    def readout(self, z):
        return z


class _TimeFamily(AbstractFamily):
    """The stable families: `σ(t) = sigmoid(MLP(t))`, one output per coordinate."""

    def diffusion_net(self, latent_dim, width, *, key):
        return TimeNet(latent_dim, width, key=key)


class Langevin(_TimeFamily):
    """`g(t) = σ(t)`, additive noise (a Langevin-type SDE)."""

    name: ClassVar[str] = "langevin"

    def diffusion(self, net, t, z):
        return net(t)

    def readout(self, z):
        return z


class LinearNoise(_TimeFamily):
    """`g(t, z) = σ(t) ⊙ z`, linear multiplicative noise."""

    name: ClassVar[str] = "linear-noise"
    # The posterior drift `h + g ⊙ u = h + σ(t) z ⊙ u(z, ·)` grows like z² (the control
    # is about linear in z), so paths blow up in finite time when model time runs over
    # many units: this family keeps the span as the unit.
    many_time_units: ClassVar[bool] = False
    # Even over one unit: an unbounded control lets the posterior drift's `z ⊙ u` term
    # grow quadratically, and fits on plain data (an OU process, Lotka–Volterra counts)
    # stopped on a non-finite loss within 100 steps. With `|u| ≤ 5` that term grows at
    # most linearly (relative rate `5·σ(t) ≤ 5` per unit), so paths cannot explode in
    # finite time, while a departure of `e⁵` from the prior over the unit is still open.
    control_bound: ClassVar[Optional[float]] = 5.0

    def diffusion(self, net, t, z):
        return net(t) * z

    def readout(self, z):
        return z


class Geometric(_TimeFamily):
    """`dz / z = γ dt + σ(t) dW`, a positive state, solved in log coordinates.

    The solver's state is `x = log z` with `dx = γ̃(x) dt + σ(t) dW` (additive noise,
    `γ̃` the drift network) and the decoder reads `z = exp(x)`; by Itô's formula
    `dz / z = (γ̃ + σ²/2) dt + σ dW`, a geometric SDE whose state stays positive. (With
    `z` itself as the state, `h = z ⊙ γ(z)` and `g = z ⊙ σ(t)` vanish wherever the
    standardised state nears 0, and fits collapsed there.) The path KL is the same in
    either coordinate: the Girsanov control `u = (f − h) / g` does not change."""

    name: ClassVar[str] = "geometric"
    # Without a floor the ELBO drives σ(t) to zero within a few hundred steps: exp(x) turns
    # the noise of x into spread that grows with the state, so the ELBO prefers a
    # deterministic path, a damped ODE whose forecasts settle on a level
    # (docs/calibration.md has the measurement). A relative volatility of at least 5% per
    # unit of model time keeps it an SDE.
    diffusion_floor: ClassVar[Optional[float]] = 0.05
    # The decoder reads exp(x): a drift network that grows with x (it can: its last layer
    # is linear) makes x grow exponentially and exp(x) doubly so, and forecasts of a
    # growing process blew up. With |γ̃| ≤ 5, log z moves at most 5 per unit of model
    # time plus the noise: z grows at most exponentially, as a geometric SDE with a
    # bounded rate does.
    drift_bound: ClassVar[Optional[float]] = 5.0

    def diffusion(self, net, t, z):
        return net(t)

    def readout(self, z):
        return jnp.exp(jnp.clip(z, -20.0, 20.0))


#: Every diffusion family by name.
FAMILIES: dict[str, type[AbstractFamily]] = {c.name: c for c in (Neural, Langevin, LinearNoise, Geometric)}


def as_family(value) -> AbstractFamily:
    """The family object of `value` (a name or an `AbstractFamily`)."""
    return as_choice(value, AbstractFamily, FAMILIES, "LatentSDE.family")
