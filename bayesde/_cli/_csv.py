"""`--data`: a long-format CSV file read into a `bd.TimeSeries`."""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Optional

from ._common import UserError, one_line, sha256

#: Words a treatment cell (or a plan) may hold instead of a number.
BOOL_TEXT = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}


class Transform(str, enum.Enum):
    """`bayesde fit --transform`: the scale the model is fitted on. `log1p` fits
    `log(1 + y)` (counts and other data >= 0), `log` fits `log(y)` (data > 0); the
    forecast maps every predictive draw back (`inverse`), and as the maps are monotone
    its quantiles are those of the data's units and its bands lie in the data's support.
    `auto` (the default) is `log1p` or `none`, chosen from the data and the model by
    `resolve_transform`; a run records the one chosen."""

    auto = "auto"
    none = "none"
    log = "log"
    log1p = "log1p"


#: `--transform auto` fits these models on `log(1 + y)` when the data are never below 0. The
#: latent SDE is a free-form forecaster (no parameter means anything on the data's own scale), and
#: on records that cannot go below zero it forecast better on that scale (docs/real-series.md).
#: Not the mechanistic `ode-lv` (its log-normal observation already keeps it positive), not the
#: treatment models (`bayesde effects` compares plans on the data's scale), and not the models
#: not measured that way.
AUTO_LOG1P_MODELS = ("latent-sde",)


def resolve_transform(name: str, model: str, data) -> tuple[Transform, Optional[str]]:
    """The transform `--transform name` fits `model` on, and for `auto` the reason said at fit
    time (`None` otherwise): `log1p` when the model is one of `AUTO_LOG1P_MODELS` and every
    observed value of every value column of `data` (a `bd.TimeSeries` of the values as read)
    is >= 0, else `none`. A name other than `auto` is what it says."""
    import numpy as np

    t = Transform(name)
    if t is not Transform.auto:
        return t, None
    if model not in AUTO_LOG1P_MODELS:
        return Transform.none, None
    observed = np.asarray(data.ys)[np.asarray(data.mask)]
    if observed.size == 0 or observed.min() < 0:
        return Transform.none, None
    return Transform.log1p, (
        f"every value of {data.names} is >= 0, so --model {model} is fitted on log(1 + y) (--transform auto, "
        "the default; --transform none fits the values as they are)"
    )


#: `--transform`: the smallest value it takes, whether that value itself is allowed, the word for
#: a value outside, and the formula it fits.
_DOMAIN = {"log": (0.0, False, "not positive", "log(y)"), "log1p": (0.0, True, "negative", "log(1 + y)")}


def transform_formula(name: str) -> str:
    """What the model is fitted on, e.g. `log(1 + y)`."""
    return _DOMAIN[Transform(name).value][3] if Transform(name) is not Transform.none else "y"


def forward(name: str, y):
    """The values the model is fitted on (NaN stays NaN)."""
    import numpy as np

    name = Transform(name).value
    y = np.asarray(y, dtype=float)
    return {"none": lambda v: v, "log": np.log, "log1p": np.log1p}[name](y)


def inverse(name: str, z):
    """Back to the data's units, elementwise and monotone (non-decreasing): `exp` for
    `log`, `expm1` for `log1p` with draws below 0 on the model's scale (data below 0) set
    to 0, the edge of the support. For `Prediction.map`."""
    import numpy as np

    name = Transform(name).value
    if name == "none":
        return z
    with np.errstate(over="ignore"):
        if name == "log":
            return np.exp(np.asarray(z))
        return np.maximum(np.expm1(np.asarray(z)), 0.0)


def check_domain(df, value_cols: list[str], transform: str, p: Path) -> None:
    """Refuse the first value (in file order) outside `--transform`'s domain, naming the
    column, the row and the fix."""
    import numpy as np
    import pandas as pd

    name = Transform(transform).value
    if name == "none":
        return
    low, closed, word, _ = _DOMAIN[name]
    for c in value_cols:
        num = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            bad = (num < low) if closed else (num <= low)
        if bad.any():
            r = int(np.argmax(bad))
            need = f">= {low:g}" if closed else f"> {low:g}"
            fix = ("--transform log1p for counts or data with zeros, or --transform none" if name == "log" and num[r] == 0
                   else "--transform none")
            raise UserError(
                f"{p.name}: column {c!r} {where(p, r)} holds {num[r]:g}, which is {word}; "
                f"--transform {name} needs values {need} (use {fix})."
            )


def split_cols(text: Optional[str]) -> Optional[list[str]]:
    """`"a, b,c"` -> `["a", "b", "c"]`; `None` or blank -> `None`."""
    if text is None:
        return None
    cols = [c.strip() for c in text.split(",") if c.strip()]
    return cols or None


