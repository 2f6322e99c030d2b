"""Export to ArviZ: an `InferenceData` that `az.loo`, `az.waic`, `az.compare`,
`az.plot_ppc`, `az.plot_trace` and `az.summary` accept as they are.

The observed site is `"y"` in every group that holds it (`observed_data`,
`posterior_predictive`, `log_likelihood`, `predictions`), with named dimensions and the
data's coordinates (series ids, times, value names).
"""

from __future__ import annotations

import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from .._checks import is_int
from ._predictive import all_draws, chunk_size, run_chunks

__all__ = [
    "to_inference_data",
    "posterior_dataset",
    "sample_stats_dataset",
    "pointwise_log_likelihood",
]

_ATTRS = {"inference_library": "numpyro", "creation_library": "bayesde"}


def _attrs() -> dict:
    from .._version import __version__

    return {**_ATTRS, "creation_library_version": __version__}


# ------------------------------------------------------------------ draws and stats
def posterior_dataset(samples: dict):
    """The posterior draws as an `xarray.Dataset` in ArviZ's layout: every site
    `(chain, draw, ...)`, with extra dimensions named `<site>_dim_<i>` (as ArviZ names
    them), so the same draws give the same dataset here, in `posterior.nc` and in
    `Posterior.summary()`.

    **Arguments:**

    - `samples`: `{site: array (chain, draw, ...)}`.

    **Returns:** an `xarray.Dataset` with integer `chain` and `draw` coordinates.
    """
    import xarray as xr

    variables, coords = {}, {}
    for k, v in samples.items():
        v = np.asarray(v)
        if v.ndim < 2:
            raise ValueError(
                f"to_arviz: posterior site {k!r} has shape {v.shape}; draws must be (chain, draw, ...)."
            )
        dims = ("chain", "draw") + tuple(f"{k}_dim_{i}" for i in range(v.ndim - 2))
        variables[k] = xr.Variable(dims, v)
        coords["chain"], coords["draw"] = np.arange(v.shape[0]), np.arange(v.shape[1])
        for i in range(v.ndim - 2):
            coords[f"{k}_dim_{i}"] = np.arange(v.shape[2 + i])
    return xr.Dataset(variables, coords=coords, attrs=_attrs())


def sample_stats_dataset(stats: dict):
    """MCMC statistics per draw (`diverging`, `lp`, `acceptance_rate`, `tree_depth`,
    `n_steps`, ArviZ's names) as an `xarray.Dataset` with dims `(chain, draw)`."""
    import xarray as xr

    variables, coords = {}, {}
    for k, v in stats.items():
        v = np.asarray(v)
        variables[k] = xr.Variable(("chain", "draw") + tuple(f"{k}_dim_{i}" for i in range(v.ndim - 2)), v)
        coords["chain"], coords["draw"] = np.arange(v.shape[0]), np.arange(v.shape[1])
    return xr.Dataset(variables, coords=coords, attrs=_attrs())


# ------------------------------------------------------------------ log-likelihood
class _NotPointwise(ValueError):
    pass


def _elementwise_log_prob(fn, value):
    """Log-density of every observed number of a sample site, not summed over its event
    dimensions, and where the site's own mask lets it into the likelihood."""
    mask = True
    while True:
        if isinstance(fn, dist.Independent):
            fn = fn.base_dist
        elif isinstance(fn, dist.MaskedDistribution):
            mask = jnp.logical_and(mask, fn._mask)
            fn = fn.base_dist
        else:
            break
    if fn.event_shape:
        raise _NotPointwise(
            f"the observation law of site 'y' is {type(fn).__name__} with event shape "
            f"{fn.event_shape}, not a law per value"
        )
    lp = fn.log_prob(value)
    mask = jnp.broadcast_to(jnp.asarray(mask, dtype=bool), lp.shape)
    return jnp.where(mask, lp, 0.0), mask


