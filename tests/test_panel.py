"""The calibration panel: its simulators (shapes, missingness, irregular times,
determinism, known moments) and, as a slow test, the must-show coverage band of the
library defaults on the quick panel."""

import math
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import bayesde as bd

ROOT = Path(__file__).resolve().parents[1]
FORECAST = [n for n, c in bd.datasets.panel().items() if c.kind == "forecast"]


def test_panel_lists_at_least_eight_processes():
    cases = bd.datasets.panel()
    assert len(cases) >= 8
    assert {c.kind for c in cases.values()} == {"forecast", "treatment"}
    for name in ("ornstein_uhlenbeck", "cir", "damped_oscillator", "regime_switching",
                 "lv_process_noise", "seasonal_trend"):
        assert name in bd.datasets.names()


@pytest.mark.parametrize("name", FORECAST)
def test_simulator_shapes_missing_and_irregular_times(name):
    case = bd.datasets.panel()[name]
    data = case.simulate(key=jax.random.key(0), missing=0.3, quick=True)
    n, t = case.quick["n_series"], case.quick["n_times"]
    assert data.ys.shape[:2] == (n, t)
    assert data.truth["clean"].shape == data.ys.shape
    assert np.all(np.diff(data.ts, axis=1) > 0)
    assert not np.allclose(data.ts[0], data.ts[1]), "times are not per-series"
    observed = data.mask[:, 1:]
    assert abs(1 - observed.mean() - 0.3) < 0.08
    assert np.all(data.mask[:, 0])


@pytest.mark.parametrize("name", FORECAST)
def test_simulator_is_deterministic_per_key(name):
    case = bd.datasets.panel()[name]
    a = case.simulate(key=jax.random.key(3), missing=0.1, quick=True)
    b = case.simulate(key=jax.random.key(3), missing=0.1, quick=True)
    c = case.simulate(key=jax.random.key(4), missing=0.1, quick=True)
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_array_equal(a.ys, b.ys)
    assert not np.allclose(np.nan_to_num(a.ys), np.nan_to_num(c.ys))


def test_ou_stationary_variance():
    d = bd.datasets.ornstein_uhlenbeck(2000, 4, 4.0, key=jax.random.key(0), noise_std=0.0)
    var = d.truth["clean"].var()
    # sd of a variance estimate from ~2000 independent normals: var·√(2/2000) ≈ 3%.
    assert abs(var / d.truth["stationary_var"] - 1) < 0.1


def test_cir_mean_and_positivity():
    kappa, theta, x0 = 1.5, 1.0, 2.0
    d = bd.datasets.cir(2000, 5, 2.0, key=jax.random.key(1), x0=x0, noise_std=0.0, irregular=False)
    clean = d.truth["clean"][..., 0]
    assert clean.min() >= 0
    expected = theta + (x0 - theta) * np.exp(-kappa * d.ts[0])
    se = clean.std(axis=0) / math.sqrt(clean.shape[0])
    assert np.all(np.abs(clean.mean(axis=0) - expected) < 4 * se + 1e-2)


def test_gbm_log_mean():
    case = bd.datasets.panel()["gbm"]
    d = case.simulate(key=jax.random.key(2), quick=True, n_series=3000, noise_std=0.0)
    mu, sigma = d.truth["mu"], d.truth["sigma"]
    logx = np.log(d.truth["clean"][..., 0]) - (mu - 0.5 * sigma**2) * d.ts
    # log X(t) - (μ - σ²/2) t = σ W(t): mean 0 with sd σ√t per value.
    assert abs(logx.mean()) < 4 * sigma / math.sqrt(3000)


def test_oscillator_stationary_variance():
    d = bd.datasets.damped_oscillator(1000, 4, 10.0, key=jax.random.key(3), noise_std=0.0)
    var = d.truth["clean"].reshape(-1, 2).var(axis=0)
    # Euler-Maruyama's stationary variance is off by O(dt); the sampling error is ~5%.
    np.testing.assert_allclose(var, d.truth["stationary_var"], rtol=0.2)


def test_lv_process_noise_stays_positive():
    d = bd.datasets.lv_process_noise(64, 30, key=jax.random.key(4))
    assert np.all(d.truth["clean"] > 0)


def test_simulators_refuse_bad_sizes():
    with pytest.raises(ValueError, match="missing"):
        bd.datasets.ornstein_uhlenbeck(4, 10, key=jax.random.key(0), missing=1.2)
    with pytest.raises(ValueError, match="x0"):
        bd.datasets.cir(4, 10, key=jax.random.key(0), x0=-1.0)


