"""The `bayesde` command line, run as subprocesses with tiny sizes on CSVs written here.

Each subprocess pays the JAX import and compile, so the fitted run is shared by a
module-scoped fixture; bad-input cases (which stop before anything compiles) run
in-process through Typer's runner, and one of them also as a subprocess.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _cli_run import assert_ok, cli

HARE = [30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1,
        40.3, 57.0, 76.6, 52.3, 19.5, 11.2, 7.6, 14.6, 16.2, 24.7]
LYNX = [4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4,
        8.0, 12.3, 19.5, 45.7, 51.1, 29.7, 15.8, 9.7, 10.1, 8.6]
QUANTILES = ["q05", "q25", "q50", "q75", "q95"]
FORECAST_COLUMNS = ["series", "time", "variable", "part", "mean", *QUANTILES]


def good_frame() -> pd.DataFrame:
    """Two series in long format (hare–lynx 1900–1910 and 1910–1920), one empty cell."""
    rows = []
    for sid, start in (("north", 0), ("south", 10)):
        for j in range(11):
            rows.append({"region": sid, "year": float(j), "hare": HARE[start + j], "lynx": LYNX[start + j]})
    df = pd.DataFrame(rows)
    df.loc[4, "lynx"] = np.nan
    return df


def assert_user_error(proc_or_result, *fragments):
    """Exit code 2, one line on stderr naming what and where, no traceback."""
    code = getattr(proc_or_result, "returncode", None)
    if code is None:
        code = proc_or_result.exit_code
    err = proc_or_result.stderr
    assert code == 2, f"exit {code}\nstderr:\n{err}"
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for frag in fragments:
        assert frag in lines[0], f"{frag!r} not in {lines[0]!r}"


FIT_ARGS = ["--time-col", "year", "--series-col", "region", "--model", "ode-lv", "--method", "svi",
            "--num-steps", "20", "--num-samples", "20", "--seed", "3"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A fitted run and two forecasts with the same seed (shared by the tests below)."""
    d = tmp_path_factory.mktemp("cli")
    good_frame().to_csv(d / "pelts.csv", index=False)
    fit = cli("fit", "--data", "pelts.csv", *FIT_ARGS, "--out", "run", cwd=d)
    assert_ok(fit)
    fc1 = cli("forecast", "--run", "run", "--horizon", "3", "--out", "fc1", "--seed", "5", cwd=d)
    assert_ok(fc1)
    # The rerun replaces a copy of the first output (--force), with the same seed.
    shutil.copytree(d / "fc1", d / "fc2")
    (d / "fc2" / "forecast.csv").write_text("stale")
    fc2 = cli("forecast", "--run", "run", "--horizon", "3", "--out", "fc2", "--seed", "5", "--quiet", "--force",
              cwd=d)
    assert_ok(fc2)
    return {"dir": d, "fit": fit, "fc1": fc1, "fc2": fc2}


# ------------------------------------------------------------------------------ fit
def test_fit_writes_a_loadable_run_and_its_provenance(work):
    import bayesde as bd

    d = work["dir"]
    run = d / "run"
    for name in ("bayesde.json", "posterior.nc", "params.eqx", "data.nc", "cli.json"):
        assert (run / name).is_file(), name
    rec = json.loads((run / "cli.json").read_text())
    assert rec["bayesde_version"] == bd.__version__
    assert rec["seed"] == 3
    assert rec["command"].startswith("bayesde fit --data pelts.csv")
    assert rec["data"]["sha256"] == hashlib.sha256((d / "pelts.csv").read_bytes()).hexdigest()
    post = bd.load(run)
    assert post.data.series_ids == ["north", "south"]
    assert post.data.names == ["hare", "lynx"]
    assert np.isnan(post.data.ys[0, 4, 1])  # the empty cell is missing, not zero
    assert "SVI: 20 steps" in work["fit"].stdout


def test_fit_shows_a_progress_bar_and_quiet_hides_it(work):
    assert "100%" in work["fit"].stderr  # the fit ran without --quiet
    assert "%|" not in work["fc2"].stderr  # --quiet


