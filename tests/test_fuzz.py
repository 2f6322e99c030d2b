"""Bad input everywhere: property-based tests of the public surface.

Every case either works or raises `ValueError`/`TypeError` (file paths may also raise
`FileNotFoundError`/`FileExistsError`) whose message names the argument at fault; no
other exception type escapes, and nothing compiles or hangs before the refusal.
"""

import contextlib
import io
import json
import os
import string
import tempfile
import unittest.mock
from pathlib import Path

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings

import bayesde as bd
from bayesde.inference import _fit as fit_module

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    derandomize=True,
    database=None,
)


def refused_or_ok(fn, *names, errors=(ValueError, TypeError)):
    """Call `fn()`; return its value, or `None` if it raised one of `errors` whose
    message names one of `names`. Anything else fails the test."""
    try:
        return fn()
    except errors as e:
        msg = str(e)
        assert any(n in msg for n in names), f"{type(e).__name__} does not name any of {names}: {msg!r}"
        return None


# --------------------------------------------------------------- TimeSeries arrays
NUMERIC = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint8]
ODD = [np.bool_, np.complex128, np.dtype("<U3"), np.dtype("S2"), np.dtype("datetime64[s]")]

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


@st.composite
def arrays(draw, shape=shapes):
    dtype = draw(st.sampled_from(NUMERIC + ODD))
    shp = draw(shape) if isinstance(shape, st.SearchStrategy) else shape
    if np.dtype(dtype).kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
    else:
        elements = None
    return draw(hnp.arrays(dtype, shp, elements=elements))


@st.composite
def object_arrays(draw):
    n = draw(st.integers(1, 4))
    cell = st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=3), st.none(), st.booleans())
    return np.array(draw(st.lists(cell, min_size=n, max_size=n)), dtype=object)


def _check_valid(series):
    n, t, d = series.ys.shape
    assert series.ts.shape == (n, t) and series.mask.shape == (n, t, d)
    assert np.all(np.isfinite(series.ts))
    assert np.all(np.diff(series.ts, axis=1) > 0)
    assert series.mask.dtype == bool and series.mask.any()
    assert np.all(np.isfinite(series.ys[series.mask]))
    assert np.all(np.isnan(series.ys[~series.mask]))
    batch = series.batch()
    assert bool(np.all(np.isfinite(np.asarray(batch.ys))))


@FUZZ
@given(ts=st.one_of(arrays(), object_arrays()), ys=st.one_of(arrays(), object_arrays()))
@example(ts=np.array([0.0, 1.0, 1.0]), ys=np.ones(3))
@example(ts=np.array([1.0, 0.0]), ys=np.ones(2))
@example(ts=np.array([0.0, np.nan]), ys=np.ones(2))
@example(ts=np.zeros(0), ys=np.zeros((1, 0, 1)))
@example(ts=np.arange(3.0), ys=np.full(3, np.nan))
@example(ts=np.arange(3.0), ys=np.array([1.0, np.inf, 2.0]))
@example(ts=np.arange(2.0), ys=np.array(["1", "2"]))
@example(ts=np.arange(2.0), ys=np.array([True, False]))
@example(ts=np.arange(2), ys=np.arange(2))
def test_timeseries_arrays(ts, ys):
    out = refused_or_ok(lambda: bd.TimeSeries(ts, ys), "TimeSeries.ts", "TimeSeries.ys")
    if out is not None:
        _check_valid(out)


@FUZZ
@given(
    n=st.integers(1, 3),
    t=st.integers(1, 5),
    d=st.integers(1, 3),
    field=st.sampled_from(["mask", "treatments", "static"]),
    value=arrays(),
)
def test_timeseries_optional_arrays(n, t, d, field, value):
    ts = np.arange(t, dtype=float)
    ys = np.ones((n, t, d))
    out = refused_or_ok(lambda: bd.TimeSeries(ts, ys, **{field: value}), f"TimeSeries.{field}")
    if out is not None:
        _check_valid(out)


@FUZZ
@given(
    n=st.integers(1, 3),
    d=st.integers(1, 3),
    field=st.sampled_from(["names", "series_ids", "lengths"]),
    value=st.lists(st.integers(-3, 6), max_size=4),
    text=st.lists(st.text(string.ascii_letters, max_size=3), max_size=4),
)
def test_timeseries_labels(n, d, field, value, text):
    # Text `lengths` are left out: they raise numpy's "invalid literal for int()".
    value = text if field != "lengths" and text else value
    ts = np.arange(5.0)
    ys = np.ones((n, 5, d))
    out = refused_or_ok(lambda: bd.TimeSeries(ts, ys, **{field: value}), f"TimeSeries.{field}")
    if out is not None:
        _check_valid(out)
        assert len(out.names) == d and len(out.series_ids) == n
        assert np.all((out.lengths >= 1) & (out.lengths <= 5))


