"""`TimeSeries`: construction, validation messages, split, pandas round trip."""

import sys

import numpy as np
import pandas as pd
import pytest

import bayesde as bd


def test_shapes_and_shared_times():
    ys = np.arange(12.0).reshape(2, 3, 2)
    data = bd.TimeSeries([0.0, 1.0, 2.5], ys)
    assert data.ts.shape == (2, 3) and data.shape == (2, 3, 2)
    assert data.mask.all()
    assert np.array_equal(data.ts[1], [0.0, 1.0, 2.5])


def test_nan_means_missing_and_explicit_mask():
    ys = np.array([[[1.0], [np.nan], [3.0]]])
    data = bd.TimeSeries([0, 1, 2], ys)
    assert data.mask[0, :, 0].tolist() == [True, False, True]
    masked = bd.TimeSeries([0, 1, 2], np.ones((1, 3, 1)), mask=np.array([[[True], [True], [False]]]))
    assert np.isnan(masked.ys[0, 2, 0])
    b = masked.batch()
    assert float(b.ys[0, 2, 0]) == 0.0 and not bool(b.mask[0, 2, 0])


@pytest.mark.parametrize(
    "ts, ys, kwargs, message",
    [
        (
            [[0, 1, 2], [0, np.nan, 2]],
            np.ones((2, 3, 1)),
            {},
            "TimeSeries.ts: series 1 has a non-finite time (nan) at time index 1; times must be "
            "finite, so drop that row or fill in its time.",
        ),
        (
            [[0, 1, 2], [0, 2, 2]],
            np.ones((2, 3, 1)),
            {},
            "TimeSeries.ts: series 1 is not strictly increasing at time index 2 (t=2 after t=2); "
            "sort the times within each series and merge duplicates.",
        ),
        (
            [0, 1, 2],
            np.ones((2, 4, 1)),
            {},
            "TimeSeries.ts: shape (2, 3) does not match ys (2, 4, 1); expected (4,) or (2, 4).",
        ),
        (
            [],
            np.ones((2, 0, 1)),
            {},
            "TimeSeries.ys: empty shape (2, 0, 1); provide at least one series, one time point "
            "and one dimension.",
        ),
        (
            [0, 1],
            np.array([["a", "b"]], dtype=object),
            {},
            "TimeSeries.ys: dtype object is not numeric; pass values as floats, with NaN for "
            "missing values.",
        ),
        (
            [0, 1],
            np.array([[[1.0], [np.inf]]]),
            {},
            "TimeSeries.ys: series 0 has an infinite value at time index 1, dim 0; use NaN (or "
            "mask=False) for a missing value.",
        ),
        (
            [0, 1],
            np.full((1, 2, 1), np.nan),
            {},
            "TimeSeries.ys: every value is missing; provide at least one observed value.",
        ),
        (
            [0, 1],
            np.ones((1, 2, 1)),
            {"treatments": np.ones((1, 3, 1))},
            "TimeSeries.treatments: shape (1, 3, 1) does not match ys (1, 2, 1); expected (1, 2, K).",
        ),
        (
            [0, 1],
            np.ones((2, 2, 1)),
            {"static": np.array([[1.0], [np.nan]])},
            "TimeSeries.static: series 1 has a non-finite value in column 0; fill or drop it.",
        ),
        (
            [0, 1],
            np.ones((1, 2, 1)),
            {"mask": np.ones((1, 2, 1))},
            "TimeSeries.mask: dtype float64 is not bool; pass a boolean array with True where a "
            "value is observed.",
        ),
    ],
)
def test_validation_messages(ts, ys, kwargs, message):
    with pytest.raises(ValueError) as e:
        bd.TimeSeries(ts, ys, **kwargs)
    assert str(e.value) == message


def test_split_history_and_future():
    data = bd.TimeSeries([[0, 1, 2, 3], [0, 0.5, 2.5, 3.5]], np.arange(8.0).reshape(2, 4, 1))
    hist, fut = data.split(at=2.0)
    assert hist.ts[0].tolist() == [0, 1, 2] and hist.lengths.tolist() == [3, 2]
    assert fut.lengths.tolist() == [1, 2]
    assert fut.ts[1].tolist() == [2.5, 3.5]
    assert fut.ys[1, :, 0].tolist() == [6.0, 7.0]
    # the padded entry of series 0 is missing and after its last real time
    assert not fut.mask[0, 1].any() and fut.ts[0, 1] > fut.ts[0, 0]
    with pytest.raises(ValueError, match="series 0 has no times in the future for at=10"):
        data.split(at=10.0)


