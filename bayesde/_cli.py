"""The `bayesde` command line: fit, forecast, effects, datasets and the demo.

Every command uses only the public `import bayesde as bd` API. Exit codes: 0 success,
2 bad input or bad arguments (one line on stderr says what and where), 1 internal
failure (a traceback and a "please report" line). `import bayesde` is lazy and this
module imports JAX and bayesde's internals only inside the commands that compute, after
`--device` has been applied: `--help` and argument errors answer at once, and the
device choice takes effect.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import shlex
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

__all__ = ["app"]

_BUILTIN_MODELS = ("ode-lv", "neural-ode", "latent-sde", "fractional-sde", "bncde", "tecde")


class Method(str, enum.Enum):
    """`--method`: the inference engine."""

    svi = "svi"
    nuts = "nuts"
    blackjax_nuts = "blackjax-nuts"
    chees = "chees"


class Device(str, enum.Enum):
    """`--device`: the JAX platform."""

    cpu = "cpu"
    gpu = "gpu"


def _one_line(msg) -> str:
    return " ".join(str(msg).split())


def _err(msg) -> None:
    print(f"bayesde: error: {_one_line(msg)}", file=sys.stderr)


def _closed_pipe() -> int:
    """The reader of stdout went away (`bayesde datasets | head`): send what is left of
    the output nowhere and end quietly, with the exit status of a SIGPIPE death."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


class _Group(typer.core.TyperGroup):
    """The command group, with click's usage errors said in one line (exit 2) and a
    closed stdout (`bayesde datasets | head`) ending quietly."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from typer import exceptions as tx
        from typer._click import exceptions as cx

        try:
            try:
                code = super().main(args, prog_name or "bayesde", complete_var, standalone_mode=False, **extra)
                sys.stdout.flush()
            except cx.NoArgsIsHelpError as e:
                print(e.format_message())
                code = 0
            except cx.UsageError as e:
                where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
                _err(f"{e.format_message()}{where}")
                code = 2
            except cx.ClickException as e:
                _err(e.format_message())
                code = e.exit_code
            except tx.Abort:
                _err("aborted")
                code = 1
        except BrokenPipeError:
            code = _closed_pipe()
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Group,
    name="bayesde",
    help=(
        "Bayesian neural differential equations from the shell: fit a model to a long-format "
        "CSV, forecast with credible bands, estimate treatment effects.\n\n"
        "Start with:  bayesde demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_MODEL_HELP = (
    "ode-lv (Lotka–Volterra ODE, 2 positive value columns), neural-ode (Bayesian neural ODE), "
    "latent-sde, fractional-sde, bncde (treatment effects; needs --treatment-cols), "
    "tecde (its MC-dropout baseline; needs --treatment-cols), or your own model as "
    "MODULE:CLASS or MODULE:FUNCTION from an importable module (on PYTHONPATH), built with --model-args"
)
_QS = (0.05, 0.25, 0.5, 0.75, 0.95)
_MARKER = "cli.json"


class UserError(Exception):
    """Bad input the user can fix: reported in one line, exit code 2."""


def _parse_model(value: str) -> str:
    value = str(value).strip()
    if value in _BUILTIN_MODELS:
        return value
    mod, sep, attr = value.partition(":")
    if sep and mod and attr and all(p.isidentifier() for p in mod.split(".") + attr.split(".")):
        return value
    raise typer.BadParameter(
        f"{value!r} is not one of {', '.join(_BUILTIN_MODELS)}, nor MODULE:CLASS (e.g. mymodels:Growth)."
    )


def _data_error_type():
    """`bd.DataError` if the data module is loaded (otherwise none can have been raised)."""
    mod = sys.modules.get("bayesde._data")
    return getattr(mod, "DataError", None) if mod is not None else None


def _guard(fn):
    """Run a command body: user errors exit 2 with one line, anything else exits 1.

    User errors are `UserError` (raised by the command line), `bd.DataError` and a
    refusal to overwrite; any other exception is a bug in bayesde."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:
            raise typer.Exit(_closed_pipe())
        except KeyboardInterrupt:
            _err("interrupted")
            raise typer.Exit(130)
        except Exception as e:  # noqa: BLE001
            data_error = _data_error_type()
            if isinstance(e, (UserError, FileExistsError)) or (data_error is not None and isinstance(e, data_error)):
                _err(e)
                raise typer.Exit(2)
            traceback.print_exc(file=sys.stderr)
            _err(f"internal error ({type(e).__name__}: {_one_line(e)}); please report this at "
                 "the bayesde issue tracker with the command and the traceback above.")
            raise typer.Exit(1)

    return wrapper


# ----------------------------------------------------------------------------- setup
def _setup(device: Optional[Device]):
    """Apply `--device` before JAX starts, then import bayesde."""
    os.environ["MPLBACKEND"] = "Agg"
    name = None if device is None else Device(device).value
    fresh = "jax" not in sys.modules
    if name is not None and fresh:
        # The environment variable wins over a JAX_PLATFORMS the shell may have set.
        os.environ["JAX_PLATFORMS"] = "cpu" if name == "cpu" else "cuda"
    warnings.filterwarnings("ignore", category=FutureWarning)
    import jax

    if name is not None and not fresh:
        try:  # in-process callers (tests) that imported JAX already: works until JAX starts
            jax.config.update("jax_platforms", "cpu" if name == "cpu" else "cuda")
        except Exception:  # noqa: BLE001
            pass
    _enable_compile_cache(jax)
    if name is not None:
        try:
            platforms = {d.platform for d in jax.devices()}
        except Exception as e:  # noqa: BLE001 - jaxlib reports a missing plugin in several ways
            raise UserError(
                f"--device {name}: JAX cannot use this platform here ({_one_line(e) or type(e).__name__}); "
                + ("no GPU is visible or this jaxlib has no CUDA plugin (pip install 'jax[cuda12]'); "
                   "use --device cpu." if name == "gpu" else "check your JAX installation.")
            ) from None
        if name == "gpu" and not platforms & {"gpu", "cuda", "rocm"}:
            raise UserError(f"--device gpu: no GPU is available to JAX (devices: {sorted(platforms)}); use --device cpu.")
        if name == "cpu" and platforms != {"cpu"}:
            raise UserError("--device cpu: JAX was already started on another platform in this process.")
    import bayesde as bd

    return bd


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _default_chains() -> tuple[int, Optional[str]]:
    """NUTS chains when `--num-chains` is not given, as PyMC: one per CPU core, at least
    2 (to compare chains: R-hat) and at most 4; and a note when fewer than 4."""
    cores = _cpu_cores()
    chains = max(2, min(4, cores))
    note = None
    if chains < 4:
        note = f"{chains} chains ({cores} CPU core{'s' if cores != 1 else ''}); pass --num-chains 4 for more"
    return chains, note


