"""The aggregation in `benchmarks/bncde_sweep.py` (pure Python: no fitting here) and the
plan of `benchmarks/gpu.sh` (its dry run computes nothing)."""

import argparse
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_file(path, seed, cov, width, model="BNCDE", cfg=None):
    per_tau = {"coverage_0.95": cov, "coverage_0.90": cov, "median_width_0.95": width, "crps": [0.1] * len(cov)}
    result = {"config": cfg or {"sigma": 0.03}, "counterfactual": per_tau, "factual": per_tau,
              "train_s_per_epoch_per_1000": 1.0}
    path.write_text(json.dumps({"command": f"python benchmarks/bncde.py --seed={seed} --epochs=4",
                                "results": {model: result}}))


def test_sweep_gathers_seeds_and_tests_the_band_edges(tmp_path):
    sweep = _load("bncde_sweep")
    # float32 noise at the band's edge (0.98 stored as 0.98000001) counts as inside
    _run_file(tmp_path / "a.json", 0, [float(np.float32(0.98)), 0.95], [0.02, 0.03])
    _run_file(tmp_path / "b.json", 1, [0.96, 0.93], [0.04, 0.05])
    _run_file(tmp_path / "c.json", 0, [0.9805, 0.95], [0.02, 0.02], model="TECDE_MC_dropout",
              cfg={"dropout": 0.1})
    (tmp_path / "summary.json").write_text(json.dumps({"command": "python benchmarks/bncde_sweep.py", "summary": {}}))
    rows, table = sweep.gather(str(tmp_path))
    assert len(rows) == 3  # the summary is not a run
    b = table["BNCDE sigma=0.03"]
    assert sorted(b["seeds"]) == [0, 1]
    assert rows[0]["options"] == {"epochs": "4"}  # each run's options, read off its command line
    assert b["coverage_0.95_mean"] == pytest.approx([0.97, 0.94])
    assert b["coverage_0.95_min_over_seeds"] == pytest.approx([0.96, 0.93])
    assert b["median_width_0.95_mean"] == pytest.approx([0.03, 0.04])
    assert b["in_92_98_at_every_tau_every_seed"] is True
    assert table["TECDE_MC_dropout dropout=0.1"]["in_92_98_at_every_tau_every_seed"] is False


def test_gpu_script_dry_run_plans_every_step_without_computing(tmp_path):
    out = tmp_path / "gpu"
    # The script's interpreter is $PYTHON (default `python`): this one, whether or not a venv is active.
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", "--out", str(out)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert 'pip install ".[cuda]"' in text
    for script in ("benchmarks/run.py --quick", "benchmarks/bncde.py", "benchmarks/latent_sde.py"):
        assert f"{script}" in text and f"{script.split()[0]} --help: ok" in text, script
    assert "benchmarks/scaling.py --quick --devices real" in text
    # Every result lands in the one folder; a dry run writes nothing.
    assert text.count(str(out)) >= 5
    assert not out.exists()
    # The step timeouts add up to less than 8 minutes.
    limits = [int(x) for x in re.findall(r"\(timeout (\d+)s\)", text)]
    assert len(limits) == 5 and sum(limits) < 480


def test_gpu_script_refuses_an_unknown_option():
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--fast"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown option '--fast'" in proc.stderr


def test_regime_heldback_counts_switches_where_the_models_hold_back_and_where_they_forecast():
    """`benchmarks/regime_heldback.py`: a switch counts for a stretch when the regime there
    differs from the one at the last observed row before it (a series without rows on
    either side counts as unknown), and a process that never switches has neither
    held-back tails nor futures with a switch."""
    rh = _load("regime_heldback")
    regime = np.array([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]])
    before = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    after = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]], bool)
    got = rh._switched(regime, before, after)
    assert got[:2].tolist() == [1.0, 0.0] and np.isnan(got[2])  # series 2 has no future rows
    import jax

    import bayesde as bd

    calm = bd.datasets.regime_switching(n_series=8, n_times=20, rate=0.0, key=jax.random.key(0))
    assert rh.shares(calm) == (0.0, 0.0, 2)