def _script(name):
    """A script of `benchmarks/` as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_panel_scoring_of_a_calibrated_forecast_and_the_band():
    import pandas as pd

    cal = _script("calibration")
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 25, 1))
    y[0, :3] = np.nan  # missing held-out values are not scored
    samples = rng.normal(size=(400, 40, 25, 1))
    rows = cal._score(samples, y, rng.normal(size=(40, 10, 1)), np.ones(1))
    for r in rows:
        # 997 values: the binomial sd of a coverage is below 0.016.
        assert abs(r["coverage"] - r["level"]) < 0.05
        assert r["n"] == 997 and r["nonfinite"] == 0
    assert rows[0]["crps"] == pytest.approx(0.57, abs=0.03)  # CRPS of N(0,1) at N(0,1) draws
    base = dict(family="", encoder="", missing=0.0, steps=1, level=0.9, width=1.0, crps=0.5,
                crps_climatology=0.6, nonfinite=0.0, n=10, seconds=1.0, status="ok", error="", region="forecast")
    df = pd.DataFrame([dict(base, process="ou", model="A", seed=0, coverage=0.9),
                       dict(base, process="ou", model="A", seed=1, coverage=0.78),
                       dict(base, process="ou", model="B", seed=0, coverage=0.92)])
    summary = cal.panel_summary(df)
    assert not summary.loc[("ou", "A", "forecast"), "in_band"]  # a seed below 0.80
    assert summary.loc[("ou", "B", "forecast"), "in_band"]
    assert "**0.84 (0.78)**" in cal.panel_markdown(df)


@pytest.mark.parametrize("name", FORECAST)
def test_the_true_laws_forecast_covers_at_the_nominal_rate(name):
    """`benchmarks/panel_oracle.py` forecasts with each process's true law from its true
    state: on 96 series (a quick panel's coverage sd shrunk 2.5 times) its 90% intervals
    cover 0.90 up to sampling error, and it beats climatology."""
    oracle = _script("panel_oracle")
    case = bd.datasets.panel()[name]
    data = case.simulate(key=jax.random.key(11), missing=0.15, quick=True, n_series=96)
    hist, fut, sd = oracle.C.panel_split(data)
    samples = oracle.oracle_forecast(case, data, hist, fut, 200, np.random.default_rng(0), True)
    y = np.where(fut.mask, fut.ys, np.nan)
    r90 = next(r for r in oracle.C._score(samples, y, np.where(hist.mask, hist.ys, np.nan), sd) if r["level"] == 0.9)
    assert abs(r90["coverage"] - 0.9) < 0.05, r90
    assert r90["crps"] < 0.9 * r90["crps_climatology"], r90


@pytest.mark.slow
def test_quick_panel_defaults_inside_the_coverage_band(tmp_path):
    """Must show: every model and family at its defaults has 90% coverage in
    [0.85, 0.95] on every process (mean over seeds), and no case below 0.80."""
    import pandas as pd

    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "calibration.py"), "--panel", "--quick",
         "--out", str(tmp_path)],
        check=True, cwd=ROOT, timeout=6 * 3600,
    )
    df = pd.read_csv(tmp_path / "calibration_panel.csv")
    assert (df.status == "ok").all(), df[df.status != "ok"][["process", "model", "error"]].to_string()
    c90 = df[np.isclose(df.level, 0.9)]
    by = c90.groupby(["process", "model", "region"]).coverage
    mean, worst = by.mean(), by.min()
    bad = mean[(mean < 0.85) | (mean > 0.95)]
    assert bad.empty, f"90% coverage outside [0.85, 0.95]:\n{bad.to_string()}"
    low = worst[worst < 0.80]
    assert low.empty, f"a seed below 0.80:\n{low.to_string()}"


@pytest.mark.slow
def test_full_panel_default_latent_sde_inside_the_coverage_band(tmp_path):
    """The default `LatentSDE()` on the panel at its full sizes (32 series per process,
    three seeds; about 35 minutes on 2 cores): 90% coverage in [0.85, 0.95] on every
    process (mean over seeds) and no seed below 0.80. At these sizes the true law itself
    meets this with probability 0.77 (`benchmarks/panel_oracle.py --full`), against 0.37
    on the quick panel, which is why this claim is tested here."""
    import pandas as pd

    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "calibration.py"), "--panel", "--seeds", "3",
         "--models", "LatentSDE", "--out", str(tmp_path)],
        check=True, cwd=ROOT, timeout=3 * 3600,
    )
    df = pd.read_csv(tmp_path / "calibration_panel.csv")
    assert (df.status == "ok").all(), df[df.status != "ok"][["process", "error"]].to_string()
    c90 = df[np.isclose(df.level, 0.9)].groupby("process").coverage
    mean, worst = c90.mean(), c90.min()
    assert mean.between(0.85, 0.95).all(), f"90% coverage outside [0.85, 0.95]:\n{mean.to_string()}"
    assert (worst >= 0.80).all(), f"a seed below 0.80:\n{worst.to_string()}"