# ------------------------------------------------------------------------- forecast
def test_forecast_csv_is_tidy_with_ordered_quantiles(work):
    d = work["dir"]
    df = pd.read_csv(d / "fc1" / "forecast.csv")
    assert list(df.columns) == FORECAST_COLUMNS
    # Each series: times 0..10 observed, +3 past the last one on the median spacing (1).
    assert set(df["series"]) == {"north", "south"}
    assert set(df["variable"]) == {"hare", "lynx"}
    for _, g in df.groupby(["series", "variable"]):
        np.testing.assert_allclose(np.sort(g["time"].to_numpy()), np.arange(14.0))
        assert (g["part"] == "forecast").sum() == 3
    assert len(df) == 2 * 2 * 14
    q = df[QUANTILES].to_numpy()
    assert np.all(np.isfinite(q))
    assert np.all(np.diff(q, axis=1) >= 0)
    assert np.all(q > 0)  # LogNormal observation model


def test_forecast_writes_fan_chart_and_arviz_file(work):
    import arviz as az

    out = work["dir"] / "fc1"
    png = (out / "forecast.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    idata = az.from_netcdf(str(out / "posterior.nc"))
    assert "posterior" in idata.groups() and "posterior_predictive" in idata.groups()
    assert idata.posterior["alpha"].shape == (1, 20)
    rec = json.loads((out / "cli.json").read_text())
    assert rec["seed"] == 5 and rec["run"]["fit_seed"] == 3 and rec["run"]["data_sha256"]


def test_same_seed_gives_identical_csv(work):
    d = work["dir"]
    assert (d / "fc1" / "forecast.csv").read_bytes() == (d / "fc2" / "forecast.csv").read_bytes()


def test_outputs_are_not_overwritten_without_force(work):
    d = work["dir"]
    before = (d / "fc1" / "forecast.csv").read_bytes()
    proc = cli("forecast", "--run", "run", "--horizon", "3", "--out", "fc1", cwd=d)
    assert_user_error(proc, "'fc1' already exists", "--force")
    assert (d / "fc1" / "forecast.csv").read_bytes() == before
    # A folder that bayesde did not write is never replaced, even with --force.
    (d / "mine").mkdir(exist_ok=True)
    (d / "mine" / "notes.txt").write_text("keep me")
    proc = cli("forecast", "--run", "run", "--horizon", "3", "--out", "mine", "--force", cwd=d)
    assert_user_error(proc, "not written by bayesde")
    assert (d / "mine" / "notes.txt").read_text() == "keep me"


def test_force_replaces_a_bayesde_output(work):
    d = work["dir"]
    df = pd.read_csv(d / "fc2" / "forecast.csv")  # was "stale" before the --force rerun
    assert list(df.columns) == FORECAST_COLUMNS
    assert "--force" in json.loads((d / "fc2" / "cli.json").read_text())["command"]
    assert not list(d.glob(".fc2.*"))  # no staging folders left behind


# ---------------------------------------------------------------------- bad input
def _bad_cases():
    def text_value(df):
        df["hare"] = df["hare"].astype(object)
        df.loc[4, "hare"] = "lots"
        return df, []

    def unsorted(df):
        df.loc[[2, 3], "year"] = [3.0, 2.0]
        return df, []

    def duplicate(df):
        df.loc[3, "year"] = 2.0
        return df, []

    def missing_column(df):
        return df, ["--value-cols", "hare,wolf"]

    def treatment_text(df):
        df["dose"] = 0
        df["dose"] = df["dose"].astype(object)
        df.loc[5, "dose"] = "maybe"
        return df, ["--treatment-cols", "dose", "--value-cols", "hare,lynx"]

    def treatment_empty(df):
        df["dose"] = 1.0
        df.loc[6, "dose"] = np.nan
        return df, ["--treatment-cols", "dose", "--value-cols", "hare,lynx"]

    return [
        pytest.param(text_value, ["column 'hare' row 4 (line 6 of bad.csv)", "'lots'"], id="text-in-value"),
        pytest.param(unsorted, ["column 'year' row 3 (line 5 of bad.csv)", "unsorted", "'north'"], id="unsorted"),
        pytest.param(duplicate, ["column 'year' row 3 (line 5 of bad.csv)", "duplicate"], id="duplicate"),
        pytest.param(missing_column, ["column 'wolf'", "not found", "--value-cols"], id="missing-column"),
        pytest.param(treatment_text, ["column 'dose' row 5 (line 7 of bad.csv)", "unknown value 'maybe'"],
                     id="treatment-unknown-value"),
        pytest.param(treatment_empty, ["column 'dose' row 6 (line 8 of bad.csv)", "empty"], id="treatment-empty"),
    ]


@pytest.mark.parametrize("corrupt, fragments", _bad_cases())
def test_bad_csv_exits_2_naming_column_and_row(tmp_path, monkeypatch, corrupt, fragments):
    from typer.testing import CliRunner

    from bayesde._cli import app

    df, extra = corrupt(good_frame())
    df.to_csv(tmp_path / "bad.csv", index=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["fit", "--data", "bad.csv", *FIT_ARGS, *extra, "--out", "run"])
    assert_user_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_bad_csv_as_a_subprocess(tmp_path):
    df = good_frame()
    df = df.drop(columns=["year"])
    df.to_csv(tmp_path / "bad.csv", index=False)
    proc = cli("fit", "--data", "bad.csv", *FIT_ARGS, "--out", "run", cwd=tmp_path)
    assert_user_error(proc, "column 'year'", "--time-col")


def test_bad_options_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bayesde._cli import app

    good_frame().to_csv(tmp_path / "pelts.csv", index=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", "--out", "r", "--method", "mcmc"])
    assert_user_error(r, "--method", "'mcmc'")
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", "--out", "r", "--method", "nuts", "--num-steps", "5"])
    assert_user_error(r, "--num-steps does not apply to --method nuts")
    r = runner.invoke(app, ["fit", "--data", "nope.csv", "--out", "r"])
    assert_user_error(r, "'nope.csv' not found")
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", *FIT_ARGS[:4], "--model", "ode-lv",
                            "--value-cols", "hare", "--out", "r"])
    assert_user_error(r, "ode-lv needs exactly 2 value columns")
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", "--out", "r", "--model", "transformer"])
    assert_user_error(r, "--model", "'transformer'")
    r = runner.invoke(app, ["forecast", "--run", "no-such-run", "--horizon", "3", "--out", "f"])
    assert_user_error(r, "'no-such-run' not found")
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", "--out", "r", "--method", "nuts", "--devices", "2"])
    assert_user_error(r, "--devices applies to --method svi only")
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", "--out", "r", "--devices", "zero"])
    assert_user_error(r, "--devices: expected 'all' or a positive number of devices, got 'zero'")
    # Engines come from the registry; each takes the size options among its fields.
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", "--out", "r", "--method", "ensemble", "--num-warmup", "5"])
    assert_user_error(r, "--num-warmup does not apply to --method ensemble", "--num-steps")
    # --method-args: further engine fields, checked by building the engine before any data is read.
    ens = ["fit", "--data", "nope.csv", "--out", "r", "--method", "ensemble", "--method-args"]
    r = runner.invoke(app, ens + ['{"combine": "median"}'])
    assert_user_error(r, "--method-args for --method ensemble: Ensemble.combine: expected one of "
                         "['mixture', 'quantiles', 'median-quantiles', 'best-elbo'], got 'median'")
    r = runner.invoke(app, ens + ['{"members": 4}'])
    assert_user_error(r, "--method-args: 'members' is not an option of --method ensemble", "'num_members'")
    r = runner.invoke(app, ens + ['{"num_steps": 4}', "--num-steps", "5"])
    assert_user_error(r, "--method-args: 'num_steps' is also given as --num-steps; give it once")
    r = runner.invoke(app, ens + ["{num_members: 4}"])
    assert_user_error(r, "--method-args: not valid JSON")
    r = runner.invoke(app, ["forecast", "--run", "r", "--horizon", "3", "--out", "f", "--conformal", "0.9"])
    assert_user_error(r, "--conformal needs --backtest N")
    r = runner.invoke(app, ["forecast", "--run", "r", "--horizon", "3", "--out", "f", "--backtest", "-1"])
    assert_user_error(r, "--backtest must be a number of origins >= 0, got -1")
    r = runner.invoke(app, ["forecast", "--run", "r", "--horizon", "3", "--out", "f", "--backtest", "2",
                            "--conformal", "1.5"])
    assert_user_error(r, "--conformal must be a level in (0, 1)")
    r = runner.invoke(app, ["fit", "--data", "pelts.csv", *FIT_ARGS[:4], "--out", "r", "--devices", "64"])
    assert_user_error(r, "--devices 64: this machine has 1 local device(s)")
    # --restarts: SVI fits side by side, the best kept; refused where it cannot apply, before any data is read.
    fit = ["fit", "--data", "nope.csv", "--out", "r", "--restarts"]
    r = runner.invoke(app, fit + ["0"])
    assert_user_error(r, "--restarts must be a positive integer, got 0")
    r = runner.invoke(app, fit + ["2", "--method", "nuts"])
    assert_user_error(r, "--restarts applies to --method svi only; got --method nuts", "best-elbo")
    r = runner.invoke(app, fit + ["2", "--devices", "1"])
    assert_user_error(r, "--restarts trains the restarts side by side on one device")
    r = runner.invoke(app, fit + ["2", "--method-args", '{"patience": 10}'])
    assert_user_error(r, "--restarts with --method-args")