def test_forecast_scales_switches_off_one_scale_per_variant_and_refuses_other_models():
    """`benchmarks/forecast_scales.py`: `κ = 1` is a zero log scale, `ρ = 0` a log discrepancy
    of minus infinity per data dimension; the fitted variant changes nothing."""
    fs = _load("forecast_scales")
    params = {fs.SCALE: np.float32(0.7), fs.DISCREPANCY: np.array([-1.0, 0.5], np.float32)}
    v = fs.variants(params)
    assert v["fitted"] == {} and float(v["kappa=1"][fs.SCALE]) == 0.0 and fs.DISCREPANCY not in v["kappa=1"]
    rho = np.asarray(v["rho=0"][fs.DISCREPANCY])
    assert rho.shape == (2,) and np.all(np.isneginf(rho)) and fs.SCALE not in v["rho=0"]
    with pytest.raises(SystemExit):
        fs.main(["--models", "FractionalSDE"])


def test_panel_spread_pairs_cells_with_the_truth_on_the_same_data_set(tmp_path):
    """`benchmarks/panel_spread.py`: `d` is a run's coverage minus the truth's on the same
    (process, seed); a run that is the truth shifted by a constant has that mean `d`, no
    fit-to-fit spread, and meets the must-show as often as its shifted truth would; a
    run far below the band never does. The must-show's counts read the CSV's 90% rows."""
    ps = _load("panel_spread")
    truth = {(p, s): 0.90 + 0.01 * s for p in ("a", "b") for s in range(3)}
    oracle = {"processes": {p: {"panel_seeds": [{"seed": s, "cov90": truth[(p, s)]} for s in range(3)],
                                "draws": {"cov90_mean": 0.9, "cov90_sd": 0.01}} for p in ("a", "b")}}
    cells, spread = ps.truth_cells(oracle)
    assert cells == truth and spread["a"] == (0.9, 0.01)
    shifted = {k: v - 0.02 for k, v in truth.items()}
    r = ps.spread(shifted, cells, spread, sims=4000)
    assert r["mean_d"] == pytest.approx(-0.02) and r["fit_sd"] == pytest.approx(0.0, abs=1e-12)
    assert r["processes_in_band"] == 2 and r["seeds_below_floor"] == 0 and r["p_meet"] > 0.99
    low = {k: v - 0.15 for k, v in truth.items()}
    r = ps.spread(low, cells, spread, sims=4000)
    assert r["processes_in_band"] == 0 and r["seeds_below_floor"] == 6 and r["p_meet"] == 0.0
    assert r["worst"] == {"process": "a", "seed": 0, "d": pytest.approx(-0.15)}
    csv = tmp_path / "run.csv"
    csv.write_text("process,seed,region,level,coverage,status\n"
                   "a,0,forecast,0.9,0.7,ok\na,0,forecast,0.5,0.4,ok\na,1,forecast,0.9,0.9,error\n")
    assert ps.read_cells(csv) == {("a", 0): 0.7}
    with pytest.raises(ValueError, match="no \\(process, seed\\) cell"):
        ps.spread({("c", 0): 0.9}, cells, spread)
    c = ps.compare(shifted, low, cells)  # closer on all six cells: p = 2 / 2**6
    assert (c["cells"], c["a_closer"], c["b_closer"]) == (6, 6, 0) and c["sign_test_p"] == pytest.approx(2 / 64)
    assert c["rms_a"] == pytest.approx(0.02) and c["rms_b"] == pytest.approx(0.15)
    assert ps.compare(shifted, shifted, cells)["sign_test_p"] == 1.0  # ties only


def test_real_series_origins_reads_an_ensemble_variant_apart_from_the_model_options():
    """`benchmarks/real_series_origins.py`: `members=M` in a variant is the fit's (a deep
    ensemble of M), `transform=` the data's scale, the other entries are the model's; `""` is
    one SVI fit at the defaults on the data as they are."""
    ro = _load("real_series_origins")
    assert ro._variant("") == ({}, {"method": "svi"}, "none")
    assert ro._variant("members=4,linear_drift=1") == (
        {"linear_drift": 1}, {"method": "ensemble", "num_members": 4}, "none")
    assert ro._variant("members=4,cross_fit=1,combine=quantiles") == (
        {}, {"method": "ensemble", "num_members": 4, "cross_fit": True, "combine": "quantiles"}, "none")
    assert ro._variant("transform=log1p,latent_dim=2") == ({"latent_dim": 2}, {"method": "svi"}, "log1p")
    with pytest.raises(SystemExit, match="ensemble options; add members=M"):
        ro._variant("combine=quantiles")
    with pytest.raises(SystemExit, match="transform='sqrt'; choose none, log or log1p"):
        ro._variant("transform=sqrt")


