"""The posterior predictive, in one place: which draws, the query, the compiled
per-chunk function, the chunk size and the loop over chunks of draws.

The loop (`run_chunks`) takes a *placement*: where each chunk's inputs live and how its
outputs are put together. `OneDevice` is the default; `bd.distributed.ShardedPlacement`
lays each chunk out over a device mesh. Chunks, padding and keys are the same for every
placement, so the same key gives the same numbers on one device or many. ArviZ's
pointwise log-likelihood (`_arviz`) runs through the same loop.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import Predictive

from .._checks import check_int
from .._data import TimeSeries
from ..models._base import Query
from ._prediction import Prediction

__all__ = ["CHUNK_ELEMENTS", "chunk_size", "select_draws", "draw_index", "combine_chains", "all_draws",
           "build_query", "OneDevice", "run_chunks", "predict"]

#: Above this many numbers per chunk, the posterior predictive (and the pointwise
#: log-likelihood) is computed in chunks of draws, so that memory stays bounded.
CHUNK_ELEMENTS = 2**25


def chunk_size(n: int, ts_shape, dim: int) -> int:
    """Draws per chunk for `n` draws of `dim` values at times shaped `ts_shape`."""
    per_draw = int(np.prod(ts_shape)) * dim * 2
    return max(1, min(n, CHUNK_ELEMENTS // max(per_draw, 1)))


# ------------------------------------------------------------------ draws and query
def all_draws(samples: dict) -> dict:
    """Every draw of `{site: (chain, draw, ...)}` as `{site: (chain * draw, ...)}`."""
    return {k: np.reshape(np.asarray(v), (-1,) + np.shape(v)[2:]) for k, v in samples.items()}


def select_draws(samples: dict, num_samples: Optional[int], *, default: int):
    """`(draws, n)`: `num_samples` draws taken evenly from the posterior `samples`
    (every draw when `None`), flattened over chains. With no sampled site (every
    parameter a point estimate) `draws` is empty and `n` is `num_samples`, or `default`."""
    check_int("predict.num_samples", num_samples, optional=True)
    if not samples:
        return {}, int(num_samples or default)
    flat = all_draws(samples)
    total = next(iter(flat.values())).shape[0]
    if num_samples is None or num_samples >= total:
        return flat, total
    idx = draw_index(total, num_samples)
    return {k: v[idx] for k, v in flat.items()}, int(num_samples)


def draw_index(total: int, num_samples: Optional[int]) -> np.ndarray:
    """Which of `total` draws (flattened over chains) `select_draws` takes for
    `num_samples`: all of them, or `num_samples` evenly spaced."""
    if num_samples is None or num_samples >= total:
        return np.arange(total)
    return np.linspace(0, total - 1, num_samples).round().astype(int)


def combine_chains(post, num_samples: Optional[int], y, f):
    """The predictive draws `y` and noise-free means `f` of the draws `select_draws`
    took, combined across the posterior's chains as its engine says (`combine_draws`:
    pooled as they are, except for an ensemble that averages its members' quantiles)."""
    combine = getattr(post.method, "combine_draws", None)
    if combine is None or not post.samples or post.num_chains < 2:
        return y, f
    chain = draw_index(post.num_chains * post.num_draws, num_samples) // post.num_draws
    return combine(y, chain), (None if f is None else combine(f, chain))


def _query_times(ts, n: int) -> np.ndarray:
    ts = np.asarray(ts, dtype=float)
    if ts.ndim == 1:
        ts = np.broadcast_to(ts, (n, ts.shape[0])).copy()
    if ts.ndim != 2 or ts.shape[0] != n:
        raise ValueError(f"predict: ts has shape {ts.shape}; expected (T,) or ({n}, T) for the {n} series.")
    if not np.all(np.isfinite(ts)):
        raise ValueError("predict: ts holds NaN/inf; pass finite times.")
    if ts.shape[1] > 1 and np.any(np.diff(ts, axis=1) <= 0):
        i, j = (int(x) for x in np.argwhere(np.diff(ts, axis=1) <= 0)[0])
        raise ValueError(f"predict: ts of series {i} is not strictly increasing at index {j + 1}; sort the times.")
    return ts


