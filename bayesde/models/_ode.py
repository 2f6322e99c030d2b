"""Mechanistic, neural and hybrid ODE models with Bayesian parameters."""

from __future__ import annotations

import abc
import dataclasses

from typing import Callable, Literal, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from .._checks import check_real
from .._data import Batch, TimeSeries
from ..networks import mlp, sample_module
from ..solvers import solve_ode
from ..solvers._schemes import ADAPTIVE_ODE_SOLVERS
from ._base import AbstractModel, Query, register_model
from ._common import (check_holdout, check_positive, compiled, first_observed, fit_scaling, held_back, holdout_split,
                      last_observed_time, random_walk, two_draw_crps)
from ._discrepancy import OUDiscrepancy, ou_draw

__all__ = ["ODE", "BayesianNeuralODE"]

#: The `numpyro.param` of `BayesianNeuralODE`'s forecast walk, `log ρ` per dimension.
WALK_PARAM = "neural_ode.forecast_log_walk"

Observation = Literal["normal", "lognormal"]


def _check_positive(data: TimeSeries, owner: str):
    check_positive(data, f"{owner}: observation='lognormal'", "use observation='normal' or shift the data")


def _observe(name, mean, scale, observation, mask, obs=None):
    """Observation site: Normal(mean, scale) or LogNormal(log mean, scale) (`mean > 0`)."""
    if observation == "lognormal":
        d = dist.LogNormal(jnp.log(jnp.maximum(mean, 1e-12)), scale)
        if obs is not None:
            obs = jnp.where(mask, obs, 1.0)
    else:
        d = dist.Normal(mean, scale)
    if mask is not None:
        d = d.mask(mask)
    return numpyro.sample(name, d, obs=obs)


def _check_scheme(owner: str, scheme: str) -> None:
    if scheme not in ADAPTIVE_ODE_SOLVERS:
        raise ValueError(
            f"{owner}.scheme: {scheme!r} is not an adaptive ODE solver; choose one of "
            f"{list(ADAPTIVE_ODE_SOLVERS)} (default 'tsit5'; 'kvaerno5' for stiff systems)."
        )


def _check_discrepancy(owner: str, discrepancy, scale) -> None:
    if discrepancy not in ("ou", None):
        raise ValueError(
            f"{owner}.discrepancy: expected 'ou' (an Ornstein–Uhlenbeck discrepancy) or None (none), "
            f"got {discrepancy!r}."
        )
    check_real(f"{owner}.discrepancy_scale", scale, 0.0, open_low=True)


def _no_walk_before_it_existed(config: dict) -> dict:
    """Runs saved before the forecast walk existed (no `forecast_holdout` in their
    config) forecast without it, and load that way."""
    return config if "forecast_holdout" in config else dict(config, forecast_holdout=0.0)


def _rhs_from_args(t, u, args):
    model, params = args
    return model._rhs(params)(t, u, None)


