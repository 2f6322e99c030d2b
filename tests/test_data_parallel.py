"""Data-parallel SVI: `bd.fit(..., method="svi", devices=...)` splits each minibatch over
the devices along the series axis, keeps the parameters replicated, and follows the
single-device loss trajectory for the same key.

Tolerance: the minibatch and every random number are the same as on one device; only
the order of floating-point sums changes (per-device partial sums, then a cross-device
sum). We test the loss of every step to a relative 1e-4 and the fitted parameters to
an absolute 1e-4 after a few Adam steps (observed: ~1e-7 relative, ~1e-7 absolute).

Every check runs in a subprocess: the device count (`XLA_FLAGS`) and `jax.distributed`
must be set before JAX starts, and this pytest process has one device.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _devices import device_env, two_processes_and_one

RTOL_LOSS = 1e-4
ATOL_PARAMS = 1e-4

_COMMON = textwrap.dedent(
    '''
    import json, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
    import bayesde as bd

    SVI_KW = dict(method="svi", num_steps=4, chunk_size=2, num_samples=4, progress_bar=False, warn=False)

    def lorenz():
        return bd.datasets.stochastic_lorenz(n_series=16, n_times=8, key=jax.random.key(0), dt=1e-2)

    def latent_sde():
        return bd.models.LatentSDE(latent_dim=2, context_dim=4, width=8, substeps=1)

    def compare(a, b):
        return {
            "loss_a": np.asarray(a.loss).tolist(), "loss_b": np.asarray(b.loss).tolist(),
            "params": max(float(np.max(np.abs(a.params[k] - b.params[k]))) for k in a.params),
            "same_keys": sorted(a.params) == sorted(b.params),
            "devices": b.info.num_devices,
        }
    '''
)

_FOUR_DEVICES = _COMMON + textwrap.dedent(
    '''
    out = {"n": len(jax.devices())}

    # LatentSDE, minibatch of 8 of 16 series over 4 devices.
    data = lorenz()
    kw = dict(SVI_KW, batch_size=8, key=jax.random.key(1))
    out["latent_sde"] = compare(bd.fit(latent_sde(), data, **kw),
                                bd.fit(latent_sde(), data, devices=jax.devices(), **kw))

    # BNCDE on the tumour simulator, minibatch of 8 of 16 patients.
    sim = bd.datasets.tumor_growth(n_patients=16, n_test=4, n_days=12, min_history=6, key=jax.random.key(0))
    bncde = bd.models.BNCDE(hidden=2, width=4, horizon=2, train_paths=2, ahead_starts=2)
    kw = dict(SVI_KW, batch_size=8, key=jax.random.key(2))
    out["bncde"] = compare(bd.fit(bncde, sim.train, **kw),
                           bd.fit(bncde, sim.train, devices=jax.devices(), **kw))

    # A plain NumPyro program: what the compiled step sees, on the minibatch path and on
    # the whole-batch path (a model without a subsampled plate).
    seen = []

    def record(name, shape):
        return lambda s: seen.append({"name": name, "shard": list(s.shard_shape(shape)),
                                      "replicated": bool(s.is_fully_replicated),
                                      "n": len(s.device_set)})

    def mini(batch, query=None, *, subsample_size=None):
        n, t, d = batch.ys.shape
        w = numpyro.param("w", jnp.zeros(d))
        s = numpyro.param("s", jnp.ones(()), constraint=dist.constraints.positive)
        jax.debug.inspect_array_sharding(w, callback=record("w", w.shape))
        with numpyro.plate("series", n, subsample_size=subsample_size) as idx:
            ys, m = batch.ys[idx], batch.mask[idx]
            jax.debug.inspect_array_sharding(ys, callback=record("minibatch", ys.shape))
            numpyro.sample("y", dist.Normal(w, s).mask(m).to_event(2), obs=ys)

    def whole(batch, query=None):
        n, t, d = batch.ys.shape
        w = numpyro.param("w", jnp.zeros(d))
        jax.debug.inspect_array_sharding(batch.ys, callback=record("batch", batch.ys.shape))
        with numpyro.plate("series", n):
            numpyro.sample("y", dist.Normal(w, 1.0).mask(batch.mask).to_event(2), obs=batch.ys)

    kw = dict(SVI_KW, key=jax.random.key(3))
    out["mini"] = compare(bd.fit(mini, data, batch_size=8, **kw),
                          bd.fit(mini, data, batch_size=8, devices=jax.devices(), **kw))
    mesh = bd.distributed.mesh(shape=(2, 2))
    out["whole"] = compare(bd.fit(whole, data, **kw), bd.fit(whole, data, devices=mesh, **kw))
    out["seen"] = seen

    # Refusals name batch_size and the device count.
    errors = {}
    for name, opts, d in [("odd", dict(batch_size=6), data), ("whole", {}, bd.TimeSeries(data.ts[:6], data.ys[:6]))]:
        try:
            bd.fit(mini if name == "odd" else whole, d, devices=jax.devices(), **dict(kw, **opts))
        except ValueError as e:
            errors[name] = str(e)
    out["errors"] = errors

    # A saved run records where it ran, as text.
    folder = tempfile.mkdtemp()
    post = bd.fit(whole, data, devices=jax.devices(), **kw)
    post.save(folder + "/run")
    out["saved_devices"] = list(bd.load(folder + "/run").method.devices)
    out["device_names"] = [str(d) for d in jax.devices()]
    print("RESULT" + json.dumps(out))
    '''
)



def _result(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def four_devices():
    # About a minute on an idle 2-core machine (compiling two small models twice).
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _FOUR_DEVICES], env=device_env(4), capture_output=True, text=True, timeout=1800
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the four-device fits did not finish in {e.timeout} s")
    return _result(proc)


def _assert_same_fit(res):
    assert res["devices"] == 4 and res["same_keys"]
    np.testing.assert_allclose(res["loss_b"], res["loss_a"], rtol=RTOL_LOSS)
    assert res["params"] < ATOL_PARAMS, res["params"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["latent_sde", "bncde", "mini", "whole"])
def test_data_parallel_fit_follows_the_single_device_loss(four_devices, name):
    assert four_devices["n"] == 4
    _assert_same_fit(four_devices[name])


@pytest.mark.slow
def test_minibatch_is_split_over_devices_and_parameters_replicated(four_devices):
    seen = four_devices["seen"]
    # Each program is traced on one device and on four; look at the four-device traces.
    mb = [s for s in seen if s["name"] == "minibatch" and s["n"] == 4]
    w = [s for s in seen if s["name"] == "w" and s["n"] == 4]
    whole = [s for s in seen if s["name"] == "batch" and s["n"] == 4]
    assert mb and w and whole
    assert all(s["shard"][0] == 2 and not s["replicated"] for s in mb)  # 8 series / 4 devices
    assert all(s["replicated"] for s in w)
    assert all(s["shard"][0] == 4 and not s["replicated"] for s in whole)  # 16 series / 4 devices


@pytest.mark.slow
def test_uneven_batches_are_refused_naming_batch_size_and_devices(four_devices):
    errors = four_devices["errors"]
    assert "batch_size=6" in errors["odd"] and "4 devices" in errors["odd"]
    assert "batch_size=None" in errors["whole"] and "6 series" in errors["whole"] and "4 devices" in errors["whole"]


@pytest.mark.slow
def test_a_saved_run_records_its_devices_as_text(four_devices):
    assert four_devices["saved_devices"] == four_devices["device_names"]


def test_svi_devices_option_is_checked():
    import jax

    import bayesde as bd

    assert bd.SVI(devices=jax.devices()).devices == tuple(jax.devices())
    with pytest.raises(ValueError, match=r"SVI.devices\[1\]"):
        bd.SVI(devices=[jax.devices()[0], 3])
    with pytest.raises(ValueError, match="SVI.devices"):
        bd.SVI(devices="cpu")
    with pytest.raises(ValueError, match="SVI.process_local"):
        bd.SVI(process_local=True)
    # A run loaded from disk keeps its devices as text; fitting with them again is refused.
    ts = np.linspace(0, 1, 4)
    data = bd.TimeSeries(ts, np.sin(ts)[None, :, None])
    with pytest.raises(TypeError, match=r"SVI.devices: devices\[0\]"):
        bd.fit(lambda b, q=None: None, data, method=bd.SVI(devices=("cpu:0",)), key=jax.random.key(0))


# ------------------------------------------------------------------- two processes
_WORKER = _COMMON + textwrap.dedent(
    '''
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if nproc > 1:
        bd.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                                  initialization_timeout=120)
        assert jax.process_count() == nproc and len(jax.devices()) == 2 * nproc

    def tiny(batch, query=None):
        n, t, d = batch.ys.shape
        w = numpyro.param("w", jnp.zeros(d))
        s = numpyro.param("s", jnp.ones(()), constraint=dist.constraints.positive)
        with numpyro.plate("series", n):
            numpyro.sample("y", dist.Normal(w, s).mask(batch.mask).to_event(2), obs=batch.ys)

    data = lorenz()
    kw = dict(SVI_KW, batch_size=8, key=jax.random.key(1))
    dev = dict(devices=jax.devices()) if nproc > 1 else {}
    post = bd.fit(latent_sde(), data, **kw, **dev)
    res = {"loss": np.asarray(post.loss).tolist(), "params": {k: np.asarray(v).tolist() for k, v in post.params.items()}}
    # Process-local shards: each process passes its own 8 of the 16 series.
    kw = dict(SVI_KW, key=jax.random.key(3))
    if nproc > 1:
        half = data.n_series // nproc
        local = bd.TimeSeries(data.ts[pid * half:(pid + 1) * half], data.ys[pid * half:(pid + 1) * half])
        post = bd.fit(tiny, local, devices=jax.devices(), process_local=True, **kw)
    else:
        post = bd.fit(tiny, data, **kw)
    res["local_loss"] = np.asarray(post.loss).tolist()
    res["local_params"] = {k: np.asarray(v).tolist() for k, v in post.params.items()}
    with open(f"{out}/fit_{nproc}_{pid}.json", "w") as f:
        json.dump(res, f)
    if nproc > 1:
        jax.distributed.shutdown()
    '''
)



@pytest.mark.slow
def test_two_processes_fit_like_one(tmp_path):
    """2 processes x 2 CPU devices (gloo): `bd.fit(..., devices=jax.devices())` with the
    whole data on every process, and with process-local shards, both follow the
    single-process fit."""
    two_processes_and_one(_WORKER, tmp_path, timeout=900)
    ref = json.loads((tmp_path / "fit_1_0.json").read_text())
    for i in range(2):
        got = json.loads((tmp_path / f"fit_2_{i}.json").read_text())
        for loss, params in [("loss", "params"), ("local_loss", "local_params")]:
            np.testing.assert_allclose(got[loss], ref[loss], rtol=RTOL_LOSS)
            assert sorted(got[params]) == sorted(ref[params])
            for k in ref[params]:
                np.testing.assert_allclose(got[params][k], ref[params][k], atol=ATOL_PARAMS)
