"""A plain NumPyro model function as a bayesde model."""

from __future__ import annotations

import inspect
from typing import Callable

import equinox as eqx

from ._base import AbstractModel, register_model

__all__ = ["FunctionModel"]


def _takes_subsample_size(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "subsample_size" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@register_model
class FunctionModel(AbstractModel):
    """Wraps a plain NumPyro model `fn(batch, query=None)` that follows the site contract
    of `AbstractModel` (observe `"y"`, predict `"y_out"`). `fit` builds it for you when it
    is given a function.

    A function that also takes a keyword `subsample_size` (and puts its per-series
    likelihood in `numpyro.plate("series", N, subsample_size=subsample_size)`) can be
    fitted on minibatches (`batch_size=...`); any other is fitted on the whole data.
    Define the function at the top level of an importable module so that a saved run can
    be loaded again.
    """

    fn: Callable = eqx.field(static=True)

    @property
    def minibatch(self) -> bool:  # type: ignore[override]
        return _takes_subsample_size(self.fn)

    def program(self, batch, query=None, *, subsample_size=None):
        if subsample_size is not None:
            return self.fn(batch, query, subsample_size=subsample_size)
        return self.fn(batch, query)