class _AbstractODEModel(AbstractModel):
    """Shared program of ODE models: per-series initial states, a solve at each series'
    times, a masked Normal/LogNormal likelihood and a solver-failure factor."""

    @abc.abstractmethod
    def _rhs(self, params):
        """The vector field `(t, u, args) -> du/dt` for the drawn parameters."""

    @abc.abstractmethod
    def _draw_params(self):
        """Sample the vector field's parameters."""

    @abc.abstractmethod
    def _init_prior(self, idx):
        """Prior of the initial states of the series `idx`."""

    @abc.abstractmethod
    def _noise(self):
        """Sample the observation noise scale."""

    @abc.abstractmethod
    def _to_data(self, u):
        """The noise-free mean in data units from the solved state."""

    @abc.abstractmethod
    def _obs_scale(self, sigma):
        """The observation noise scale of the likelihood from the sampled `sigma`."""

    @abc.abstractmethod
    def _discrepancy_units(self):
        """`(units (D,), time_unit)`: what one unit of `ρ` is in the units of
        `_observed_mean`, and one unit of `ℓ` in the data's time."""

    def _discrepancy(self):
        """Sample the discrepancy's parameters (fields `discrepancy`, `discrepancy_scale`):
        `None` (observations independent given the path), or `(ρ, ℓ)` of the OU process
        of `_discrepancy.py` in the units of `_observed_mean` and of the data's time."""
        if getattr(self, "discrepancy", None) is None:
            return None
        units, time_unit = self._discrepancy_units()
        rho = numpyro.sample("discrepancy_sd", dist.HalfNormal(self.discrepancy_scale).expand([len(units)]).to_event(1))
        ell = numpyro.sample("discrepancy_time", dist.LogNormal(np.log(0.2), 1.0))
        return rho * jnp.asarray(units), ell * time_unit

    @abc.abstractmethod
    def _observed_mean(self, u):
        """The path in the units where the noise is Normal: `g(mean)` with `g = log` for a
        LogNormal observation model, the identity for a Normal one."""

    def _solve_all(self, params, u0, t0, ts):
        """Solve every series' ODE as one compiled call (`compiled`: the parameters travel
        as solver `args`, not closures, so NumPyro's eager initialisation compiles it once).
        The solve reads none of what `for_engine` strips for a sampler (the forecast walk);
        keying the call on that copy lets a fit with the walk (SVI) and one without (NUTS)
        share it."""
        return compiled(self.for_engine(None)._solve_each, params, u0, t0, ts)

    def _solve_each(self, params, u0, t0, ts):
        def one(u0_i, t0_i, ts_i):
            return solve_ode(
                _rhs_from_args, u0_i, ts_i, args=(self, params), t0=t0_i, scheme=self.scheme,
                rtol=self.rtol, atol=self.atol, max_steps=self.max_steps,
            )

        return jax.vmap(one)(u0, t0, ts)

    @abc.abstractmethod
    def _walk_split(self) -> tuple[float, int]:
        """`(fraction, every)`: every `every`-th series holds back the last `fraction` of
        its span to fit the forecast walk `ρ` (`BayesianNeuralODE`); `(0.0, 1)`: no walk."""

    def program(self, batch: Batch, query: Optional[Query] = None, *, subsample_size=None):
        params = self._draw_params()
        n, _, D = batch.ys.shape
        with numpyro.plate("series", n, subsample_size=subsample_size) as idx:
            u0 = numpyro.sample("y0", self._init_prior(idx).to_event(1))
        sigma = self._noise()
        if subsample_size is not None:
            batch = Batch(*(None if x is None else x[idx] for x in batch))
        t0 = batch.ts[:, 0]
        u, ok = self._solve_all(params, u0, t0, batch.ts)
        numpyro.factor("solver_failed", jnp.sum(jnp.where(ok, 0.0, -jnp.inf)))
        noise = self._obs_scale(sigma)
        log = self.observation == "lognormal"
        disc = self._discrepancy()
        mean = None if disc is None else self._observed_mean(u)
        holdout, every = self._walk_split()
        walk = holdout > 0
        # the forecast walk's sd ρ (standardised units per √time unit): fitted only by the held-back score
        log_rho = numpyro.param(WALK_PARAM, jnp.full((D,), np.log(0.3))) if walk else None
        fit_mask, scored = batch.mask, None
        if walk and query is None:
            head, tail = holdout_split(batch.ts, batch.mask, holdout, n, every)
            back = held_back(idx, n, every)[:, None, None]
            fit_mask = jnp.where(back, head, batch.mask)  # held-back tails: out of the likelihood
            scored = (head, tail & back)
        # A minibatch of B series stands for all N: its likelihood counts N / B times
        # (the series plate does the same for the initial states).
        with numpyro.handlers.scale(scale=n / u0.shape[0]):
            if disc is None:
                _observe("y", self._to_data(u), noise, self.observation, fit_mask, batch.ys)
            else:
                numpyro.sample("y", OUDiscrepancy(mean, batch.ts, noise, *disc, batch.mask, log), obs=batch.ys)
        if scored is not None:
            score = self._walk_score(u, noise, log_rho, batch, *scored, numpyro.prng_key())
            numpyro.factor("forecast_score", -score)
        if query is not None:
            u_out, _ = self._solve_all(params, u0, t0, query.ts)
            if disc is not None:
                # the discrepancy at the query times, drawn given the history's residuals
                g_obs = jnp.log(jnp.where(batch.mask, batch.ys, 1.0)) if log else batch.ys
                resid = jnp.where(batch.mask, g_obs - mean, 0.0)
                delta = ou_draw(numpyro.prng_key(), resid, batch.ts, batch.mask, query.ts, noise, *disc)
                g_out = self._observed_mean(u_out) + delta
                f_out = jnp.exp(g_out) if log else g_out
            elif walk:
                g_out = self._observed_mean(u_out) + self._walk(
                    numpyro.prng_key(), jnp.exp(log_rho), last_observed_time(batch.ts, batch.mask), query.ts
                )
                f_out = jnp.exp(g_out) if log else g_out
            else:
                f_out = self._to_data(u_out)
            f_out = numpyro.deterministic("f_out", f_out)
            _observe("y_out", f_out, noise, self.observation, None)

    def _walk(self, key, rho, t_last, qs):
        """The forecast walk in the units of `_observed_mean`: `ρ` (standardised units, the
        same units as the discrepancy's) times a standard random walk in the discrepancy's
        time unit from each series' `t_last (B,)` through the query times `qs (B, T')`,
        zero at and before `t_last`."""
        units, time_unit = self._discrepancy_units()
        w = random_walk(key, t_last / time_unit, qs / time_unit, len(units))
        return rho * jnp.asarray(units, w.dtype) * w

    def _walk_score(self, u, noise, log_rho, batch, head, tail, key):
        """The score that fits `ρ`: two forecasts of the held-back `tail` entries made as
        `predict` makes them (the path, plus the walk from the head's last observed time,
        plus observation noise), scored by the two-draw CRPS in standardised units. Only
        `ρ` receives its gradient: the path and the noise are fitted by the ELBO alone."""
        u, noise = jax.lax.stop_gradient(u), jax.lax.stop_gradient(noise)
        log = self.observation == "lognormal"
        units = jnp.asarray(self._discrepancy_units()[0], u.dtype)
        g_path = self._observed_mean(u)
        g_obs = jnp.log(jnp.where(tail, batch.ys, 1.0)) if log else batch.ys
        t_cut = last_observed_time(batch.ts, head)
        k1, k2, k3, k4 = jax.random.split(key, 4)
        rho = jnp.exp(log_rho)

        def draw(kw, ke):
            return g_path + self._walk(kw, rho, t_cut, batch.ts) + noise * jax.random.normal(ke, u.shape, u.dtype)

        return two_draw_crps(draw(k1, k2) / units, draw(k3, k4) / units, g_obs / units, tail)


