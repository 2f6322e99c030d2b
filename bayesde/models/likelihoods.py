"""Observation likelihoods: each turns a mean and a standard deviation into a NumPyro
distribution. A model field takes the object or its name (`"normal"`, `"laplace"`);
a saved run stores the name."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import numpy as np
import numpyro.distributions as dist

from ._common import as_choice

__all__ = ["AbstractLikelihood", "Normal", "Laplace", "LIKELIHOODS", "as_likelihood"]


class AbstractLikelihood(eqx.Module):
    """An observation law parametrised by its mean and standard deviation."""

    name: ClassVar[str]

    @abc.abstractmethod
    def dist(self, mean, sd) -> dist.Distribution:
        """The law with mean `mean` and standard deviation `sd`."""


class Normal(AbstractLikelihood):
    """`N(mean, sd²)`."""

    name: ClassVar[str] = "normal"

    def dist(self, mean, sd):
        return dist.Normal(mean, sd)


class Laplace(AbstractLikelihood):
    """Laplace with standard deviation `sd` (scale `b = sd / √2`): heavier tails."""

    name: ClassVar[str] = "laplace"

    def dist(self, mean, sd):
        return dist.Laplace(mean, sd / np.sqrt(2.0))


#: Every likelihood by name.
LIKELIHOODS: dict[str, type[AbstractLikelihood]] = {c.name: c for c in (Normal, Laplace)}


def as_likelihood(value) -> AbstractLikelihood:
    """The likelihood object of `value` (a name or an `AbstractLikelihood`)."""
    return as_choice(value, AbstractLikelihood, LIKELIHOODS, "LatentSDE.likelihood")
