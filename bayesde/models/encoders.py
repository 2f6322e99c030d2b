"""Encoders of `LatentSDE`: each builds the network that reads a series backwards in
time and returns a context at every observation. `LatentSDE(encoder=...)` takes the
object or its name (`"gru"`, `"ncde"`); a saved run stores the name."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx

from ..networks._sde_nets import GRUEncoder, NCDEEncoder
from ._common import as_choice

__all__ = ["AbstractEncoder", "GRU", "NCDE", "ENCODERS", "as_encoder"]


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


class NCDE(AbstractEncoder):
    """A neural CDE run backwards in time over the filled values and observation counts
    (Kidger et al. 2020)."""

    name: ClassVar[str] = "ncde"

    def make(self, data_dim, width, context_dim, *, key):
        return NCDEEncoder(data_dim, width, context_dim, key=key)


#: Every encoder by name.
ENCODERS: dict[str, type[AbstractEncoder]] = {c.name: c for c in (GRU, NCDE)}


def as_encoder(value) -> AbstractEncoder:
    """The encoder object of `value` (a name or an `AbstractEncoder`)."""
    return as_choice(value, AbstractEncoder, ENCODERS, "LatentSDE.encoder")
