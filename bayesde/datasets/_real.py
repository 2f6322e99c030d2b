"""Real series for forecasting beside classical baselines: yearly sunspots (a cycle),
the same with 30% of the years deleted (irregular), monthly El Niño sea surface
temperature (a seasonal cycle) and quarterly US growth rates (multivariate).

All four were extracted once from the copies that statsmodels ships (public domain);
statsmodels is not needed at run time and nothing is downloaded. Times are decimal
years (`1990.25` is April 1990), as in `bd.datasets.load("co2")`.
"""

from __future__ import annotations

import numpy as np

from .._data import TimeSeries
from ._registry import data_path, register

__all__ = ["sunspots", "sunspots_gappy", "elnino", "us_macro_growth"]


def _read(filename: str):
    import pandas as pd

    with data_path(filename).open() as f:
        return pd.read_csv(f)


def _decimal_year(dates) -> np.ndarray:
    """`YYYY-MM-01` strings → `year + (month − 1) / 12` (month starts, so quarters and
    months fall on exact fractions)."""
    import pandas as pd

    d = pd.to_datetime(dates)
    return d.dt.year.to_numpy(dtype=float) + (d.dt.month.to_numpy(dtype=float) - 1.0) / 12.0


def _annual(filename: str, series_id: str) -> TimeSeries:
    df = _read(filename)
    return TimeSeries(
        df["year"].to_numpy(dtype=float),
        df["sunactivity"].to_numpy(dtype=float)[None, :, None],
        names=["sunactivity"],
        series_ids=[series_id],
    )


def sunspots() -> TimeSeries:
    """Yearly mean sunspot number, 1700–2008 (309 years, no gaps).

    The roughly 11-year solar cycle with irregular amplitude: a classic test of whether
    a model learns oscillating dynamics rather than a level and a spread.

    **Returns:** a `bd.TimeSeries` of shape `(1, 309, 1)`, `ts` the calendar year,
    value `sunactivity`. See the data card: `bd.datasets.card("sunspots")`.
    """
    return _annual("sunspots.csv", "sunspots")


def sunspots_gappy() -> TimeSeries:
    """The yearly sunspot numbers with 30% of the years deleted (216 of 309 kept).

    The deleted years were drawn once with a fixed seed (`numpy.random.default_rng(15)`,
    first and last year kept) and are absent from the shipped CSV, so the times are
    irregular: gaps of one to several years. It tests forecasting from irregularly
    sampled history, which classical ARIMA handles only through a Kalman filter on a
    regular grid with missing values.

    **Returns:** a `bd.TimeSeries` of shape `(1, 216, 1)`, `ts` the calendar year.
    See the data card: `bd.datasets.card("sunspots_gappy")`.
    """
    return _annual("sunspots_gappy.csv", "sunspots")


def elnino() -> TimeSeries:
    """Monthly sea surface temperature (°C) of the Niño 1+2 region, January 1950 –
    December 2010 (732 months, no gaps).

    A strong annual cycle with El Niño years on top.

    **Returns:** a `bd.TimeSeries` of shape `(1, 732, 1)`, `ts` in decimal years at
    month starts (`1950.0, 1950.0833, ...`), value `sst`. See the data card:
    `bd.datasets.card("elnino")`.
    """
    df = _read("elnino.csv")
    return TimeSeries(
        _decimal_year(df["date"]), df["sst"].to_numpy(dtype=float)[None, :, None],
        names=["sst"], series_ids=["nino12"],
    )


def us_macro_growth() -> TimeSeries:
    """Quarterly US growth rates of real GDP, real personal consumption and real private
    investment, 1959Q2–2009Q3 (202 quarters, 3 value columns).

    Each is `400 · Δ log` of the level (annualised percent growth), from the levels of
    statsmodels' `macrodata`. A multivariate series with co-moving columns and the
    2008–2009 recession at its end.

    **Returns:** a `bd.TimeSeries` of shape `(1, 202, 3)`, `ts` in decimal years at
    quarter starts, values `gdp`, `cons`, `inv`. See the data card:
    `bd.datasets.card("us_macro_growth")`.
    """
    df = _read("us_macro_growth.csv")
    cols = ["gdp", "cons", "inv"]
    return TimeSeries(
        _decimal_year(df["date"]), df[cols].to_numpy(dtype=float)[None],
        names=cols, series_ids=["us"],
    )


register("sunspots", sunspots, "Yearly sunspot numbers 1700-2008 (real, an 11-year cycle, 1 series)",
         "sunspots.md")
register("sunspots_gappy", sunspots_gappy,
         "Yearly sunspot numbers with 30% of the years deleted (real, irregular times, 1 series)",
         "sunspots_gappy.md")
register("elnino", elnino, "Monthly Nino 1+2 sea surface temperature 1950-2010 (real, seasonal, 1 series)",
         "elnino.md")
register("us_macro_growth", us_macro_growth,
         "Quarterly US growth of real GDP, consumption, investment 1959-2009 (real, 3 columns)",
         "us_macro_growth.md")