def _to_grid(lp, mask, shape):
    """Bring a site's elementwise log-likelihood to the data grid `(N, T, D)`. Extra axes
    (Monte Carlo paths of a latent SDE/CDE, in front of or right after the series axis)
    are averaged on the likelihood scale: `log mean_k p(y | path_k)`."""
    n, t, d = shape
    if lp.shape == shape:
        return lp, mask
    if lp.ndim > 3 and lp.shape[-3:] == shape:
        axes = tuple(range(lp.ndim - 3))
    elif lp.ndim > 3 and lp.shape[0] == n and lp.shape[-2:] == (t, d):
        axes = tuple(range(1, lp.ndim - 2))
    else:
        raise _NotPointwise(f"site 'y' has shape {lp.shape}, which does not map onto the data {shape}")
    k = int(np.prod([lp.shape[a] for a in axes]))
    return jax.scipy.special.logsumexp(lp, axis=axes) - jnp.log(k), jnp.all(mask, axis=axes)


def _log_likelihood_fn(post):
    model, params = post.model, {k: jnp.asarray(v) for k, v in post.params.items()}
    shape = post.data.ys.shape

    def one(key, sample, batch):
        prog = numpyro.handlers.substitute(model.program, data={**params, **sample})
        tr = numpyro.handlers.trace(numpyro.handlers.seed(prog, key)).get_trace(batch, None)
        if "y" not in tr:
            raise _NotPointwise("the model has no observed site 'y'")
        site = tr["y"]
        lp, mask = _elementwise_log_prob(site["fn"], site["value"])
        return _to_grid(lp, mask, shape)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def pointwise_log_likelihood(post, *, key=None):
    """The log-likelihood of every observed value under every posterior draw,
    `log p(y[i, t, d] | θ_s)`, computed by tracing the model's `"y"` site with NumPyro
    (SVI point parameters substituted, as in `Posterior.predict`).

    For models whose likelihood averages over latent paths inside the program (latent
    SDE/CDE), each value's likelihood is the Monte Carlo mean over those paths.

    **Arguments:**

    - `post`: a `bd.Posterior`.
    - `key`: key for the model's internal randomness (default: derived from the fit key).

    **Returns:** `(log_lik, included)`: `log_lik (chain, draw, N, T, D)` and the boolean
    `included (N, T, D)`, True where the value is observed and in the likelihood (values
    outside it hold 0 in `log_lik`).
    """
    data = post.data
    if key is None:
        key = jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(post.key_data)), 2)
    c, d = post.num_chains, post.num_draws
    total = c * d
    # Each draw's key rides along with its draw through the chunks (padding included).
    draws = {"sample": {k: jnp.asarray(v) for k, v in all_draws(post.samples).items()},
             "key": jax.random.split(key, total)}
    fn = _log_likelihood_fn(post)
    batch = data.batch()

    def step(_, sub, size):
        lp, m = fn(sub["key"], sub["sample"], batch)
        return {"lp": lp, "mask": m}

    out = run_chunks(draws, total, chunk_size(total, data.ts.shape, data.dim), step)
    lp = np.asarray(out["lp"]).reshape((c, d) + data.ys.shape)
    included = np.asarray(data.mask, dtype=bool) & np.all(np.asarray(out["mask"]), axis=0)
    return np.where(included, lp, 0.0), included


