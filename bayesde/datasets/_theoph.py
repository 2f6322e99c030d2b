"""Theophylline pharmacokinetics (R's `datasets::Theoph`): a real longitudinal dosing
data set with irregular sampling times."""

from __future__ import annotations

import numpy as np

from .._data import TimeSeries
from ._registry import data_path, register

__all__ = ["theoph"]


def theoph() -> TimeSeries:
    """Serum theophylline concentrations (mg/L) of 12 subjects over 25 hours after one
    oral dose (Boeckmann, Sheiner & Beal 1994; R `datasets::Theoph`).

    **Returns:** a `TimeSeries` with 12 series of 11 irregular times (hours since the
    dose), `ys` the concentration, `treatments` one channel `dose` (mg/kg; by the
    `TimeSeries` convention the dose acts over the first step, so it sits in row 1 and
    the other rows are 0) and `static` `(weight_kg, dose_mg_per_kg)`. See
    `bd.datasets.card("theoph")`.
    """
    import pandas as pd

    with data_path("theoph.csv").open() as f:
        df = pd.read_csv(f)
    subjects = list(dict.fromkeys(df["Subject"].tolist()))
    groups = [df[df["Subject"] == s].sort_values("Time") for s in subjects]
    t_len = max(len(g) for g in groups)
    n = len(groups)
    ts = np.empty((n, t_len))
    ys = np.full((n, t_len, 1), np.nan)
    tr = np.zeros((n, t_len, 1))
    st = np.empty((n, 2))
    lengths = []
    for i, g in enumerate(groups):
        c = len(g)
        ts[i, :c] = g["Time"].to_numpy(float)
        if c < t_len:
            ts[i, c:] = ts[i, c - 1] + np.arange(1, t_len - c + 1)
        ys[i, :c, 0] = g["conc"].to_numpy(float)
        tr[i, 1, 0] = float(g["Dose"].iloc[0])
        st[i] = (float(g["Wt"].iloc[0]), float(g["Dose"].iloc[0]))
        lengths.append(c)
    return TimeSeries(
        ts, ys, treatments=tr, static=st, names=["conc"], treatment_names=["dose"],
        static_names=["weight", "dose"], series_ids=[f"subject{s}" for s in subjects],
        lengths=lengths,
    )


register(
    "theoph",
    theoph,
    "Theophylline serum concentrations of 12 subjects after one oral dose (real, R datasets::Theoph)",
    "theoph.md",
)
