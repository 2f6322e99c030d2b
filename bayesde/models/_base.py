"""The model interface: an immutable `eqx.Module` that carries its configuration and
exposes its NumPyro program."""

from __future__ import annotations

import abc
import dataclasses
import warnings
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


def _rename_keywords(cls, kwargs: dict) -> dict:
    """Map deprecated keyword names of `cls` (`cls._renamed`: old -> new) to the new
    ones, with a `DeprecationWarning`."""
    renamed = getattr(cls, "_renamed", None)
    if not renamed or not any(k in renamed for k in kwargs):
        return kwargs
    kwargs = dict(kwargs)
    for old, new in renamed.items():
        if old not in kwargs:
            continue
        if new in kwargs:
            raise ValueError(
                f"{cls.__name__}: got both {old!r} and {new!r}; {old!r} is the old name of "
                f"{new!r}, pass only {new}=..."
            )
        warnings.warn(
            f"{cls.__name__}.{old} is now called {new!r}; pass {new}=... ({old}=... will stop "
            "working in a future release).",
            DeprecationWarning,
            stacklevel=3,
        )
        kwargs[new] = kwargs.pop(old)
    return kwargs


class _ModelMeta(type(eqx.Module)):
    """Equinox's module metaclass, plus deprecated keyword names (`_renamed`), so that a
    model built with an old keyword, or loaded from a run saved under it, still works."""

    def __call__(cls, *args, **kwargs):  # noqa: N805
        return super().__call__(*args, **_rename_keywords(cls, kwargs))


class AbstractModel(eqx.Module, metaclass=_ModelMeta):
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
    #: Old keyword names still accepted (with a `DeprecationWarning`): old -> new.
    _renamed: ClassVar[dict[str, str]] = {}
    #: Functions `config -> config` that bring a configuration saved by an older
    #: bayesde to the current fields, applied by `from_config` before the renames.
    _upgrades: ClassVar[tuple[Callable[[dict], dict], ...]] = ()
    #: Whether `program` honours `subsample_size` (minibatch SVI); `fit` refuses
    #: `batch_size` for a model that does not.
    minibatch: ClassVar[bool] = True
    #: The name of a `numpyro.factor` site that the training program emits, when it
    #: does, with minus a loss on data the ELBO does not see (a genuine validation
    #: score); SVI keeps the parameters where that loss was lowest (`SVI.keep_best`).
    held_out_site: ClassVar[Optional[str]] = None
    #: Independent evaluations of that score averaged each time SVI checks it (a model
    #: whose score already averages many paths needs fewer).
    held_out_draws: ClassVar[int] = 8
    #: Parameters that only the held-out score moves (forecast scales fitted on data the
    #: ELBO does not see). `SVI(held_out_refit=n)` refits them to the kept step's
    #: networks: along the run they lag the networks they scale.
    held_out_params: ClassVar[tuple[str, ...]] = ()
    #: The name of a `numpyro.param` that says which series the training program holds
    #: back for its held-out score (a constant of the fit, never trained), when it has
    #: one; such a model also defines `member_fold(m)`, the value `Ensemble(cross_fit=True)`
    #: gives member `m`, so that the members hold back different series.
    fold_param: ClassVar[Optional[str]] = None

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: old field names still read, with a warning.
        renamed = type(self).__dict__.get("_renamed") or getattr(type(self), "_renamed", {})
        if name in renamed:
            warnings.warn(
                f"{type(self).__name__}.{name} is now called {renamed[name]!r}.",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(self, renamed[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def for_engine(self, engine) -> "AbstractModel":
        """The (adapted) model as `engine` should fit it; `fit` calls it before the engine
        runs. The model itself, unless part of it only some engines can fit: e.g. forecast
        scales kept as `numpyro.param` sites, which an engine that only samples (whose
        `point_estimates` is False) cannot fit, so it gets a copy without them."""
        return self

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
        """The model of a saved `config()`; configurations saved under old field names
        are upgraded (`_upgrades`, `_renamed`)."""
        config = dict(config)
        for upgrade in cls._upgrades:
            config = upgrade(config)
        return cls(**{k: _from_json(v) for k, v in config.items()})


def _is_named_choice(value) -> bool:
    """A strategy object without fields (a diffusion family, a likelihood, a scheme):
    saved as its class's `name`, which the model field turns back into the object."""
    return (
        isinstance(value, eqx.Module)
        and isinstance(getattr(type(value), "name", None), str)
        and not dataclasses.fields(value)
    )


def _to_json(value, name, owner):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_to_json(v, name, owner) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, name, owner) for k, v in value.items()}
    if _is_named_choice(value):
        return type(value).name
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
