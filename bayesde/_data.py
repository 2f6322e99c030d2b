"""`TimeSeries`: a validated batch of (possibly irregular, partly missing) series."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["TimeSeries", "Batch", "DataError"]


class DataError(ValueError):
    """Bad data that the user can fix, with where it is.

    A `ValueError` (so `except ValueError` still catches it) that carries the location
    as fields, so that a caller (the command line) can say it in its own terms, e.g.
    add the line of a CSV file, without parsing the message.

    **Arguments:**

    - `problem`: what is wrong and how to fix it, said after the location.
    - `field`: the `TimeSeries` field or method concerned (`"from_pandas"`, `"ts"`, ...).
    - `column`: the column of a frame, if any.
    - `row`: the 0-based row of a frame, if any.
    - `role`: what the column is for (`"time"`, `"series"`, ...), if said.
    """

    def __init__(self, problem: str, *, field: str = "from_pandas", column=None, row: Optional[int] = None,
                 role: Optional[str] = None):
        self.problem = problem
        self.field = field
        self.column = column
        self.row = None if row is None else int(row)
        self.role = role
        super().__init__(self.message())

    def where(self, row_label=None) -> str:
        """`"column 'x' (role) row 4"`; `row_label(row)` can say the row differently."""
        parts = []
        if self.column is not None:
            parts.append(f"column {self.column!r}" + (f" ({self.role})" if self.role else ""))
        if self.row is not None:
            parts.append(f"row {self.row}" if row_label is None else row_label(self.row))
        return " ".join(parts)

    def message(self, source: Optional[str] = None, row_label=None) -> str:
        """The whole message, `source` (default `field`) first."""
        where = self.where(row_label)
        if not where:
            return f"{source or self.field}: {self.problem}"
        sep = "" if self.problem[:1] in (":", ";", ",") else " "
        return f"{source or self.field}: {where}{sep}{self.problem}"

    def __reduce__(self):
        return (_rebuild_data_error, (self.problem, self.field, self.column, self.row, self.role))


def _rebuild_data_error(problem, field, column, row, role):
    return DataError(problem, field=field, column=column, row=row, role=role)


#: Units a date/time column can be turned into, in days.
TIME_UNITS = {"years": 365.25, "days": 1.0, "hours": 1.0 / 24.0, "minutes": 1.0 / 1440.0, "seconds": 1.0 / 86400.0}


def _choose_unit(days: np.ndarray) -> str:
    """A readable unit for times `days` (days since the origin): years for annual data,
    days for daily to monthly data, hours (or finer) below a day."""
    steps = np.diff(np.unique(days))
    step = float(np.median(steps)) if steps.size else 1.0
    if step >= 360.0:
        return "years"
    if step >= 1.0 - 1e-9:
        return "days"
    if step >= 1.0 / 24.0 - 1e-9:
        return "hours"
    if step >= 1.0 / 1440.0 - 1e-9:
        return "minutes"
    return "seconds"


class Batch(NamedTuple):
    """The arrays a model's NumPyro program sees (a PyTree; missing values are zeros
    with `mask == False`).

    - `ts`: `Float[Array, "series time"]`
    - `ys`: `Float[Array, "series time dim"]`
    - `mask`: `Bool[Array, "series time dim"]`
    - `treatments`: `Float[Array, "series time k"]` or `None`
    - `static`: `Float[Array, "series c"]` or `None`
    """

    ts: jnp.ndarray
    ys: jnp.ndarray
    mask: jnp.ndarray
    treatments: Optional[jnp.ndarray] = None
    static: Optional[jnp.ndarray] = None


def _as_float_array(field: str, x, fix: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except ValueError:
        raise DataError(
            "the rows have different lengths (a ragged list); pad the short series with NaN to a common length, "
            "or build the data with TimeSeries.from_pandas(df).", field=f"TimeSeries.{field}",
        ) from None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"dtype {arr.dtype} is not numeric; {fix}", field=f"TimeSeries.{field}")
    return arr.astype(np.float64)


def _first_bad(bad: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(bad)[0])


# Constructor checks, in the order `TimeSeries.__init__` applies them. Each raises
# `DataError` naming the field (`TimeSeries.ys`, ...) and, where there is one, the
# series/time index of the first bad entry.
def _check_ys(ys: np.ndarray) -> np.ndarray:
    """Values as `(N, T, D)` (one series may be given as `(T, D)` or `(T,)`)."""
    if ys.ndim == 1:
        ys = ys[None, :, None]
    elif ys.ndim == 2:
        ys = ys[None]
    if ys.ndim != 3:
        raise DataError(f"expected shape (N, T, D), got {ys.shape}; reshape to (series, time, dim).",
                        field="TimeSeries.ys")
    if 0 in ys.shape:
        raise DataError(f"empty shape {ys.shape}; provide at least one series, one time point and one dimension.",
                        field="TimeSeries.ys")
    return ys


def _check_ts(ts: np.ndarray, shape: tuple) -> np.ndarray:
    """Times as `(N, T)`: shared `(T,)` times are repeated; finite, strictly increasing."""
    n, t, _ = shape
    if ts.ndim == 1:
        ts = np.broadcast_to(ts, (n, ts.shape[0])).copy()
    if ts.ndim != 2 or ts.shape != (n, t):
        raise DataError(f"shape {ts.shape} does not match ys {shape}; expected ({t},) or ({n}, {t}).",
                        field="TimeSeries.ts")
    if not np.all(np.isfinite(ts)):
        i, j = _first_bad(~np.isfinite(ts))
        raise DataError(
            f"series {i} has a non-finite time ({ts[i, j]}) at time index {j}; times must be finite, so drop that "
            "row or fill in its time.", field="TimeSeries.ts",
        )
    if t > 1:
        step = np.diff(ts, axis=1)
        if np.any(step <= 0):
            i, j = _first_bad(step <= 0)
            raise DataError(
                f"series {i} is not strictly increasing at time index {j + 1} (t={ts[i, j + 1]:g} after "
                f"t={ts[i, j]:g}); sort the times within each series and merge duplicates.", field="TimeSeries.ts",
            )
    return ts


def _check_mask(mask, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(ys, mask)` with NaN exactly where `mask` is False; at least one finite value."""
    if mask is None:
        mask = ~np.isnan(ys)
    else:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise DataError(
                f"dtype {mask.dtype} is not bool; pass a boolean array with True where a value is observed.",
                field="TimeSeries.mask",
            )
        if mask.shape != ys.shape:
            raise DataError(f"shape {mask.shape} does not match ys {ys.shape}.", field="TimeSeries.mask")
        mask = mask & ~np.isnan(ys)
    if not np.all(np.isfinite(ys[mask])):
        i, j, k = _first_bad(mask & ~np.isfinite(np.where(mask, ys, 0.0)))
        raise DataError(
            f"series {i} has an infinite value at time index {j}, dim {k}; use NaN (or mask=False) for a "
            "missing value.", field="TimeSeries.ys",
        )
    if not mask.any():
        raise DataError("every value is missing; provide at least one observed value.", field="TimeSeries.ys")
    return np.where(mask, ys, np.nan), mask


