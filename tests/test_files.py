"""Saved runs: atomic saves, refusal of damaged, edited, foreign or newer files, no pickle.

The run under test is built directly from made-up draws (the file format does not care
how good the fit is, and this keeps the file free of compiles); `test_determinism.py`
covers a real fit -> save -> load -> predict.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import numpyro.distributions as dist
import pytest

import bayesde as bd
from bayesde.inference._engines import NUTS, EngineResult

REPO = Path(__file__).resolve().parents[1]
_PARAMS = ("alpha", "beta", "gamma", "delta")


_DATA = {}


def _posterior(seed=0):
    if not _DATA:
        _DATA["lv"] = bd.datasets.lotka_volterra(n_series=2, n_times=6, key=jax.random.key(0))
    data = _DATA["lv"]
    model = bd.models.ODE(
        bd.models.lotka_volterra_field, priors={k: dist.LogNormal(-1.0, 1.0) for k in _PARAMS}
    ).adapt(data)
    rng = np.random.default_rng(seed)
    samples = {k: rng.lognormal(size=(2, 7)).astype(np.float32) for k in (*_PARAMS, "sigma")}
    samples["y0"] = rng.lognormal(size=(2, 7, 2, 2)).astype(np.float32)
    stats = {
        "diverging": np.zeros((2, 7), bool),
        "tree_depth": rng.integers(1, 5, size=(2, 7)),
        "lp": rng.normal(size=(2, 7)),
    }
    result = EngineResult(
        samples=samples, params={"scale_loc": rng.normal(size=(3, 2)).astype(np.float32)},
        sample_stats=stats, loss=None,
        info={"seconds": 1.5, "max_tree_depth": 10},
    )
    return bd.Posterior(
        model, data, NUTS(num_warmup=7, num_samples=7, num_chains=2), result,
        key_data=np.array([0, seed], np.uint32), method_name="nuts",
    )


@pytest.fixture(scope="module")
def post():
    return _posterior()


@pytest.fixture
def run(post, tmp_path):
    path = tmp_path / "run"
    post.save(path)
    return path


def _assert_same(a, b):
    assert sorted(a.samples) == sorted(b.samples)
    for k in a.samples:
        np.testing.assert_array_equal(np.asarray(a.samples[k]), np.asarray(b.samples[k]))
    assert sorted(a.params) == sorted(b.params)
    for k in a.params:
        np.testing.assert_array_equal(np.asarray(a.params[k]), np.asarray(b.params[k]))
    for k in a.sample_stats:
        np.testing.assert_array_equal(np.asarray(a.sample_stats[k]), np.asarray(b.sample_stats[k]))
    np.testing.assert_array_equal(a.data.ys, b.data.ys)
    np.testing.assert_array_equal(a.data.ts, b.data.ts)
    np.testing.assert_array_equal(a.data.mask, b.data.mask)
    assert a.data.names == b.data.names
    assert a.method == b.method and a.method_name == b.method_name
    assert a.model.config() == b.model.config()


def test_save_load_round_trip_is_exact(post, run):
    assert sorted(os.listdir(run)) == ["bayesde.json", "data.nc", "params.eqx", "posterior.nc"]
    _assert_same(post, bd.load(run))
    # The folder holds nothing but the run: no temporary or backup folders are left.
    assert sorted(os.listdir(run.parent)) == ["run"]


def test_info_round_trips_as_its_record_and_old_dicts_still_load(post, run):
    from bayesde.inference._engines import NUTSInfo

    assert isinstance(post.info, NUTSInfo) and post.info.max_tree_depth == 10
    assert bd.load(run).info == post.info
    # A run saved when info was a dict with other names: known names become fields,
    # the rest stay readable.
    meta = run / "bayesde.json"
    config = json.loads(meta.read_text())
    config["info"] = {"seconds": 3.0, "chain_method": "vectorized", "max_tree_depth": 7, "old_note": "x"}
    meta.write_text(json.dumps(config))
    info = bd.load(run).info
    assert isinstance(info, NUTSInfo) and (info.seconds, info.max_tree_depth, info.old_note) == (3.0, 7, "x")
    assert bd.load(run).diagnostics()["max_tree_depth_hits"] == 0


def test_save_refuses_to_overwrite_without_permission(post, run):
    before = {f: (run / f).read_bytes() for f in os.listdir(run)}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        post.save(run)
    assert {f: (run / f).read_bytes() for f in os.listdir(run)} == before
    other = _posterior(seed=1)
    other.save(run, overwrite=True)
    _assert_same(other, bd.load(run))
    assert sorted(os.listdir(run.parent)) == ["run"]


def test_save_never_replaces_a_folder_that_is_not_a_run(post, tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(FileExistsError):
        post.save(precious, overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "years of work"


_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import xarray
    import bayesde as bd

    post = bd.load(sys.argv[1])
    post.samples = {k: np.asarray(v) + 1 for k, v in post.samples.items()}
    original = xarray.Dataset.to_netcdf

    def slow_to_netcdf(self, *args, **kwargs):
        print("WRITING", flush=True)
        time.sleep(120)
        return original(self, *args, **kwargs)

    xarray.Dataset.to_netcdf = slow_to_netcdf
    post.save(sys.argv[1], overwrite=True)
    print("SAVED", flush=True)
    """
)