def where(path: Path, r: int) -> str:
    """A data row said as the user sees it in the file."""
    return f"row {r} (line {r + 2} of {path.name})"


def read_csv(
    bd,
    path: str,
    *,
    time_col: str,
    series_col: Optional[str],
    series_explicit: bool,
    value_cols: Optional[list[str]],
    treatment_cols: Optional[list[str]],
    static_cols: Optional[list[str]],
    transform: str = "none",
    model: Optional[str] = None,
):
    """Read a long-format CSV into a `bd.TimeSeries`, refusing bad input with the
    column and the row (0-based data row and 1-based file line). With a `transform`
    (`--transform`; `auto` is resolved for `model` from the values as read,
    `resolve_transform`), the value columns are checked against its domain and the series
    holds the transformed values.

    **Returns:** the `TimeSeries` and a record of what was read (for `cli.json`), with the
    transform applied (`transform`) and, when `auto` chose one, why (`transform_reason`).
    """
    p = Path(path)
    df = _load_frame(p, path)
    columns = list(df.columns)
    series_col, value_cols = _check_columns(
        p, columns, time_col=time_col, series_col=series_col, series_explicit=series_explicit,
        value_cols=value_cols, treatment_cols=treatment_cols, static_cols=static_cols,
    )
    if len(df) == 0:
        raise UserError(f"{p.name}: the file has a header but no rows.")
    if series_col is not None:
        _check_series_ids(df, series_col, p)
    for c in treatment_cols or []:
        df[c] = treatment_column(df[c], c, p)
    try:
        data = bd.TimeSeries.from_pandas(
            df, time=time_col, series=series_col, values=value_cols,
            treatments=treatment_cols, static=static_cols,
        )
    except bd.DataError as e:  # said again with the file's name and line, from the error's fields
        raise UserError(e.message(p.name, row_label=lambda r: where(p, r))) from None
    transform, reason = resolve_transform(transform, model, data)
    if transform is not Transform.none:
        # The values were checked as numbers above; now their domain, then the same series on the model's scale.
        import pandas as pd

        check_domain(df, value_cols, transform, p)
        df = df.copy()
        for c in value_cols:
            df[c] = forward(transform, pd.to_numeric(df[c], errors="coerce"))
        data = bd.TimeSeries.from_pandas(
            df, time=time_col, series=series_col, values=value_cols,
            treatments=treatment_cols, static=static_cols,
        )
    return data, {
        "path": str(p.resolve()),
        "sha256": sha256(p),
        "rows": int(len(df)),
        "time_col": time_col,
        "series_col": series_col,
        "value_cols": value_cols,
        "treatment_cols": treatment_cols,
        "static_cols": static_cols,
        "time_unit": data.time_unit,
        "time_origin": None if data.time_origin is None else str(data.time_origin),
        "transform": transform.value,
        "transform_reason": reason,
    }


def _load_frame(p: Path, path: str):
    import pandas as pd

    if not p.is_file():
        raise UserError(f"--data: file {path!r} not found.")
    try:
        df = pd.read_csv(p, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"--data {p.name}: cannot read it as CSV ({one_line(e)}).") from None
    df.columns = [str(c) for c in df.columns]
    return df


def _check_columns(p: Path, columns: list, *, time_col, series_col, series_explicit, value_cols, treatment_cols,
                   static_cols) -> tuple[Optional[str], list[str]]:
    """Every named column exists (said with the flag that names it).

    **Returns:** the series column (`None` when the default `series` is absent: one
    series) and the value columns (default: every column not otherwise used)."""

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
        series_col = None
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
    return series_col, value_cols


def _check_series_ids(df, series_col: str, p: Path) -> None:
    """Every row has a series id; ids are compared as text (stripped)."""
    import numpy as np

    empty = df[series_col].isna().to_numpy()
    if empty.any():
        r = int(np.argmax(empty))
        raise UserError(f"{p.name}: column {series_col!r} {where(p, r)} is empty; every row needs a series id.")
    df[series_col] = df[series_col].astype(str).str.strip()


def treatment_column(col, name: str, p: Path):
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
                    f"{p.name}: treatment column {name!r} {where(p, r)} is empty; treatments must be "
                    "known at every time (write 0 for no treatment)."
                )
            key = str(v).strip().lower()
            if key not in BOOL_TEXT:
                raise UserError(
                    f"{p.name}: treatment column {name!r} {where(p, r)} holds the unknown value {v!r}; "
                    "use numbers (0/1 or a dose) or yes/no/true/false."
                )
            num[r] = BOOL_TEXT[key]
        elif not np.isfinite(num[r]):
            raise UserError(f"{p.name}: treatment column {name!r} {where(p, r)} is infinite; use a finite number.")
    return num