def _enable_compile_cache(jax) -> None:
    """Keep compiled programs on disk so that a second command starts in seconds.

    `BAYESDE_CACHE_DIR` chooses the folder (default `~/.cache/bayesde/jax`); set it to
    `off` to disable. An unwritable folder only costs the speed-up."""
    where = os.environ.get("BAYESDE_CACHE_DIR", str(Path.home() / ".cache" / "bayesde" / "jax"))
    if where.lower() in ("", "0", "off", "none"):
        return
    try:
        Path(where).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError, ValueError):
        pass


def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet or os.environ.get("BAYESDE_FAST", "") not in ("", "0"),
                file=sys.stderr, leave=False)


def _say(msg: str, quiet: bool = False):
    if not quiet:
        print(msg, flush=True)


def _sha256(path: Path) -> str:
    from ._io import _sha256 as sha256  # the run format's own checksum, imported late

    return sha256(Path(path))


def _command_line() -> str:
    return shlex.join(["bayesde"] + sys.argv[1:])


def _record(bd, extra: dict) -> dict:
    import jax

    return {
        "bayesde_version": bd.__version__,
        "command": _command_line(),
        "cwd": os.getcwd(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        **extra,
    }


# ------------------------------------------------------------------- output folders
def _claim_out(out: Path, force: bool, what: str, *, run_ok: bool = False) -> None:
    """Refuse an existing output folder unless `--force`, and never replace a folder
    that bayesde did not write (`bayesde.json` marks a run, `cli.json` any output)."""
    from ._atomic import claim_dir

    why = claim_dir(out, overwrite=force, marker="bayesde.json" if run_ok else _MARKER, what=what)
    if why is not None:
        raise UserError(why)


def _staging(out: Path):
    """Write an output folder whole or not at all (the package's one staging helper)."""
    from ._atomic import staged_dir

    return staged_dir(out)


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")


def _json_default(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(x)


# --------------------------------------------------------------------------- CSV input
def _split_cols(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    cols = [c.strip() for c in text.split(",") if c.strip()]
    return cols or None


_BOOL_TEXT = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}


def _where(path: Path, r: int) -> str:
    return f"row {r} (line {r + 2} of {path.name})"


def _read_csv(
    bd,
    path: str,
    *,
    time_col: str,
    series_col: Optional[str],
    series_explicit: bool,
    value_cols: Optional[list[str]],
    treatment_cols: Optional[list[str]],
    static_cols: Optional[list[str]],
):
    """Read a long-format CSV into a `bd.TimeSeries`, refusing bad input with the
    column and the row (0-based data row and 1-based file line)."""
    import numpy as np
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--data: file {path!r} not found.")
    try:
        df = pd.read_csv(p, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"--data {p.name}: cannot read it as CSV ({_one_line(e)}).") from None
    columns = [str(c) for c in df.columns]
    df.columns = columns

    def need(col, flag, role):
        if col not in columns:
            raise UserError(
                f"{p.name}: column {col!r} ({role}, {flag}) not found; the file has columns "
                f"{columns}. Pass {flag} with the right name."
            )

    need(time_col, "--time-col", "time")
    if series_col is not None and series_col not in columns:
        if series_explicit:
            need(series_col, "--series-col", "series")
        series_col = None  # the default 'series' column is absent: one series
    for c in treatment_cols or []:
        need(c, "--treatment-cols", "treatment")
    for c in static_cols or []:
        need(c, "--static-cols", "static covariate")
    if value_cols is not None:
        for c in value_cols:
            need(c, "--value-cols", "value")
    else:
        taken = {time_col, series_col, *(treatment_cols or []), *(static_cols or [])}
        value_cols = [c for c in columns if c not in taken and not c.startswith("Unnamed:")]
        if not value_cols:
            raise UserError(f"{p.name}: no value columns left besides time/series/treatments; add --value-cols.")
    if len(df) == 0:
        raise UserError(f"{p.name}: the file has a header but no rows.")
    if series_col is not None:
        empty = df[series_col].isna().to_numpy()
        if empty.any():
            r = int(np.argmax(empty))
            raise UserError(f"{p.name}: column {series_col!r} {_where(p, r)} is empty; every row needs a series id.")
        df[series_col] = df[series_col].astype(str).str.strip()
    for c in treatment_cols or []:
        df[c] = _treatment_column(df[c], c, p)
    try:
        data = bd.TimeSeries.from_pandas(
            df, time=time_col, series=series_col, values=value_cols,
            treatments=treatment_cols, static=static_cols,
        )
    except bd.DataError as e:
        raise UserError(e.message(p.name, row_label=lambda r: _where(p, r))) from None
    return data, {
        "path": str(p.resolve()),
        "sha256": _sha256(p),
        "rows": int(len(df)),
        "time_col": time_col,
        "series_col": series_col,
        "value_cols": value_cols,
        "treatment_cols": treatment_cols,
        "static_cols": static_cols,
        "time_unit": data.time_unit,
        "time_origin": None if data.time_origin is None else str(data.time_origin),
    }


def _treatment_column(col, name: str, p: Path):
    """Treatments must be known numbers at every row: numbers, or yes/no/true/false."""
    import numpy as np
    import pandas as pd

    num = np.array(pd.to_numeric(col, errors="coerce"), dtype=float)
    raw = col.to_numpy(dtype=object)
    for r in range(len(raw)):
        if np.isnan(num[r]):
            v = raw[r]
            if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
                raise UserError(
                    f"{p.name}: treatment column {name!r} {_where(p, r)} is empty; treatments must be "
                    "known at every time (write 0 for no treatment)."
                )
            key = str(v).strip().lower()
            if key not in _BOOL_TEXT:
                raise UserError(
                    f"{p.name}: treatment column {name!r} {_where(p, r)} holds the unknown value {v!r}; "
                    "use numbers (0/1 or a dose) or yes/no/true/false."
                )
            num[r] = _BOOL_TEXT[key]
        elif not np.isfinite(num[r]):
            raise UserError(f"{p.name}: treatment column {name!r} {_where(p, r)} is infinite; use a finite number.")
    return num


# ------------------------------------------------------------------------------ models
def _lv_model(bd, data, **kwargs):
    if data.dim != 2:
        raise UserError(
            f"--model ode-lv needs exactly 2 value columns (prey, predator); the data has {data.dim}: "
            f"{data.names}. Pass --value-cols PREY,PREDATOR."
        )
    kwargs.setdefault("observation", "lognormal")
    return bd.models.ODE(bd.models.lotka_volterra_field, priors=bd.models.lotka_volterra_priors(beta=0.025, delta=0.025), **kwargs)


_DIM_NAMES = ("dim", "state_dim", "obs_dim", "data_dim")


def _generic_model(cls, bd, data, **kwargs):
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


def _user_model(spec: str):
    """`MODULE:CLASS` (or `MODULE:FUNCTION`) -> the object, imported like Python does,
    with the current folder on the path as `python -m` has it."""
    import importlib

    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"--model {spec}: cannot import module {mod_name!r} ({_one_line(e)}); put its folder on "
                        "PYTHONPATH or run bayesde from that folder.") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"--model {spec}: module {mod_name!r} has no {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"--model {spec}: {attr!r} is not a model class or a function that returns a model.")
    return obj


def _model_factory(bd, name: str):
    """`--model` -> `factory(bd, data, **model_args)`: a built-in name, or MODULE:ATTR
    naming a model class, a function that returns a model, or a plain NumPyro program
    `fn(batch, query=None)` (wrapped as `bd.models.FunctionModel`)."""
    if ":" in name:
        obj = _user_model(name)
        if _is_numpyro_program(obj):
            wrap = getattr(bd.models, "FunctionModel", None)
            if wrap is None:
                raise UserError(f"--model {name}: this bayesde cannot wrap a plain NumPyro program; "
                                "write a bd.models.AbstractModel subclass instead.")

            def program(bd_, data, **kwargs):
                if kwargs:
                    raise UserError(f"--model-args: {name} is a NumPyro program, which takes no hyperparameters.")
                return wrap(obj)

            return program
        return functools.partial(_generic_model, obj)
    table = _model_table(bd)
    if name not in table:
        raise UserError(f"--model: {name!r} is not available in this bayesde; choose one of {sorted(table)}.")
    return table[name]


def _model_table(bd) -> dict:
    table = {
        "ode-lv": _lv_model,
        "neural-ode": lambda bd_, data, **kw: bd_.models.BayesianNeuralODE(**{"dim": data.dim, **kw}),
    }
    for name, attr in (("latent-sde", "LatentSDE"), ("fractional-sde", "FractionalSDE"), ("bncde", "BNCDE"),
                       ("tecde", "TECDE")):
        cls = getattr(bd.models, attr, None)
        if cls is not None:
            table[name] = functools.partial(_generic_model, cls)
    return table


def _parse_model_args(text: Optional[str]) -> dict:
    if text is None:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--model-args: not valid JSON ({e.msg} at column {e.colno}); e.g. '{{\"width\": 32}}'.") from None
    if not isinstance(args, dict):
        raise UserError("--model-args: expected a JSON object of hyperparameters, e.g. '{\"width\": 32}'.")
    return {str(k): tuple(v) if isinstance(v, list) else v for k, v in args.items()}


def _build_model(factory, bd, data, name: str, kwargs: dict):
    """Build the model and check that it suits the data (`model.adapt`, which raises
    before anything compiles), so that both are user errors with the flag to fix."""
    try:
        m = factory(bd, data, **kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"--model-args for --model {name}: {_one_line(e)}") from None
    if not isinstance(m, bd.models.AbstractModel):
        raise UserError(f"--model {name}: built a {type(m).__name__}, not a model; return a subclass of "
                        "bd.models.AbstractModel (decorated with @bd.models.register_model so that the run loads).")
    try:
        m.adapt(data)
    except (TypeError, ValueError) as e:
        raise UserError(f"--model {name} does not suit this data: {_one_line(e)}") from None
    return m


def _parse_devices(text: Optional[str], method: str):
    """`--devices`: None, "all" or a positive int; SVI only."""
    if text is None:
        return None
    if method != "svi":
        raise UserError(f"--devices applies to --method svi only (data-parallel training); got --method {method}.")
    if text.strip().lower() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"--devices: expected 'all' or a positive number of devices, got {text!r}.")
    return n