def test_kill_during_save_leaves_the_old_run_intact(post, run, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if line.strip() == "WRITING" or line == "":
                break
        assert line.strip() == "WRITING", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    _assert_same(post, bd.load(run))
    # A later save still works; the killed save's temporary folder is never mistaken for the run.
    post.save(run, overwrite=True)
    _assert_same(post, bd.load(run))


@pytest.mark.parametrize("name", ["posterior.nc", "params.eqx", "data.nc"])
def test_truncated_file_is_refused(run, name):
    f = run / name
    content = f.read_bytes()
    f.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=f"{name}.*truncated or edited"):
        bd.load(run)


@pytest.mark.parametrize("name", ["posterior.nc", "data.nc"])
def test_edited_file_is_refused(run, name):
    f = run / name
    content = bytearray(f.read_bytes())
    content[len(content) // 2] ^= 0xFF
    f.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="checksum"):
        bd.load(run)


def test_missing_file_is_refused(run):
    (run / "posterior.nc").unlink()
    with pytest.raises(ValueError, match="posterior.nc.*missing"):
        bd.load(run)


def _edit_json(run, edit):
    meta = run / "bayesde.json"
    config = json.loads(meta.read_text())
    config = edit(config) or config
    meta.write_text(json.dumps(config))


@pytest.mark.parametrize("version", [0, 2, 99])
def test_other_format_version_is_refused_naming_it(run, version):
    _edit_json(run, lambda c: c.update(format_version=version, bayesde_version="9.9.9"))
    with pytest.raises(ValueError, match=rf"format version {version}\b.*9\.9\.9"):
        bd.load(run)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.pop("format_version"), "not a bayesde run"),
        (lambda c: c.pop("model"), "not a bayesde run"),
        (lambda c: c.pop("method"), "not a bayesde run"),
        (lambda c: c.pop("data"), "not a bayesde run"),
        (lambda c: [1, 2, 3], "not a bayesde run"),
        (lambda c: c["model"].update({"class": "NoSuchModel"}), "NoSuchModel"),
        (lambda c: c["model"]["config"].update(observation="poisson"), "observation"),
        (lambda c: c["data"].update(names=["only_one"]), "names"),
    ],
)
def test_edited_description_is_refused(run, edit, match):
    _edit_json(run, edit)
    with pytest.raises(ValueError, match=match):
        bd.load(run)


@pytest.mark.parametrize("text", ["", "{", "\x00\x01\x02", "null", "[]", '"run"', "{\"format_version\": 1}"])
def test_damaged_or_foreign_description_is_refused(run, text):
    (run / "bayesde.json").write_text(text)
    with pytest.raises(ValueError, match="bayesde|checksum"):
        bd.load(run)


def test_foreign_paths_are_refused(tmp_path):
    with pytest.raises((ValueError, FileNotFoundError), match="bayesde run|not found|No such"):
        bd.load(tmp_path / "does-not-exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a bayesde run"):
        bd.load(empty)
    csv = tmp_path / "data.csv"
    csv.write_text("time,y\n0,1\n")
    with pytest.raises(ValueError, match="not a bayesde run"):
        bd.load(csv)
    # Someone else's netCDF file in a folder with our file names.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("posterior.nc", "params.eqx", "data.nc"):
        (other / name).write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(64))
    with pytest.raises(ValueError, match="not a bayesde run"):
        bd.load(other)


_PICKLE = re.compile(
    r"^\s*(import|from)\s+(c?pickle|cloudpickle|dill|joblib|shelve|marshal)\b"
    r"|allow_pickle\s*=\s*True|\bpickle\.(loads?|dumps?)\b|\btorch\.load\b",
    re.MULTILINE,
)


def test_package_never_uses_pickle():
    sources = sorted((REPO / "bayesde").rglob("*.py"))
    assert len(sources) > 10
    offenders = [
        f"{p.relative_to(REPO)}: {m.group(0).strip()}"
        for p in sources
        for m in _PICKLE.finditer(p.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize("ref", ["os:system", "subprocess:run", "builtins:eval", "math:sqrt", "nope"])
def test_description_naming_a_system_function_is_refused(run, ref):
    # A run description is data: an edited one must not make `load` import system calls.
    def edit(c):
        c["model"]["config"]["vector_field"] = {"__callable__": ref}

    _edit_json(run, edit)
    with pytest.raises(ValueError, match="refusing|not a 'module:qualname'"):
        bd.load(run)


def test_interrupted_overwrite_restores_the_previous_run(post, run):
    # The overwrite swaps the old run aside, then moves the new one in; a crash between
    # the two renames leaves only the swapped-aside copy, which `load` puts back.
    aside = run.parent / f".{run.name}.old-12345"
    os.replace(run, aside)
    with pytest.warns(UserWarning, match="interrupted; restored the previous run"):
        again = bd.load(run)
    _assert_same(post, again)
    assert run.exists() and not aside.exists()