def _check_treatments(treatments, shape: tuple) -> Optional[np.ndarray]:
    """Treatments as `(N, T, K)`, finite everywhere (they are inputs, never missing)."""
    if treatments is None:
        return None
    n, t, _ = shape
    treatments = _as_float_array("treatments", treatments, "encode treatments as numbers (e.g. 0/1 or doses).")
    if treatments.ndim == 2 and n == 1:
        treatments = treatments[None]
    if treatments.ndim != 3 or treatments.shape[:2] != (n, t):
        raise DataError(f"shape {treatments.shape} does not match ys {shape}; expected ({n}, {t}, K).",
                        field="TimeSeries.treatments")
    if not np.all(np.isfinite(treatments)):
        i, j, k = _first_bad(~np.isfinite(treatments))
        raise DataError(
            f"series {i} has a non-finite value at time index {j}, channel {k}; treatments must be known at "
            "every time (use 0 for none).", field="TimeSeries.treatments",
        )
    return treatments


def _check_static(static, n: int) -> Optional[np.ndarray]:
    """Static covariates as `(N, C)`, finite everywhere."""
    if static is None:
        return None
    static = _as_float_array("static", static, "encode static covariates as numbers.")
    if static.ndim == 1 and n == 1:
        static = static[None]
    if static.ndim != 2 or static.shape[0] != n:
        raise DataError(f"shape {static.shape} does not match {n} series; expected ({n}, C).",
                        field="TimeSeries.static")
    if not np.all(np.isfinite(static)):
        i, j = _first_bad(~np.isfinite(static))
        raise DataError(f"series {i} has a non-finite value in column {j}; fill or drop it.",
                        field="TimeSeries.static")
    return static


