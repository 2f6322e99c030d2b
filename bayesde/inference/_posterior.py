"""`Posterior`: the result of `fit`, and the door to the posterior predictive."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import Predictive

from .._data import TimeSeries
from ..models._base import AbstractModel, Query
from ._forecast import QUANTILES, forecast
from ._prediction import Prediction

__all__ = ["Posterior"]

# Above this many predictive numbers per chunk, the predictive is computed in chunks of
# posterior draws so that memory stays bounded.
_CHUNK_ELEMENTS = 2**25


class Posterior:
    """A fitted model: posterior draws, point-estimated parameters and diagnostics.

    - `samples`: dict of the model's latent sites, each `(chain, draw, ...)`.
    - `params`: dict of point estimates (SVI: guide and network parameters).
    - `sample_stats`: MCMC statistics per draw (`diverging`, `tree_depth`, ...).
    - `loss`: SVI loss per step (`None` for MCMC).
    - `model`: the model adapted to the training data; `data`: the training data.
    - `method`: the engine configuration; `info`: timings and engine details.
    """

    def __init__(self, model: AbstractModel, data: TimeSeries, method, result, *, key_data, method_name):
        self.model = model
        self.data = data
        self.method = method
        self.method_name = method_name
        self.samples = result.samples
        self.params = result.params
        self.sample_stats = result.sample_stats
        self.loss = result.loss
        self.info = result.info
        self._key_data = np.asarray(key_data, dtype=np.uint32)
        self._predictive = None
        self._arviz = None

    # ------------------------------------------------------------- counting
    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0] if self.samples else 1

    @property
    def num_draws(self) -> int:
        if self.samples:
            return next(iter(self.samples.values())).shape[1]
        return int(getattr(self.method, "num_samples", 100))

    def __repr__(self) -> str:
        return (
            f"Posterior(model={type(self.model).__name__}, method={self.method_name!r}, "
            f"chains={self.num_chains}, draws={self.num_draws}, sites={sorted(self.samples)})"
        )

    # --------------------------------------------------------- diagnostics
    def diagnostics(self) -> dict:
        """Summary of sampler health: divergences, max R-hat, min ESS, tree-depth hits
        (MCMC); final loss, NaN stop and plateau (SVI)."""
        from ._diagnostics import diagnose

        return diagnose(self)

    def summary(self):
        """Per-parameter table (pandas): mean, sd, 5%/95% quantiles, R-hat, ESS."""
        from ._diagnostics import summary_table

        return summary_table(self)

    # ----------------------------------------------------------- predictive
    def _flat_samples(self, num_samples: Optional[int]):
        total = self.num_chains * self.num_draws if self.samples else None
        if num_samples is not None and (not isinstance(num_samples, (int, np.integer)) or num_samples < 1):
            raise ValueError(f"predict: num_samples must be a positive integer, got {num_samples!r}.")
        if total is None:
            return {}, int(num_samples or self.num_draws)
        flat = {k: v.reshape((total,) + v.shape[2:]) for k, v in self.samples.items()}
        if num_samples is None or num_samples >= total:
            return flat, total
        idx = np.linspace(0, total - 1, num_samples).round().astype(int)
        return {k: v[idx] for k, v in flat.items()}, num_samples

    def _query(self, ts, data: TimeSeries, treatments) -> Query:
        ts = np.asarray(ts, dtype=float)
        n = data.n_series
        if ts.ndim == 1:
            ts = np.broadcast_to(ts, (n, ts.shape[0])).copy()
        if ts.ndim != 2 or ts.shape[0] != n:
            raise ValueError(
                f"predict: ts has shape {ts.shape}; expected (T,) or ({n}, T) for the {n} series."
            )
        if not np.all(np.isfinite(ts)):
            raise ValueError("predict: ts holds NaN/inf; pass finite times.")
        if ts.shape[1] > 1 and np.any(np.diff(ts, axis=1) <= 0):
            i, j = (int(x) for x in np.argwhere(np.diff(ts, axis=1) <= 0)[0])
            raise ValueError(
                f"predict: ts of series {i} is not strictly increasing at index {j + 1}; sort the times."
            )
        if not self.model.amortized:
            early = ts[:, 0] < data.ts[:, 0] - 1e-9
            if np.any(early):
                i = int(np.argmax(early))
                raise ValueError(
                    f"predict: series {i} asks for t={ts[i, 0]:g}, before its first observation "
                    f"(t={data.ts[i, 0]:g}); this model only predicts forward from there."
                )
        tr = None
        if self.model.needs_treatments:
            if treatments is None:
                raise ValueError(
                    "predict: this model needs the treatments to apply at the query times; "
                    f"pass treatments=... shaped ({n}, {ts.shape[1]}, K)."
                )
        if treatments is not None:
            tr = np.asarray(treatments, dtype=float)
            if tr.ndim == 2:
                tr = np.broadcast_to(tr, (n,) + tr.shape).copy()
            if tr.ndim != 3 or tr.shape[:2] != ts.shape:
                raise ValueError(
                    f"predict: treatments have shape {tr.shape}; expected ({n}, {ts.shape[1]}, K)."
                )
            tr = jnp.asarray(tr, dtype=jnp.zeros(()).dtype)
        return Query(ts=jnp.asarray(ts, dtype=jnp.zeros(()).dtype), treatments=tr)

    def _predict_fn(self):
        if self._predictive is None:
            model, params = self.model, {k: jnp.asarray(v) for k, v in self.params.items()}

            def program(batch, query):
                return model.program(batch, query)

            def run(key, samples, batch, query, n):
                prog = numpyro.handlers.substitute(program, data=params)
                if samples:
                    pred = Predictive(prog, posterior_samples=samples, return_sites=["y_out", "f_out"], parallel=True)
                else:
                    pred = Predictive(prog, num_samples=n, return_sites=["y_out", "f_out"], parallel=True)
                return pred(key, batch, query)

            self._predictive = jax.jit(run, static_argnums=4)
        return self._predictive

    def predict(
        self,
        ts,
        *,
        key,
        num_samples: Optional[int] = None,
        data: Optional[TimeSeries] = None,
        treatments=None,
        devices=None,
    ) -> Prediction:
        """The posterior predictive at times `ts` (`(T,)` or `(N, T)`).

        **Arguments:**

        - `ts`: query times, shared or per series.
        - `key`: a JAX PRNG key (same key, same numbers).
        - `num_samples`: predictive draws (default: every posterior draw), taken evenly
          from the posterior.
        - `data`: history to condition on, for amortised models (default: the training
          data); non-amortised models (per-series parameters) only predict their own series.
        - `treatments`: inputs to apply at the query times, `(N, T, K)` or `(T, K)`.
        - `devices`: a list of JAX devices (or a mesh) to shard the draws and series
          over (`bd.distributed`); default one device.

        **Returns:** a `bd.Prediction` with `samples (S, N, T, D)` including observation
        noise, and `f_samples` the noise-free means.
        """
        data = self.data if data is None else data
        if not isinstance(data, TimeSeries):
            raise TypeError(f"predict: data must be a bd.TimeSeries, got {type(data).__name__}.")
        if data is not self.data:
            if not self.model.amortized:
                raise ValueError(
                    f"predict: {type(self.model).__name__} has per-series parameters, so it predicts "
                    "only the series it was fitted on; drop data=... or refit on the new series."
                )
            if data.dim != self.data.dim:
                raise ValueError(
                    f"predict: data has {data.dim} value columns, the model was fitted on {self.data.dim}."
                )
        query = self._query(ts, data, treatments)
        if devices is not None:
            from ..distributed import sharded_predict

            return sharded_predict(self, query, data, key=key, num_samples=num_samples, devices=devices)
        batch = data.batch()
        flat, n = self._flat_samples(num_samples)
        per_draw = int(np.prod(query.ts.shape)) * data.dim * 2
        chunk = max(1, min(n, _CHUNK_ELEMENTS // max(per_draw, 1)))
        fn = self._predict_fn()
        ys, fs = [], []
        for c, start in enumerate(range(0, n, chunk)):
            stop = min(n, start + chunk)
            sub = {k: v[start:stop] for k, v in flat.items()}
            if stop - start < chunk and sub:
                # Pad the last chunk to the compiled size.
                sub = {k: np.concatenate([v, np.repeat(v[-1:], chunk - (stop - start), 0)]) for k, v in sub.items()}
            out = fn(jax.random.fold_in(key, c), sub, batch, query, chunk)
            ys.append(out["y_out"][: stop - start])
            if "f_out" in out:
                fs.append(out["f_out"][: stop - start])
        y = jnp.concatenate(ys)
        f = jnp.concatenate(fs) if fs else None
        if y.ndim == 3:
            y = y[..., None]
        return Prediction(y, np.asarray(query.ts), f_samples=f, names=data.names, series_ids=data.series_ids)

    def forecast(
        self,
        horizon: float,
        *,
        every: Optional[float] = None,
        key,
        num_samples: Optional[int] = None,
        quantiles=QUANTILES,
        return_prediction: bool = False,
    ):
        """A tidy forecast table: the posterior predictive on a regular grid from each
        series' start to `horizon` past its last observation (models with treatment
        inputs: the future steps only, with the last treatment held), summarised by its
        mean and quantiles. `bayesde forecast` writes this table as forecast.csv.

        **Arguments:**

        - `horizon`: how far past each series' last observation, in the time units of
          the data (for data built from dates: its `time_unit`).
        - `every`: the grid spacing (default: the median observation spacing).
        - `key`: a JAX PRNG key (same key, same numbers).
        - `num_samples`: predictive draws (default: every posterior draw).
        - `quantiles`: the quantile levels, one column each (`0.05` -> `q05`).
        - `return_prediction`: also return the `bd.Prediction` behind the table.

        **Returns:** a `pandas.DataFrame` with columns `series, time, [date,] variable,
        part, mean, q05, ..., q95` (`part` is `history` or `forecast`; `date` when the
        data's times stand for dates), or `(table, prediction)`.
        """

        return forecast(self, horizon, every=every, key=key, num_samples=num_samples, quantiles=quantiles,
                        return_prediction=return_prediction)

    # --------------------------------------------------------------- arviz
    def to_arviz(self, prediction: Optional[Prediction] = None, *, log_likelihood: bool = True):
        """An `arviz.InferenceData` that `az.loo`, `az.waic`, `az.compare`, `az.plot_ppc`,
        `az.plot_trace` and `az.summary` take as it is.

        Groups:

        - `posterior`: every sampled site `(chain, draw, ...)` (extra dims `<site>_dim_<i>`);
          absent when every parameter is a point estimate (e.g. a `LatentSDE` fitted by
          SVI: there `az.loo(idata, reff=1.0)` works, `az.compare` does not).
          `sample_stats` (MCMC): `diverging`, `lp`, `acceptance_rate`, `tree_depth`, `n_steps`.
        - `log_likelihood`: `y`, the pointwise `log p(y_value | draw)` of every observed
          value, traced from the model's `"y"` site with NumPyro (SVI point parameters
          substituted, as in `predict`; latent-path models average the likelihood over
          their paths).
        - `posterior_predictive`: `y` at the training times (drawn with a key derived from
          the fit's key), and `observed_data`: `y`, the data, in the same layout.
        - `constant_data`: `ts (series, time_index)`, the per-series times.
        - `predictions` and `predictions_constant_data`: a `prediction` at other times
          than the training times (out of sample), `y` with dims `(chain, draw, series,
          time, variable)`.

        Layout of `y`: when every value of the data is observed, dims `(series, time,
        variable)` with the series ids, the times and the value names as coordinates
        (`time_index` with a 2-D `time` coordinate when the series have different
        times). When values are missing (mask False, NaN) they are left out, not
        filled: `y` then has the single dim `obs`, one entry per observed value, with
        `series`, `time`, `time_index` and `variable` coordinates along it, so that
        `az.loo`/`az.waic` count exactly the observed values.

        **Arguments:**

        - `prediction`: a `bd.Prediction` to include; at the training times it is the
          posterior predictive, at other times it goes to `predictions`.
        - `log_likelihood`: compute the `log_likelihood` group (one pass of the model per
          draw); False skips it.

        **Returns:** an `arviz.InferenceData`.
        """
        from ._arviz import to_inference_data

        return to_inference_data(self, prediction, log_likelihood=log_likelihood)

    def predictive_key(self):
        """The key `to_arviz` uses for its posterior predictive (derived from the fit key)."""
        return jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(self._key_data)), 1)

    # ----------------------------------------------------------------- files
    def save(self, path, *, overwrite: bool = False) -> None:
        """Save to the folder `path` (JSON config + equinox leaves + netCDF; no pickle).

        Refuses an existing `path` unless `overwrite=True`; the write is atomic (a
        temporary folder renamed into place), so an interrupted save never damages an
        earlier run.
        """
        from .._io import save_posterior

        save_posterior(self, path, overwrite=overwrite)
