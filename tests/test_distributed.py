"""`bd.distributed`: the posterior predictive sharded over devices and over processes
gives the same numbers as one device, and really splits the work.

Every check runs in a subprocess: the device count (`XLA_FLAGS`) and
`jax.distributed` must be set before JAX starts, and this pytest process has one device.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _devices import device_env, two_processes_and_one

# A tiny Bayesian neural ODE written as a plain NumPyro program (explicit Euler on the
# observation grid): cheap to compile, and it has the sites the core reads.
_MODEL = textwrap.dedent(
    '''
    import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
    import bayesde as bd

    def tiny_node(batch, query=None):
        n, t, d = batch.ys.shape
        w1 = numpyro.sample("w1", dist.Normal(0, 1).expand([4, d]).to_event(2))
        w2 = numpyro.sample("w2", dist.Normal(0, 1).expand([d, 4]).to_event(2))
        sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
        with numpyro.plate("series", n):
            u0 = numpyro.sample("y0", dist.Normal(0, 1).expand([d]).to_event(1))

        def solve(ts):
            def step(u, dt):
                u = u + dt[:, None] * (jnp.tanh(u @ w1.T) @ w2.T)
                return u, u
            _, us = jax.lax.scan(step, u0, jnp.diff(ts, axis=1).T)
            return jnp.concatenate([u0[:, None], jnp.swapaxes(us, 0, 1)], axis=1)

        numpyro.sample("y", dist.Normal(solve(batch.ts), sigma).mask(batch.mask), obs=batch.ys)
        if query is not None:
            f = numpyro.deterministic("f_out", solve(query.ts))
            numpyro.sample("y_out", dist.Normal(f, sigma))

    ts = np.linspace(0.0, 1.0, 8)
    data = bd.TimeSeries(ts, np.stack([np.sin(3 * ts + i) for i in range(4)])[..., None])
    query_ts = np.linspace(0.0, 1.5, 12)

    def fitted(num_chains=2):
        return bd.fit(tiny_node, data, method="nuts", key=jax.random.key(0), num_warmup=20,
                      num_samples=10, num_chains=num_chains, chain_method="vectorized",
                      progress_bar=False, warn=False)
    '''
)

_MULTI_DEVICE = _MODEL + textwrap.dedent(
    '''
    import sys
    post = fitted()
    k = jax.random.key(3)
    out = {"devices": len(jax.devices())}
    ref = post.predict(query_ts, key=k)
    for name, devices, ns in [("draws", jax.devices(), None), ("odd", jax.devices(), 7),
                              ("series", bd.distributed.mesh(shape=(2, 2)), None)]:
        p = post.predict(query_ts, key=k, devices=devices, num_samples=ns)
        r = ref if ns is None else post.predict(query_ts, key=k, num_samples=ns)
        out[name] = {
            "equal": bool(np.array_equal(np.asarray(p.samples), np.asarray(r.samples))),
            "f_equal": bool(np.array_equal(np.asarray(p.f_samples), np.asarray(r.f_samples))),
            "max_diff": float(np.max(np.abs(np.asarray(p.samples) - np.asarray(r.samples)))),
            "shards": len(p.samples.addressable_shards),
            "shard_shapes": [list(s.data.shape) for s in p.samples.addressable_shards],
            "shape": list(p.samples.shape),
        }
    print("RESULT" + json.dumps(out))
    '''
).replace("import sys", "import sys, json")

_WORKER = _MODEL + textwrap.dedent(
    '''
    import sys
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if nproc > 1:
        bd.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                                  initialization_timeout=60)
    post = fitted(num_chains=1)
    k = jax.random.key(3)
    if nproc > 1:
        assert jax.process_count() == nproc and len(jax.devices()) == 2 * nproc
        pred = post.predict(query_ts, key=k, devices=jax.devices())
    else:
        pred = post.predict(query_ts, key=k)
    np.save(f"{out}/samples_{nproc}_{pid}.npy", np.asarray(pred.samples))
    if nproc > 1:
        jax.distributed.shutdown()
    '''
)



@pytest.fixture(scope="module")
def four_devices():
    proc = subprocess.run(
        [sys.executable, "-c", _MULTI_DEVICE], env=device_env(4), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_sharded_predictive_equals_single_device(four_devices):
    assert four_devices["devices"] == 4
    for case in ("draws", "odd"):
        assert four_devices[case]["equal"], four_devices[case]
        assert four_devices[case]["f_equal"], four_devices[case]


def test_sharded_predictive_really_splits_the_draws(four_devices):
    draws = four_devices["draws"]
    # 2 chains x 10 draws = 20 draws over 4 devices: 5 draws each.
    assert draws["shape"] == [20, 4, 12, 1]
    assert draws["shards"] == 4
    assert draws["shard_shapes"] == [[5, 4, 12, 1]] * 4


def test_series_mesh_splits_draws_and_series(four_devices):
    series = four_devices["series"]
    assert series["shards"] == 4
    assert series["shard_shapes"] == [[10, 2, 12, 1]] * 4
    assert series["equal"] and series["f_equal"], series


def test_mesh_and_input_checks():
    import jax

    import bayesde as bd

    m = bd.distributed.mesh()
    assert m.axis_names == ("d",) and m.size == len(jax.devices())
    with pytest.raises(ValueError, match="shape"):
        bd.distributed.mesh(shape=(3, 5))
    with pytest.raises(ValueError, match="process_id"):
        bd.distributed.initialize("127.0.0.1:1", num_processes=2, process_id=2)
    with pytest.raises(TypeError, match="devices"):
        bd.distributed._as_mesh(["cpu0"])



@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
    """Two local processes (2 CPU devices each, gloo collectives) run one sharded
    posterior predictive; both get every draw, equal to a single process."""
    two_processes_and_one(_WORKER, tmp_path, timeout=600)
    ref = np.load(tmp_path / "samples_1_0.npy")
    for i in range(2):
        got = np.load(tmp_path / f"samples_2_{i}.npy")
        assert got.shape == ref.shape == (10, 4, 12, 1)
        np.testing.assert_array_equal(got, ref)


_NEURAL_ODE = textwrap.dedent(
    '''
    import json
    import jax, numpy as np
    import bayesde as bd

    ts = np.linspace(0.0, 1.0, 8)
    data = bd.TimeSeries(ts, np.stack([np.sin(3 * ts + i) for i in range(4)])[..., None])
    post = bd.fit(bd.models.BayesianNeuralODE(dim=1, width=4, depth=1), data, method="svi",
                  key=jax.random.key(0), num_steps=5, num_samples=8, progress_bar=False, warn=False)
    k = jax.random.key(3)
    ref = post.predict(ts, key=k)
    p = post.predict(ts, key=k, devices=jax.devices())
    print("RESULT" + json.dumps({
        "max_diff": float(np.max(np.abs(np.asarray(p.samples) - np.asarray(ref.samples)))),
        "shards": len(p.samples.addressable_shards),
    }))
    '''
)


@pytest.mark.slow
def test_sharded_bayesian_neural_ode_matches_single_device():
    """A BayesianNeuralODE (adaptive Tsit5) sharded over 4 devices: the same draws to
    within the solver tolerance (per-device vectorised code may round the last bit
    differently, which can move an adaptive step)."""
    proc = subprocess.run(
        [sys.executable, "-c", _NEURAL_ODE], env=device_env(4), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])
    assert res["shards"] == 4
    assert res["max_diff"] < 1e-3, res