def _check_series_ids(series_ids, n: int) -> list:
    series_ids = list(range(n)) if series_ids is None else list(series_ids)
    if len(series_ids) != n:
        raise DataError(f"{len(series_ids)} labels for {n} series.", field="TimeSeries.series_ids")
    return series_ids


def _check_lengths(lengths, n: int, t: int) -> np.ndarray:
    lengths = np.full(n, t) if lengths is None else lengths
    lengths = np.asarray(lengths, dtype=int)
    if lengths.shape != (n,) or np.any(lengths < 1) or np.any(lengths > t):
        raise DataError(f"expected {n} integers in [1, {t}], got {lengths.tolist()}.", field="TimeSeries.lengths")
    return lengths


def _check_dates(time_unit, time_origin) -> tuple:
    """`(time_unit, time_origin as datetime64[s])`, both given or neither."""
    if (time_unit is None) != (time_origin is None):
        raise DataError("give both time_unit and time_origin (the date of t = 0), or neither.",
                        field="TimeSeries.time_unit")
    if time_unit is not None and time_unit not in TIME_UNITS:
        raise DataError(f"{time_unit!r} is not one of {sorted(TIME_UNITS)}.", field="TimeSeries.time_unit")
    if time_origin is not None:
        try:
            time_origin = np.datetime64(time_origin, "s")
        except (ValueError, TypeError):
            raise DataError(f"{time_origin!r} is not a date; pass e.g. '1900-01-01'.",
                            field="TimeSeries.time_origin") from None
    return time_unit, time_origin


