"""`bayesde datasets`: list the data sets, print a data card, export one as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import UserError, one_line, setup


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
    bd = setup(None)
    catalogue = bd.datasets.names()
    if name is None:
        if csv is not None:
            raise UserError("--csv needs a data set name, e.g. `bayesde datasets hare_lynx --csv hare_lynx.csv`.")
        width = max(len(k) for k in catalogue)
        for k, summary in catalogue.items():
            print(f"{k:<{width}}  {one_line(summary)}")
        print("\n`bayesde datasets NAME` prints a data card; add --csv FILE to export it.")
        return
    if name not in catalogue:
        raise UserError(f"unknown data set {name!r}; choose one of {sorted(catalogue)}.")
    if csv is None:
        print(bd.datasets.card(name))
        return
    _export(bd, name, csv, seed=seed, force=force)


def _export(bd, name: str, csv: str, *, seed: int, force: bool) -> None:
    target = Path(csv)
    if target.exists() and not force:
        raise UserError(f"--csv {csv!r} already exists; pass --force to replace it.")
    import jax

    try:
        obj = bd.datasets.load(name)
    except TypeError:  # a simulator: it needs a key
        obj = bd.datasets.load(name, key=jax.random.key(seed))
    ts = obj if isinstance(obj, bd.TimeSeries) else getattr(obj, "train", None)
    if not isinstance(ts, bd.TimeSeries):
        raise UserError(f"data set {name!r} is not a time-series table; load it in Python with bd.datasets.load.")
    df = ts.to_pandas()
    target.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(target, index=False)
    cols = [c for c in df.columns if c not in ("series", "time")]
    print(f"wrote {target} ({len(df)} rows; columns series, time, {', '.join(cols)})")
