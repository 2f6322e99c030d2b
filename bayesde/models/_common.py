"""What every model shares, written once: the standardisation and time scaling fitted
from the data, grid refinement and interpolation, the Gaussian KL, the held-back
forecast tails that fit a forecast's spread (which series, which part of them, the
walk a forecast adds and the score), and the small checks that `adapt` and
`__check_init__` run."""

from __future__ import annotations

from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_int, check_real
from .._data import TIME_UNITS, TimeSeries
from ..solvers._grid import interp_linear, refine_grid, time_grid

__all__ = [
    "Scaling",
    "fit_scaling",
    "time_span",
    "median_spacing",
    "first_observed",
    "check_positive",
    "check_observed",
    "check_adapted",
    "gaussian_kl",
    "held_back",
    "held_back_rows",
    "holdout_split",
    "holdout_stretches",
    "last_observed_time",
    "random_walk",
    "two_draw_crps",
    "sample_log_score",
    "refine_grid",
    "spacing_ratio",
    "time_grid",
    "interp_linear",
    "compiled",
]


@eqx.filter_jit
def compiled(fn, *args):
    """`fn(*args)` as one compiled call, cached per `fn` (a model's method: its arrays are
    arguments, its other fields part of the key) and the shapes of `args` (ints and
    tuples among them are constants).

    A model's program runs eagerly several times before a fit compiles anything: NumPyro
    traces it to find the sites, to initialise the guide and to check the initial point's
    density and gradient. Run op by op, a solver's scans compile anew on every one of those
    passes; behind `compiled` its numerical core compiles once (and once more for its
    gradient). Inside a traced program the call is inlined, so the fit's own program is
    unchanged. `fn` must not contain NumPyro sites: the handlers do not see into it.
    """
    return fn(*args)


class Scaling(NamedTuple):
    """Data-derived constants of a model: the value of dimension `d` is used as
    `(g(y_d) − loc[d]) / scale[d]` (`g = log` for models with a log transform, else the
    identity), and model time is `(t − t_ref) / time_scale`."""

    loc: np.ndarray
    scale: np.ndarray
    t_ref: float
    time_scale: float


def time_span(data: TimeSeries) -> float:
    """The longest series: `max_i (t_i,last − t_i,first)` over the real (unpadded) times."""
    last = data.ts[np.arange(data.n_series), data.lengths - 1]
    return float(np.max(last - data.ts[:, 0]))


def _gaps(data: TimeSeries) -> np.ndarray:
    """The positive gaps between consecutive real (unpadded) times of every series."""
    real = np.arange(data.n_times)[None, 1:] < data.lengths[:, None]
    gaps = np.diff(data.ts, axis=1)[real]
    return gaps[gaps > 0]


def median_spacing(data: TimeSeries) -> float:
    """The median gap between consecutive real (unpadded) times of every series (0 when
    no series has two times)."""
    gaps = _gaps(data)
    return float(np.median(gaps)) if gaps.size else 0.0


def spacing_ratio(data: TimeSeries) -> float:
    """The mean gap between consecutive real (unpadded) times of every series over the
    median gap (`median_spacing`): 1 for evenly spaced rows, about 1.4 for times drawn at
    random, more where a few long gaps stand among short ones (1 when no series has two
    times)."""
    gaps = _gaps(data)
    return float(np.mean(gaps) / np.median(gaps)) if gaps.size else 1.0