class TimeSeries:
    """A batch of `N` series observed at (per-series, possibly irregular) times.

    **Arguments:**

    - `ts`: observation times, shape `(T,)` (shared by every series) or `(N, T)`.
      Finite and strictly increasing within each series. Series of different lengths
      are padded at the end with increasing times whose values are all missing.
    - `ys`: observations, shape `(N, T, D)` (or `(T, D)` / `(T,)` for one series).
      NaN marks a missing value.
    - `mask`: optional boolean `(N, T, D)`; `False` marks a missing value (the value in
      `ys` is then ignored). Default: `~isnan(ys)`.
    - `treatments`: optional `(N, T, K)` inputs known at every time (doses, controls).
    - `static`: optional `(N, C)` covariates per series.
    - `names`, `treatment_names`, `static_names`: column names (defaults `y0, y1, ...`).
    - `series_ids`: optional labels of the series (defaults `0..N-1`).
    - `lengths`: optional number of real (non-padding) times per series (defaults `T`).
    - `time_unit`, `time_origin`: when the times stand for dates, the unit of `ts`
      (`"years"`, `"days"`, `"hours"`, `"minutes"` or `"seconds"`) and the date of
      `t = 0` (anything `numpy.datetime64` reads, e.g. `"1900-01-01"`); `to_dates`
      turns times back into dates. `from_pandas` sets both for a date column.

    Everything is validated on construction; an invalid field raises `ValueError`
    naming the field, the series/time index and the fix.
    """

    def __init__(
        self,
        ts,
        ys,
        mask=None,
        treatments=None,
        static=None,
        *,
        names: Optional[Sequence[str]] = None,
        treatment_names: Optional[Sequence[str]] = None,
        static_names: Optional[Sequence[str]] = None,
        series_ids: Optional[Sequence] = None,
        lengths: Optional[Sequence[int]] = None,
        time_unit: Optional[str] = None,
        time_origin=None,
    ):
        ts = _as_float_array("ts", ts, "pass times as floats, e.g. np.asarray(ts, dtype=float).")
        ys = _check_ys(_as_float_array("ys", ys, "pass values as floats, with NaN for missing values."))
        n, t, d = ys.shape
        ts = _check_ts(ts, ys.shape)
        ys, mask = _check_mask(mask, ys)
        treatments = _check_treatments(treatments, ys.shape)
        static = _check_static(static, n)

        self.ts = ts
        self.ys = ys
        self.mask = mask
        self.treatments = treatments
        self.static = static
        self.names = _names("names", names, d, "y")
        self.treatment_names = (
            None
            if treatments is None
            else _names("treatment_names", treatment_names, treatments.shape[2], "u")
        )
        self.static_names = (
            None if static is None else _names("static_names", static_names, static.shape[1], "s")
        )
        self.series_ids = _check_series_ids(series_ids, n)
        self.lengths = _check_lengths(lengths, n, t)
        self.time_unit, self.time_origin = _check_dates(time_unit, time_origin)

    # ---------------------------------------------------------------- shape
    @property
    def n_series(self) -> int:
        return self.ys.shape[0]

    @property
    def n_times(self) -> int:
        return self.ys.shape[1]

    @property
    def dim(self) -> int:
        return self.ys.shape[2]

    @property
    def shape(self) -> tuple:
        return self.ys.shape

    def __len__(self) -> int:
        return self.n_series

    def __repr__(self) -> str:
        extra = ""
        if self.treatments is not None:
            extra += f", treatments={self.treatments.shape[2]}"
        if self.static is not None:
            extra += f", static={self.static.shape[1]}"
        return (
            f"TimeSeries(series={self.n_series}, times={self.n_times}, dim={self.dim}, "
            f"observed={int(self.mask.sum())}, t=[{self.ts.min():g}, {self.ts.max():g}]{extra})"
        )

    # ------------------------------------------------------------ transforms
    def batch(self, dtype=None) -> Batch:
        """The arrays as a `Batch` of JAX arrays (missing values set to zero)."""
        dtype = dtype or jnp.zeros(()).dtype
        to = lambda x: None if x is None else jnp.asarray(x, dtype=dtype)  # noqa: E731
        return Batch(
            ts=to(self.ts),
            ys=to(np.where(self.mask, self.ys, 0.0)),
            mask=jnp.asarray(self.mask),
            treatments=to(self.treatments),
            static=to(self.static),
        )

    def _replace(self, **changes) -> "TimeSeries":
        fields = dict(
            ts=self.ts,
            ys=self.ys,
            mask=self.mask,
            treatments=self.treatments,
            static=self.static,
            names=self.names,
            treatment_names=self.treatment_names,
            static_names=self.static_names,
            series_ids=self.series_ids,
            lengths=self.lengths,
            time_unit=self.time_unit,
            time_origin=self.time_origin,
        )
        fields.update(changes)
        ts, ys = fields.pop("ts"), fields.pop("ys")
        return TimeSeries(ts, ys, **fields)

    def select(self, index) -> "TimeSeries":
        """The series at `index` (an int, slice or integer/boolean array)."""
        idx = np.arange(self.n_series)[index]
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("TimeSeries.select: the selection is empty; select at least one series.")
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return self._replace(
            ts=self.ts[idx],
            ys=self.ys[idx],
            mask=self.mask[idx],
            treatments=pick(self.treatments),
            static=pick(self.static),
            series_ids=[self.series_ids[i] for i in idx],
            lengths=self.lengths[idx],
        )

    def split(self, at: float) -> tuple["TimeSeries", "TimeSeries"]:
        """Split into history (`t <= at`) and future (`t > at`), series by series.

        Both parts keep every series; each must have at least one time on its side.
        """
        at = float(at)
        real = np.arange(self.n_times)[None, :] < self.lengths[:, None]
        before = self.ts <= at
        counts_h = (before & real).sum(axis=1)
        counts_f = (~before & real).sum(axis=1)
        for name, counts in (("history", counts_h), ("future", counts_f)):
            if np.any(counts == 0):
                i = int(np.argmax(counts == 0))
                raise ValueError(
                    f"TimeSeries.split: series {i} has no times in the {name} for at={at:g} "
                    f"(its times span [{self.ts[i].min():g}, {self.ts[i].max():g}]); "
                    "choose `at` inside every series' time range."
                )
        return self._take(before), self._take(~before)

    def _take(self, keep: np.ndarray) -> "TimeSeries":
        """Keep the (series, time) entries where `keep` is True, re-padding ragged rows."""
        keep = keep & (np.arange(self.n_times)[None, :] < self.lengths[:, None])
        counts = keep.sum(axis=1)
        width = int(counts.max())
        n = self.n_series
        ts = np.empty((n, width))
        ys = np.full((n, width, self.dim), np.nan)
        tr = None if self.treatments is None else np.zeros((n, width, self.treatments.shape[2]))
        for i in range(n):
            idx = np.flatnonzero(keep[i])
            c = len(idx)
            ts[i, :c] = self.ts[i, idx]
            ys[i, :c] = self.ys[i, idx]
            if tr is not None:
                tr[i, :c] = self.treatments[i, idx]
                if c < width:
                    tr[i, c:] = self.treatments[i, idx[-1]]
            if c < width:
                ts[i, c:] = _pad_times(self.ts[i, idx], width - c)
        return self._replace(ts=ts, ys=ys, mask=None, treatments=tr, lengths=counts)

    # ----------------------------------------------------------------- dates
    def to_dates(self, t) -> np.ndarray:
        """The dates (`datetime64[s]`) of times `t` (any shape), for data whose times
        stand for dates (`time_unit` and `time_origin` set, e.g. by `from_pandas` on a
        date column). Years are calendar years: `t = 1` is the origin's anniversary."""
        if self.time_unit is None:
            raise DataError(
                "these times are plain numbers, not dates (time_unit is None); build the data from a "
                "date column, or pass time_unit= and time_origin=.", field="TimeSeries.to_dates"
            )
        return _numbers_to_dates(np.asarray(t, dtype=float), self.time_origin, self.time_unit)

    # ---------------------------------------------------------------- pandas
    def to_pandas(self):
        """Long-format `pandas.DataFrame`: `series, time, <values>, <treatments>, <static>`;
        padded positions are dropped, missing values are NaN."""
        import pandas as pd

        real = np.arange(self.n_times)[None, :] < self.lengths[:, None]
        rows = np.argwhere(real)
        frame = {
            "series": [self.series_ids[i] for i in rows[:, 0]],
            "time": self.ts[rows[:, 0], rows[:, 1]],
        }
        for k, name in enumerate(self.names):
            frame[name] = self.ys[rows[:, 0], rows[:, 1], k]
        if self.treatments is not None:
            for k, name in enumerate(self.treatment_names):
                frame[name] = self.treatments[rows[:, 0], rows[:, 1], k]
        if self.static is not None:
            for k, name in enumerate(self.static_names):
                frame[name] = self.static[rows[:, 0], k]
        return pd.DataFrame(frame)

    @classmethod
    def from_pandas(
        cls,
        df,
        *,
        time: str = "time",
        series: Optional[str] = "series",
        values: Optional[Sequence[str]] = None,
        treatments: Optional[Sequence[str]] = None,
        static: Optional[Sequence[str]] = None,
        time_unit: Optional[str] = None,
    ) -> "TimeSeries":
        """Build from a long-format frame: one row per (series, time).

        **Arguments:**

        - `df`: a `pandas.DataFrame`.
        - `time`: the time column: numbers, or dates (`datetime64` or ISO strings such
          as `"2024-03-01"` / `"2024-03-01T12:00"`). Dates become numbers in `time_unit`
          since the earliest date (`time_origin`), both recorded on the result.
        - `series`: the series label column (`None`: one series).
        - `values`: value columns (default: every other column); empty cells are missing.
        - `treatments`, `static`: treatment columns (known at every row) and static
          covariate columns (constant within a series).
        - `time_unit`: for a date column, `"years"`, `"days"`, `"hours"`, `"minutes"` or
          `"seconds"`; default: chosen from the median spacing (years for annual
          data, days for daily to monthly data, hours below a day).

        **Returns:** a `TimeSeries`. Bad input raises `bd.DataError` with the column and
        the (0-based) row of the frame.
        """
        values, treatments, static = _frame_columns(df, time, series, values, treatments, static)
        t_all, origin, unit = _time_column(df, time, time_unit)
        sid, order = _series_labels(df, series)
        v_all = np.stack([_numeric_column(df, c, True) for c in values], axis=1)
        u_all = np.stack([_numeric_column(df, c, False) for c in treatments], axis=1) if treatments else None
        s_all = np.stack([_numeric_column(df, c, False) for c in static], axis=1) if static else None
        show = (lambda v: str(_numbers_to_dates(np.asarray(v), origin, unit))) if unit else (lambda v: f"{v:g}")
        groups = [_series_rows(sid, s, t_all, time, show, s_all, static) for s in order]
        ts, ys, us, st = _pad_series(groups, t_all, v_all, u_all, s_all)
        return cls(
            ts,
            ys,
            treatments=us,
            static=st,
            names=values,
            treatment_names=treatments or None,
            static_names=static or None,
            series_ids=order,
            lengths=[len(g) for g in groups],
            time_unit=unit,
            time_origin=origin,
        )


