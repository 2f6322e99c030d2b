"""`method="chees"`: many-chain ChEES-HMC (BlackJAX) behind `fit`: the (chain, draw)
layout and statistics of NUTS, determinism, save/load, validation, chains laid out over
devices, and recovery of the Lotka–Volterra rates."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import bayesde as bd
from bayesde.inference import Chees
from _devices import device_env
from _programs import normal_mean




def _toy_data():
    rng = np.random.default_rng(0)
    ts = np.linspace(0.0, 1.0, 10)
    ys = np.array([1.0, -2.0]) + 0.5 * rng.normal(size=(3, 10, 2))
    return bd.TimeSeries(np.broadcast_to(ts, (3, 10)), ys)


@pytest.fixture(scope="module")
def toy():
    return _toy_data()


SMALL = dict(num_chains=8, num_warmup=150, num_samples=40, chunk_size=16, progress_bar=False)


@pytest.fixture(scope="module")
def toy_post(toy):
    return bd.fit(normal_mean, toy, method="chees", key=jax.random.key(0), **SMALL)


def test_draws_and_statistics_have_the_nuts_layout(toy, toy_post):
    post = toy_post
    assert post.method_name == "chees" and isinstance(post.method, Chees)
    assert post.samples["mu"].shape == (8, 40, 2) and post.samples["sigma"].shape == (8, 40)
    assert set(post.sample_stats) >= {"diverging", "acceptance_rate", "lp", "n_steps"}
    for v in post.sample_stats.values():
        assert v.shape == (8, 40)
    assert post.sample_stats["diverging"].dtype == bool
    assert np.all(post.sample_stats["n_steps"] >= 1)
    assert np.all((post.sample_stats["acceptance_rate"] >= 0) & (post.sample_stats["acceptance_rate"] <= 1))
    assert np.all(post.samples["sigma"] > 0)  # constrained space
    # The posterior of the mean sits at the sample mean, within a few posterior sds.
    mean = np.asarray(toy.ys).reshape(-1, 2).mean(0)
    draws = post.samples["mu"].reshape(-1, 2)
    assert np.all(np.abs(draws.mean(0) - mean) < 3 * draws.std(0) + 1e-3), (draws.mean(0), mean)
    d = post.diagnostics()
    assert d["divergences"] == 0 and d["max_rhat"] < 1.1
    assert post.info.num_devices == 1 and post.info.step_size > 0


def test_same_key_same_draws_and_chunking_does_not_matter(toy, toy_post):
    again = bd.fit(normal_mean, toy, method="chees", key=jax.random.key(0), **dict(SMALL, chunk_size=40))
    for k, v in toy_post.samples.items():
        assert np.array_equal(v, again.samples[k]), k
    other = bd.fit(normal_mean, toy, method=Chees(**{k: v for k, v in SMALL.items() if k != "progress_bar"}),
                   key=jax.random.key(1), progress_bar=False)
    assert not np.array_equal(other.samples["mu"], toy_post.samples["mu"])


def test_predict_and_save_load(tmp_path, toy, toy_post):
    pred = toy_post.predict(toy.ts[0], key=jax.random.key(2), num_samples=30)
    assert pred.samples.shape[0] == 30
    toy_post.save(tmp_path / "run")
    again = bd.load(tmp_path / "run")
    assert again.method_name == "chees" and again.method == toy_post.method
    for k, v in toy_post.samples.items():
        assert np.array_equal(v, again.samples[k])
    assert np.array_equal(again.sample_stats["n_steps"], toy_post.sample_stats["n_steps"])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_chains=1), r"Chees\.num_chains: expected at least 2 chains, got 1"),
        (dict(num_warmup=0), r"Chees\.num_warmup: expected a positive integer"),
        (dict(target_accept_prob=1.5), r"Chees\.target_accept_prob: expected a number in \(0, 1\)"),
        (dict(learning_rate=-1.0), r"Chees\.learning_rate"),
        (dict(chunk_size=0), r"Chees\.chunk_size"),
        (dict(max_tree_depth=5), r"'max_tree_depth' is not an option of method 'chees'"),
    ],
)
def test_bad_options_are_refused_before_anything_compiles(toy, options, message):
    with pytest.raises(ValueError, match=message):
        bd.fit(normal_mean, toy, method="chees", key=jax.random.key(0), **options)


_SHARDED = textwrap.dedent(
    """
    import json, jax, numpy as np
    import bayesde as bd
    import test_chees as t
    data = t._toy_data()
    post = bd.fit(t.normal_mean, data, method="chees", key=jax.random.key(0), **t.SMALL)
    print("RESULT" + json.dumps({"devices": len(jax.devices()), "num_devices": post.info.num_devices,
                                 "step_size": post.info.step_size, "mu": np.asarray(post.samples["mu"]).tolist()}))
    """
)


def test_chains_are_split_over_devices_and_agree_with_one_device(toy_post):
    here = os.path.dirname(os.path.abspath(__file__))
    env = device_env(4)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, cwd=here, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])
    assert res["devices"] == 4 and res["num_devices"] == 4  # 8 chains: 2 per device
    # The adaptation averages over chains, summed in another order over 4 devices; the
    # rounding differences grow along the chains, so the runs agree as samples of the
    # same posterior (and in their tuned step size), not draw for draw.
    assert res["step_size"] == pytest.approx(toy_post.info.step_size, rel=0.1)
    mu, ref = np.asarray(res["mu"]).reshape(-1, 2), toy_post.samples["mu"].reshape(-1, 2)
    assert np.all(np.abs(mu.mean(0) - ref.mean(0)) < 0.5 * ref.std(0)), (mu.mean(0), ref.mean(0), ref.std(0))


@pytest.mark.slow
def test_chees_recovers_lotka_volterra_rates():
    data = bd.datasets.lotka_volterra(n_series=3, n_times=40, t_max=15.0, key=jax.random.key(0))
    hist, _ = data.split(at=10.0)
    model = bd.models.ODE(bd.models.lotka_volterra_field, bd.models.lotka_volterra_priors())
    post = bd.fit(model, hist, method="chees", num_chains=32, num_warmup=400, num_samples=100,
                  key=jax.random.key(1), progress_bar=False)
    assert post.samples["alpha"].shape == (32, 100)
    for k in ("alpha", "beta", "gamma", "delta"):
        lo, hi = np.quantile(post.samples[k], [0.05, 0.95])
        assert lo <= data.truth[k] <= hi, (k, lo, hi, data.truth[k])
    d = post.diagnostics()
    assert d["divergences"] == 0 and d["max_rhat"] < 1.05 and d["min_ess"] > 400, d