@pytest.mark.parametrize("command", ["fit", "forecast", "effects", "datasets", "info", "demo"])
def test_help_shows_an_example(command):
    from typer.testing import CliRunner

    from bayesde._cli import app

    r = CliRunner().invoke(app, [command, "--help"])
    assert r.exit_code == 0
    assert "Example" in r.stdout and f"bayesde {command}" in r.stdout


def test_console_script_help(tmp_path):
    script = shutil.which("bayesde", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the bayesde console script is not installed next to this Python")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert_ok(proc)
    for command in ("fit", "forecast", "effects", "datasets", "demo"):
        assert command in proc.stdout


# -------------------------------------------------------------------------- effects
def test_effects_refuses_a_model_without_treatments(work):
    d = work["dir"]
    (d / "plans.json").write_text(json.dumps({"treat": {"dose": 1}, "none": {"dose": 0}}))
    proc = cli("effects", "--run", "run", "--plans", "plans.json", "--horizon", "2", "--out", "eff", cwd=d)
    assert_user_error(proc)
    assert "takes no treatments" in proc.stderr or "no treatment-effect module" in proc.stderr


def _effects_available():
    import bayesde as bd

    return hasattr(bd.models, "BNCDE") and (
        hasattr(bd, "effects") or importlib.util.find_spec("bayesde.effects") is not None
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bncde", "tecde"])
def test_effects_writes_outcomes_and_contrasts(tmp_path, model):
    if not _effects_available():
        pytest.skip("bd.models.BNCDE / bd.effects not available in this build")
    rng = np.random.default_rng(1)
    rows = []
    for s in range(4):
        y = 5.0
        for t in range(10):
            dose = int(rng.random() < 0.4)
            y = y * np.exp(0.1 - 0.3 * dose) + 0.1 * rng.normal()
            rows.append({"series": f"p{s}", "time": float(t), "volume": y, "dose": ["no", "yes"][dose]})
    pd.DataFrame(rows).to_csv(tmp_path / "trial.csv", index=False)
    fit = cli("fit", "--data", "trial.csv", "--treatment-cols", "dose", "--model", model, "--method", "svi",
              "--model-args", json.dumps({"width": 8, "horizon": 2, **({"train_paths": 1} if model == "bncde" else {})}),
              "--num-steps", "20", "--num-samples", "20", "--out", "run", cwd=tmp_path)
    assert_ok(fit)
    (tmp_path / "plans.json").write_text(json.dumps({"treat": {"dose": "yes"}, "none": {"dose": 0}}))
    eff = cli("effects", "--run", "run", "--plans", "plans.json", "--horizon", "2", "--out", "eff", cwd=tmp_path)
    assert_ok(eff)
    out = pd.read_csv(tmp_path / "eff" / "outcomes.csv")
    assert list(out.columns) == ["plan", "series", "time", "variable", "mean", *QUANTILES]
    assert len(out) == 2 * 4 * 2
    assert np.all(np.diff(out[QUANTILES].to_numpy(), axis=1) >= 0)
    con = pd.read_csv(tmp_path / "eff" / "contrasts.csv")
    assert set(con["contrast"]) == {"treat - none"}
    assert set(con["scope"]) == {"series", "average"}
    assert (tmp_path / "eff" / "effects.png").stat().st_size > 10_000
    for plan in ("treat", "none"):
        assert f"overlap share of {plan}: " in eff.stdout, eff.stdout
    (tmp_path / "bad.json").write_text(json.dumps({"treat": {"dose": "lots"}}))
    bad = cli("effects", "--run", "run", "--plans", "bad.json", "--horizon", "2", "--out", "eff2", cwd=tmp_path)
    assert_user_error(bad, "plan 'treat'", "'dose'", "unknown value 'lots'")


# ------------------------------------------------------------------------ datasets
def test_datasets_lists_cards_and_exports_csv(tmp_path):
    proc = cli("datasets", cwd=tmp_path)
    assert_ok(proc)
    assert "hare_lynx" in proc.stdout
    proc = cli("datasets", "hare_lynx", "--csv", "hl.csv", cwd=tmp_path)
    assert_ok(proc)
    df = pd.read_csv(tmp_path / "hl.csv")
    assert list(df.columns) == ["series", "time", "hare", "lynx"] and len(df) == 21


# ---------------------------------------------------------------------------- demo
@pytest.mark.slow  # CI runs the full `bayesde demo` before the tests (README command 1)
def test_demo_quick_writes_the_tour(tmp_path):
    proc = cli("demo", "--quick", "--out", "d", "--quiet", cwd=tmp_path)
    assert_ok(proc)
    out = tmp_path / "d"
    for name in ("forecast.csv", "holdout.csv", "forecast.png", "posterior.nc", "summary.json", "cli.json"):
        assert (out / name).is_file(), name
    assert (out / "run" / "bayesde.json").is_file()
    df = pd.read_csv(out / "forecast.csv")
    assert np.all(np.diff(df[QUANTILES].to_numpy(), axis=1) >= 0)
    assert df["year"].max() == 1925
    hold = pd.read_csv(out / "holdout.csv")
    assert len(hold) == 10 and hold["observed"].notna().all()
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["coverage_90"] <= 1 and summary["crps"] > 0
    assert "held out 1916-1920" in proc.stdout
    again = cli("demo", "--quick", "--out", "d", cwd=tmp_path)
    assert_user_error(again, "already exists", "--force")


def test_demo_explains_a_held_out_coverage_an_honest_band_rarely_gives():
    from bayesde._cli._demo import _coverage_note

    note = _coverage_note(10, 7, 0.9)  # P(at most 7 of 10 inside an honest 90% band) = 0.070
    assert note.startswith("note: 7/10 inside the 90% band; an honest band leaves 3 or more of 10 out 7% of the time.")
    assert '--model-args \'{"discrepancy": "ou"}\'' in note
    assert _coverage_note(10, 8, 0.9) is None  # 0.26: no note
    assert _coverage_note(10, 3, 0.5) is None  # 0.17


@pytest.mark.slow
def test_refit_with_the_same_seed_gives_identical_forecasts(work):
    d = work["dir"]
    fit = cli("fit", "--data", "pelts.csv", *FIT_ARGS, "--out", "run_again", "--quiet", cwd=d)
    assert_ok(fit)
    fc = cli("forecast", "--run", "run_again", "--horizon", "3", "--out", "fc_again", "--seed", "5", "-q", cwd=d)
    assert_ok(fc)
    assert (d / "fc_again" / "forecast.csv").read_bytes() == (d / "fc1" / "forecast.csv").read_bytes()


# ------------------------------------------------------------- startup and import
def test_import_bayesde_and_the_cli_do_not_start_jax():
    code = (
        "import sys, bayesde, bayesde._cli\n"
        "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax'))\n"
        "names = dir(bayesde)\n"
        "for n in ('fit', 'models', 'TimeSeries', 'load', 'SVI', 'NUTS', 'BlackJAXNUTS', 'Posterior',\n"
        "          'Prediction', 'datasets', 'metrics', 'plot', 'solvers', 'networks', 'calibration',\n"
        "          'effects', 'distributed', 'DataError', '__version__'):\n"
        "    assert n in names, n\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_ok(proc)
    assert proc.stdout.strip() == "ok"


def test_every_lazy_public_name_resolves_and_static_tools_see_it():
    import ast
    import inspect

    import bayesde as bd

    for name, (module, attr) in bd._PUBLIC.items():
        value = getattr(bd, name)
        assert value is not None, name
        assert (value.__name__ == "bayesde" + module) if attr is None else (getattr(value, "__name__", attr) == attr)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bd.nope  # noqa: B018
    # The TYPE_CHECKING block re-exports exactly the names of the table.
    tree = ast.parse(inspect.getsource(bd))
    block = next(n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))
    static = {a.asname for node in block.body for a in node.names}
    assert static == set(bd._PUBLIC)


# ------------------------------------------------------------------------- device
def test_device_cpu_selects_the_cpu_platform(tmp_path):
    proc = cli("info", "--device", "cpu", cwd=tmp_path)
    assert_ok(proc)
    assert "backend: cpu" in proc.stdout and "devices: cpu:0" in proc.stdout


def test_device_gpu_without_a_gpu_is_a_clear_error(tmp_path):
    import jax

    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("this machine has a GPU")
    # The shell's JAX_PLATFORMS=cpu (set by `cli`) must not hide the request.
    proc = cli("info", "--device", "gpu", cwd=tmp_path)
    assert_user_error(proc, "--device gpu", "use --device cpu")


# ------------------------------------------------------------ arguments and exits
def test_choices_are_checked_before_anything_starts(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bayesde._cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["fit", "--data", "x.csv", "--out", "r", "--device", "tpu"])
    assert_user_error(r, "--device", "'tpu'")
    r = runner.invoke(app, ["fit", "--data", "x.csv", "--out", "r", "--model", "not a model"])
    assert_user_error(r, "--model", "MODULE:CLASS")
    # --force is a plain flag: a value after it is an extra argument.
    r = runner.invoke(app, ["forecast", "--run", "r", "--horizon", "1", "--out", "f", "--force", "true"])
    assert_user_error(r, "unexpected extra argument", "true")
    assert "<bool>" not in runner.invoke(app, ["fit", "--help"]).stdout.split("--force")[1].splitlines()[0]


def _break_read_csv(monkeypatch):
    import bayesde._cli._fit as fit_mod

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(fit_mod, "read_csv", broken)


def test_an_internal_bug_exits_1_and_asks_for_a_report(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bayesde._cli import app

    good_frame().to_csv(tmp_path / "pelts.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BAYESDE_DEBUG", raising=False)
    _break_read_csv(monkeypatch)
    # A plain ValueError from inside a command is a bug (exit 1), not a user error (2).
    r = CliRunner().invoke(app, ["fit", "--data", "pelts.csv", *FIT_ARGS, "--out", "run"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "internal error (ValueError: an internal inconsistency)" in lines[0]
    assert "please report" in lines[0] and "--debug" in lines[0]
    # --debug (or BAYESDE_DEBUG=1) adds the traceback.
    r = CliRunner().invoke(app, ["--debug", "fit", "--data", "pelts.csv", *FIT_ARGS, "--out", "run"])
    assert r.exit_code == 1
    assert "Traceback" in r.stderr and "please report" in r.stderr and "an internal inconsistency" in r.stderr
    r = CliRunner().invoke(app, ["fit", "--data", "pelts.csv", *FIT_ARGS, "--out", "run"],
                           env={"BAYESDE_DEBUG": "1"})
    assert r.exit_code == 1 and "Traceback" in r.stderr
    assert not (tmp_path / "run").exists()


def test_library_data_errors_are_user_errors(tmp_path, monkeypatch):
    """`bd.DataError` raised by the library (here `TimeSeries` refusing a file whose
    values are all empty) exits 2 in one line, the message said with the file name."""
    from typer.testing import CliRunner

    from bayesde._cli import app

    df = good_frame()
    df["hare"] = np.nan
    df["lynx"] = np.nan
    df.to_csv(tmp_path / "empty.csv", index=False)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["fit", "--data", "empty.csv", *FIT_ARGS, "--out", "run"])
    assert_user_error(r, "empty.csv", "every value is missing")


def test_which_exceptions_are_user_errors():
    import bayesde as bd
    from bayesde._cli._common import UserError, is_user_error

    assert is_user_error(UserError("--x: bad"))
    assert is_user_error(bd.DataError("is empty.", column="x", row=3))
    assert is_user_error(FileExistsError("out"))
    assert is_user_error(PermissionError("cannot write --out"))
    assert not is_user_error(ValueError("a bug"))
    assert not is_user_error(KeyError("a bug"))


def test_the_cli_uses_the_public_api():
    """Each command is a module of the `bayesde._cli` package, and reaches bayesde only
    through `import bayesde as bd`, except the atomic-folder helper and the two
    forecast-grid helpers that the public API does not have yet."""
    import ast
    from pathlib import Path

    import bayesde._cli as cli_pkg

    private = set()
    for path in Path(cli_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                private.add(node.module)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bayesde"):
                private.add(node.module)
    assert private <= {"_atomic", "inference._forecast"}, private
    names = {c.name for c in cli_pkg.app.registered_commands} | {
        c.callback.__name__ for c in cli_pkg.app.registered_commands}
    assert {"fit", "forecast", "effects", "datasets", "info", "demo"} <= names


def test_a_closed_pipe_ends_quietly(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "bayesde._cli", "datasets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141  # as a process killed by SIGPIPE


@pytest.mark.parametrize("cores, chains, note", [(1, 2, True), (2, 2, True), (3, 3, True), (16, 4, False)])
def test_nuts_chains_follow_the_cpu_cores(monkeypatch, cores, chains, note):
    import bayesde._cli._common as common

    monkeypatch.setattr(common, "cpu_cores", lambda: cores)
    n, msg = common.default_chains()
    assert n == chains
    assert (msg is not None) == note
    if note:
        assert f"{chains} chains ({cores} CPU core" in msg and "--num-chains 4" in msg


# ----------------------------------------------------------------- your own model
USER_MODEL = '''
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

import bayesde as bd


@bd.models.register_model
class LevelModel(bd.models.AbstractModel):
    """A constant level per value column plus Normal noise."""

    dim: int
    scale: float = 1.0

    def program(self, batch, query=None, *, subsample_size=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 50.0).expand([self.dim]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(self.scale * 20.0))
        numpyro.sample("y", dist.Normal(jnp.broadcast_to(mu, batch.ys.shape), sigma).mask(batch.mask),
                       obs=batch.ys)
        if query is not None:
            f = numpyro.deterministic("f_out", jnp.broadcast_to(mu, query.ts.shape + (self.dim,)))
            numpyro.sample("y_out", dist.Normal(f, sigma))


def level(dim, scale=1.0):
    return LevelModel(dim=dim, scale=scale)
'''


@pytest.mark.slow
def test_fit_and_forecast_your_own_model_class(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mymodels.py").write_text(USER_MODEL)
    good_frame().to_csv(tmp_path / "pelts.csv", index=False)
    env_path = str(tmp_path / "pkg")

    def run(*args):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore",
                   PYTHONPATH=os.pathsep.join(p for p in (env_path, os.environ.get("PYTHONPATH")) if p))
        return subprocess.run([sys.executable, "-m", "bayesde._cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=600)

    fit = run("fit", "--data", "pelts.csv", "--time-col", "year", "--series-col", "region",
              "--model", "mymodels:LevelModel", "--model-args", '{"scale": 2.0}', "--method", "svi",
              "--num-steps", "20", "--num-samples", "10", "--out", "run", "--quiet")
    assert_ok(fit)
    rec = json.loads((tmp_path / "run" / "cli.json").read_text())
    assert rec["model"] == "mymodels:LevelModel" and rec["model_args"] == {"scale": 2.0}
    fc = run("forecast", "--run", "run", "--horizon", "2", "--out", "fc", "--quiet")
    assert_ok(fc)
    df = pd.read_csv(tmp_path / "fc" / "forecast.csv")
    assert list(df.columns) == FORECAST_COLUMNS and (df["part"] == "forecast").sum() == 2 * 2 * 2
    bad = run("fit", "--data", "pelts.csv", "--time-col", "year", "--series-col", "region",
              "--model", "mymodels:Nope", "--out", "run2")
    assert_user_error(bad, "mymodels", "'Nope'")


def test_model_function_gets_the_data_dimension(tmp_path, monkeypatch):
    import bayesde as bd
    from bayesde._cli._common import UserError
    from bayesde._cli._models import build_model, model_factory

    (tmp_path / "mymodels_fn.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = bd.TimeSeries.from_pandas(good_frame(), time="year", series="region")
    m = build_model(model_factory(bd, "mymodels_fn:level"), bd, data, "mymodels_fn:level", {"scale": 3.0})
    assert type(m).__name__ == "LevelModel" and m.dim == 2 and m.scale == 3.0
    # The library refusing a hyperparameter (TypeError/ValueError while building) is a user error.
    with pytest.raises(UserError, match="--model-args"):
        build_model(model_factory(bd, "mymodels_fn:level"), bd, data, "mymodels_fn:level", {"width": 3})


# ------------------------------------------------------------------ atomic folders
def test_staged_dir_replaces_whole_or_not_at_all(tmp_path):
    from bayesde._atomic import claim_dir, recover, staged_dir

    out = tmp_path / "out"
    with staged_dir(out) as tmp:
        (tmp / "cli.json").write_text("{}")
        (tmp / "a.csv").write_text("1")
    assert (out / "a.csv").read_text() == "1"
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(out) as tmp:
            (tmp / "a.csv").write_text("half")
            raise KeyboardInterrupt
    assert (out / "a.csv").read_text() == "1"  # the old output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind
    assert "already exists" in claim_dir(out, overwrite=False, marker="cli.json")
    assert claim_dir(out, overwrite=True, marker="cli.json") is None
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert "not written by bayesde" in claim_dir(tmp_path / "mine", overwrite=True, marker="cli.json")
    # A crash between the two renames of a replacement: the old folder comes back.
    os.replace(out, tmp_path / ".out.old-123")
    with pytest.warns(UserWarning, match="interrupted"):
        assert recover(out, marker="cli.json")
    assert (out / "a.csv").read_text() == "1"


def test_a_fit_that_explains_little_is_flagged():
    from types import SimpleNamespace

    import bayesde as bd
    from bayesde._cli._fit import explains_little

    rng = np.random.default_rng(0)
    data = bd.TimeSeries(np.broadcast_to(np.arange(20.0), (2, 20)), rng.normal(size=(2, 20, 2)), names=["a", "b"])

    def post_predicting(median):
        pred = SimpleNamespace(median=median)
        return SimpleNamespace(model=SimpleNamespace(), data=data, predict=lambda *a, **k: pred)

    good = data.ys.copy()
    good[..., 1] = 0.0  # column "b": the median is the mean, R² ≈ 0
    (msg,) = explains_little(post_predicting(good))
    assert msg.startswith("the fit explains little of 'b': in-sample R² ")
    assert msg.endswith("Try another --model (e.g. latent-sde for a noisy or cyclic series) or add the variables "
                        "that drive it.")
    assert explains_little(post_predicting(data.ys)) == []

    class LatentSDE:  # the model the advice would name: it names none
        pass

    post = post_predicting(good)
    post.model = LatentSDE()
    (msg,) = explains_little(post)
    assert msg.endswith("Try another --model or add the variables that drive it.")


def test_explains_little_judges_the_dynamics_without_the_model_discrepancy():
    """With a discrepancy the in-sample median follows the data whatever the dynamics, so
    the check reads the model with the discrepancy off (and says what carries the data)."""
    import dataclasses
    from types import SimpleNamespace

    import bayesde as bd
    from bayesde._cli._fit import explains_little

    rng = np.random.default_rng(1)
    data = bd.TimeSeries(np.arange(20.0), rng.normal(size=(1, 20, 1)), names=["x"])

    @dataclasses.dataclass
    class Model:
        discrepancy: object = "ou"

    class Post:
        def __init__(self):
            self.model, self.data = Model(), data

        def predict(self, *a, **k):  # the smoothed discrepancy tracks the data; the path alone is flat
            return SimpleNamespace(median=data.ys if self.model.discrepancy else np.zeros_like(data.ys))

    post = Post()
    (msg,) = explains_little(post)
    assert msg.startswith("the fit explains little of 'x': in-sample R² ")
    assert "the model discrepancy carries the data's movement" in msg
    assert post.model.discrepancy == "ou"  # the user's posterior is left as it was


def test_restarts_keep_the_fit_with_the_highest_elbo_and_forecast_as_one_fit(tmp_path):
    """`bayesde fit --restarts 3` fits the model three times side by side and keeps the fit
    with the highest ELBO: it says so, the run is `bd.Ensemble(combine="best-elbo")` with one
    chain of as many draws as one fit, cli.json records it, and the run forecasts as any
    other."""
    import bayesde as bd

    t = np.arange(30.0)
    y = 50 + 40 * np.sin(2 * np.pi * t / 11) + np.random.default_rng(0).normal(0, 5, 30)
    pd.DataFrame({"year": 1900 + t, "count": np.abs(y)}).to_csv(tmp_path / "one.csv", index=False)
    fit = cli("fit", "--data", "one.csv", "--time-col", "year", "--model", "latent-sde", "--num-steps", "20",
              "--num-samples", "30", "--model-args", '{"latent_dim": 2, "context_dim": 4, "width": 8}',
              "--restarts", "3", "--out", "run", cwd=tmp_path)
    assert_ok(fit)
    assert "SVI: 3 restarts side by side, keeping the one with the highest ELBO" in fit.stdout
    post = bd.load(tmp_path / "run")
    kept = post.info.selected_member
    assert isinstance(post.method, bd.Ensemble) and post.method.combine == "best-elbo"
    assert post.method.num_members == 3 and post.num_chains == 1 and post.num_draws == 30
    assert kept == int(np.argmax(post.info.member_elbo))
    assert f"SVI, 3 restarts: 20 steps, kept restart {kept} (highest ELBO" in fit.stdout
    rec = json.loads((tmp_path / "run" / "cli.json").read_text())
    assert rec["restarts"] == 3 and rec["method"] == "ensemble"
    fc = cli("forecast", "--run", "run", "--horizon", "3", "--out", "fc", "--quiet", cwd=tmp_path)
    assert_ok(fc)
    table = pd.read_csv(tmp_path / "fc" / "forecast.csv")
    assert (table["part"] == "forecast").sum() == 3 and (table["q05"] >= 0).all()
