"""`bayesde fit --transform`: forecasts of counts and positive data inside their support,
and `Prediction.map`, the library helper behind it.

The fit and the forecasts run as subprocesses with tiny sizes (as in test_cli.py) and are
shared by a module-scoped fixture; the refusals run in-process through Typer's runner.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from _cli_run import assert_ok, cli

QUANTILES = ["q05", "q25", "q50", "q75", "q95"]
#: Weekly cases: runs of zeros between outbreaks, so draws on the log1p scale go below 0.
CASES = [0, 0, 22, 44, 45, 52, 1, 0, 28, 28, 20, 10, 0, 0, 7, 9, 10, 12, 0, 1, 20, 32, 44, 48]
#: 21 draws: every quantile in QUANTILES falls on a draw (no interpolation between draws).
FIT_ARGS = ["--time-col", "week", "--method", "svi", "--num-steps", "5", "--num-samples", "21", "--seed", "1"]


def counts_frame() -> pd.DataFrame:
    return pd.DataFrame({"week": np.arange(len(CASES), dtype=float), "cases": CASES})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A log1p run, its forecast, and the forecast of the same run with `transform`
    removed from its cli.json (a run saved before the option existed)."""
    d = tmp_path_factory.mktemp("transform")
    counts_frame().to_csv(d / "counts.csv", index=False)
    fit = cli("fit", "--data", "counts.csv", *FIT_ARGS, "--transform", "log1p", "--out", "run", cwd=d)
    assert_ok(fit)
    fc = cli("forecast", "--run", "run", "--horizon", "4", "--out", "fc", "--seed", "2", "--quiet", cwd=d)
    assert_ok(fc)
    return {"dir": d, "fit": fit}


def test_log1p_is_saved_with_the_run_and_said_at_fit_time(work):
    rec = json.loads((work["dir"] / "run" / "cli.json").read_text())
    assert rec["transform"] == "log1p"
    lines = [ln for ln in work["fit"].stdout.splitlines() if ln.startswith("transform:")]
    assert len(lines) == 1 and "log(1 + y)" in lines[0], work["fit"].stdout


def test_log1p_forecast_quantiles_are_counts(work):
    d = work["dir"]
    df = pd.read_csv(d / "fc" / "forecast.csv")
    q = df[QUANTILES].to_numpy()
    assert np.all(np.isfinite(q))
    assert np.all(q >= 0), df[q.min(axis=1) < 0]
    assert np.all(df["mean"].to_numpy() >= 0)
    assert np.all(np.diff(q, axis=1) >= 0)
    assert json.loads((d / "fc" / "cli.json").read_text())["transform"] == "log1p"


def test_a_run_without_the_field_reads_as_none_and_effects_refuse_a_transformed_run(work, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bayesde._cli import app
    from bayesde._cli._forecast import run_transform

    d = work["dir"]
    assert run_transform(str(d / "run")).value == "log1p"
    shutil.copytree(d / "run", tmp_path / "old")
    rec = json.loads((tmp_path / "old" / "cli.json").read_text())
    del rec["transform"]
    (tmp_path / "old" / "cli.json").write_text(json.dumps(rec))
    assert run_transform(str(tmp_path / "old")).value == "none"

    (tmp_path / "plans.json").write_text(json.dumps({"none": {}}))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["effects", "--run", str(d / "run"), "--plans", "plans.json", "--horizon", "2",
                                 "--out", "eff"])
    assert r.exit_code == 2, r.output
    assert "--transform log1p" in r.output and "refit with --transform none" in r.output
    assert not (tmp_path / "eff").exists()


@pytest.mark.parametrize("transform, value, fragments", [
    ("log", 0, ["values > 0", "--transform log1p"]),
    ("log1p", -3, ["holds -3, which is negative", "values >= 0", "--transform none"]),
])
def test_values_outside_the_domain_exit_2_naming_column_and_row(tmp_path, monkeypatch, transform, value, fragments):
    from typer.testing import CliRunner

    from bayesde._cli import app

    df = counts_frame()
    df.loc[5, "cases"] = value
    if transform == "log":
        df.loc[df["cases"] == 0, "cases"] = 1
        df.loc[5, "cases"] = 0
    df.to_csv(tmp_path / "counts.csv", index=False)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["fit", "--data", "counts.csv", *FIT_ARGS, "--transform", transform, "--out", "run"])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for frag in ["column 'cases' row 5 (line 7 of counts.csv)", f"--transform {transform}", *fragments]:
        assert frag in err, f"{frag!r} not in {err!r}"
    assert not (tmp_path / "run").exists()