def fit_scaling(data: TimeSeries, *, log: bool = False, dtype=np.float32,
                steps_per_unit: Optional[float] = None) -> Scaling:
    """Standardisation and time scale fitted from `data`.

    `loc`, `scale` are the mean and standard deviation of `g(y)` over every observed
    entry of each dimension (`loc = 0`, `scale = 1` where they are undefined);
    `t_ref` is the earliest time of any series and `time_scale` the longest series'
    span (`time_span`; 1 if zero), so that model time runs over about `[0, 1]`.

    **Arguments:**

    - `data`: the training series.
    - `log`: standardise `log y` instead of `y` (the caller checks that `y > 0`).
    - `dtype`: the NumPy dtype of `loc` and `scale`.
    - `steps_per_unit`: when given, one unit of model time holds at most this many
      median observation spacings (`median_spacing`): a long series is then many time
      units long, so that networks of O(1) outputs can follow its changes (with the span
      as the unit, a cycle of a 300-point series passes in 0.04 units).
    """
    g = np.log(np.where(data.mask, data.ys, 1.0)) if log else data.ys
    g = np.where(data.mask, g, np.nan)
    loc = np.nanmean(g, axis=(0, 1))
    scale = np.nanstd(g, axis=(0, 1))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    loc = np.where(np.isfinite(loc), loc, 0.0)
    span = time_span(data)
    time_scale = span if span > 0 else 1.0
    if steps_per_unit is not None and median_spacing(data) > 0:
        time_scale = min(time_scale, steps_per_unit * median_spacing(data))
    return Scaling(
        loc=np.asarray(loc, dtype=dtype),
        scale=np.asarray(scale, dtype=dtype),
        t_ref=float(data.ts[:, 0].min()),
        time_scale=time_scale,
    )


#: The calendar cycles `calendar_periods` looks for, in days: a year and a day.
CALENDAR_CYCLES = {"year": 365.25, "day": 1.0}


def calendar_periods(data: TimeSeries) -> tuple[float, ...]:
    """The calendar cycles dated data can show, as periods in the data's time unit.

    Dates carry a season a model cannot learn from the values alone over a long
    forecast: where the data were taken in the year (or the day). A cycle counts when
    the series are sampled at least four times per cycle (median spacing) and span at
    least two of them. Plain numbers (`time_unit` None) carry no calendar: `()`."""
    if data.time_unit is None:
        return ()
    spacing, span = median_spacing(data), time_span(data)
    periods = []
    for days in CALENDAR_CYCLES.values():
        period = days / TIME_UNITS[data.time_unit]
        if 0 < spacing <= period / 4 and span >= 2 * period:
            periods.append(float(period))
    return tuple(periods)


def season_features(t, periods: tuple[float, ...], offset: float = 0.0):
    """`[sin 2π(offset + t)/P, cos 2π(offset + t)/P]` for each period `P`, on a new last
    axis of `t` (`(*t.shape, 2·len(periods))`). `offset` is a Python float, so that a
    large time origin keeps its precision: pass `t_ref mod P`-style offsets through it."""
    t = jnp.asarray(t)
    phases = [2 * np.pi * ((offset % P) + t) / P for P in periods]
    return jnp.stack([f(ph) for ph in phases for f in (jnp.sin, jnp.cos)], axis=-1)


def first_observed(data: TimeSeries, log: bool) -> np.ndarray:
    """Per-series first observed value of each dimension, `(N, D)` (of `log y` when
    `log`; the dimension's mean where a series never observes it)."""
    ys = np.log(data.ys) if log else data.ys
    first = np.empty((data.n_series, data.dim))
    col_mean = np.nanmean(np.where(data.mask, ys, np.nan), axis=(0, 1))
    for i in range(data.n_series):
        for d in range(data.dim):
            idx = np.flatnonzero(data.mask[i, :, d])
            first[i, d] = ys[i, idx[0], d] if len(idx) else col_mean[d]
    return first


def check_positive(data: TimeSeries, owner: str, fix: str) -> None:
    """Refuse a non-positive observed value, naming its index and `fix`."""
    bad = data.mask & ~(np.where(data.mask, data.ys, 1.0) > 0)
    if bad.any():
        i, t, d = (int(x) for x in np.argwhere(bad)[0])
        raise ValueError(
            f"{owner} needs positive values, but ys[{i}, {t}, {d}] = {data.ys[i, t, d]:g}; {fix}."
        )


def check_observed(data: TimeSeries, owner: str) -> None:
    """Refuse a value column that no series ever observes."""
    counts = data.mask.sum(axis=(0, 1))
    if np.any(counts == 0):
        d = int(np.argmax(counts == 0))
        raise ValueError(
            f"{owner}: value column {d} ({data.names[d]!r}) is never observed; drop it "
            "from the TimeSeries."
        )