# `from_pandas` in steps; each raises `DataError` with the column and 0-based row.
def _frame_columns(df, time, series, values, treatments, static) -> tuple[list, list, list]:
    """Check that `df` is a frame with every named column (once) and some rows, and
    return the value, treatment and static column lists (values default to the rest)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"df must be a pandas DataFrame in long format (columns series, time, values...), got "
            f"{type(df).__name__}; e.g. pd.read_csv(path)."
        )
    columns = list(df.columns)
    dup = sorted({str(c) for c in columns if columns.count(c) > 1})
    if dup:
        raise DataError("appears more than once; rename the duplicate columns.", column=dup[0])

    def need(col, role):
        if col not in columns:
            raise DataError(f"not found; the frame has columns {columns}.", column=col, role=role)

    need(time, "time")
    if series is not None:
        need(series, "series")
    treatments = list(treatments or [])
    static = list(static or [])
    for c in treatments:
        need(c, "treatment")
    for c in static:
        need(c, "static")
    if values is None:
        taken = {time, series, *treatments, *static}
        values = [c for c in columns if c not in taken]
    values = list(values)
    if not values:
        raise DataError("no value columns; pass values=[...].")
    for c in values:
        need(c, "value")
    if len(df) == 0:
        raise DataError("the frame has no rows.")
    return values, treatments, static


def _numeric_column(df, col, allow_nan: bool) -> np.ndarray:
    """Column `col` as floats: every filled cell a finite number, and (unless
    `allow_nan`) no empty cell."""
    import pandas as pd

    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(num) & raw.notna().to_numpy()
    if np.any(bad):
        r = int(np.argmax(bad))
        raise DataError(f"holds {raw.iloc[r]!r}, which is not a number; fix or empty that cell.", column=col, row=r)
    if not allow_nan and np.any(np.isnan(num)):
        r = int(np.argmax(np.isnan(num)))
        raise DataError("is empty; every row needs a value here.", column=col, row=r)
    if np.any(np.isinf(num)):
        r = int(np.argmax(np.isinf(num)))
        raise DataError("is infinite.", column=col, row=r)
    return num


def _series_labels(df, series) -> tuple[np.ndarray, list]:
    """Each row's series label, and the labels in order of first appearance (one
    series labelled 0 when `series` is None)."""
    sid = df[series].to_numpy() if series is not None else np.zeros(len(df), dtype=int)
    if series is not None and df[series].isna().any():
        r = int(np.argmax(df[series].isna().to_numpy()))
        raise DataError("is empty; every row needs a series label.", column=series, role="series", row=r)
    return sid, list(dict.fromkeys(sid.tolist()))


def _series_rows(sid, s, t_all, time, show, s_all, static) -> np.ndarray:
    """The rows of series `s`, checked: times strictly increasing (`show` writes a
    time as the user gave it) and static covariates constant."""
    rows = np.flatnonzero(sid == s)
    t = t_all[rows]
    step = np.diff(t)
    if np.any(step <= 0):
        j = int(np.argmax(step <= 0)) + 1
        what = "duplicate" if step[j - 1] == 0 else "unsorted"
        raise DataError(
            f": {what} time {show(t[j])} in series {s!r} (previous {show(t[j - 1])}); sort by time "
            "within each series and merge duplicate times.",
            column=time, row=int(rows[j]),
        )
    if s_all is not None:
        diff = s_all[rows] != s_all[rows[0]]
        if np.any(diff):
            r, k = (int(x) for x in np.argwhere(diff)[0])
            raise DataError(
                f"changes within series {s!r}; static covariates must be constant per series.",
                column=static[k], role="static", row=int(rows[r]),
            )
    return rows


def _pad_series(groups, t_all, v_all, u_all, s_all) -> tuple:
    """Rows grouped by series -> `ts (N, T)`, `ys (N, T, D)`, `treatments (N, T, K)`
    and `static (N, C)`; a short series is padded with later times, missing values
    and its last treatment held."""
    width = max(len(g) for g in groups)
    n = len(groups)
    ts = np.empty((n, width))
    ys = np.full((n, width, v_all.shape[1]), np.nan)
    us = None if u_all is None else np.zeros((n, width, u_all.shape[1]))
    st = None if s_all is None else np.stack([s_all[g[0]] for g in groups])
    for i, g in enumerate(groups):
        c = len(g)
        ts[i, :c] = t_all[g]
        ys[i, :c] = v_all[g]
        if c < width:
            ts[i, c:] = _pad_times(t_all[g], width - c)
        if us is not None:
            us[i, :c] = u_all[g]
            us[i, c:] = u_all[g[-1]]
    return ts, ys, us, st


def _time_column(df, name, time_unit):
    """Times as numbers, plus the origin and unit when the column holds dates."""
    import pandas as pd

    raw = df[name]
    is_dates = pd.api.types.is_datetime64_any_dtype(raw)
    if not is_dates and not pd.api.types.is_numeric_dtype(raw):
        filled = raw.dropna()
        as_num = pd.to_numeric(filled, errors="coerce")
        if len(filled) and as_num.isna().all():
            is_dates = True  # no cell is a number: read the column as dates
    if not is_dates:
        if time_unit is not None:
            raise DataError(
                f"time_unit={time_unit!r} applies to a date column, and this one holds numbers; drop time_unit.",
                column=name, role="time",
            )
        return _numeric_column(df, name, False), None, None
    if time_unit is not None and time_unit not in TIME_UNITS:
        raise DataError(f"time_unit={time_unit!r} is not one of {sorted(TIME_UNITS)}.", column=name, role="time")
    if pd.api.types.is_datetime64_any_dtype(raw):
        dates = pd.Series(raw)
    else:
        dates = pd.to_datetime(raw, errors="coerce", format="ISO8601", utc=True)
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = dates.isna().to_numpy()
    if np.any(bad):
        r = int(np.argmax(bad))
        v = raw.iloc[r]
        if pd.isna(v):
            raise DataError("is empty; every row needs a time.", column=name, role="time", row=r)
        raise DataError(
            f"holds {v!r}, which is not an ISO date (e.g. 2024-03-01 or 2024-03-01T12:00); fix that cell.",
            column=name, role="time", row=r,
        )
    stamps = dates.to_numpy().astype("datetime64[s]")
    origin = stamps.min()
    days = (stamps - origin).astype(np.float64) / 86400.0
    unit = time_unit or _choose_unit(days)
    return _dates_to_numbers(stamps, origin, unit), origin, unit


def _dates_to_numbers(stamps: np.ndarray, origin, unit: str) -> np.ndarray:
    """`datetime64[s]` -> numbers in `unit` since `origin` (calendar years for "years")."""
    seconds = (stamps - origin).astype(np.float64)
    if unit != "years":
        return seconds / (86400.0 * TIME_UNITS[unit])
    import pandas as pd

    o = pd.Timestamp(origin)
    out = np.empty(stamps.shape, dtype=np.float64)
    for idx, s in np.ndenumerate(stamps):
        s = pd.Timestamp(s)
        k = s.year - o.year
        if o + pd.DateOffset(years=k) > s:
            k -= 1
        a, b = o + pd.DateOffset(years=k), o + pd.DateOffset(years=k + 1)
        out[idx] = k + (s - a) / (b - a)
    return out


def _numbers_to_dates(t: np.ndarray, origin, unit: str) -> np.ndarray:
    """The inverse of `_dates_to_numbers`, to the second."""
    t = np.asarray(t, dtype=np.float64)
    if unit != "years":
        secs = np.round(t * 86400.0 * TIME_UNITS[unit]).astype(np.int64)
        return np.datetime64(origin, "s") + secs.astype("timedelta64[s]")
    import pandas as pd

    o = pd.Timestamp(origin)
    out = np.empty(t.shape, dtype="datetime64[s]")
    for idx, v in np.ndenumerate(t):
        k = int(np.floor(v + 1e-9))
        a, b = o + pd.DateOffset(years=k), o + pd.DateOffset(years=k + 1)
        out[idx] = np.datetime64(a + (b - a) * max(v - k, 0.0), "s")
    return out


def _names(field, names, size, prefix):
    if names is None:
        return [f"{prefix}{i}" for i in range(size)]
    names = [str(x) for x in names]
    if len(names) != size:
        raise DataError(f"{len(names)} names for {size} columns; give exactly one name per column.",
                        field=f"TimeSeries.{field}")
    return names


def _pad_times(t: np.ndarray, extra: int) -> np.ndarray:
    """Times that continue a series past its end, for padding (their values are missing)."""
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    return t[-1] + step * np.arange(1, extra + 1)