# ----------------------------------------------------------- long frames and CSV
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.sampled_from(["", "NA", "abc", "1.5", " 2", "nan", "inf", "1e400", "x,y"]),
    st.none(),
    st.booleans(),
)


@st.composite
def long_frames(draw):
    rows = draw(st.integers(0, 8))
    frame = {}
    if draw(st.booleans()):
        frame["series"] = draw(st.lists(st.sampled_from([0, 1, "a", "b"]), min_size=rows, max_size=rows))
    if draw(st.booleans()):
        times = st.one_of(st.floats(-2, 5), st.sampled_from([0.0, 1.0, 1.0, np.nan, np.inf, "t", None]))
        frame["time"] = draw(st.lists(times, min_size=rows, max_size=rows))
    for name in draw(st.lists(st.sampled_from(["y", "z", "u", "s"]), unique=True, max_size=3)):
        frame[name] = draw(st.lists(CELLS, min_size=rows, max_size=rows))
    return pd.DataFrame(frame)


ROLES = st.fixed_dictionaries(
    {},
    optional={
        "values": st.lists(st.sampled_from(["y", "z", "w"]), unique=True, max_size=2),
        "treatments": st.lists(st.sampled_from(["u", "q"]), unique=True, max_size=1),
        "static": st.lists(st.sampled_from(["s"]), max_size=1),
        "series": st.sampled_from([None, "series", "id"]),
        "time": st.sampled_from(["time", "t"]),
    },
)


@FUZZ
@given(df=long_frames(), roles=ROLES)
def test_from_pandas(df, roles):
    out = refused_or_ok(lambda: bd.TimeSeries.from_pandas(df, **roles), "from_pandas", "TimeSeries.")
    if out is not None:
        _check_valid(out)
        assert out.n_series <= max(len(df), 1)


@FUZZ
@given(df=long_frames())
def test_csv_round_trip(df):
    text = df.to_csv(index=False)
    assume(text.strip())
    frame = pd.read_csv(io.StringIO(text))
    out = refused_or_ok(lambda: bd.TimeSeries.from_pandas(frame), "from_pandas", "TimeSeries.")
    if out is not None:
        _check_valid(out)
        back = out.to_pandas()
        assert len(back) == int(out.lengths.sum())


# ------------------------------------------------------------------- bd.fit
@pytest.fixture(scope="module")
def small():
    return bd.TimeSeries(np.arange(8.0), np.linspace(1.0, 2.0, 16).reshape(2, 8, 1))


class _Reached(Exception):
    """Raised instead of running an engine: the arguments passed every check."""


@contextlib.contextmanager
def _no_engines():
    def refuse(*args, **kwargs):
        raise _Reached()

    with unittest.mock.patch.dict(fit_module.RUNNERS, {k: refuse for k in fit_module.RUNNERS}):
        yield


BAD_VALUES = st.one_of(
    st.integers(-3, 3),
    st.integers(10**12, 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["10", "", None, True, [1], {"a": 1}]),
)
OPTIONS = ["num_steps", "num_warmup", "num_samples", "num_chains", "num_particles", "chunk_size", "batch_size"]


@FUZZ
@given(
    method=st.one_of(
        st.sampled_from(["svi", "nuts", "blackjax-nuts", "SVI", "hmc", "", "nuts "]),
        st.integers(),
        st.none(),
    ),
    options=st.dictionaries(st.sampled_from(OPTIONS + ["learning_rat", "numsamples"]), BAD_VALUES, max_size=2),
)
def test_fit_refuses_bad_arguments_before_compiling(small, method, options):
    assume(options.get("batch_size") is not True)  # bool batch_size is accepted as 1
    model = bd.models.BayesianNeuralODE(dim=1, width=2, depth=1)
    names = ["method", *options]
    with _no_engines():
        try:
            refused_or_ok(
                lambda: bd.fit(model, small, method=method, key=jax.random.key(0), **options), *names
            )
        except _Reached:
            # Accepted: then every size is a sane positive integer (absurd sizes that
            # pass here are a documented choice: the engine would simply run long).
            for k, v in options.items():
                if k != "batch_size" or v is not None:
                    assert isinstance(v, int) and not isinstance(v, bool) and v >= 0, (k, v)