def test_prediction_map_commutes_with_quantiles_and_maps_f_samples():
    import bayesde as bd

    rng = np.random.default_rng(0)
    s = rng.normal(size=(101, 2, 3, 1)).astype(np.float32)  # 101 draws: q05/q50/q95 fall on draws
    f = rng.normal(size=s.shape).astype(np.float32)
    pred = bd.Prediction(s, np.arange(3.0), f_samples=f, names=["cases"], series_ids=["a", "b"])
    q = [0.05, 0.5, 0.95]
    out = pred.map(np.exp)
    assert type(out) is bd.Prediction and out is not pred
    np.testing.assert_allclose(np.asarray(out.quantiles(q)), np.exp(np.asarray(pred.quantiles(q))), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.f_samples), np.exp(f), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.samples), np.exp(s), rtol=1e-6)
    assert out.names == ["cases"] and out.series_ids == ["a", "b"]
    np.testing.assert_array_equal(out.ts, pred.ts)
    np.testing.assert_array_equal(np.asarray(pred.samples), s)  # the original is left as it was
    assert pred.map(np.exp).f_samples is not None
    assert bd.Prediction(s, np.arange(3.0)).map(np.exp).f_samples is None


def test_forecast_notes_bands_below_zero_for_data_never_below_zero():
    """`bayesde forecast` on a run fitted without `--transform`: a column the data never take
    below 0 whose forecast's 5% quantile goes below 0 gets a note with the count and the refit;
    a column with negative data, or a forecast above 0, gets none."""
    import bayesde as bd
    from bayesde._cli._forecast import support_notes

    ys = np.stack([np.array(CASES, float), np.array(CASES, float) - 5.0], -1)[None]  # (1, T, 2)
    data = bd.TimeSeries(np.arange(len(CASES), dtype=float)[None], ys, names=["cases", "change"])
    rows = [dict(series=0, time=t, variable=v, part=part, q05=q)
            for t, part, q in [(23.0, "history", -9.0), (24.0, "forecast", -1.5), (25.0, "forecast", 0.0),
                               (26.0, "forecast", -0.1)]
            for v in ("cases", "change")]
    notes = support_notes(pd.DataFrame(rows), data)
    assert notes == [
        "'cases' is never below 0 in the data, but the forecast's 5% quantile is below 0 at 2 of 3 forecast rows; "
        "refit with `bayesde fit ... --transform log1p` (log(1 + y), zeros allowed) to keep the bands at 0 or above."
    ]
    above = pd.DataFrame([dict(series=0, time=24.0, variable="cases", part="forecast", q05=0.0)])
    assert support_notes(above, data) == []


def test_auto_fits_the_latent_sde_on_log1p_of_data_never_below_zero(tmp_path):
    """`--transform auto` (the default of `bayesde fit`): `log1p` for `--model latent-sde` when
    every value is >= 0, said with the reason and recorded as the transform applied; `none` for
    data with a negative value and for every other model; a named transform is what it says."""
    import bayesde as bd
    from bayesde._cli._csv import Transform, read_csv, resolve_transform

    counts_frame().to_csv(tmp_path / "counts.csv", index=False)
    kw = dict(time_col="week", series_col="series", series_explicit=False, value_cols=None, treatment_cols=None,
              static_cols=None)
    ts, meta = read_csv(bd, str(tmp_path / "counts.csv"), transform="auto", model="latent-sde", **kw)
    assert meta["transform"] == "log1p"
    assert meta["transform_reason"] == (
        "every value of ['cases'] is >= 0, so --model latent-sde is fitted on log(1 + y) (--transform auto, the "
        "default; --transform none fits the values as they are)")
    np.testing.assert_allclose(np.asarray(ts.ys)[0, :, 0], np.log1p(CASES), rtol=1e-6)
    for model in ("neural-ode", "ode-lv", "bncde", "fractional-sde", "mymodels:Growth"):
        ts, meta = read_csv(bd, str(tmp_path / "counts.csv"), transform="auto", model=model, **kw)
        assert (meta["transform"], meta["transform_reason"]) == ("none", None), model
        np.testing.assert_array_equal(np.asarray(ts.ys)[0, :, 0], CASES)
    signed = counts_frame().assign(cases=np.array(CASES, float) - 1.0)
    data = bd.TimeSeries.from_pandas(signed, time="week", series=None, values=["cases"])
    assert resolve_transform("auto", "latent-sde", data) == (Transform.none, None)
    assert resolve_transform("log", "neural-ode", data) == (Transform.log, None)
    assert resolve_transform("none", "latent-sde", data) == (Transform.none, None)