def check_adapted(model, *fields: str) -> None:
    """Refuse to run a program before `adapt` filled in the data-derived `fields`."""
    if any(getattr(model, f) is None for f in fields):
        raise ValueError(
            f"{type(model).__name__}: the model has not been adapted to data; fit it with "
            "bd.fit(model, data, ...) or call model.adapt(data) first."
        )


def check_holdout(owner: str, holdout, every, turns_off: str) -> None:
    """Refuse a held-back tail that is not a fraction in `[0, 1)` (`forecast_holdout`;
    0 turns off what it fits, named by `turns_off`) or a series stride that is not a
    positive integer (`forecast_series_every`): the two fields every model with
    held-back tails (`held_back`, `holdout_split`) shares."""
    check_int(f"{owner}.forecast_series_every", every)
    check_real(f"{owner}.forecast_holdout", holdout, 0.0, 1.0, open_high=True, noun="a fraction",
               hint=f"0 turns {turns_off} off")


def gaussian_kl(q_mean, q_std, p_mean, p_std, axis: Optional[int] = -1):
    """`KL(N(q_mean, q_std²) ‖ N(p_mean, p_std²))` of diagonal Gaussians, summed over
    `axis` (every axis with `axis=None`):
    `Σ log(p_std / q_std) + (q_std² + (q_mean − p_mean)²) / (2 p_std²) − ½`."""
    return jnp.sum(
        jnp.log(p_std / q_std) + (q_std**2 + (q_mean - p_mean) ** 2) / (2 * p_std**2) - 0.5,
        axis=axis,
    )


