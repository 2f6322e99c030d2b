"""The real-series panel: the shipped extracts load with the documented shapes and
times, each has a data card that names its source, licence and checksum, the wheel's
data mapping picks them up, and the benchmark that scores them against statsmodels
splits the data and scores forecasts correctly."""

import hashlib
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import bayesde as bd

ROOT = Path(__file__).resolve().parents[1]
PANEL = {
    # name: (csv, shape, first time, last time)
    "sunspots": ("sunspots.csv", (1, 309, 1), 1700.0, 2008.0),
    "sunspots_gappy": ("sunspots_gappy.csv", (1, 216, 1), 1700.0, 2008.0),
    "elnino": ("elnino.csv", (1, 732, 1), 1950.0, 2010 + 11 / 12),
    "us_macro_growth": ("us_macro_growth.csv", (1, 202, 3), 1959.25, 2009.5),
}


@pytest.mark.parametrize("name", sorted(PANEL))
def test_loader_shape_times_and_values(name):
    _, shape, first, last = PANEL[name]
    data = bd.datasets.load(name)
    assert data.shape == shape
    assert data.mask.all() and np.isfinite(data.ys).all()
    assert data.ts[0, 0] == pytest.approx(first) and data.ts[0, -1] == pytest.approx(last)
    assert np.all(np.diff(data.ts[0]) > 0)
    assert name in bd.datasets.names()


def test_regular_series_have_their_sampling_step():
    for name, step in (("sunspots", 1.0), ("elnino", 1 / 12), ("us_macro_growth", 0.25)):
        np.testing.assert_allclose(np.diff(bd.datasets.load(name).ts[0]), step, atol=1e-9, err_msg=name)


def test_gappy_sunspots_are_the_full_series_with_30_percent_of_years_deleted():
    full, gappy = bd.datasets.load("sunspots"), bd.datasets.load("sunspots_gappy")
    years = full.ts[0]
    kept = np.isin(years, gappy.ts[0])
    assert kept.sum() == gappy.n_times == len(years) - round(0.3 * len(years))
    np.testing.assert_array_equal(full.ys[0, kept], gappy.ys[0])
    gaps = np.diff(gappy.ts[0])
    assert gaps.min() == 1.0 and gaps.max() >= 3.0  # irregular


def test_macro_growth_is_the_log_growth_of_the_levels():
    # 400 Δlog of real GDP 1959Q1 → Q2 (2710.349 → 2778.801, statsmodels' macrodata)
    data = bd.datasets.load("us_macro_growth")
    assert data.names == ["gdp", "cons", "inv"]
    assert data.ys[0, 0, 0] == pytest.approx(400 * np.log(2778.801 / 2710.349), abs=1e-3)


@pytest.mark.parametrize("name", sorted(PANEL))
def test_card_names_source_licence_and_checksum(name):
    csv = PANEL[name][0]
    card = bd.datasets.card(name)
    assert card.startswith("# ") and "public domain" in card and "statsmodels" in card
    digest = hashlib.sha256((ROOT / "datasets" / csv).read_bytes()).hexdigest()
    assert digest in card, f"the card of {name} does not carry the sha256 of {csv}"
    assert f"`{name}`" in (ROOT / "datasets" / "README.md").read_text()