def test_real_series_origins_switches_off_one_forecast_scale_at_a_time(monkeypatch):
    """`--scales`: each fit forecast again with κ = 1 (log κ = 0) and with ρ = 0 (log ρ = −∞),
    the other parameters as fitted; a fit without the scales has none to switch off, and an
    ensemble variant is refused before anything is fitted."""
    ro = _load("real_series_origins")
    params = {"latent_sde.forecast_log_scale": np.float32(0.7), "latent_sde.forecast_log_discrepancy": np.full(2, -1.2),
              "latent_sde$params": np.ones(3)}
    off = ro._switched_off(params)
    assert sorted(off) == ["kappa=1", "rho=0"]
    assert off["kappa=1"]["latent_sde.forecast_log_scale"] == 0.0
    np.testing.assert_array_equal(off["kappa=1"]["latent_sde.forecast_log_discrepancy"], np.full(2, -1.2))
    np.testing.assert_array_equal(off["rho=0"]["latent_sde.forecast_log_discrepancy"], np.full(2, -np.inf))
    assert off["rho=0"]["latent_sde.forecast_log_scale"] == np.float32(0.7)
    assert all(o["latent_sde$params"] is params["latent_sde$params"] for o in off.values())
    assert ro._switched_off({"latent_sde$params": np.ones(3)}) == {}
    monkeypatch.setattr(sys, "argv", ["real_series_origins.py", "--variants", "", "members=4", "--scales"])
    with pytest.raises(SystemExit, match="variant 'members=4' fits an ensemble"):
        ro.main()


def test_calibration_combines_an_ensembles_members_four_ways():
    """`benchmarks/calibration.py --combine`: the members' draws pooled as they are, their
    quantiles averaged (the library's `Ensemble(combine="quantiles")`) or their median
    taken, or each member moved to the ensemble's mean; two members far apart at one value,
    then a third far wider."""
    cal = _load("calibration")
    draws = np.r_[np.arange(4.0), 10 + np.arange(4.0)][:, None]  # member 0: 0..3, member 1: 10..13
    np.testing.assert_array_equal(cal.combine_members(draws, 2, "pool"), draws)
    q = cal.combine_members(draws, 2, "quantiles")
    assert np.ptp(q) < 0.5 * np.ptp(draws) and np.isclose(np.median(q), np.median(draws))
    r = cal.combine_members(draws, 2, "recentred")
    np.testing.assert_allclose(np.sort(r[:, 0]), np.repeat(np.arange(4.0) + 5.0, 2))
    with pytest.raises(ValueError, match="do not split into 3 members"):
        cal.combine_members(draws, 3, "quantiles")
    wide = np.r_[draws[:, 0], 100 * (np.arange(4.0) - 1.5)][:, None]  # member 2: far wider, centred at 0
    m = cal.combine_members(wide, 3, "median-quantiles")
    assert np.ptp(m) < 0.5 * np.ptp(cal.combine_members(wide, 3, "quantiles"))