def held_back(index, n: int, every: int, fold=None):
    """Whether the series at `index` (NumPy or JAX integers) of `n` have their tails held
    back to fit a forecast's spread: every `every`-th (`index % every == fold`, the first
    `n // every` of them, so that every fold holds back as many; `fold` defaults to
    `every − 1`, for which that is every such series), or every one when there are fewer
    than `every` series (a single record). `fold` may be traced (a cross-fitted ensemble
    member's, `held_back_rows`)."""
    if n < every:
        return index >= 0
    fold = every - 1 if fold is None else fold
    return (index % every == fold) & (index // every < n // every)


def held_back_rows(n: int, every: int, fold=None):
    """The indices of the series `held_back` picks, ascending: `n // every` of them (all `n`
    for a single record or fewer than `every` series); integers, traced if `fold` is."""
    if n < every:
        return np.arange(n)
    fold = every - 1 if fold is None else fold
    return fold + every * np.arange(n // every)


def holdout_split(ts, mask, holdout, n: int, every: int):
    """`(head, tail)` masks `(B, T, D)` of `mask` (`ts (B, T)`): the tail of each series is
    the last `holdout` of its observed span (only where the head has observations), the
    head the rest. With fewer than `every` of them (`n` series), where every series is held
    back (`held_back`), the tail is the last `holdout / every`: the same share of the data
    as one series in `every` holding back `holdout` of its span, so that a single record
    still trains on its recent past (its level, if it trends)."""
    fraction = holdout / (every if n < every else 1)
    seen = jnp.any(mask, axis=-1)  # (B, T)
    big = jnp.finfo(ts.dtype).max
    t_first = jnp.min(jnp.where(seen, ts, big), axis=1)
    t_end = jnp.max(jnp.where(seen, ts, -big), axis=1)
    t_cut = t_first + (1.0 - fraction) * (t_end - t_first)
    head = mask & (ts <= t_cut[:, None])[..., None]
    tail = mask & (ts > t_cut[:, None])[..., None] & jnp.any(head, axis=(1, 2))[:, None, None]
    return head, tail


_MIN_STRETCH_HEAD = 8  # rows of history an earlier stretch's forecast starts from, at least


def holdout_stretches(T: int, holdout: float, every: int, stretches: int, window: Optional[int]):
    """The earlier stretches a single record (fewer than `every` series) holds back beside its
    tail, as static row ranges of its `T` rows: `(head, length, starts)`, each stretch the
    `length` rows from `start` on, forecast from the `head` rows before it. The record is cut
    into `stretches` equal blocks of rows; every block but the last (whose end is the tail
    `holdout_split` holds back) holds back its last `length = ⌈T·holdout/every⌉` rows, the
    rows a tail of that share of the span has when the rows are evenly spaced. `head` is the
    `window` (all the rows before the first stretch without one), and at most the rows
    before the first stretch, so that every stretch reads as many. A block whose stretch
    would have fewer than 8 rows before it holds nothing back. `(0, 0, ())` when there is
    nothing to hold back."""
    if stretches <= 1 or holdout <= 0:
        return 0, 0, ()
    length = int(np.ceil(T * holdout / every))  # at least 1: holdout > 0
    starts = [int(round((s + 1) * T / stretches)) - length for s in range(stretches - 1)]
    starts = tuple(b for b in starts if b >= _MIN_STRETCH_HEAD)
    if not starts:
        return 0, 0, ()
    head = starts[0] if window is None else min(window, starts[0])
    return head, length, starts


def last_observed_time(ts, mask):
    """Each series' last time with an observation: `ts (B, T)`, `mask (B, T, D)` -> `(B,)`."""
    seen = jnp.any(mask, axis=-1)
    j_last = ts.shape[1] - 1 - jnp.argmax(seen[:, ::-1], axis=1)
    return jnp.take_along_axis(ts, j_last[:, None], axis=1)[:, 0]


def random_walk(key, t_last, qs, dim: int):
    """A standard random walk per series and dimension started at `t_last (B,)`, at the
    sorted query times `qs (B, T')`: `W(max(q, t_last) − t_last)`, zero at and before
    `t_last`. Returns `(B, T', dim)`; times in whatever unit its variance is per."""
    knots = jnp.concatenate([t_last[:, None], jnp.maximum(qs, t_last[:, None])], axis=1)
    steps = jnp.sqrt(jnp.maximum(jnp.diff(knots, axis=1), 0.0))[..., None]  # (B, T', 1)
    return jnp.cumsum(steps * jax.random.normal(key, qs.shape + (dim,), qs.dtype), axis=1)


def two_draw_crps(x1, x2, y, where):
    """The CRPS of a forecast from two independent draws `x1`, `x2` at `y`,
    `½(|x₁ − y| + |x₂ − y|) − ½|x₁ − x₂|` (unbiased), averaged over the entries `where`."""
    crps = 0.5 * (jnp.abs(x1 - y) + jnp.abs(x2 - y)) - 0.5 * jnp.abs(x1 - x2)
    return jnp.sum(jnp.where(where, crps, 0.0)) / jnp.maximum(jnp.sum(where), 1)


def sample_log_score(draws, y, where):
    """The log score (minus the log density at `y`) of a Gaussian forecast known only by
    `M ≥ 4` draws `(M, ...)`, averaged over the entries `where`: the Gaussian with the
    draws' mean and variance `s²·(M − 1)/(M − 3)` (`s²` their unbiased variance). With `s²`
    itself (the Dawid–Sebastiani score) the score is best for a forecast about 18% too
    wide at `M = 8`, because `1/s²` overestimates the inverse variance; the factor makes
    that inverse unbiased, and the best spread is the forecast's own. Like every log
    score, and unlike the CRPS, it is steep in the spread: a forecast too narrow for its
    errors pays for their square."""
    m = draws.shape[0]
    v = jnp.var(draws, axis=0, ddof=1) * (m - 1) / (m - 3)
    score = 0.5 * jnp.log(2 * jnp.pi * v) + 0.5 * (y - jnp.mean(draws, axis=0)) ** 2 / v
    return jnp.sum(jnp.where(where, score, 0.0)) / jnp.maximum(jnp.sum(where), 1)


def as_choice(value, base: type, table: dict, owner: str):
    """Turn a name into its object once, at the edge: `value` is an instance of `base`
    (returned as is) or a key of `table` (name -> class, built with no arguments).
    `owner` (e.g. `"LatentSDE.family"`) names the field in the error."""
    if isinstance(value, base):
        return value
    if isinstance(value, str) and value in table:
        return table[value]()
    raise ValueError(
        f"{owner}: {value!r} is not one of {list(table)}; pass one of these names or a "
        f"{base.__name__} object."
    )
