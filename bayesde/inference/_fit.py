"""`fit`: the one way in."""

from __future__ import annotations

import inspect
import os
from typing import Callable, Optional

import equinox as eqx
import jax
import numpy as np

from .._data import TimeSeries
from ..models._base import AbstractModel
from ._engines import RUNNERS, resolve_method
from ._posterior import Posterior

__all__ = ["fit", "FunctionModel"]


class FunctionModel(AbstractModel):
    """Wraps a plain NumPyro model `fn(batch, query=None)` that follows the site contract
    of `AbstractModel` (observe `"y"`, predict `"y_out"`)."""

    fn: Callable = eqx.field(static=True)

    def program(self, batch, query=None, *, subsample_size=None):
        return self.fn(batch, query)


def _as_key(key):
    if key is None:
        raise ValueError("fit: key is required, e.g. key=jax.random.key(0) (same key, same numbers).")
    try:
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        arr = np.asarray(key)
    except AttributeError:
        raise TypeError(f"fit: key must be a JAX PRNG key, got {type(key).__name__}.") from None
    if arr.dtype == np.uint32 and arr.shape == (2,):
        return jax.random.wrap_key_data(arr)
    raise TypeError("fit: key must be a JAX PRNG key such as jax.random.key(0).")


def fit(
    model,
    data: TimeSeries,
    method="svi",
    *,
    key,
    progress_bar: bool = True,
    warn: bool = True,
    **options,
) -> Posterior:
    """Fit `model` to `data` and return its `Posterior`.

    **Arguments:**

    - `model`: a `bd.models` model, or a plain NumPyro model `fn(batch, query=None)`.
    - `data`: a `bd.TimeSeries`.
    - `method`: `"svi"`, `"nuts"`, `"blackjax-nuts"`, or a configured `bd.SVI(...)`,
      `bd.NUTS(...)`, `bd.BlackJAXNUTS(...)`.
    - `key`: a JAX PRNG key; the same key gives the same numbers.
    - `progress_bar`: show progress (off when `BAYESDE_FAST=1`).
    - `warn`: warn after the fit about divergences, R-hat, ESS, unconverged loss.
    - `**options`: fields of the method, e.g. `num_steps=2000`, `learning_rate=1e-2`,
      `batch_size=64` (SVI) or `num_warmup=500`, `num_samples=500`, `num_chains=4`.

    **Returns:** a `bd.Posterior`.
    """
    if isinstance(model, type) and issubclass(model, AbstractModel):
        raise TypeError(
            f"fit: model is the class {model.__name__}, not a model; build one first, e.g. "
            f"bd.models.{model.__name__}(...)."
        )
    if not isinstance(model, AbstractModel):
        if callable(model):
            model = FunctionModel(model)
        else:
            raise TypeError(
                f"fit: model must be a bd.models model or a NumPyro model function, got "
                f"{type(model).__name__}."
            )
    if not isinstance(data, TimeSeries):
        raise TypeError(
            f"fit: data must be a bd.TimeSeries, got {type(data).__name__}; build one with "
            "bd.TimeSeries(ts, ys) or bd.TimeSeries.from_pandas(df)."
        )
    key = _as_key(key)
    method_obj = resolve_method(method, options)
    if getattr(method_obj, "batch_size", None) is not None and method_obj.batch_size > data.n_series:
        raise ValueError(
            f"fit: batch_size={method_obj.batch_size} exceeds the {data.n_series} series in data."
        )
    if model.needs_treatments and data.treatments is None:
        raise ValueError(
            f"fit: {type(model).__name__} needs treatments; build the TimeSeries with treatments=..."
        )
    model = model.adapt(data)
    progress = progress_bar and os.environ.get("BAYESDE_FAST", "") in ("", "0")
    runner = RUNNERS[type(method_obj)]
    result = runner(model, data.batch(), method_obj, key=key, progress_bar=progress)
    post = Posterior(
        model, data, method_obj, result, key_data=jax.random.key_data(key), method_name=method_obj.name
    )
    if warn:
        from ._diagnostics import warn_if_unhealthy

        warn_if_unhealthy(post)
    return post