def test_restart_selection_picks_the_fit_with_the_lowest_held_back_score():
    """`benchmarks/restart_selection.py`: at each origin the selected fit is the one whose
    held-back score is lowest, scored beside the quietest fit, the fit of the highest ELBO
    (when the rows have one) and the fits' mean and best;
    an origin with one fit selects nothing; a dated record is refused before anything is
    fitted."""
    rs = _load("restart_selection")
    rows = [dict(origin=1900, seed=s, held_out=h, noise=[n], crps=c)
            for s, h, n, c in ((0, 0.5, 0.3, 0.9), (1, 0.2, 0.5, 0.4), (2, 0.3, 0.4, 0.6))]
    rows += [dict(origin=1940, seed=s, held_out=h, noise=[n], crps=c) for s, h, n, c in ((0, 0.1, 0.6, 0.8), (1, 0.4, 0.2, 0.5))]
    rows += [dict(origin=1960, seed=0, held_out=0.3, noise=[0.1], crps=0.7)]
    per_origin, summary = rs.select(rows)
    assert [o["origin"] for o in per_origin] == [1900, 1940]
    first, second = per_origin
    assert (first["selected_seed"], first["selected"], first["best"], first["worst"]) == (1, 0.4, 0.4, 0.9)
    assert first["mean"] == pytest.approx(19 / 30) and first["spearman"] == pytest.approx(1.0)
    assert (second["selected_seed"], second["selected"]) == (0, 0.8) and np.isnan(second["spearman"])
    assert (first["lowest_noise"], second["lowest_noise"]) == (0.9, 0.5)  # the quietest fit, whatever its score
    assert summary["crps_selected"] == pytest.approx(0.6) and summary["crps_mean"] == pytest.approx((19 / 30 + 0.65) / 2)
    assert summary["origins_selected_at_least_as_good_as_mean"] == 1 and summary["origins"] == 2
    assert "highest_elbo" not in first and "crps_highest_elbo" not in summary  # rows without an ELBO
    for row, elbo in zip(rows, (-5.0, -9.0, -7.0, -3.0, -4.0, -1.0)):
        row["elbo"] = elbo
    per_origin, summary = rs.select(rows)
    assert [o["highest_elbo"] for o in per_origin] == [0.9, 0.8]  # the fit of the highest ELBO
    assert summary["crps_highest_elbo"] == pytest.approx(0.85)
    with pytest.raises(SystemExit, match="dated"):
        rs.main(["--series", "elnino"])


def test_standing_counts_a_cell_as_passing_only_inside_the_band_with_no_seed_below_the_floor(tmp_path):
    """`benchmarks/standing.py`: a cell passes when its mean over seeds is inside [0.85, 0.95]
    and no seed is below 0.80; plans of a tumour case are cells of their own; the table bolds
    a failing cell and shows a third decimal where two would hide which side of an edge it is."""
    st = _load("standing")
    rows = ["process,model,region,seed,level,coverage,crps,crps_climatology,status"]
    for seed, (a, b) in enumerate([(0.90, 0.79), (0.92, 0.95), (0.88, 0.96)]):
        rows += [f"ou,M,forecast,{seed},0.9,{a},0.5,1.0,ok", f"regime,M,forecast,{seed},0.9,{b},1.0,1.0,ok",
                 f"ou,M,forecast,{seed},0.5,0.5,0.5,1.0,ok"]
    rows += ["tumor_gamma8,B,chemo (outside),0,0.9,0.7,0.2,1.0,ok", "tumor_gamma8,B,none (outside),0,0.9,0.9,0.1,1.0,ok",
             "ou,M,forecast,3,0.9,0.1,0.5,1.0,error"]
    path = tmp_path / "run.csv"
    path.write_text("\n".join(rows) + "\n")
    r = st.summarise(st.read_rows(path), truth={("ou", 0): 0.91})
    ou, regime = r["cells"]["ou"], r["cells"]["regime"]
    assert ou["seeds"] == [0, 1, 2] and ou["mean"] == pytest.approx(0.90) and ou["passes"]
    assert ou["truth"] == []  # the truth is known for one seed of three: not shown
    assert regime["in_band"] and not regime["passes"] and regime["worst"] == pytest.approx(0.79)
    assert not r["cells"]["tumor_gamma8:chemo"]["passes"] and r["cells"]["tumor_gamma8:none"]["passes"]
    assert (r["passing"], r["of"], r["seeds_below_floor"]) == (2, 4, 2)
    assert r["coverage_by_level"]["0.5"] == pytest.approx(0.5)
    assert r["crps_over_climatology"] == pytest.approx((3 * 0.5 + 3 * 1.0 + 0.2 + 0.1) / 8)
    assert st._cell(ou) == "0.90 (0.88)" and st._cell(regime) == "**0.90 (0.79)**"
    assert st._num(0.951, st._in_band) == "0.951" and st._num(0.796, st._above_floor) == "0.796"
    assert st._num(0.948, st._in_band) == "0.95" and st._num(0.803, st._above_floor) == "0.80"