def _query_treatments(treatments, shape) -> Optional[jnp.ndarray]:
    if treatments is None:
        return None
    n, t = shape
    tr = np.asarray(treatments, dtype=float)
    if tr.ndim == 2:
        tr = np.broadcast_to(tr, (n,) + tr.shape).copy()
    if tr.ndim != 3 or tr.shape[:2] != shape:
        raise ValueError(f"predict: treatments have shape {tr.shape}; expected ({n}, {t}, K).")
    return jnp.asarray(tr, dtype=jnp.zeros(()).dtype)


def build_query(model, ts, data: TimeSeries, treatments=None) -> Query:
    """The validated `Query` of `model` at times `ts` (`(T,)` or `(N, T)`) for `data`,
    with `treatments` (`(N, T, K)` or `(T, K)`) where the model takes them."""
    n = data.n_series
    ts = _query_times(ts, n)
    if not model.amortized:
        early = ts[:, 0] < data.ts[:, 0] - 1e-9
        if np.any(early):
            i = int(np.argmax(early))
            raise ValueError(
                f"predict: series {i} asks for t={ts[i, 0]:g}, before its first observation "
                f"(t={data.ts[i, 0]:g}); this model only predicts forward from there."
            )
    if model.needs_treatments and treatments is None:
        raise ValueError(
            "predict: this model needs the treatments to apply at the query times; "
            f"pass treatments=... shaped ({n}, {ts.shape[1]}, K)."
        )
    tr = _query_treatments(treatments, ts.shape)
    return Query(ts=jnp.asarray(ts, dtype=jnp.zeros(()).dtype), treatments=tr)


# ------------------------------------------------------------------ placement and loop
class OneDevice:
    """The default placement: every chunk on the default device, as it is."""

    def size(self, chunk: int) -> int:
        """The compiled number of draws of a chunk of `chunk` draws."""
        return chunk

    def shared(self, tree):
        """Inputs every chunk reads (data, query) where the chunks need them."""
        return tree

    def draws(self, tree):
        """One chunk's draws (leading axis: draw) where the chunk runs."""
        return tree

    def key(self, key):
        return key

    def compile(self, fn: Callable) -> Callable:
        return fn

    def assemble(self, parts):
        """Concatenate `[(chunk output, kept draws)]`, dropping the padding."""
        if len(parts) == 1 and parts[0][0].shape[0] == parts[0][1]:
            return parts[0][0]
        return jnp.concatenate([a[:k] for a, k in parts])


def run_chunks(draws: dict, n: int, chunk: int, step: Callable, placement=None) -> dict:
    """Run `step` over chunks of `n` draws and put the outputs together.

    **Arguments:**

    - `draws`: a PyTree of arrays `(n, ...)` (may be empty: then only `n` counts).
    - `n`, `chunk`: the number of draws and the draws per chunk.
    - `step`: `step(c, sub, size) -> {name: (size, ...)}`, the compiled work of chunk
      `c` on `sub`, the chunk's draws padded to `size` by repeating its last draw.
    - `placement`: where the chunks run (default `OneDevice()`).

    **Returns:** `{name: (n, ...)}`, the outputs of every chunk without the padding.
    """
    placement = OneDevice() if placement is None else placement
    size = placement.size(chunk)
    parts: dict = {}
    for c, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        idx = np.minimum(np.arange(start, start + size), stop - 1)
        sub = placement.draws(jax.tree.map(lambda v: v[idx], draws))
        for name, out in step(c, sub, size).items():
            parts.setdefault(name, []).append((out, stop - start))
    return {name: placement.assemble(p) for name, p in parts.items()}


# ------------------------------------------------------------------ predictive
_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def predictive_fn(post) -> Callable:
    """`fn(key, draws, batch, query, n) -> {"y_out", "f_out"}`: the compiled posterior
    predictive of `post` for one chunk (`n` static), built once per posterior."""
    if post in _FNS:
        return _FNS[post]
    model, params = post.model, {k: jnp.asarray(v) for k, v in post.params.items()}

    def program(batch, query):
        return model.program(batch, query)

    def run(key, samples, batch, query, n):
        prog = numpyro.handlers.substitute(program, data=params)
        sites = ["y_out", "f_out"]
        if samples:
            pred = Predictive(prog, posterior_samples=samples, return_sites=sites, parallel=True)
        else:
            pred = Predictive(prog, num_samples=n, return_sites=sites, parallel=True)
        out = pred(key, batch, query)
        return {k: v for k, v in out.items() if k in sites}

    _FNS[post] = fn = jax.jit(run, static_argnums=4)
    return fn