# ------------------------------------------------------------------ layouts
def _coord_values(values):
    values = list(values)
    if all(is_int(v) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray([str(v) for v in values], dtype=object)


def _shared_times(ts) -> bool:
    ts = np.asarray(ts)
    return bool(np.all(ts == ts[:1]))


class _Layout:
    """Where each number of `y` goes. `grid`: dims `(series, time, variable)`; `time` is
    the times when every series shares them, else dims `(series, time_index, variable)`
    with a 2-D `time` coordinate. `obs`: one dim `obs` over the observed values only,
    with `series`, `time`, `variable` (and `time_index`) coordinates along it."""

    def __init__(self, series_ids, names, ts, included: Optional[np.ndarray]):
        self.series = _coord_values(series_ids)
        self.names = _coord_values(names)
        self.ts = np.asarray(ts, dtype=float)
        t = self.ts.shape[1]
        self.included = included
        self.obs = included is not None and not bool(np.all(included))
        if self.obs:
            si, ti, di = np.nonzero(included)
            self.index = (si, ti, di)
            self.dims = ("obs",)
            self.coords = {
                "obs": np.arange(len(si)),
                "series": ("obs", self.series[si]),
                "time": ("obs", self.ts[si, ti]),
                "time_index": ("obs", ti.astype(np.int64)),
                "variable": ("obs", self.names[di]),
            }
        elif _shared_times(self.ts):
            self.dims = ("series", "time", "variable")
            self.coords = {"series": self.series, "time": self.ts[0], "variable": self.names}
        else:
            self.dims = ("series", "time_index", "variable")
            self.coords = {
                "series": self.series,
                "time_index": np.arange(t),
                "variable": self.names,
                "time": (("series", "time_index"), self.ts),
            }

    def take(self, x):
        """`x (..., N, T, D)` in this layout."""
        x = np.asarray(x)
        if self.obs:
            si, ti, di = self.index
            return x[..., si, ti, di]
        return x

    def dataset(self, x, *, draws: bool):
        import xarray as xr

        x = self.take(x)
        dims = (("chain", "draw") if draws else ()) + self.dims
        coords = dict(self.coords)
        if draws:
            coords["chain"], coords["draw"] = np.arange(x.shape[0]), np.arange(x.shape[1])
        return xr.Dataset({"y": xr.Variable(dims, x)}, coords=coords, attrs=_attrs())


def _by_chain(x, c, d):
    """Predictive draws `(S, ...)` as `(chain, draw, ...)`: the posterior's chains when
    there is one draw per posterior draw, else one chain."""
    x = np.asarray(x)
    s = x.shape[0]
    return x.reshape((c, d) + x.shape[1:]) if s == c * d else x[None]


def _same_times(prediction, data) -> bool:
    ts = np.asarray(prediction.ts)
    return ts.shape == data.ts.shape and bool(np.allclose(ts, data.ts, rtol=1e-6, atol=1e-9))


def to_inference_data(post, prediction=None, *, log_likelihood: bool = True):
    """See `Posterior.to_arviz`."""
    import arviz as az
    import xarray as xr

    data = post.data
    c, d = post.num_chains, post.num_draws
    groups = {}
    if post.samples:
        groups["posterior"] = posterior_dataset(post.samples)
    if post.sample_stats:
        groups["sample_stats"] = sample_stats_dataset(post.sample_stats)

    lp, included = None, np.asarray(data.mask, dtype=bool)
    if log_likelihood:
        try:
            # `included` also drops values the model leaves out of its likelihood (e.g.
            # the first row of a one-step-ahead model), from every group alike.
            lp, included = pointwise_log_likelihood(post)
        except _NotPointwise as e:
            warnings.warn(
                f"to_arviz: no log_likelihood group ({e}); az.loo/az.waic need a per-value "
                "likelihood at the observed site 'y'.",
                RuntimeWarning,
                stacklevel=3,
            )
    layout = _Layout(data.series_ids, data.names, data.ts, included)
    if lp is not None:
        groups["log_likelihood"] = layout.dataset(lp, draws=True)

    if prediction is not None and _same_times(prediction, data):
        in_sample, out_of_sample = prediction, None
    else:
        treatments = data.treatments if post.model.needs_treatments else None
        in_sample = post.predict(data.ts, key=post.predictive_key(), treatments=treatments)
        out_of_sample = prediction
    groups["posterior_predictive"] = layout.dataset(_by_chain(in_sample.samples, c, d), draws=True)
    groups["observed_data"] = layout.dataset(np.asarray(data.ys), draws=False)
    groups["constant_data"] = xr.Dataset(
        {"ts": xr.Variable(("series", "time_index"), np.asarray(data.ts))},
        coords={"series": layout.series, "time_index": np.arange(data.n_times)},
        attrs=_attrs(),
    )
    if out_of_sample is not None:
        ts = np.asarray(out_of_sample.ts)
        out = _Layout(out_of_sample.series_ids, out_of_sample.names, ts, None)
        groups["predictions"] = out.dataset(_by_chain(out_of_sample.samples, c, d), draws=True)
        groups["predictions_constant_data"] = xr.Dataset(
            {"ts": xr.Variable(("series", "time_index"), ts)},
            coords={"series": out.series, "time_index": np.arange(ts.shape[1])},
            attrs=_attrs(),
        )
    return az.InferenceData(**groups)