def test_issue_table_sets_before_beside_after_per_case_with_the_worst_seed():
    it = _load("issue_table")
    import bayesde as bd

    # the issue's configuration on this version (`hidden` is now `width`) and the family's defaults
    assert it._latent_sde(bd, "geometric", issue=True) == bd.models.LatentSDE(
        latent_dim=2, context_dim=8, width=32, encoder="ncde", family="geometric")
    assert it._latent_sde(bd, "langevin", issue=False) == bd.models.LatentSDE(family="langevin")
    ou = dict(case="ou", config="issue", family="neural")
    rows = [dict(ou, version="before", coverage_90=0.80, crps=1.0), dict(ou, version="before", coverage_90=0.70, crps=2.0),
            dict(ou, version="after", coverage_90=0.90, crps=0.5), dict(ou, version="after", coverage_90=0.86, crps=0.7),
            dict(case="bncde", version="before", chemo_coverage_90=0.63, none_coverage_90=0.92),
            dict(case="bncde", version="after", chemo_coverage_90=0.89, none_coverage_90=0.93),
            dict(case="demo", version="after", coverage_90=0.8, crps=3.0),
            dict(case="ou", version="truth", coverage_90=0.88), dict(case="ou", version="truth", coverage_90=0.84)]
    lines = it.table(dict(rows=rows)).splitlines()
    assert lines[2] == "| OU, neural, 600 steps | 0.86 (0.84) | 0.75 (0.70) | 0.88 (0.86) | 1.50 (2.00) | 0.60 (0.70) |"
    assert lines[3] == "| BNCDE γ = 6, under 'chemo' | – | 0.63 | 0.89 | | |"
    assert lines[4] == "| BNCDE γ = 6, under 'none' | – | 0.92 | 0.93 | | |"
    assert lines[5] == "| demo (hare–lynx, 10 counts) | – | – | 0.80 | – | 3.00 |"
    assert len(lines) == 6  # the true law's rows are a column, not lines
    with pytest.raises(SystemExit):
        it.main(["--cases", "ou,hare"])


def test_unseen_processes_simulate_reproducibly_and_the_truth_covers_its_own_forecast():
    """The second panel's data: same seed, same numbers; every seed of the cycle's missing
    fractions deletes about that share; the true law's forecast from the true state covers
    its own held-out values near nominal (a wrong stepper or a misaligned future would not)."""
    U = _load("unseen_processes")
    C = _load("calibration")
    covered, n = 0.0, 0
    for name, proc in U.PROCESSES.items():
        data, states, idx = U.simulate(proc, 1)
        again, _, _ = U.simulate(proc, 1)
        np.testing.assert_array_equal(np.nan_to_num(data.ys, nan=-99), np.nan_to_num(again.ys, nan=-99))
        assert data.ys.shape == (U.N_SERIES, proc.n_times, len(proc.names))
        assert 0.2 < np.isnan(data.ys).mean() < 0.4  # seed 1: 30% deleted
        hist, fut, sd = C.panel_split(data)
        cell = U._cell(U.oracle(proc, states, idx, hist, fut, 1), fut, hist, sd)
        covered += cell["coverage_90"] * cell["n"]
        n += cell["n"]
        assert cell["crps"] < cell["crps_climatology"], name
    assert 0.85 < covered / n < 0.95


