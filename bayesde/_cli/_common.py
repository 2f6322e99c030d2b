"""What every command shares: the user-error type, the shared options, JAX start-up
(`--device`), output folders, provenance records and progress bars.

Imports only the standard library and Typer at module level, so that `bayesde --help`
answers without starting JAX.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shlex
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

#: The quantiles every command's CSV carries (columns `q05 ... q95`).
QS = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The file that marks an output folder as written by the command line.
MARKER = "cli.json"


class UserError(Exception):
    """Bad input the user can fix: reported in one line, exit code 2."""


class Device(str, enum.Enum):
    """`--device`: the JAX platform."""

    cpu = "cpu"
    gpu = "gpu"


DEVICE = typer.Option(None, "--device", help="Where JAX computes (default: JAX's choice).", show_default=False,
                      case_sensitive=False)
QUIET = typer.Option(False, "--quiet", "-q", metavar="", help="No progress bars or step messages.")
FORCE = typer.Option(False, "--force", is_flag=True, metavar="", help="Replace an existing output folder written by bayesde.")
SEED = typer.Option(0, "--seed", help="Random seed: the same seed gives the same numbers.")


def is_user_error(e: BaseException) -> bool:
    """Whether `e` is bad input that the user can fix (exit 2) rather than a bug (exit 1).

    User errors are the command line's own `UserError` (options, files, and library
    `ValueError`s raised by the steps that validate input: building the model,
    checking it against the data, loading a run), the library's `bd.DataError`
    (data refused at the edge, with its column and row), and a refusal of the file
    system to write where asked. Any other exception, a plain `ValueError` from deep
    inside a fit included, is a bug in bayesde."""
    if isinstance(e, (UserError, FileExistsError, PermissionError)):
        return True
    if isinstance(e, ValueError) and "bayesde" in sys.modules:
        import bayesde as bd  # a DataError was raised by bayesde, so this import is already done

        return isinstance(e, bd.DataError)
    return False


def one_line(msg) -> str:
    return " ".join(str(msg).split())


def err(msg) -> None:
    print(f"bayesde: error: {one_line(msg)}", file=sys.stderr)


def closed_pipe() -> int:
    """The reader of stdout went away (`bayesde datasets | head`): send what is left of
    the output nowhere and end quietly, with the exit status of a SIGPIPE death."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


# ----------------------------------------------------------------------------- setup
def setup(device: Optional[Device]):
    """Apply `--device` before JAX starts, then import bayesde.

    **Returns:** the `bayesde` module (`bd`)."""
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
    enable_compile_cache(jax)
    if name is not None:
        _check_platform(jax, name)
    import bayesde as bd

    return bd


def _check_platform(jax, name: str) -> None:
    try:
        platforms = {d.platform for d in jax.devices()}
    except Exception as e:  # noqa: BLE001 - jaxlib reports a missing plugin in several ways
        raise UserError(
            f"--device {name}: JAX cannot use this platform here ({one_line(e) or type(e).__name__}); "
            + ("no GPU is visible or this jaxlib has no CUDA plugin (pip install 'jax[cuda12]'); "
               "use --device cpu." if name == "gpu" else "check your JAX installation.")
        ) from None
    if name == "gpu" and not platforms & {"gpu", "cuda", "rocm"}:
        raise UserError(f"--device gpu: no GPU is available to JAX (devices: {sorted(platforms)}); use --device cpu.")
    if name == "cpu" and platforms != {"cpu"}:
        raise UserError("--device cpu: JAX was already started on another platform in this process.")


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_chains() -> tuple[int, Optional[str]]:
    """NUTS chains when `--num-chains` is not given, as PyMC: one per CPU core, at least
    2 (to compare chains: R-hat) and at most 4; and a note when fewer than 4."""
    cores = cpu_cores()
    chains = max(2, min(4, cores))
    note = None
    if chains < 4:
        note = f"{chains} chains ({cores} CPU core{'s' if cores != 1 else ''}); pass --num-chains 4 for more"
    return chains, note


def enable_compile_cache(jax) -> None:
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


# ---------------------------------------------------------------------------- output
def progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet or os.environ.get("BAYESDE_FAST", "") not in ("", "0"),
                file=sys.stderr, leave=False)


def say(msg: str, quiet: bool = False):
    if not quiet:
        print(msg, flush=True)


def sha256(path) -> str:
    """The SHA-256 of a file (hex), for the provenance records."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record(bd, extra: dict) -> dict:
    """The provenance of an output folder (`cli.json`): versions, command, platform."""
    import jax

    return {
        "bayesde_version": bd.__version__,
        "command": shlex.join(["bayesde"] + sys.argv[1:]),
        "cwd": os.getcwd(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        **extra,
    }


def claim_out(out: Path, force: bool, what: str, *, run_ok: bool = False) -> None:
    """Refuse an existing output folder unless `--force`, and never replace a folder
    that bayesde did not write (`bayesde.json` marks a run, `cli.json` any output)."""
    from .._atomic import claim_dir

    why = claim_dir(out, overwrite=force, marker="bayesde.json" if run_ok else MARKER, what=what)
    if why is not None:
        raise UserError(why)


def staging(out: Path, *, create: bool = True):
    """Write an output folder whole or not at all (the package's one staging helper)."""
    from .._atomic import staged_dir

    return staged_dir(out, create=create)


def write_json(path: Path, obj: dict) -> None:
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


def figure(rows: int, cols: int, w: float = 6.0, h: float = 3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def json_object(text: str, flag: str, what: str, example: str) -> dict:
    """A command-line option's JSON object (`--model-args`, `--method-args`), refused
    with a message naming `flag`, what it holds and an `example` when it is not one."""
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{flag}: not valid JSON ({e.msg} at column {e.colno}); e.g. '{example}'.") from None
    if not isinstance(args, dict):
        raise UserError(f"{flag}: expected a JSON object of {what}, e.g. '{example}'.")
    return args