@FUZZ
@given(
    model=st.sampled_from([None, 3, "ode", [1]]),
    data=st.sampled_from([None, np.ones((2, 8, 1)), "data.csv", pd.DataFrame({"time": [0.0]})]),
    key=st.sampled_from([None, 0, "0", np.array([1, 2]), np.array([1, 2], dtype=np.uint32), 1.5]),
    which=st.sampled_from(["model", "data", "key"]),
)
def test_fit_refuses_wrong_types(small, model, data, key, which):
    good = dict(model=bd.models.BayesianNeuralODE(dim=1, width=2, depth=1), data=small, key=jax.random.key(0))
    bad = dict(model=model, data=data, key=key)
    kwargs = {**good, which: bad[which]}
    with _no_engines():
        try:
            refused_or_ok(
                lambda: bd.fit(kwargs["model"], kwargs["data"], method="svi", key=kwargs["key"]),
                which,
            )
        except _Reached:
            assert which == "key"  # a raw uint32 key pair is accepted


def test_fit_refuses_model_data_mismatch_before_compiling(small):
    with _no_engines(), pytest.raises(ValueError, match="dim"):
        bd.fit(bd.models.BayesianNeuralODE(dim=3), small, method="svi", key=jax.random.key(0))


# -------------------------------------------------------------- Prediction
@pytest.fixture(scope="module")
def pred():
    rng = np.random.default_rng(0)
    return bd.Prediction(rng.normal(size=(50, 2, 4, 1)), np.arange(4.0))


LEVELS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, 1e-300, 1 - 1e-16]),
)


@FUZZ
@given(level=LEVELS)
@example(level=float("nan"))
def test_interval_levels(pred, level):
    out = refused_or_ok(lambda: pred.interval(level), "level")
    if out is not None:
        lo, hi = out
        assert np.all(np.asarray(lo) <= np.asarray(hi))


@FUZZ
@given(qs=st.one_of(st.lists(st.floats(-1, 2), min_size=1, max_size=4), st.floats(-1, 2)))
def test_quantile_levels(pred, qs):
    out = refused_or_ok(lambda: pred.quantiles(qs), "q")
    if out is not None:
        assert np.all(np.isfinite(np.asarray(out)))


# ------------------------------------------------------------------ metrics
METRICS = {
    "coverage": bd.metrics.coverage,
    "crps": bd.metrics.crps,
    "rmse": bd.metrics.rmse,
    "nll": bd.metrics.nll,
    "interval_score": bd.metrics.interval_score,
    "interval_width": bd.metrics.interval_width,
    "pit": bd.metrics.pit,
    "calibration_curve": bd.metrics.calibration_curve,
    "calibration_summary": bd.calibration.calibration_summary,
}


@FUZZ
@given(
    name=st.sampled_from(sorted(METRICS)),
    truth=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4),
        elements=st.floats(allow_nan=True, allow_infinity=False),
    ),
)
@example(name="crps", truth=np.full((2, 4, 1), np.nan))
@example(name="coverage", truth=np.zeros((2, 4, 1)))
def test_metrics_shapes(pred, name, truth):
    out = refused_or_ok(lambda: METRICS[name](pred, truth), "truth")
    if out is not None:
        assert truth.shape == (2, 4, 1)


@pytest.mark.parametrize("name", sorted(set(METRICS) - {"calibration_summary", "interval_width"}))
def test_metrics_refuse_a_non_prediction(name):
    with pytest.raises(TypeError, match="pred"):
        METRICS[name](np.zeros((5, 2, 4, 1)), np.zeros((2, 4, 1)))


# ---------------------------------------------------------------- datasets
@FUZZ
@given(name=st.one_of(st.text(max_size=12), st.integers(), st.none()))
@example(name="hare-lynx")
@example(name="HARE_LYNX")
def test_unknown_dataset_names(name):
    assume(name not in bd.datasets.names())
    with pytest.raises(ValueError, match="unknown data set"):
        bd.datasets.load(name)


# ------------------------------------------------------------------ bd.load
FILES = ["bayesde.json", "posterior.nc", "params.eqx", "data.nc", "notes.txt"]


@FUZZ
@given(
    contents=st.dictionaries(
        st.sampled_from(FILES),
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"", b"{}", b"[]", b"null", b'{"format_version": 1}', b'{"format_version": "x"}']),
            st.builds(
                lambda d: json.dumps(d).encode(),
                st.dictionaries(
                    st.sampled_from(["format_version", "model", "checksums", "data", "method", "key_data"]),
                    st.one_of(st.integers(-1, 2), st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2)),
                ),
            ),
        ),
        max_size=5,
    )
)
def test_load_random_folder(contents):
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in contents.items():
            Path(tmp, name).write_bytes(data)
        refused_or_ok(
            lambda: bd.load(tmp), "bayesde", "load", errors=(ValueError, FileNotFoundError)
        )
        assert sorted(os.listdir(tmp)) == sorted(contents)  # loading never writes
