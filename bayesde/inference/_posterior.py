"""`Posterior`: the result of `fit`, and the door to the posterior predictive."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._data import TimeSeries
from ..models._base import AbstractModel
from ._forecast import QUANTILES
from ._prediction import Prediction
from ._predictive import CHUNK_ELEMENTS
from ._registry import as_info

__all__ = ["Posterior"]

# Kept for code that read the chunk budget here; it is decided in `_predictive`.
_CHUNK_ELEMENTS = CHUNK_ELEMENTS


class Posterior:
    """A fitted model: posterior draws, point-estimated parameters and diagnostics.

    A plain record: what `fit` (or `bd.load`) found, and nothing else. Its methods
    are thin doors to the functions that work on it (`_predictive`, `_forecast`,
    `_arviz`, `_diagnostics`, `bayesde._io`).

    - `samples`: dict of the model's latent sites, each `(chain, draw, ...)`.
    - `params`: dict of point estimates (SVI: guide and network parameters).
    - `sample_stats`: MCMC statistics per draw (`diverging`, `tree_depth`, ...).
    - `loss`: SVI loss per step (`None` for MCMC).
    - `model`: the model adapted to the training data; `data`: the training data.
    - `method`: the engine configuration; `method_name`: its registered name.
    - `info`: the engine's record of the run (an `EngineInfo`, e.g. `info.seconds`).
    - `key_data`: the fit key's data (`uint32`); predictive keys derive from it.
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
        self.info = as_info(result.info, type(method))
        self.key_data = np.asarray(key_data, dtype=np.uint32)

    @property
    def _key_data(self) -> np.ndarray:
        # The name `key_data` had before it was public.
        return self.key_data

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
        from ._predictive import predict

        return predict(self, ts, key=key, num_samples=num_samples, data=data, treatments=treatments,
                       devices=devices)

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
        from ._forecast import forecast

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
        return jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(self.key_data)), 1)

    # ----------------------------------------------------------------- files
    def save(self, path, *, overwrite: bool = False) -> None:
        """Save to the folder `path` (JSON config + equinox leaves + netCDF; no pickle).

        Refuses an existing `path` unless `overwrite=True`; the write is atomic (a
        temporary folder renamed into place), so an interrupted save never damages an
        earlier run.
        """
        from .._io import save_posterior

        save_posterior(self, path, overwrite=overwrite)