def test_wheel_mapping_carries_the_new_files():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"]["bayesde.datasets.data"] == "datasets"
    patterns = cfg["package-data"]["bayesde.datasets.data"]
    for name, (csv, *_) in PANEL.items():
        for f in (csv, f"{name}.md"):
            assert (ROOT / "datasets" / f).is_file()
            assert any(Path(f).match(p) for p in patterns), f


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("real_series", ROOT / "benchmarks" / "real_series.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sample_crps_matches_the_gaussian_closed_form():
    rs = _benchmark_module()
    draws = np.random.default_rng(0).normal(1.0, 2.0, size=(20000, 3))
    obs = np.array([0.0, 1.0, 5.0])
    np.testing.assert_allclose(rs._crps_draws(draws, obs), rs._crps_gauss(1.0, 2.0, obs), rtol=0.03)


def test_library_path_reads_a_monthly_series_as_dates_like_the_command_line():
    """The benchmarks' library fits (`real_series_origins.py`, the command line's fallback)
    must know the time of year, as `bayesde fit` does from the CSV's dates."""
    rs = _benchmark_module()
    t, y, names = rs.record("elnino")
    data = rs.library_series(t[:120], y[:120], names, dated=True, transform="log1p")
    assert data.time_unit == "days" and str(data.time_origin)[:10] == "1950-01-01"
    np.testing.assert_allclose(data.ts[0, 12], 365.0)  # 1951-01-01
    np.testing.assert_allclose(data.ys[0, :, 0], np.log1p(y[:120, 0]))
    assert bd.models.LatentSDE().adapt(data).seasons == (365.25,)
    plain = rs.library_series(t[:120], y[:120], names, dated=False)
    assert plain.time_unit is None and bd.models.LatentSDE().adapt(plain).seasons == ()
    # asked in days, as the command line asks: the last month's first day is inside the horizon
    horizon, every = rs._model_horizon(1.0, 1 / 12, dated=True)
    np.testing.assert_allclose([horizon, every], [365.25 + 365.25 / 24, 365.25 / 12])
    years, tolerance = rs._model_times_in_years(np.array([0.0, 31.0, 59.0]), 1950.0, dated=True)
    assert tolerance == 0.5 and np.all(np.abs(years - (1950 + np.arange(3) / 12)) < 0.5 / 12)


def test_sarimax_search_skips_a_fit_whose_forecast_is_not_finite(monkeypatch):
    """A candidate whose forecast variance is NaN (it happens: El Niño up to 1995) is no
    forecast; the search takes the best AIC among the usable ones and says which it skipped."""
    sm = pytest.importorskip("statsmodels.tsa.statespace.sarimax")

    rs = _benchmark_module()
    real_fit = sm.SARIMAX.fit

    def fit(self, *a, **k):
        res = real_fit(self, *a, **k)
        if self.order == (1, 0, 0):  # pretend this order forecasts NaN, with the best AIC
            res = type("Broken", (), {"aic": -1e9, "get_forecast": lambda _, n: type(
                "F", (), {"predicted_mean": np.full(n, np.nan), "var_pred_mean": np.full(n, np.nan)})()})()
        return res

    monkeypatch.setattr(sm.SARIMAX, "fit", fit)
    y = np.sin(np.arange(60) / 3.0) + np.random.default_rng(0).normal(0, 0.1, 60)
    mu, sd, info = rs._sarimax(y, 5, None, quick=True)
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(sd)) and info["order"] != [1, 0, 0]
    assert info["skipped_non_finite_forecast"] == [[1, 0, 0, 0, 0, 0, 0]]


def test_benchmark_dry_run_splits_every_series(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_series.py"), "--dry-run", "--workdir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    recs = {}
    for block in run.stdout.split("\n}\n"):
        if block.strip():
            recs.update(json.loads(block + "\n}"))
    assert set(recs) == {"sunspots", "sunspots_gappy", "elnino", "us_macro_growth", "nile"}
    for name, rec in recs.items():
        assert rec["n_test"] == int(np.ceil(0.1 * (rec["n_train"] + rec["n_test"]))), name
        assert rec["test_span"][0] > rec["train_span"][1]
        assert rec["commands"][0].startswith("fit --data") and "--model latent-sde --method svi" in rec["commands"][0]
        assert (tmp_path / f"{name}_train.csv").is_file()


def test_docs_table_is_the_committed_json():
    rs = _benchmark_module()
    results = json.loads((ROOT / "benchmarks" / "results" / "real_series_cpu.json").read_text())
    assert not results["quick"] and set(results["series"]) >= set(PANEL)
    for rec in results["series"].values():
        assert rec["bayesde_via"] in ("cli", "library") and {"bayesde", "sarimax", "ets", "climatology"} <= set(rec["scores"])
    page = (ROOT / "docs" / "real-series.md").read_text()
    assert rs.markdown_table(results["series"]) in page, "rerun `python benchmarks/real_series.py --table` into the page"
    assert (ROOT / "benchmarks" / "results" / "real_series_cpu.png").is_file()


@pytest.mark.slow
def test_benchmark_quick_run_through_the_cli(tmp_path):
    pytest.importorskip("statsmodels")
    out = tmp_path / "quick.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_series.py"), "--quick", "--series", "nile",
         "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rec = json.loads(out.read_text())["series"]["nile"]
    assert rec["bayesde_via"] == "cli", rec.get("cli_errors")
    assert 0.0 <= rec["scores"]["bayesde"]["coverage90"] <= 1.0 and rec["scores"]["sarimax"]["crps"] > 0
    assert out.with_suffix(".png").is_file()