def test_unseen_processes_table_reads_mean_and_worst_seed(tmp_path):
    U = _load("unseen_processes")
    cell = lambda c: dict(coverage_50=0.5, coverage_80=0.8, coverage_90=c, coverage_95=0.95, width_90=1.0,  # noqa: E731
                          crps=0.2, crps_climatology=0.4)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"cells": {"jump_ou|truth|0": cell(0.9), "jump_ou|LatentSDE|0": cell(0.8),
                                          "jump_ou|LatentSDE|1": cell(0.9)}}))
    assert U.summary(json.loads(path.read_text()))["jump_ou"]["LatentSDE"]["worst_90"] == 0.8
    assert "| `jump_ou` | 0.90 (0.90), 0.50 | 0.85 (0.80), 0.50 |" in U.table([path])
    with pytest.raises(SystemExit, match="unknown process 'nope'"):
        U.main(["--processes", "nope", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="unknown model 'BNCDE'"):  # a treatment model forecasts no series
        U.main(["--models", "BNCDE", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--combine combines an ensemble's members; give --members too"):
        U.main(["--combine", "quantiles", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--cross-fit is an ensemble's option; give --members too"):
        U.main(["--cross-fit", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match=r"--combine \['mean'\]: choose from"):
        U.main(["--members", "4", "--combine", "mean", "--out", str(tmp_path / "x.json")])
    args = argparse.Namespace(members=4, cross_fit=True, combine=["quantiles"])
    assert U.ensemble_options(args) == (dict(method="ensemble", num_members=4, cross_fit=True),
                                        {"pool": "[ensemble=4,cross-fit]",
                                         "quantiles": "[ensemble=4,cross-fit,quantiles]"})


def test_calibration_panel_refuses_an_ensembles_options_before_touching_earlier_results(tmp_path):
    """`--cross-fit` without `--members` is refused before the panel clears its files: an
    earlier run's CSV stays as it was."""
    C = _load("calibration")
    earlier = tmp_path / "calibration_panel.csv"
    earlier.write_text("process,model\nou,LatentSDE\n")
    with pytest.raises(SystemExit, match="calibration.py: --cross-fit is an ensemble's option; give --members too"):
        C.main(["--panel", "--cross-fit", "--out", str(tmp_path)])
    assert earlier.read_text() == "process,model\nou,LatentSDE\n"
    with pytest.raises(SystemExit, match="--new-patients must be 0 .none. or a number of patients, got -3"):
        C.main(["--panel", "--new-patients", "-3", "--out", str(tmp_path)])
    assert earlier.read_text() == "process,model\nou,LatentSDE\n"


def test_standing_reads_a_tumour_runs_fresh_cohort_and_keeps_its_own_test_patients_apart(tmp_path):
    """A BNCDE run with `--new-patients 300` scores each plan twice; `standing.py` reads the
    300 new patients as the cells and keeps the run's own 30 apart, both under the plan's name."""
    C, st = _load("calibration"), _load("standing")
    region = C.new_patients_region("chemo (outside)", 300)
    assert region == "chemo (outside), 300 new patients"
    rows = ["process,model,region,seed,level,coverage,crps,crps_climatology,status",
            "tumor_gamma8,B,chemo (outside),0,0.9,0.6,0.2,1.0,ok",
            f'tumor_gamma8,B,"{region}",0,0.9,0.8,0.3,1.0,ok']  # quoted, as pandas writes a comma
    path = tmp_path / "run.csv"
    path.write_text("\n".join(rows) + "\n")
    fresh, own, n = st.split_new_patients(st.read_rows(path))
    assert n == 300
    assert st.summarise(fresh)["cells"]["tumor_gamma8:chemo"]["coverage"] == [0.8]
    assert st.summarise(own)["cells"]["tumor_gamma8:chemo"]["coverage"] == [0.6]
    # a CRPS that is not a number (draws not finite) reads as infinite, flags the cell and is null in the JSON
    path.write_text("\n".join([rows[0], rows[1].replace("0.2,1.0", ",1.0")]) + "\n")
    r = st.summarise(st.read_rows(path))
    assert r["diverged"] == ["tumor_gamma8:chemo"] and r["crps_over_climatology"] == float("inf")
    assert st._json_safe(r)["crps_over_climatology"] is None
    path.write_text("\n".join(rows[:2]) + "\n")
    assert st.split_new_patients(st.read_rows(path))[::2] == (None, None)
    path.write_text("\n".join([*rows, rows[2].replace("300", "100")]) + "\n")
    with pytest.raises(ValueError, match=r"several fresh cohorts \[100, 300\]"):
        st.split_new_patients(st.read_rows(path))
