"""The `bayesde` command line: fit, forecast, effects, datasets, info and the demo.

A thin shell over `import bayesde as bd`: each command is one module (`_fit`,
`_forecast`, `_effects`, `_datasets`, `_info`, `_demo`) that reads its options, calls
the library and writes an output folder through `bayesde._atomic` (whole or not at
all); `_common` holds what they share. This module makes the one Typer app, registers
the commands on it and turns every failure into an exit code:

- 0: success.
- 2: bad input the user can fix (bad options, missing files, data that `bd.DataError`
  refuses, a model that does not suit the data): one line on stderr that says what and
  where (see `_common.is_user_error` for the rule).
- 1: an internal error, i.e. a bug: one line that asks for a report; the traceback is
  shown with `bayesde --debug ...` or `BAYESDE_DEBUG=1`.
- 130: interrupted (Ctrl-C); 141: stdout closed early (`bayesde datasets | head`).

Nothing here imports JAX or bayesde's modules at import time; the commands do, after
`--device` has been applied, so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback

import typer

from ._common import closed_pipe, err, is_user_error, one_line
from ._datasets import datasets
from ._demo import demo
from ._effects import effects
from ._fit import fit
from ._forecast import forecast
from ._info import info

__all__ = ["app", "main"]

#: The commands, in the order `bayesde --help` lists them.
COMMANDS = (fit, forecast, effects, datasets, info, demo)


class _Group(typer.core.TyperGroup):
    """The command group, with click's usage errors said in one line (exit 2) and a
    closed stdout (`bayesde datasets | head`) ending quietly."""

    debug = False

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _Group.debug = os.environ.get("BAYESDE_DEBUG", "") not in ("", "0")
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
                err(f"{e.format_message()}{where}")
                code = 2
            except cx.ClickException as e:
                err(e.format_message())
                code = e.exit_code
            except tx.Abort:
                err("aborted")
                code = 1
        except BrokenPipeError:
            code = closed_pipe()
        sys.exit(code if isinstance(code, int) else 0)


def _guard(fn):
    """Run a command body and turn what it raises into an exit code (see the module
    docstring): user errors exit 2 with one line, anything else exits 1 asking for a
    report."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:
            raise typer.Exit(closed_pipe())
        except KeyboardInterrupt:
            err("interrupted")
            raise typer.Exit(130)
        except Exception as e:  # noqa: BLE001
            if _Group.debug:
                traceback.print_exc(file=sys.stderr)
            if is_user_error(e):
                err(e)
                raise typer.Exit(2)
            hint = "" if _Group.debug else "; rerun with `bayesde --debug ...` for the traceback"
            err(f"internal error ({type(e).__name__}: {one_line(e)}); please report this at the bayesde issue "
                f"tracker with the command and the traceback{hint}.")
            raise typer.Exit(1)

    return wrapper


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
for _command in COMMANDS:
    app.command()(_guard(_command))


def _version_callback(value: bool):
    if value:
        import bayesde as bd

        print(f"bayesde {bd.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, metavar="",
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", metavar="",
                               help="On an error, print the traceback (also: BAYESDE_DEBUG=1)."),
):
    """Bayesian neural differential equations from the shell."""
    if debug:
        _Group.debug = True


def main() -> None:
    """The console script: run the command line on `sys.argv`."""
    app()