@register_model
class ODE(_AbstractODEModel):
    """A mechanistic ODE `dy/dt = f(t, y, θ)` with priors on `θ`, per-series initial
    states and a Normal or LogNormal observation model with a learned noise scale.

    **Arguments:**

    - `vector_field`: `f(t, y, params)` where `params` is a dict of the sampled
      parameters (e.g. `bd.models.lotka_volterra_field`). Define it at the top level of
      an importable module so that saved runs can be loaded.
    - `priors`: `{name: numpyro distribution}` for every entry of `params`.
    - `observation`: `"lognormal"` (positive data, multiplicative noise; default) or
      `"normal"`.
    - `noise_scale`: scale of the HalfNormal prior on the observation noise `σ` (on the
      log scale for LogNormal, in data units for Normal).
    - `init_scale`: prior scale of each series' initial state around its first
      observation (log scale for LogNormal, data units for Normal).
    - `discrepancy`: `None` (default) or `"ou"`, an Ornstein–Uhlenbeck discrepancy
      added to the path as in `BayesianNeuralODE` (there in standardised units; here
      `ρ` is on the log scale for LogNormal, in data units for Normal, and `ℓ` in
      units of the longest series' span). A mechanism with few parameters cannot hand
      its dynamics to the discrepancy the way a network can.
    - `discrepancy_scale`: the HalfNormal prior scale of `ρ`.
    - `scheme`: the adaptive diffrax solver by name (`"tsit5"`; `"kvaerno5"` for stiff
      systems); `rtol`, `atol`, `max_steps`: see `bd.solvers.solve_ode`. (`solver` is
      the deprecated name of `scheme`.)

    Data-derived fields set by `adapt`: `init_loc`, `time_scale` (the longest series'
    span).

    Sites: the parameters by name, `y0 (N, D)`, `sigma`, with the discrepancy
    `discrepancy_sd (D,)` and `discrepancy_time`, `y` (observed).
    """

    vector_field: Callable = eqx.field(static=True)
    priors: dict
    observation: str = "lognormal"
    noise_scale: float = 0.5
    init_scale: float = 0.5
    discrepancy: Optional[str] = None
    discrepancy_scale: float = 0.5
    scheme: str = "tsit5"
    rtol: float = 1e-5
    atol: float = 1e-6
    max_steps: int = 4096
    init_loc: Optional[np.ndarray] = None
    time_scale: Optional[float] = None

    _renamed = {"solver": "scheme"}

    def __check_init__(self):
        if self.observation not in ("normal", "lognormal"):
            raise ValueError(
                f"ODE.observation: {self.observation!r} is not 'normal' or 'lognormal'."
            )
        if not self.priors:
            raise ValueError("ODE.priors: give a prior for every parameter of the vector field.")
        _check_discrepancy("ODE", self.discrepancy, self.discrepancy_scale)
        _check_scheme("ODE", self.scheme)

    def adapt(self, data: TimeSeries) -> "ODE":
        if self.observation == "lognormal":
            _check_positive(data, "ODE")
        loc = first_observed(data, log=self.observation == "lognormal")
        if self.observation == "lognormal":
            loc = np.exp(loc)
        return dataclasses.replace(self, init_loc=np.asarray(loc, dtype=np.float32),
                                   time_scale=fit_scaling(data).time_scale)

    def _draw_params(self):
        return {k: numpyro.sample(k, p) for k, p in self.priors.items()}

    def _rhs(self, params):
        return lambda t, y, args: self.vector_field(t, y, params)

    def _init_prior(self, idx):
        loc = jnp.asarray(self.init_loc)[idx]
        if self.observation == "lognormal":
            return dist.LogNormal(jnp.log(loc), self.init_scale)
        return dist.Normal(loc, self.init_scale)

    def _noise(self):
        return numpyro.sample("sigma", dist.HalfNormal(self.noise_scale))

    def _to_data(self, u):
        return u

    def _obs_scale(self, sigma):
        return sigma

    def _observed_mean(self, u):
        return jnp.log(jnp.maximum(u, 1e-12)) if self.observation == "lognormal" else u

    def _discrepancy_units(self):
        return np.ones(np.shape(self.init_loc)[-1]), self.time_scale

    def _walk_split(self):
        return 0.0, 1  # a mechanism's forecast is its own: no walk (the "ou" discrepancy is there)


