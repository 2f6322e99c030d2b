"""`fit`: the one way in."""

from __future__ import annotations

import os

import jax
import numpy as np

from .._data import TimeSeries
from ..models._base import AbstractModel
from ..models._function import FunctionModel
from ._engines import RUNNERS, resolve_method
from ._posterior import Posterior
from ._sites import site_kinds

__all__ = ["fit"]


def _check_samplable(model, data: TimeSeries, method: str, key) -> None:
    """Refuse an MCMC engine for a program it cannot sample: one with no latent site, or
    with `numpyro.param` sites (network weights fitted as point estimates), which a
    sampler would leave at their initial values."""
    kinds = site_kinds(model.program, data.batch(), key)
    params = sorted(k for k, v in kinds.items() if v == "param")
    name = type(model).__name__
    if params:
        shown = ", ".join(params[:4]) + (", ..." if len(params) > 4 else "")
        raise ValueError(
            f"fit: method={method!r} samples latent variables, but {name} has {len(params)} "
            f"parameters that are point estimates ({shown}), which a sampler would leave at "
            "their initial values; fit it with method='svi'."
        )
    if not any(v == "latent" for v in kinds.values()):
        raise ValueError(
            f"fit: method={method!r} has nothing to sample: {name} has no latent sample site; "
            "fit it with method='svi'."
        )


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
    - `method`: `"svi"`, `"nuts"`, `"blackjax-nuts"`, `"chees"` (many-chain HMC, for
      accelerators), or a configured `bd.SVI(...)`, `bd.NUTS(...)`, `bd.BlackJAXNUTS(...)`,
      `bd.Chees(...)`.
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
    if getattr(method_obj, "batch_size", None) is not None and not model.minibatch:
        what = (
            f"the model function {getattr(model.fn, '__qualname__', model.fn)!r} takes no "
            "`subsample_size` keyword" if isinstance(model, FunctionModel)
            else f"{type(model).__name__} does not minibatch"
        )
        raise ValueError(
            f"fit: batch_size={method_obj.batch_size} needs a model that fits on minibatches, but "
            f"{what}; drop batch_size to fit on all {data.n_series} series at once."
        )
    model = model.adapt(data).for_engine(method_obj)
    if not getattr(method_obj, "point_estimates", False):
        _check_samplable(model, data, method_obj.name, key)
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
