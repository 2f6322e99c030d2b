"""`--model` and `--model-args`: a built-in model name or the user's own
`MODULE:CLASS`, built for the data and checked against it before anything compiles."""

from __future__ import annotations

import functools
import os
import sys
from typing import Optional

import typer

from ._common import UserError, json_object, one_line

BUILTIN_MODELS = ("ode-lv", "neural-ode", "latent-sde", "fractional-sde", "bncde", "tecde")
MODEL_HELP = (
    "ode-lv (Lotka–Volterra ODE, 2 positive value columns), neural-ode (Bayesian neural ODE), "
    "latent-sde, fractional-sde, bncde (treatment effects; needs --treatment-cols), "
    "tecde (its MC-dropout baseline; needs --treatment-cols), or your own model as "
    "MODULE:CLASS or MODULE:FUNCTION from an importable module (on PYTHONPATH), built with --model-args"
)
MODEL_METAVAR = "[" + "|".join(BUILTIN_MODELS) + "|MODULE:CLASS]"
#: Constructor arguments filled from the data's number of value columns.
_DIM_NAMES = ("dim", "state_dim", "obs_dim", "data_dim")
#: Built-in names -> the `bd.models` class built by `generic_model`.
_CLASSES = {"latent-sde": "LatentSDE", "fractional-sde": "FractionalSDE", "bncde": "BNCDE", "tecde": "TECDE"}


def parse_model(value: str) -> str:
    """The `--model` parser: a built-in name or `MODULE:ATTR` (checked, not imported)."""
    value = str(value).strip()
    if value in BUILTIN_MODELS:
        return value
    mod, sep, attr = value.partition(":")
    if sep and mod and attr and all(p.isidentifier() for p in mod.split(".") + attr.split(".")):
        return value
    raise typer.BadParameter(
        f"{value!r} is not one of {', '.join(BUILTIN_MODELS)}, nor MODULE:CLASS (e.g. mymodels:Growth)."
    )


def lv_model(bd, data, **kwargs):
    """`ode-lv`: the Bayesian Lotka–Volterra ODE with a log-normal observation model."""
    if data.dim != 2:
        raise UserError(
            f"--model ode-lv needs exactly 2 value columns (prey, predator); the data has {data.dim}: "
            f"{data.names}. Pass --value-cols PREY,PREDATOR."
        )
    kwargs.setdefault("observation", "lognormal")
    return bd.models.ODE(bd.models.lotka_volterra_field, priors=bd.models.lotka_volterra_priors(beta=0.025, delta=0.025), **kwargs)


def generic_model(cls, bd, data, **kwargs):
    """Construct `cls` (a model class or a function that returns a model), filling a
    required `dim`/`state_dim`/`obs_dim`/`data_dim` argument from the data."""
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.init and f.name in _DIM_NAMES:
                kwargs.setdefault(f.name, data.dim)
    else:
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            params = {}
        for name, par in params.items():
            if name in _DIM_NAMES and par.default is inspect.Parameter.empty:
                kwargs.setdefault(name, data.dim)
    return cls(**kwargs)


def _is_numpyro_program(obj) -> bool:
    import inspect

    if isinstance(obj, type):
        return False
    try:
        first = next(iter(inspect.signature(obj).parameters), None)
    except (TypeError, ValueError):
        return False
    return first == "batch"


def user_model(spec: str):
    """`MODULE:CLASS` (or `MODULE:FUNCTION`) -> the object, imported like Python does,
    with the current folder on the path as `python -m` has it."""
    import importlib

    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"--model {spec}: cannot import module {mod_name!r} ({one_line(e)}); put its folder on "
                        "PYTHONPATH or run bayesde from that folder.") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"--model {spec}: module {mod_name!r} has no {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"--model {spec}: {attr!r} is not a model class or a function that returns a model.")
    return obj


def model_factory(bd, name: str):
    """`--model` -> `factory(bd, data, **model_args)`: a built-in name, or MODULE:ATTR
    naming a model class, a function that returns a model, or a plain NumPyro program
    `fn(batch, query=None)` (wrapped as `bd.models.FunctionModel`)."""
    if ":" not in name:
        if name == "ode-lv":
            return lv_model
        if name == "neural-ode":
            return lambda bd_, data, **kw: bd_.models.BayesianNeuralODE(**{"state_dim": data.dim, **kw})
        return functools.partial(generic_model, getattr(bd.models, _CLASSES[name]))
    obj = user_model(name)
    if not _is_numpyro_program(obj):
        return functools.partial(generic_model, obj)

    def program(bd_, data, **kwargs):
        if kwargs:
            raise UserError(f"--model-args: {name} is a NumPyro program, which takes no hyperparameters.")
        return bd_.models.FunctionModel(obj)

    return program


def parse_model_args(text: Optional[str]) -> dict:
    """`--model-args` JSON -> keyword arguments (JSON lists become tuples)."""
    if text is None:
        return {}
    args = json_object(text, "--model-args", "hyperparameters", '{"width": 32}')
    return {str(k): tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def build_model(factory, bd, data, name: str, kwargs: dict):
    """Build the model and check that it suits the data (`model.adapt`, which raises
    before anything compiles). A `TypeError`/`ValueError` from either step is the
    library refusing the user's `--model`/`--model-args` for this data: a user error,
    said after the flag to fix."""
    try:
        m = factory(bd, data, **kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"--model-args for --model {name}: {one_line(e)}") from None
    if not isinstance(m, bd.models.AbstractModel):
        raise UserError(f"--model {name}: built a {type(m).__name__}, not a model; return a subclass of "
                        "bd.models.AbstractModel (decorated with @bd.models.register_model so that the run loads).")
    try:
        m.adapt(data)
    except (TypeError, ValueError) as e:
        raise UserError(f"--model {name} does not suit this data: {one_line(e)}") from None
    return m
