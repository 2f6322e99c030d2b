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