def test_pandas_round_trip_irregular():
    df = pd.DataFrame(
        {
            "series": ["a", "a", "a", "b", "b"],
            "time": [0.0, 1.0, 3.0, 0.5, 2.0],
            "value": [1.0, np.nan, 3.0, 4.0, 5.0],
            "dose": [0.0, 1.0, 0.0, 1.0, 1.0],
        }
    )
    data = bd.TimeSeries.from_pandas(df, treatments=["dose"])
    assert data.shape == (2, 3, 1) and data.series_ids == ["a", "b"]
    assert data.lengths.tolist() == [3, 2]
    back = data.to_pandas()
    pd.testing.assert_frame_equal(back[["series", "time", "value", "dose"]], df)


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (
            {"series": [0, 0], "time": [0.0, 1.0], "value": [1.0, "oops"]},
            {},
            "from_pandas: column 'value' row 1 holds 'oops', which is not a number; fix or empty that cell.",
        ),
        (
            {"series": [0, 0, 0], "time": [0.0, 2.0, 1.0], "value": [1.0, 2.0, 3.0]},
            {},
            "from_pandas: column 'time' row 2: unsorted time 1 in series 0 (previous 2); sort by "
            "time within each series and merge duplicate times.",
        ),
        (
            {"series": [0, 0], "time": [1.0, 1.0], "value": [1.0, 2.0]},
            {},
            "from_pandas: column 'time' row 1: duplicate time 1 in series 0 (previous 1); sort by "
            "time within each series and merge duplicate times.",
        ),
        (
            {"series": [0, 0], "t": [0.0, 1.0], "value": [1.0, 2.0]},
            {},
            "from_pandas: column 'time' (time) not found; the frame has columns ['series', 't', 'value'].",
        ),
    ],
)
def test_from_pandas_errors(frame, kwargs, message):
    with pytest.raises(ValueError) as e:
        bd.TimeSeries.from_pandas(pd.DataFrame(frame), **kwargs)
    assert str(e.value) == message


def test_bundled_hare_lynx_loads_offline():
    data = bd.datasets.load("hare_lynx")
    assert data.shape == (1, 21, 2) and data.names == ["hare", "lynx"]
    assert data.ys[0, 0].tolist() == [30.0, 4.0] and data.ts[0, -1] == 20.0
    assert "Hudson" in bd.datasets.card("hare_lynx")
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        bd.datasets.load("nope")



def test_nile_is_read_from_the_shipped_csv():
    data = bd.datasets.load("nile")
    y = data.ys[0, :, 0]
    # Cobb (1978) / Durbin & Koopman (2001): 1871-1970, mean 919.35, min 456 (1913),
    # max 1370 (1879), the drop after 1898.
    assert data.shape == (1, 100, 1) and data.series_ids == ["aswan"]
    assert y[:4].tolist() == [1120.0, 1160.0, 963.0, 1210.0] and y[-1] == 740.0
    assert y.mean() == pytest.approx(919.35) and (y.min(), y.max()) == (456.0, 1370.0)
    assert (y[42], y[8], y[27], y[28]) == (456.0, 1370.0, 1100.0, 774.0)
    assert "statsmodels" not in sys.modules


@pytest.mark.parametrize("name", ["hare_lynx", "co2", "nile", "theoph"])
def test_real_data_cards_name_their_file_and_its_hash(name):
    import hashlib
    import re
    from pathlib import Path

    card = bd.datasets.card(name)
    (csv,) = set(re.findall(r"`datasets/(\w+\.csv)`", card))
    raw = (Path(__file__).resolve().parents[1] / "datasets" / csv).read_bytes()
    hashes = re.findall(r"`([0-9a-f]{64}|[0-9a-f]{32})`", card)
    assert hashes, f"the {name} card gives no sha256/MD5 of {csv}"
    for h in hashes:
        algo = hashlib.sha256 if len(h) == 64 else hashlib.md5
        assert algo(raw).hexdigest() == h, f"{csv} changed but its card still says {h}"
    assert re.search(r"(?i)licen[cs]e|public domain|GPL", card), f"the {name} card states no licence"

def test_lotka_volterra_simulator_is_deterministic(getkey):
    key = getkey()
    a = bd.datasets.lotka_volterra(n_series=2, n_times=10, key=key)
    b = bd.datasets.lotka_volterra(n_series=2, n_times=10, key=key)
    assert np.array_equal(a.ys, b.ys)
    assert a.truth["alpha"] == pytest.approx(bd.datasets.LV_TRUTH["alpha"])
    # the noise is multiplicative with the stated scale
    resid = np.log(a.ys / a.truth["f"])
    assert 0.05 < resid.std() < 0.15