@register_model
class BayesianNeuralODE(_AbstractODEModel):
    """A neural ODE whose MLP vector-field weights have Normal priors, optionally added to
    a known mechanistic part (a hybrid / universal differential equation).

    The state lives in standardised units `u = (g(y) − loc) / scale` with `g = log` for a
    LogNormal observation model and the identity for a Normal one, and time is measured
    in units of the training window, so the same prior suits any data:

    `du/dt = MLP_w(u) / T_scale + known(t, y, θ) / (scale · g'(y)^{-1})`.

    **Arguments:**

    - `state_dim`: state (= observation) dimension (`dim` is its deprecated name).
    - `width`, `depth`: the MLP's hidden width and number of hidden layers.
    - `known`: optional `f(t, y, params)` in data units; `known_priors` the priors of its
      `params` (a dict, may be empty).
    - `observation`: `"normal"` (default) or `"lognormal"`.
    - `prior_scale`: prior sd of every weight.
    - `noise_scale`: HalfNormal prior scale of the noise `σ` (standardised units).
    - `init_scale`: prior sd of each series' initial state around its first observation
      (standardised units).
    - `discrepancy`: `None` (default: the observations are independent given the path)
      or `"ou"`: each series' path gains a discrepancy `δ`, an Ornstein–Uhlenbeck
      process per data dimension with sd `ρ` (standardised units, HalfNormal prior of
      scale `discrepancy_scale`) and time constant `ℓ` (in units of the longest
      series' span, LogNormal prior with median 0.2 and log-sd 1), integrated out by a
      Kalman filter (`bayesde/models/_discrepancy.py`). A forecast continues `δ` from
      its state at the last observation, so its spread grows over the horizon as the
      history's correlated residuals say it should. Not the default: `δ` competes with
      the network for the dynamics, and on a cyclic process the fit can leave the
      cycle to `δ` and forecast poorly (`docs/calibration.md` has the measurements).
      With it, the pointwise log-likelihood (`to_arviz`) holds each observation's
      density given the series' earlier ones, which sum to the joint; `az.loo` on
      those terms is an approximation, not leave-one-out.
    - `discrepancy_scale`: the HalfNormal prior scale of `ρ`.
    - `forecast_holdout`: the fraction of a held-back series' observed span whose
      forecast fits the forecast walk (below); `0` turns the walk off.
    - `forecast_series_every`: every this-many-th series is held back that way.
    - `scheme`: the adaptive diffrax solver by name; `rtol`, `atol`, `max_steps`: see
      `bd.solvers.solve_ode`. (`solver` is the deprecated name of `scheme`.)

    **The forecast walk, fitted on held-back forecasts.** An ODE has no term for a
    process's own randomness: its forecast is the path from the fitted initial state
    plus observation noise, as wide one step past the last observation as at the end
    of the horizon, and the weights' posterior (fitted to explain the history) says
    nothing about how far the future strays from the path. So a forecast adds a random
    walk `ρ·W(t − t_last)` per data dimension (standardised units per √unit of the
    longest series' span), zero over the history, and `ρ` is fitted where it can be
    measured: while training, every `forecast_series_every`-th series (index
    `i % k == k − 1`; every series when there are fewer than `k`, each holding back
    `forecast_holdout / k` of its span) has the last `forecast_holdout` of its observed
    span left out of the likelihood, and the CRPS of forecasts of that tail made as
    `predict` makes them (two draws) fits `log ρ` (param
    `neural_ode.forecast_log_walk`) and nothing else. Where the learned dynamics
    forecast well, the CRPS keeps `ρ` small; where the future is mostly noise the ODE
    cannot express, `ρ` grows. Unlike the `"ou"` discrepancy, the walk is not in the
    likelihood, so it cannot take the dynamics from the network. The walk is off with
    `discrepancy="ou"` (that discrepancy already continues the history's residuals), and
    for engines that only sample (NUTS fits no `numpyro.param`: `for_engine` returns a copy
    with `forecast_holdout=0`); runs saved before it existed load without it.

    Data-derived fields set by `adapt`: `loc`, `scale` (standardisation of `g(y)`),
    `time_scale` (the longest series' span), `init_loc`.

    Sites: `field.<layer>` weights, the known part's parameters, `y0 (N, D)` (standardised),
    `sigma`, with the discrepancy `discrepancy_sd (D,)` (`ρ`) and `discrepancy_time`
    (`ℓ`), `y`; with a query `f_out` (path plus discrepancy) and `y_out`.
    """

    state_dim: int
    width: int = 16
    depth: int = 2
    known: Optional[Callable] = eqx.field(default=None, static=True)
    known_priors: Optional[dict] = None
    observation: str = "normal"
    prior_scale: float = 1.0
    noise_scale: float = 0.5
    init_scale: float = 0.3
    discrepancy: Optional[str] = None
    discrepancy_scale: float = 0.5
    forecast_holdout: float = 0.25
    forecast_series_every: int = 4
    scheme: str = "tsit5"
    rtol: float = 1e-4
    atol: float = 1e-5
    max_steps: int = 2048
    loc: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    time_scale: Optional[float] = None
    init_loc: Optional[np.ndarray] = None

    _renamed = {"dim": "state_dim", "solver": "scheme"}
    _upgrades = (_no_walk_before_it_existed,)

    def __check_init__(self):
        if not (isinstance(self.state_dim, int) and self.state_dim >= 1):
            raise ValueError(
                f"BayesianNeuralODE.state_dim: expected a positive int, got {self.state_dim!r}."
            )
        if self.width < 1 or self.depth < 0:
            raise ValueError("BayesianNeuralODE: width must be >= 1 and depth >= 0.")
        if self.observation not in ("normal", "lognormal"):
            raise ValueError(
                f"BayesianNeuralODE.observation: {self.observation!r} is not 'normal' or 'lognormal'."
            )
        _check_discrepancy("BayesianNeuralODE", self.discrepancy, self.discrepancy_scale)
        _check_scheme("BayesianNeuralODE", self.scheme)
        check_holdout("BayesianNeuralODE", self.forecast_holdout, self.forecast_series_every, "the forecast walk")

    def for_engine(self, engine) -> "BayesianNeuralODE":
        if self.forecast_holdout == 0 or getattr(engine, "point_estimates", False):
            return self
        return dataclasses.replace(self, forecast_holdout=0.0)

    def _walk_split(self):
        if self.discrepancy is not None:  # the OU discrepancy continues the residuals instead
            return 0.0, 1
        return float(self.forecast_holdout), self.forecast_series_every

    @property
    def _log(self) -> bool:
        return self.observation == "lognormal"

    def adapt(self, data: TimeSeries) -> "BayesianNeuralODE":
        if data.dim != self.state_dim:
            raise ValueError(
                f"BayesianNeuralODE.state_dim: the model has state_dim={self.state_dim} but the "
                f"data has {data.dim} value columns; set state_dim={data.dim}."
            )
        if self._log:
            _check_positive(data, "BayesianNeuralODE")
        sc = fit_scaling(data, log=self._log, dtype=np.float64)
        first = (first_observed(data, log=self._log) - sc.loc) / sc.scale
        return dataclasses.replace(
            self,
            loc=np.asarray(sc.loc, dtype=np.float32),
            scale=np.asarray(sc.scale, dtype=np.float32),
            time_scale=sc.time_scale,
            init_loc=np.asarray(first, dtype=np.float32),
        )

    def _make_field(self, key):
        return mlp(self.state_dim, self.state_dim, self.width, self.depth, key=key)

    def _draw_params(self):
        net = sample_module("field", self._make_field, self.prior_scale)
        known = {}
        if self.known is not None:
            known = {k: numpyro.sample(k, p) for k, p in (self.known_priors or {}).items()}
        return net, known

    def _rhs(self, params):
        net, known = params
        loc, scale = jnp.asarray(self.loc), jnp.asarray(self.scale)

        def rhs(t, u, args):
            du = net(u) / self.time_scale
            if self.known is not None:
                g = loc + scale * u
                y = jnp.exp(g) if self._log else g
                dy = self.known(t, y, known)
                dg = dy / y if self._log else dy
                du = du + dg / scale
            return du

        return rhs

    def _init_prior(self, idx):
        return dist.Normal(jnp.asarray(self.init_loc)[idx], self.init_scale)

    def _noise(self):
        return numpyro.sample("sigma", dist.HalfNormal(self.noise_scale))

    def _discrepancy_units(self):
        return self.scale, self.time_scale  # ρ in standardised units, ℓ in spans

    def _observed_mean(self, u):
        return jnp.asarray(self.loc) + jnp.asarray(self.scale) * u

    def _to_data(self, u):
        g = self._observed_mean(u)
        return jnp.exp(g) if self._log else g

    def _obs_scale(self, sigma):
        # Normal: sigma is in standardised units; LogNormal: on the log scale.
        return sigma if self._log else sigma * jnp.asarray(self.scale)