def _fit_options(method: str, **sizes) -> dict:
    allowed = {
        "svi": ("num_steps", "num_samples", "learning_rate"),
        "nuts": ("num_warmup", "num_samples", "num_chains"),
        "blackjax-nuts": ("num_warmup", "num_samples", "num_chains"),
        "chees": ("num_warmup", "num_samples", "num_chains"),
    }[method]
    out = {}
    for k, v in sizes.items():
        if v is None:
            continue
        if k not in allowed:
            raise UserError(f"--{k.replace('_', '-')} does not apply to --method {method}; it takes {['--' + a.replace('_', '-') for a in allowed]}.")
        if k != "learning_rate" and v < 1:
            raise UserError(f"--{k.replace('_', '-')} must be a positive integer, got {v}.")
        if k == "learning_rate" and not v > 0:
            raise UserError(f"--learning-rate must be positive, got {v}.")
        out[k] = v
    return out


def _fit_quietly(bd, model, data, method, *, key, quiet, **options):
    """`bd.fit` with its health warnings collected and printed as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        post = bd.fit(model, data, method, key=key, progress_bar=not quiet, **options)
    msgs = list(dict.fromkeys(_one_line(w.message) for w in caught if issubclass(w.category, UserWarning)))
    return post, msgs


def _health_line(post) -> str:
    d = post.diagnostics()
    if post.loss is not None:
        line = f"SVI: {d.get('num_steps', '?')} steps, final loss {d.get('final_loss', float('nan')):.4g}"
        if d.get("stopped_at_nan") is not None:
            line += f" (stopped at step {d['stopped_at_nan']}: NaN loss)"
        if d.get("still_improving"):
            line += " (still improving: raise --num-steps)"
        return line
    return (
        f"{post.method_name.upper()}: {post.num_chains} chain(s) x {post.num_draws} draws, "
        f"max R-hat {d.get('max_rhat', float('nan')):.3f}, min ESS {d.get('min_ess', float('nan')):.0f} bulk / "
        f"{d.get('min_ess_tail', float('nan')):.0f} tail (ArviZ, rank-normalised), "
        f"divergences {d.get('divergences', 0)}"
    )


def _print_params(post, quiet: bool, limit: int = 12):
    """The posterior of the scalar parameters (network weights and per-series states
    are left to `post.summary()` in Python)."""
    if quiet or not post.samples:
        return
    import numpy as np

    scalar = [k for k, v in post.samples.items() if np.ndim(v) == 2]
    if not scalar:
        return
    try:
        table = post.summary()
        table = table[table.index.isin(scalar)]
    except Exception:  # noqa: BLE001 - a summary is a courtesy
        return
    if len(table) == 0:
        return
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 12, "display.precision", 4):
        print(table.head(limit).to_string())


# -------------------------------------------------------------------------- prediction
def _figure(rows: int, cols: int, w: float = 6.0, h: float = 3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _fan_chart(bd, pred, data, path: Path, truth=None, max_series: int = 6, title: Optional[str] = None,
               xlabel: str = "time"):
    n = min(pred.samples.shape[1], max_series)
    d = pred.samples.shape[3]
    cols = min(d, 4)
    fig, axes = _figure(n, cols, w=5.0 if cols > 1 else 7.0)
    for i in range(n):
        for k in range(cols):
            ax = axes[i, k]
            bd.plot.forecast(ax, pred, history=data, series=i, variable=k, truth=truth, legend=(i == 0),
                             colors=[f"C{k}"])
            one = pred.samples.shape[1] == 1
            ax.set_title(pred.names[k] if one else f"{pred.names[k]} — series {pred.series_ids[i]}")
            ax.set_xlabel(xlabel)
            ax.axvline(float(data.ts[i, data.lengths[i] - 1]), color="0.5", lw=0.8, ls=":")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------- shared options
_DEVICE = typer.Option(None, "--device", help="Where JAX computes (default: JAX's choice).", show_default=False,
                       case_sensitive=False)
_QUIET = typer.Option(False, "--quiet", "-q", metavar="", help="No progress bars or step messages.")
_FORCE = typer.Option(False, "--force", is_flag=True, metavar="", help="Replace an existing output folder written by bayesde.")
_SEED = typer.Option(0, "--seed", help="Random seed: the same seed gives the same numbers.")


def _version_callback(value: bool):
    if value:
        from ._version import __version__

        print(f"bayesde {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, metavar="",
                                 help="Print the version and exit."),
):
    """Bayesian neural differential equations from the shell."""


# --------------------------------------------------------------------------------- fit
@app.command()
@_guard
def fit(
    data: str = typer.Option(..., "--data", help="Long-format CSV: one row per series and time; empty cells are missing."),
    out: str = typer.Option(..., "--out", help="Run folder to write (the saved posterior)."),
    model: str = typer.Option("neural-ode", "--model", help=_MODEL_HELP, parser=_parse_model,
                              metavar="[" + "|".join(_BUILTIN_MODELS) + "|MODULE:CLASS]"),
    method: Method = typer.Option(Method.svi, "--method", help="The inference engine.", case_sensitive=False),
    time_col: str = typer.Option("time", "--time-col", help="Time column."),
    series_col: Optional[str] = typer.Option(None, "--series-col", show_default=False,
                                             help="Series id column (default: 'series' if present, else one series)."),
    value_cols: Optional[str] = typer.Option(None, "--value-cols", show_default=False,
                                             help="Comma-separated value columns (default: all other columns)."),
    treatment_cols: Optional[str] = typer.Option(None, "--treatment-cols", show_default=False,
                                                 help="Comma-separated treatment columns (numbers or yes/no)."),
    static_cols: Optional[str] = typer.Option(None, "--static-cols", show_default=False,
                                              help="Comma-separated static covariate columns (constant per series)."),
    seed: int = _SEED,
    num_steps: Optional[int] = typer.Option(None, "--num-steps", show_default=False, help="SVI steps (default: 2000)."),
    num_warmup: Optional[int] = typer.Option(None, "--num-warmup", show_default=False, help="NUTS warmup (default: 500)."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", show_default=False, help="Posterior draws (default: 500)."),
    num_chains: Optional[int] = typer.Option(None, "--num-chains", show_default=False,
                                             help="NUTS chains (default: one per CPU core, 2 to 4)."),
    model_args: Optional[str] = typer.Option(None, "--model-args", show_default=False,
                                             help='Model hyperparameters as JSON, e.g. \'{"width": 32}\'.'),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", show_default=False, help="SVI Adam step size (default: 0.01)."),
    devices: Optional[str] = typer.Option(None, "--devices", show_default=False, metavar="all|N",
                                          help="SVI only: train data-parallel, the series split over all local "
                                               "devices or the first N (gradients averaged by JAX)."),
    device: Optional[Device] = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
):
    """Fit a model to your CSV and save the posterior to a run folder.

    The run folder holds the posterior (bd.load(DIR) reads it back) and cli.json with the bayesde version, this command, the data file's sha256 and the seed.

    Example:

        bayesde fit --data sales.csv --series-col store --value-cols units --out runs/sales
    """
    method = Method(method).value
    options = _fit_options(method, num_steps=num_steps, num_warmup=num_warmup, num_samples=num_samples,
                           num_chains=num_chains, learning_rate=learning_rate)
    kwargs = _parse_model_args(model_args)
    n_devices = _parse_devices(devices, method)
    out_p = Path(out)
    _claim_out(out_p, force, "--out", run_ok=True)
    chains_note = None
    if method in ("nuts", "blackjax-nuts") and "num_chains" not in options:
        options["num_chains"], chains_note = _default_chains()
    bd = _setup(device)
    factory = _model_factory(bd, model)
    ts, meta = _read_csv(
        bd, data, time_col=time_col, series_col=series_col or "series", series_explicit=series_col is not None,
        value_cols=_split_cols(value_cols), treatment_cols=_split_cols(treatment_cols),
        static_cols=_split_cols(static_cols),
    )
    _say(f"data: {ts!r} from {Path(data).name}", quiet)
    if ts.time_unit is not None:
        _say(f"time: {time_col!r} holds dates; the model sees {ts.time_unit} since {ts.time_origin}", quiet)
    m = _build_model(factory, bd, ts, model, kwargs)
    if ts.treatments is not None and not getattr(m, "needs_treatments", False):
        _say(f"note: --model {model} ignores the treatment columns {ts.treatment_names}.", quiet)
    if chains_note:
        _say(f"{method.upper()}: {chains_note}.", quiet)
    import jax

    extra = {}
    if n_devices is not None:
        local = jax.local_devices()
        if n_devices != "all" and n_devices > len(local):
            raise UserError(f"--devices {n_devices}: this machine has {len(local)} local device(s) "
                            f"({local[0].platform}); pass --devices all or a number up to {len(local)}.")
        extra["devices"] = local if n_devices == "all" else local[:n_devices]
        _say(f"SVI: data-parallel over {len(extra['devices'])} device(s).", quiet)
    t0 = time.perf_counter()
    post, msgs = _fit_quietly(bd, m, ts, method, key=jax.random.key(seed), quiet=quiet, **options, **extra)
    seconds = time.perf_counter() - t0
    from ._atomic import staged_dir

    with staged_dir(out_p, create=False) as tmp:
        post.save(tmp)
        _write_json(tmp / _MARKER, _record(bd, {
            "kind": "fit", "seed": seed, "model": model, "model_args": kwargs, "method": method, "options": options,
            "devices": devices,
            "data": meta, "fit_seconds": round(seconds, 2),
        }))
    print(_health_line(post) + f"  ({seconds:.1f} s)")
    for msg in msgs:
        print(f"warning: {msg}")
    _print_params(post, quiet)
    print(f"saved the run to {out_p}/  (next: bayesde forecast --run {out_p} --horizon H --out {out_p}/forecast)")


def _load_run(bd, run: str):
    """Load a run folder; its cli.json says which user module defines the model (imported
    first, so that `bd.load` finds the class) and the date unit of its time column."""
    p = Path(run)
    if not p.is_dir():
        raise UserError(f"--run: folder {run!r} not found; make one with `bayesde fit ... --out {run}`.")
    cli = {}
    if (p / _MARKER).exists():
        try:
            cli = json.loads((p / _MARKER).read_text())
        except json.JSONDecodeError:
            cli = {}
    cli_data = cli.get("data") or {}
    if ":" in str(cli.get("model", "")):
        _user_model(cli["model"])
    try:
        post = bd.load(p)
    except ValueError as e:  # a damaged or foreign folder: bd.load says what and where
        raise UserError(f"--run {run}: {_one_line(e)}") from None
    if post.data.time_unit is None and cli_data.get("time_unit"):
        # Runs saved before the run format recorded date units: take them from cli.json.
        post.data.time_unit = cli_data["time_unit"]
        post.data.time_origin = _as_datetime(cli_data["time_origin"])
    meta = {"path": str(p.resolve()), "bayesde_json_sha256": _sha256(p / "bayesde.json")}
    if cli:
        meta["fit_command"] = cli.get("command")
        meta["data_sha256"] = cli_data.get("sha256")
        meta["fit_seed"] = cli.get("seed")
        meta["time_col"] = cli_data.get("time_col")
    return post, meta


def _as_datetime(text):
    import numpy as np

    return np.datetime64(text, "s")


# ---------------------------------------------------------------------------- forecast
@app.command()
@_guard
def forecast(
    run: str = typer.Option(..., "--run", help="Run folder written by `bayesde fit`."),
    horizon: float = typer.Option(..., "--horizon",
                                  help="How far past each series' last observation, in time units (for a date "
                                       "column: the unit `bayesde fit` printed, e.g. days or years)."),
    out: str = typer.Option(..., "--out", help="Output folder for forecast.csv, forecast.png, posterior.nc."),
    every: Optional[float] = typer.Option(None, "--every", show_default=False,
                                          help="Grid step (default: the median observation spacing)."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", show_default=False,
                                              help="Predictive draws (default: every posterior draw)."),
    seed: int = _SEED,
    device: Optional[Device] = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
):
    """Forecast a fitted run: quantile CSV, fan chart and ArviZ file.

    forecast.csv is tidy: series, time, variable, part (history/forecast), mean, q05, q25, q50, q75, q95, with a date column after time when the fitted time column held dates. It is the table of post.forecast(...) in Python. forecast.png draws the history points, the median and the 50% and 90% bands. posterior.nc is the ArviZ InferenceData (posterior + this forecast).

    Example:

        bayesde forecast --run runs/sales --horizon 30 --every 1 --out runs/sales/forecast
    """
    if not horizon > 0:
        raise UserError(f"--horizon must be positive, got {horizon}.")
    if every is not None and not every > 0:
        raise UserError(f"--every must be positive, got {every}.")
    if num_samples is not None and num_samples < 1:
        raise UserError(f"--num-samples must be a positive integer, got {num_samples}.")
    out_p = Path(out)
    _claim_out(out_p, force, "--out")
    bd = _setup(device)
    post, run_meta = _load_run(bd, run)
    data = post.data
    from .inference._forecast import forecast_grid, median_step

    step = every if every is not None else median_step(data)
    n_times = forecast_grid(post, horizon, step)[0].shape[1]
    if n_times > 20000:
        raise UserError(f"--every {step:g} gives {n_times} times per series; use a larger --every.")
    import jax

    unit = f" {data.time_unit}" if data.time_unit else ""
    _say(f"forecasting {data.n_series} series, {n_times} times each, step {step:g}{unit}", quiet)
    bar = _progress(2, "predict", quiet)
    df, pred = post.forecast(horizon, every=step, key=jax.random.key(seed), num_samples=num_samples,
                             quantiles=_QS, return_prediction=True)
    bar.update(1)
    with _staging(out_p) as tmp:
        df.to_csv(tmp / "forecast.csv", index=False)
        xlabel = run_meta.get("time_col") or "time"
        if data.time_unit:
            xlabel = f"{data.time_unit} since {str(data.time_origin)[:10]}"
        _fan_chart(bd, pred, data, tmp / "forecast.png", xlabel=xlabel)
        bar.set_description("arviz")
        idata = post.to_arviz(pred)
        idata.to_netcdf(str(tmp / "posterior.nc"))
        bar.update(1)
        bar.close()
        _write_json(tmp / _MARKER, _record(bd, {
            "kind": "forecast", "seed": seed, "run": run_meta, "horizon": horizon, "every": step,
            "time_unit": data.time_unit, "num_samples": pred.num_samples,
        }))
    nf = int((df["part"] == "forecast").sum())
    print(f"wrote {out_p}/forecast.csv ({len(df)} rows, {nf} in the forecast), forecast.png, posterior.nc")


# ----------------------------------------------------------------------------- effects
def _read_plans(path: str, data, horizon: int):
    """plans.json: `{"plan": {"treatment column": number | [one per step]}}` or
    `{"plan": [[...K values...], ... one row per step]}`."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--plans: file {path!r} not found.")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"--plans {p.name}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}).") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"--plans {p.name}: expected an object of plan name -> treatments, e.g. "
                        '{"treat": {"dose": 1}, "none": {"dose": 0}}.')
    names = list(data.treatment_names)
    k = len(names)
    plans = {}

    def number(plan, col, step, v):
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
        if isinstance(v, str) and v.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[v.strip().lower()]
        where = f"step {step}" if step is not None else "its value"
        raise UserError(f"--plans {p.name}: plan {plan!r}, treatment {col!r}, {where}: unknown value {v!r}; "
                        "use a finite number (0/1 or a dose) or yes/no/true/false.")

    for plan, spec in raw.items():
        arr = np.zeros((horizon, k))
        if isinstance(spec, dict):
            for col in spec:
                if col not in names:
                    raise UserError(f"--plans {p.name}: plan {plan!r} names the unknown treatment column {col!r}; "
                                    f"the run's treatment columns are {names}.")
            for j, col in enumerate(names):
                if col not in spec:
                    raise UserError(f"--plans {p.name}: plan {plan!r} gives no value for treatment column {col!r}.")
                v = spec[col]
                if isinstance(v, list):
                    if len(v) < horizon:
                        raise UserError(f"--plans {p.name}: plan {plan!r}, treatment {col!r} lists {len(v)} steps "
                                        f"but --horizon is {horizon}.")
                    arr[:, j] = [number(plan, col, s, x) for s, x in enumerate(v[:horizon])]
                else:
                    arr[:, j] = number(plan, col, None, v)
        elif isinstance(spec, list):
            rows = spec
            if len(rows) < horizon:
                raise UserError(f"--plans {p.name}: plan {plan!r} lists {len(rows)} steps but --horizon is {horizon}.")
            for s, row in enumerate(rows[:horizon]):
                row = row if isinstance(row, list) else [row]
                if len(row) != k:
                    raise UserError(f"--plans {p.name}: plan {plan!r} step {s} has {len(row)} values for the "
                                    f"{k} treatment columns {names}.")
                arr[s] = [number(plan, names[j], s, x) for j, x in enumerate(row)]
        else:
            raise UserError(f"--plans {p.name}: plan {plan!r} must be an object {{column: value}} or a list of steps.")
        plans[str(plan)] = arr
    lo = np.min(data.treatments, axis=(0, 1))
    hi = np.max(data.treatments, axis=(0, 1))
    notes = []
    for plan, arr in plans.items():
        for j, col in enumerate(names):
            if np.any(arr[:, j] < lo[j] - 1e-9) or np.any(arr[:, j] > hi[j] + 1e-9):
                notes.append(f"plan {plan!r} sets {col!r} outside the range seen in the data "
                             f"[{lo[j]:g}, {hi[j]:g}]: the model extrapolates there.")
    return plans, notes


