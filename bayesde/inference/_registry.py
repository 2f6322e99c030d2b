"""The engine interface and the one table of engines.

An engine is a frozen dataclass of options that subclasses `AbstractEngine`: a class
attribute `name` (the string `fit(method=...)` and the saved run use),
a class attribute `info_type` (its `EngineInfo` record) and one method, `run`. A new
engine is one new file that defines such a class and registers it:

```python
@register_engine
@dataclasses.dataclass(frozen=True)
class MyEngine(AbstractEngine):
    num_samples: int = 100
    name = "my-engine"

    def run(self, model, batch, *, key, progress_bar) -> EngineResult:
        ...
```

`fit`, `bd.load` and the CLI's `--method` read `ENGINES`; an engine sees a NumPyro
program and a `Batch`, and never names a model.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import warnings
from typing import Any, Callable, ClassVar, Mapping, Optional, Union

import numpy as np

from .._checks import check_int, check_real

__all__ = [
    "AbstractEngine",
    "EngineInfo",
    "EngineResult",
    "ENGINES",
    "RUNNERS",
    "register_engine",
    "resolve_method",
    "as_info",
]


# ------------------------------------------------------------------ info records
@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """What an engine reports about its run, besides the draws: a frozen record.

    Engines subclass it with their own fields (`SVIInfo`, `NUTSInfo`, ...). Fields are
    read as attributes (`post.info.seconds`); `extra` keeps whatever an engine (or an
    older saved run) reported beyond the fields, also readable as attributes. Reading it like a dict
    (`post.info["seconds"]`, `.get`) still works but is deprecated.

    **Arguments:**

    - `seconds`: wall-clock seconds of the run (compilation included).
    - `extra`: any further values, by name.
    """

    seconds: Optional[float] = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """The record as a flat dict (fields, then `extra`): what a saved run stores."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EngineInfo":
        """A record from a flat dict (a saved run, or an engine that returns a dict):
        known names fill the fields, the rest go to `extra`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        extra = {k: v for k, v in values.items() if k not in names}
        return cls(**known, extra=extra)

    def __getattr__(self, name: str):
        # Only reached when `name` is not a field: values an engine reported in `extra`.
        if name.startswith("__") or name == "extra":
            raise AttributeError(name)
        try:
            return self.extra[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    # Mapping access, from when `info` was a dict; kept for a deprecation period.
    def _lookup(self, name: str):
        warnings.warn(
            f"Posterior.info[{name!r}] is deprecated; read the attribute, info.{name}.",
            DeprecationWarning,
            stacklevel=3,
        )
        values = self.to_dict()
        return values[name]

    def __getitem__(self, name: str):
        return self._lookup(name)

    def get(self, name: str, default=None):
        try:
            return self._lookup(name)
        except KeyError:
            return default

    def __contains__(self, name) -> bool:
        return name in self.to_dict()

    def keys(self):
        return self.to_dict().keys()

    def items(self):
        return self.to_dict().items()


def as_info(info: Union[EngineInfo, Mapping, None], engine: type) -> EngineInfo:
    """`info` as the record type of `engine` (a dict from an engine that returns one,
    or from a run saved before info records, is converted)."""
    if isinstance(info, EngineInfo):
        return info
    record = getattr(engine, "info_type", EngineInfo)
    return record.from_dict(dict(info or {}))


@dataclasses.dataclass
class EngineResult:
    """What an engine's `run` returns.

    - `samples`: `{site: (chain, draw, ...)}`, the posterior draws.
    - `params`: point-estimated parameters (SVI: guide and network parameters).
    - `sample_stats`: per-draw statistics `(chain, draw)` (MCMC).
    - `loss`: the loss per step (SVI) or `None`.
    - `info`: an `EngineInfo` record (a dict is accepted and converted by `fit`).
    """

    samples: dict
    params: dict
    sample_stats: dict
    loss: Optional[np.ndarray]
    info: Union[EngineInfo, dict]


# ------------------------------------------------------------------ engines
class AbstractEngine(abc.ABC):
    """The interface of an engine: options as frozen dataclass fields, a class
    attribute `name`, a class attribute `info_type`, and `run`.

    `point_estimates` (class attribute) says whether the engine also fits a program's
    `numpyro.param` sites; `fit` refuses an engine that only samples (the default,
    `False`) a program with such sites or with no latent site to sample."""

    name: ClassVar[str]
    info_type: ClassVar[type] = EngineInfo
    point_estimates: ClassVar[bool] = False

    @abc.abstractmethod
    def run(self, model, batch, *, key, progress_bar: bool) -> EngineResult:
        """Fit `model` (adapted to the data) to `batch` with these options.

        **Arguments:**

        - `model`: a `bd.models` model whose `program(batch, query, subsample_size=...)`
          is the NumPyro program.
        - `batch`: the data as a `Batch` of arrays.
        - `key`: a JAX PRNG key; the same key gives the same numbers.
        - `progress_bar`: whether to show progress.

        **Returns:** an `EngineResult`.
        """

    def combine_draws(self, draws, chain):
        """How the posterior's chains make one predictive: `draws (S, ...)` are predictive
        draws and `chain (S,)` the chain each came from. Every chain is a draw of the same
        posterior for the engines here, so the draws are pooled as they are; an engine whose
        chains are separate fits (`Ensemble(combine="quantiles")`) combines them otherwise."""
        return draws


#: Every engine by name: `fit` and the save format read this one table.
ENGINES: dict[str, type] = {}
#: How to run each engine class: `runner(model, batch, options, *, key, progress_bar)`.
RUNNERS: dict[type, Callable] = {}


def _call_run(model, batch, method, *, key, progress_bar):
    return method.run(model, batch, key=key, progress_bar=progress_bar)


def register_engine(cls: type, runner: Optional[Callable] = None) -> type:
    """Record an engine in `ENGINES` (by `cls.name`) and `RUNNERS`.

    **Arguments:**

    - `cls`: the options dataclass, with a string class attribute `name`; usually an
      `AbstractEngine` with its own `run`.
    - `runner`: `runner(model, batch, options, *, key, progress_bar) -> EngineResult`,
      for an engine class without a `run` method; default: `cls.run`.

    **Returns:** `cls`, so that this works as a class decorator.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"register_engine: {cls!r} must be a dataclass with a string `name`.")
    if runner is None:
        if not callable(getattr(cls, "run", None)) or getattr(cls.run, "__isabstractmethod__", False):
            raise TypeError(
                f"register_engine: {cls.__name__} has no `run` method; define "
                "run(self, model, batch, *, key, progress_bar) or pass runner=..."
            )
        runner = _call_run
    ENGINES[cls.name] = cls
    RUNNERS[cls] = runner
    return cls


