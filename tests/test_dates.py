"""Date and datetime time columns: `TimeSeries.from_pandas` turns them into numbers with
a recorded unit and origin, `bayesde fit`/`forecast` carry them through, and
forecast.csv writes the dates back. `Posterior.forecast` gives the CLI's table."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import bayesde as bd

HARE = [30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1, 40.3]
LYNX = [4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4, 8.0]


def annual_frame() -> pd.DataFrame:
    return pd.DataFrame({"date": [f"{1900 + j}-01-01" for j in range(len(HARE))], "hare": HARE, "lynx": LYNX})


# ------------------------------------------------------------------ from_pandas
def test_iso_years_become_calendar_years_since_the_first_date():
    ts = bd.TimeSeries.from_pandas(annual_frame(), time="date", series=None)
    assert ts.time_unit == "years"
    assert ts.time_origin == np.datetime64("1900-01-01")
    np.testing.assert_allclose(ts.ts[0], np.arange(12.0))
    dates = ts.to_dates([0.0, 11.0, 12.0, 12.5])
    assert [str(d)[:10] for d in dates] == ["1900-01-01", "1911-01-01", "1912-01-01", "1912-07-02"]


def test_datetime64_days_and_hours_are_recognised():
    daily = pd.DataFrame({"when": pd.date_range("2024-02-27", periods=5, freq="D"), "y": np.arange(5.0)})
    ts = bd.TimeSeries.from_pandas(daily, time="when", series=None)
    assert ts.time_unit == "days" and str(ts.time_origin) == "2024-02-27T00:00:00"
    np.testing.assert_allclose(ts.ts[0], np.arange(5.0))
    assert str(ts.to_dates(3.0)) == "2024-03-01T00:00:00"  # a leap year
    hourly = pd.DataFrame({"t": ["2024-01-01T00:00", "2024-01-01T01:30", "2024-01-01T03:00"], "y": [1.0, 2, 3]})
    ts = bd.TimeSeries.from_pandas(hourly, time="t", series=None)
    assert ts.time_unit == "hours"
    np.testing.assert_allclose(ts.ts[0], [0.0, 1.5, 3.0])
    forced = bd.TimeSeries.from_pandas(hourly, time="t", series=None, time_unit="minutes")
    np.testing.assert_allclose(forced.ts[0], [0.0, 90.0, 180.0])


def test_irregular_dates_per_series_share_one_origin():
    df = pd.DataFrame({
        "patient": ["a", "a", "a", "b", "b"],
        "day": ["2024-01-03", "2024-01-04", "2024-01-10", "2024-01-01", "2024-01-05"],
        "y": [1.0, 2, 3, 4, 5],
    })
    ts = bd.TimeSeries.from_pandas(df, time="day", series="patient")
    assert ts.time_unit == "days" and str(ts.time_origin)[:10] == "2024-01-01"
    np.testing.assert_allclose(ts.ts[0, :3], [2.0, 3.0, 9.0])
    np.testing.assert_allclose(ts.ts[1, :2], [0.0, 4.0])
    assert ts.select(1).time_unit == "days"
    hist, fut = ts.split(3.5)
    assert hist.time_origin == ts.time_origin and fut.time_unit == "days"


def test_bad_dates_name_the_column_and_the_row():
    df = annual_frame()
    df.loc[5, "date"] = "sometime"
    with pytest.raises(bd.DataError) as e:
        bd.TimeSeries.from_pandas(df, time="date", series=None)
    assert (e.value.column, e.value.row) == ("date", 5)
    assert "'sometime'" in str(e.value) and "ISO date" in str(e.value)
    df = annual_frame()
    df.loc[3, "date"] = "1902-01-01"
    with pytest.raises(bd.DataError) as e:
        bd.TimeSeries.from_pandas(df, time="date", series=None)
    assert (e.value.column, e.value.row) == ("date", 3)
    assert "duplicate time 1902-01-01" in str(e.value)
    assert isinstance(e.value, ValueError)  # `except ValueError` still catches it


def test_time_unit_needs_a_date_column_and_an_origin():
    with pytest.raises(bd.DataError, match="date column"):
        bd.TimeSeries.from_pandas(pd.DataFrame({"time": [0.0, 1.0], "y": [1.0, 2.0]}), series=None,
                                  time_unit="days")
    with pytest.raises(bd.DataError, match="time_origin"):
        bd.TimeSeries([0.0, 1.0], [1.0, 2.0], time_unit="days")
    with pytest.raises(bd.DataError, match="not dates"):
        bd.TimeSeries([0.0, 1.0], [1.0, 2.0]).to_dates([0.0])


# ------------------------------------------------------------------------ command line
def _cli(*args, cwd):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "bayesde._cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_a_csv_with_iso_dates_goes_through_fit_and_forecast(tmp_path):
    import jax

    annual_frame().to_csv(tmp_path / "pelts.csv", index=False)
    fit = _cli("fit", "--data", "pelts.csv", "--time-col", "date", "--model", "ode-lv", "--method", "svi",
               "--num-steps", "20", "--num-samples", "10", "--seed", "1", "--out", "run", cwd=tmp_path)
    assert "years since 1900-01-01" in fit.stdout
    rec = json.loads((tmp_path / "run" / "cli.json").read_text())
    assert rec["data"]["time_unit"] == "years" and rec["data"]["time_origin"].startswith("1900-01-01")
    _cli("forecast", "--run", "run", "--horizon", "2", "--every", "1", "--seed", "4", "--out", "fc", "--quiet",
         cwd=tmp_path)
    df = pd.read_csv(tmp_path / "fc" / "forecast.csv")
    assert list(df.columns[:4]) == ["series", "time", "date", "variable"]
    fut = df[(df["part"] == "forecast") & (df["variable"] == "lynx")]
    assert [d[:10] for d in fut["date"]] == ["1912-01-01", "1913-01-01"]
    hist = df[(df["part"] == "history") & (df["variable"] == "hare")]
    assert [d[:10] for d in hist["date"]] == list(annual_frame()["date"])

    # The Python call gives the same table (same key, same numbers).
    post = bd.load(tmp_path / "run")
    table = post.forecast(2, every=1, key=jax.random.key(4))
    numeric = ["time", "mean", "q05", "q25", "q50", "q75", "q95"]
    np.testing.assert_allclose(table[numeric].to_numpy(), df[numeric].to_numpy(), rtol=1e-6)
    assert list(table["part"]) == list(df["part"]) and list(table["variable"]) == list(df["variable"])
    with pytest.raises(TypeError):
        post.forecast(2)  # key= is required


def test_a_monthly_csv_with_dates_gives_the_latent_sde_a_yearly_season(tmp_path):
    """Dates carry the time of year: `bayesde fit` on monthly dated data builds the latent
    SDE with a yearly cycle in its prior drift and says so; plain numbers would not."""
    months = pd.date_range("2001-01-01", periods=36, freq="MS")
    y = np.sin(2 * np.pi * np.arange(36) / 12) + 0.1 * np.random.default_rng(0).normal(size=36)
    pd.DataFrame({"date": months.strftime("%Y-%m-%d"), "y": y}).to_csv(tmp_path / "m.csv", index=False)
    fit = _cli("fit", "--data", "m.csv", "--time-col", "date", "--model", "latent-sde", "--num-steps", "10",
               "--model-args", '{"latent_dim": 2, "context_dim": 4, "width": 8}', "--out", "run", cwd=tmp_path)
    assert "seasons: the prior drift knows the phase of a cycle of 365.25 days" in fit.stdout
    assert bd.load(tmp_path / "run").model.seasons == (365.25,)