@app.command()
@_guard
def effects(
    run: str = typer.Option(..., "--run", help="Run folder of a model with treatment inputs (e.g. --model bncde)."),
    plans: str = typer.Option(..., "--plans", help='JSON file: {"treat": {"dose": 1}, "none": {"dose": 0}}.'),
    horizon: int = typer.Option(..., "--horizon", help="Number of future steps."),
    out: str = typer.Option(..., "--out", help="Output folder for outcomes.csv, contrasts.csv, effects.png."),
    every: Optional[float] = typer.Option(None, "--every", show_default=False,
                                          help="Time between future steps (default: the median spacing)."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", show_default=False, help="Predictive draws."),
    seed: int = _SEED,
    device: Optional[Device] = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
):
    """Counterfactual outcomes under treatment plans, and the contrasts between plans.

    Each plan gives every treatment column a constant or one value per future step. All plans share the posterior draws and noise (common random numbers), so each contrast is a paired difference. outcomes.csv: plan, series, time, variable, mean, quantiles; contrasts.csv: the same for "A - B" per series and for their average.

    Example:

        echo '{"treat": {"dose": 1}, "none": {"dose": 0}}' > plans.json
        bayesde effects --run runs/trial --plans plans.json --horizon 5 --out runs/trial/effects
    """
    if horizon < 1:
        raise UserError(f"--horizon must be a positive integer, got {horizon}.")
    if every is not None and not every > 0:
        raise UserError(f"--every must be positive, got {every}.")
    out_p = Path(out)
    _claim_out(out_p, force, "--out")
    bd = _setup(device)
    eff_mod = getattr(bd, "effects", None)
    if eff_mod is None:
        try:
            import importlib

            eff_mod = importlib.import_module("bayesde.effects")
        except ImportError:
            eff_mod = None
    if eff_mod is None or not hasattr(eff_mod, "counterfactual"):
        raise UserError("this bayesde has no treatment-effect module (bd.effects.counterfactual); upgrade bayesde.")
    post, run_meta = _load_run(bd, run)
    if not getattr(post.model, "needs_treatments", False) or post.data.treatments is None:
        raise UserError(f"--run {run}: its model ({type(post.model).__name__}) takes no treatments, so plans cannot "
                        "change its forecasts; fit with --model bncde (or tecde) and --treatment-cols.")
    plan_arrays, notes = _read_plans(plans, post.data, horizon)
    import jax
    import pandas as pd

    bar = _progress(1, "counterfactual", quiet)
    eff = eff_mod.counterfactual(post, post.data, plans=plan_arrays, horizon=horizon, key=jax.random.key(seed),
                                 num_samples=num_samples, step=every)
    bar.update(1)
    bar.close()
    names = list(eff.outcomes)
    frames = []
    for name in names:
        df = eff.outcomes[name].to_pandas(_QS)
        df.insert(0, "plan", name)
        frames.append(df)
    outcomes = pd.concat(frames, ignore_index=True)
    cframes = []
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            for kind, pr in (("series", eff.contrast(a, b)), ("average", eff.average(a, b))):
                df = pr.to_pandas(_QS)
                df.insert(0, "contrast", f"{a} - {b}")
                df.insert(1, "scope", kind)
                cframes.append(df)
    contrasts = pd.concat(cframes, ignore_index=True) if cframes else pd.DataFrame()
    with _staging(out_p) as tmp:
        outcomes.to_csv(tmp / "outcomes.csv", index=False)
        contrasts.to_csv(tmp / "contrasts.csv", index=False)
        n_show = min(post.data.n_series, 4)
        fig, axes = _figure(n_show, 2 if len(names) > 1 else 1, w=5.5)
        for i in range(n_show):
            bd.plot.counterfactual(axes[i, 0], eff, series=i, history=post.data, legend=(i == 0))
            if len(names) > 1:
                c = eff.contrast(names[0], names[1])
                bd.plot.forecast(axes[i, 1], c, series=i, variable=0, legend=(i == 0))
                axes[i, 1].axhline(0.0, color="0.5", lw=0.8)
                axes[i, 1].set_title(f"{names[0]} − {names[1]}, series {c.series_ids[i]}")
                axes[i, 1].set_ylabel(f"difference in {c.names[0]}")
        fig.savefig(tmp / "effects.png", dpi=110)
        _write_json(tmp / _MARKER, _record(bd, {
            "kind": "effects", "seed": seed, "run": run_meta, "horizon": horizon,
            "plans_file": str(Path(plans).resolve()), "plans_sha256": _sha256(Path(plans)),
        }))
    for note in notes:
        print(f"warning: {note}")
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            avg = eff.average(a, b)
            lo, hi = (float(x[0, -1, 0]) for x in avg.interval(0.9))
            print(f"average effect {a} - {b} at the last step: mean {float(avg.mean[0, -1, 0]):.4g}, "
                  f"90% interval [{lo:.4g}, {hi:.4g}]")
    print(f"wrote {out_p}/outcomes.csv ({len(outcomes)} rows), contrasts.csv ({len(contrasts)} rows), effects.png")


# ---------------------------------------------------------------------------- datasets
@app.command()
@_guard
def datasets(
    name: Optional[str] = typer.Argument(None, help="A data set: print its data card.", show_default=False),
    csv: Optional[str] = typer.Option(None, "--csv", show_default=False,
                                      help="Write the data set as a long-format CSV (ready for `bayesde fit`)."),
    seed: int = typer.Option(0, "--seed", help="Seed for simulated data sets."),
    force: bool = typer.Option(False, "--force", metavar="", help="Replace an existing --csv file."),
):
    """List the bundled and simulated data sets, show a data card, or export one as CSV.

    Example:

        bayesde datasets
        bayesde datasets hare_lynx --csv hare_lynx.csv
    """
    bd = _setup(None)
    catalogue = bd.datasets.names()
    if name is None:
        if csv is not None:
            raise UserError("--csv needs a data set name, e.g. `bayesde datasets hare_lynx --csv hare_lynx.csv`.")
        width = max(len(k) for k in catalogue)
        for k, summary in catalogue.items():
            print(f"{k:<{width}}  {_one_line(summary)}")
        print("\n`bayesde datasets NAME` prints a data card; add --csv FILE to export it.")
        return
    if name not in catalogue:
        raise UserError(f"unknown data set {name!r}; choose one of {sorted(catalogue)}.")
    if csv is None:
        print(bd.datasets.card(name))
        return
    target = Path(csv)
    if target.exists() and not force:
        raise UserError(f"--csv {csv!r} already exists; pass --force to replace it.")
    import jax

    try:
        obj = bd.datasets.load(name)
    except TypeError:
        obj = bd.datasets.load(name, key=jax.random.key(seed))
    ts = obj if isinstance(obj, bd.TimeSeries) else getattr(obj, "train", None)
    if not isinstance(ts, bd.TimeSeries):
        raise UserError(f"data set {name!r} is not a time-series table; load it in Python with bd.datasets.load.")
    df = ts.to_pandas()
    target.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(target, index=False)
    cols = [c for c in df.columns if c not in ("series", "time")]
    print(f"wrote {target} ({len(df)} rows; columns series, time, {', '.join(cols)})")


# -------------------------------------------------------------------------------- info
@app.command()
@_guard
def info(device: Optional[Device] = _DEVICE):
    """Print the versions, the JAX platform and devices, and the CPU cores (what a bug report needs).

    Example:

        bayesde info --device cpu
    """
    bd = _setup(device)
    import jax

    print(f"bayesde {bd.__version__}, jax {jax.__version__}, python {sys.version.split()[0]}")
    print(f"backend: {jax.default_backend()}")
    print(f"devices: {', '.join(f'{d.platform}:{d.id} ({d.device_kind})' for d in jax.devices())}")
    chains, note = _default_chains()
    print(f"cpu cores: {_cpu_cores()}; NUTS from the command line runs {note or f'{chains} chains'}")


# -------------------------------------------------------------------------------- demo
@app.command()
@_guard
def demo(
    out: str = typer.Option("bayesde-demo", "--out", help="Output folder."),
    quick: bool = typer.Option(False, "--quick", metavar="", help="Fewer NUTS draws (a smoke test, not for conclusions)."),
    seed: int = _SEED,
    device: Optional[Device] = _DEVICE,
    force: bool = _FORCE,
    quiet: bool = _QUIET,
):
    """The one-command tour: a Bayesian Lotka–Volterra ODE on the hare–lynx pelts.

    Fits 1900–1915 by NUTS, forecasts to 1925, scores the held-out 1916–1920 and writes forecast.csv, holdout.csv, forecast.png, posterior.nc (ArviZ), the saved run (run/) and summary.json.

    Example:

        bayesde demo --out bayesde-demo
    """
    out_p = Path(out)
    _claim_out(out_p, force, "--out")
    t_start = time.perf_counter()
    bd = _setup(device)
    import jax
    import numpy as np

    data = bd.datasets.load("hare_lynx")
    history, heldout = data.split(15.0)
    model = _lv_model(bd, data)
    sizes = dict(num_warmup=100, num_samples=100, num_chains=2) if quick else dict(
        num_warmup=300, num_samples=300, num_chains=2)
    _say("bayesde demo: Lotka–Volterra ODE, hare–lynx pelts (thousands), fit 1900–1915, hold out 1916–1920", quiet)
    _say(f"NUTS: {sizes['num_chains']} chains x ({sizes['num_warmup']} warmup + {sizes['num_samples']} draws); "
         "the first seconds are JIT compilation", quiet)
    key_fit, key_pred = jax.random.split(jax.random.key(seed))
    post, msgs = _fit_quietly(bd, model, history, "nuts", key=key_fit, quiet=quiet, **sizes)
    fit_seconds = time.perf_counter() - t_start
    bar = _progress(2, "predict", quiet)
    # One predictive on a fine grid that contains the held-out years (one compile).
    grid = np.arange(0.0, 25.0 + 1e-9, 0.25)
    pred = post.predict(grid, key=key_pred)
    bar.update(1)
    t_hold = heldout.ts[0]
    idx = np.array([int(np.argmin(np.abs(grid - t))) for t in t_hold])
    pred_hold = bd.Prediction(pred.samples[:, :, idx], t_hold, names=pred.names, series_ids=pred.series_ids)
    diag = post.diagnostics()
    cov50 = bd.metrics.coverage(pred_hold, heldout, 0.5)
    cov90 = bd.metrics.coverage(pred_hold, heldout, 0.9)
    crps = bd.metrics.crps(pred_hold, heldout)
    n_hold = int(heldout.mask.sum())
    years = heldout.ts[0, : heldout.lengths[0]] + 1900
    summary = {
        "data": "hare_lynx", "history": "1900-1915", "held_out": f"{int(years[0])}-{int(years[-1])}",
        "sizes": sizes, "seed": seed, "diagnostics": diag,
        "held_out_values": n_hold, "coverage_50": cov50, "coverage_90": cov90, "crps": crps,
        "rmse": bd.metrics.rmse(pred_hold, heldout),
        "posterior_means": {k: float(np.mean(post.samples[k])) for k in ("alpha", "beta", "gamma", "delta", "sigma")
                            if k in post.samples},
    }
    with _staging(out_p) as tmp:
        from .inference._forecast import tidy

        df = tidy(pred, history, quantiles=_QS)
        df.insert(2, "year", df["time"] + 1900)
        df.to_csv(tmp / "forecast.csv", index=False)
        hold = pred_hold.to_pandas(_QS)
        hold.insert(2, "year", hold["time"] + 1900)
        obs = heldout.to_pandas().melt(id_vars=["series", "time"], var_name="variable", value_name="observed")
        hold = hold.merge(obs, on=["series", "time", "variable"], how="left")
        lo50, hi50 = hold["q25"], hold["q75"]
        hold["in_50"] = (hold["observed"] >= lo50) & (hold["observed"] <= hi50)
        hold["in_90"] = (hold["observed"] >= hold["q05"]) & (hold["observed"] <= hold["q95"])
        hold.to_csv(tmp / "holdout.csv", index=False)
        fig, axes = _figure(1, 2, w=5.5, h=3.4)
        for k in range(2):
            ax = axes[0, k]
            bd.plot.forecast(ax, pred, history=history, variable=k, truth=heldout, legend=True, colors=[f"C{k}"])
            ax.axvline(15.0, color="0.5", lw=0.8, ls=":")
            ax.set_xlabel("years since 1900")
            ax.set_ylabel("pelts (thousands)")
            ax.set_title(f"{data.names[k]}: fit 1900–1915, held out 1916–1920 (◆)")
        fig.suptitle("Bayesian Lotka–Volterra ODE (NUTS): median, 50% and 90% predictive bands")
        fig.savefig(tmp / "forecast.png", dpi=110)
        bar.set_description("arviz")
        post.to_arviz(pred).to_netcdf(str(tmp / "posterior.nc"))
        bar.update(1)
        bar.close()
        post.save(tmp / "run")
        _write_json(tmp / "summary.json", summary)
        _write_json(tmp / _MARKER, _record(bd, {"kind": "demo", "seed": seed, "quick": quick,
                                               "data": {"name": "hare_lynx"}}))
    total = time.perf_counter() - t_start
    print(_health_line(post) + ("  [ok]" if _healthy(diag) else "  [check the warnings]"))
    for msg in msgs:
        print(f"warning: {msg}")
    print(f"held out {summary['held_out']} ({n_hold} values): the 50% band covers {round(cov50 * n_hold)}/{n_hold} "
          f"({cov50:.0%}), the 90% band {round(cov90 * n_hold)}/{n_hold} ({cov90:.0%}); CRPS {crps:.3g}, "
          f"RMSE {summary['rmse']:.3g} (thousand pelts)")
    means = ", ".join(f"{k} {v:.3g}" for k, v in summary["posterior_means"].items())
    print(f"posterior means: {means}")
    print(f"wrote {out_p}/: forecast.csv, holdout.csv, forecast.png, posterior.nc, run/, summary.json "
          f"(fit {fit_seconds:.0f} s, total {total:.0f} s)")


def _healthy(diag: dict) -> bool:
    rhat = diag.get("max_rhat", float("nan"))
    return diag.get("divergences", 0) == 0 and (not math.isfinite(rhat) or rhat < 1.05)


if __name__ == "__main__":
    app()
