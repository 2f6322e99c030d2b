"""The model interface: an immutable `eqx.Module` that carries its configuration and
exposes its NumPyro program."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from numpyro.infer import init_to_median

from .._data import Batch, TimeSeries

__all__ = ["AbstractModel", "Query", "MODEL_REGISTRY", "register_model"]


class Query(NamedTuple):
    """Where a program should predict: `ts (N, T')` and, for models with treatment
    inputs, the `treatments (N, T', K)` to apply there."""

    ts: jnp.ndarray
    treatments: Optional[jnp.ndarray] = None


#: Every concrete model class by name, so that `bd.load` can rebuild it.
MODEL_REGISTRY: dict[str, type] = {}


def register_model(cls):
    """Class decorator: record a model class by name so that `bd.load` can rebuild a saved
    run of it. Use it on your own `AbstractModel` subclasses (define them in an importable
    module, import it before `bd.load`)."""
    if not (isinstance(cls, type) and issubclass(cls, AbstractModel)):
        raise TypeError(
            f"register_model: expected a subclass of bd.models.AbstractModel, got {cls!r}."
        )
    known = MODEL_REGISTRY.get(cls.__name__)
    if known is not None and known is not cls and (known.__module__, known.__qualname__) != (
        cls.__module__, cls.__qualname__
    ):
        raise ValueError(
            f"register_model: a model named {cls.__name__!r} is already registered "
            f"({known.__module__}.{known.__qualname__}); give your class another name."
        )
    MODEL_REGISTRY[cls.__name__] = cls
    return cls


class AbstractModel(eqx.Module):
    """Base of every bayesde model.

    A concrete model is a frozen dataclass of hyperparameters. Its NumPyro program,
    `program(batch, query=None, *, subsample_size=None)`, must

    - observe the data at the site `"y"` (shape `(N, T, D)`, masked by `batch.mask`);
    - when `query` is given, sample the posterior predictive at the site `"y_out"`
      (shape `(N, T', D)`, observation noise included) and record its noise-free mean as
      `numpyro.deterministic("f_out", ...)`;
    - when `subsample_size` is given (SVI only), put the per-series likelihood in
      `numpyro.plate("series", N, subsample_size=subsample_size)` so that global terms
      (priors, path-space KLs of shared weights) are not rescaled.

    Models never import an engine. `amortized` models (an encoder reads the history)
    can predict for series they were not fitted on.
    """

    amortized: ClassVar[bool] = False
    needs_treatments: ClassVar[bool] = False
    #: Whether `program` honours `subsample_size` (minibatch SVI); `fit` refuses
    #: `batch_size` for a model that does not.
    minibatch: ClassVar[bool] = True

    def adapt(self, data: TimeSeries) -> "AbstractModel":
        """A copy with data-derived constants (e.g. standardisation) filled in; called
        once by `fit` before anything compiles. Validates that `data` suits the model."""
        return self

    @abc.abstractmethod
    def program(self, batch: Batch, query: Optional[Query] = None, *, subsample_size=None):
        ...

    def guide(self):
        """A NumPyro guide for SVI, or `None` for the engine's default autoguide."""
        return None

    def init_strategy(self):
        return init_to_median(num_samples=15)

    # --------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        """The hyperparameters as JSON-ready values (arrays become nested lists)."""
        out = {}
        for field in dataclasses.fields(self):
            out[field.name] = _to_json(getattr(self, field.name), field.name, type(self).__name__)
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AbstractModel":
        return cls(**{k: _from_json(v) for k, v in config.items()})


def _to_json(value, name, owner):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_to_json(v, name, owner) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, name, owner) for k, v in value.items()}
    if isinstance(value, (np.ndarray, jnp.ndarray)) or hasattr(value, "__array__"):
        arr = np.asarray(value)
        return {"__array__": arr.tolist(), "dtype": str(arr.dtype)}
    import numpyro.distributions as ndist

    if isinstance(value, ndist.Distribution):
        params = {k: _to_json(getattr(value, k), name, owner) for k in value.arg_constraints
                  if k in getattr(value, "__dict__", {}) or hasattr(value, k)}
        if type(value).__name__ not in dir(ndist):
            raise ValueError(f"{owner}.{name}: cannot save distribution {value!r}; use one from numpyro.distributions.")
        return {"__dist__": type(value).__name__, "params": params}
    if callable(value):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        if module and qualname and "<" not in qualname:
            return {"__callable__": f"{module}:{qualname}"}
        raise ValueError(
            f"{owner}.{name}: cannot save {value!r}; define it as a top-level function "
            "in an importable module so that the run can be loaded again."
        )
    raise ValueError(f"{owner}.{name}: cannot save a value of type {type(value).__name__}.")


# Modules a saved model may never name: a run description is data, not a script.
_FORBIDDEN_MODULES = frozenset({
    "builtins", "os", "posix", "nt", "sys", "subprocess", "shutil", "importlib", "pickle",
    "marshal", "socket", "ctypes", "runpy", "code", "pty", "signal", "multiprocessing",
})


def _import_callable(ref) -> Callable:
    """Resolve `"module:qualname"` to a Python callable, refusing builtins and system modules."""
    import importlib
    import inspect

    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ValueError(f"load: {ref!r} is not a 'module:qualname' reference; the run description is damaged.")
    module, qualname = ref.split(":")
    if module.split(".")[0] in _FORBIDDEN_MODULES:
        raise ValueError(
            f"load: the saved model refers to {ref}, which is not a model function; refusing "
            "to import it (was bayesde.json edited?)."
        )
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"load: the saved model refers to {ref}, which cannot "
            f"be imported ({e}); import or define it before loading."
        ) from None
    if not callable(obj) or inspect.isbuiltin(obj) or inspect.ismodule(obj):
        raise ValueError(
            f"load: the saved model refers to {ref}, which is a {type(obj).__name__}, not a "
            "Python function or class; refusing to use it."
        )
    return obj


def _from_json(value):
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        if "__dist__" in value:
            import numpyro.distributions as ndist

            params = {k: _from_json(v) for k, v in value["params"].items()}
            return getattr(ndist, value["__dist__"])(**params)
        if "__callable__" in value:
            return _import_callable(value["__callable__"])
        return {k: _from_json(v) for k, v in value.items()}
    return value
