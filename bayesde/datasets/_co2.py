"""Weekly atmospheric CO2 at Mauna Loa, 1958–2001 (real, irregular after dropping the
missing weeks)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .._data import TimeSeries
from ._registry import data_path, register

__all__ = ["co2"]


def co2(
    *,
    start: Optional[float] = None,
    end: Optional[float] = None,
    drop_missing: bool = True,
) -> TimeSeries:
    """Weekly CO2 concentration (ppmv) at Mauna Loa, March 1958 – December 2001.

    One series with one dimension (`co2`); time `t` in decimal years (e.g. `1990.5`).
    2284 weeks of which 59 are missing.

    **Arguments:**

    - `start`, `end`: keep the weeks with `start <= t <= end` (decimal years).
    - `drop_missing`: drop the missing weeks, so that the times are irregular
      (default); otherwise keep every week with NaN where the value is missing.

    **Returns:** a `bd.TimeSeries` of shape `(1, T, 1)`. See the data card:
    `bd.datasets.card("co2")`.
    """
    import pandas as pd

    with data_path("co2_weekly.csv").open() as f:
        df = pd.read_csv(f, parse_dates=["date"])
    date = df["date"]
    year = date.dt.year.to_numpy(dtype=float)
    begin = pd.to_datetime(date.dt.year.astype(str) + "-01-01")
    after = pd.to_datetime((date.dt.year + 1).astype(str) + "-01-01")
    frac = ((date - begin).dt.total_seconds() / (after - begin).dt.total_seconds()).to_numpy()
    t = year + frac
    y = df["co2"].to_numpy(dtype=float)
    keep = np.ones(len(t), dtype=bool)
    if start is not None:
        keep &= t >= float(start)
    if end is not None:
        keep &= t <= float(end)
    if drop_missing:
        keep &= ~np.isnan(y)
    if keep.sum() < 2:
        raise ValueError(
            f"co2: the window start={start}, end={end} keeps {int(keep.sum())} weeks; "
            "the data span 1958.24 to 2001.99, so choose a wider window."
        )
    return TimeSeries(t[keep], y[keep][None, :, None], names=["co2"], series_ids=["mauna_loa"])


register(
    "co2",
    co2,
    "Weekly CO2 (ppmv) at Mauna Loa 1958–2001, irregular (59 missing weeks dropped); real.",
    "co2.md",
)
