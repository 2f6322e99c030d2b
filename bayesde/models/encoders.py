"""Encoders of `LatentSDE`: each builds the network that reads a series backwards in
time (or, `"forward-gru"`, forwards) and returns a context at every observation.
`LatentSDE(encoder=...)` takes the object or its name (`"gru"`, `"forward-gru"`, `"ncde"`);
a saved run stores the name."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx

from ..networks._sde_nets import GRUEncoder, NCDEEncoder
from ._common import as_choice

__all__ = ["AbstractEncoder", "GRU", "ForwardGRU", "NCDE", "ENCODERS", "as_encoder"]


class AbstractEncoder(eqx.Module):
    """Builds an encoder network `(ts (T,), ys (T, D), mask (T, D)) -> context (T, C)`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def make(self, data_dim: int, width: int, context_dim: int, *, key) -> eqx.Module:
        """The network for `data_dim` value columns."""


class GRU(AbstractEncoder):
    """A GRU run backwards in time over `[y·mask, mask, Δt]`."""

    name: ClassVar[str] = "gru"

    def make(self, data_dim, width, context_dim, *, key):
        return GRUEncoder(data_dim, width, context_dim, key=key)


class ForwardGRU(AbstractEncoder):
    """A GRU run forwards in time over `[y·mask, mask, Δt]`: the context on the way to
    observation `j` summarises the observations up to and including `j`, so the posterior
    steers towards the next observation without seeing past it, and the prior drift has
    to carry what follows (a filter's view of the series, where the backward GRU gives a
    smoother's). Not the default: on sunspots from six origins its forecasts were no better
    than the climatology's (`docs/real-series.md`)."""

    name: ClassVar[str] = "forward-gru"

    def make(self, data_dim, width, context_dim, *, key):
        return GRUEncoder(data_dim, width, context_dim, key=key, backward=False)


class NCDE(AbstractEncoder):
    """A neural CDE run backwards in time over the filled values and observation counts
    (Kidger et al. 2020)."""

    name: ClassVar[str] = "ncde"

    def make(self, data_dim, width, context_dim, *, key):
        return NCDEEncoder(data_dim, width, context_dim, key=key)


#: Every encoder by name.
ENCODERS: dict[str, type[AbstractEncoder]] = {c.name: c for c in (GRU, ForwardGRU, NCDE)}


def as_encoder(value) -> AbstractEncoder:
    """The encoder object of `value` (a name or an `AbstractEncoder`)."""
    return as_choice(value, AbstractEncoder, ENCODERS, "LatentSDE.encoder")