def _check_data(post, data) -> TimeSeries:
    data = post.data if data is None else data
    if not isinstance(data, TimeSeries):
        raise TypeError(f"predict: data must be a bd.TimeSeries, got {type(data).__name__}.")
    if data is not post.data:
        if not post.model.amortized:
            raise ValueError(
                f"predict: {type(post.model).__name__} has per-series parameters, so it predicts "
                "only the series it was fitted on; drop data=... or refit on the new series."
            )
        if data.dim != post.data.dim:
            raise ValueError(f"predict: data has {data.dim} value columns, the model was fitted on {post.data.dim}.")
    return data


#: A draw this many of the data's standard deviations from its median is a path that
#: diverged, not a forecast (standardised models see values of a few sds).
DIVERGED_SDS = 1e3


def warn_if_diverged(y, ts, data: TimeSeries) -> None:
    """Warn when predictive draws `y (S, N, T, D)` are not finite or lie more than
    `DIVERGED_SDS` of the observed values' sds from their median: the model's paths
    diverged (e.g. an exp readout or a drift that blows up over a long horizon), and a
    band read from such draws would be silently wrong. Names the first entry and the fix."""
    y = np.asarray(y)
    vals = np.where(data.mask, data.ys, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns
        centre, sd = np.nanmedian(vals, axis=(0, 1)), np.nanstd(vals, axis=(0, 1))
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    centre = np.where(np.isfinite(centre), centre, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(y) | (np.abs(y - centre) > DIVERGED_SDS * sd)
    if not bad.any():
        return
    draws = int(bad.any(axis=(1, 2, 3)).sum())
    _, i, j, d = (int(x) for x in np.argwhere(bad)[0])
    warnings.warn(
        f"predict: {draws} of {y.shape[0]} draws diverged (not finite, or more than "
        f"{DIVERGED_SDS:g} data sds from the data's median), first at series {i}, time "
        f"{ts[i, j]:.6g}, {data.names[d]!r}; intervals read from them are not a forecast. Try a shorter "
        "horizon, another model or family (LatentSDE: family='langevin'), or refit with "
        "another key and check post.info.",
        RuntimeWarning,
        stacklevel=_first_frame_outside_the_package(),
    )


def _first_frame_outside_the_package() -> int:
    """The `stacklevel` that points a warning raised in this package at the caller's line,
    however many of the package's frames lie between (`Posterior.predict`,
    `bd.effects.counterfactual`, `bd.backtest`, ...)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1  # the warning's own `warnings.warn` caller is level 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def predict(post, ts, *, key, num_samples=None, data=None, treatments=None, devices=None) -> Prediction:
    """The body of `Posterior.predict` (see there)."""
    data = _check_data(post, data)
    query = build_query(post.model, ts, data, treatments)
    draws, n = select_draws(post.samples, num_samples, default=post.num_draws)
    chunk = chunk_size(n, query.ts.shape, data.dim)
    placement = OneDevice()
    if devices is not None:
        from ..distributed import ShardedPlacement

        placement = ShardedPlacement(devices, n_series=data.n_series)
        if not placement.worthwhile(chunk):
            placement = OneDevice()
    fn = placement.compile(predictive_fn(post))
    batch, query_in = placement.shared(data.batch()), placement.shared(query)

    def step(c, sub, size):
        return fn(placement.key(jax.random.fold_in(key, c)), sub, batch, query_in, size)

    out = run_chunks(draws, n, chunk, step, placement)
    y, f = out["y_out"], out.get("f_out")
    if y.ndim == 3:
        y = y[..., None]
    warn_if_diverged(y, np.asarray(query.ts), data)
    y, f = combine_chains(post, num_samples, y, f)
    return Prediction(y, np.asarray(query.ts), f_samples=f, names=data.names, series_ids=data.series_ids)