def resolve_method(method, overrides: dict):
    """A method object from a string or object plus keyword overrides."""
    if isinstance(method, str):
        if method not in ENGINES:
            raise ValueError(
                f"fit: unknown method {method!r}; choose one of {sorted(ENGINES)} or pass "
                "bd.SVI(...), bd.NUTS(...), bd.BlackJAXNUTS(...)."
            )
        cls = ENGINES[method]
        base = cls()
    elif isinstance(method, tuple(ENGINES.values())):
        cls, base = type(method), method
    else:
        raise TypeError(
            f"fit: method must be a name or a method object, got {type(method).__name__}."
        )
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"fit: {unknown[0]!r} is not an option of method {cls.name!r}; its options are "
            f"{sorted(fields)}."
        )
    return dataclasses.replace(base, **overrides)


# ------------------------------------------------------------------ shared helpers
def _fast() -> bool:
    return os.environ.get("BAYESDE_FAST", "") not in ("", "0")


def _progress(enabled: bool, total: int, desc: str):
    if not enabled or _fast():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True)


def _bind(model, subsample_size, batch):
    def program(batch, query=None):
        return model.program(batch, query, subsample_size=subsample_size)

    return program


def _check_sampler(owner: str, m, *, min_warmup: int = 0) -> None:
    """The options every MCMC engine shares (and `max_tree_depth` where it has one)."""
    check_int(f"{owner}.num_warmup", m.num_warmup, min_warmup)
    check_int(f"{owner}.num_samples", m.num_samples, 1)
    check_int(f"{owner}.num_chains", m.num_chains, 1)
    check_real(f"{owner}.target_accept_prob", m.target_accept_prob, 0.0, 1.0, open_low=True, open_high=True)
    if hasattr(m, "max_tree_depth"):
        check_int(f"{owner}.max_tree_depth", m.max_tree_depth, 1)
