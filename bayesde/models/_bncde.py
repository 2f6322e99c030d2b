"""Bayesian neural controlled differential equations for treatment-effect estimation
(BNCDE; Hess, Melnychuk, Frauen & Feuerriegel, ICLR 2024).

An encoder neural CDE reads each patient's history (outcomes, observation counts,
treatments; static covariates in the initial state and the field),

    dz = f_{w_t}(t, z, a_t) dX_t,

whose vector-field weights `w_t` are a stochastic process shared by the batch:
prior OU `dw = −w ds + σ dB`, variational posterior `dw = (h_φ(s, w) − w) ds + σ dB`,
`w_0 ~ N(μ_0, sd0²)` with a learned `μ_0` and, by default, a learned `sd0` whose prior is the
layer's initial scale (the paper's `sd0 = σ`: `BNCDE.weight_spread`). By Girsanov the KL between the path measures
is `½ ∫ |h_φ(s, w_s)|² / σ² ds`, integrated as one more coordinate of the weight SDE.
A decoder neural CDE (the same construction, driven by the *future* treatments
`A = (t, a)`) starts from each Monte Carlo sample's encoder state and feeds a Gaussian
head (mean, softplus scale) at horizons `τ = 1..horizon`. BNCDE forecasts a plan one step
at a time, each draw read back by the encoder (`forecast="rollout"`, the g-formula); the
paper's decoder forecast is `forecast="decoder"`. The predictive is the equal-weight mixture
over weight paths (one path per predictive draw).

Training maximises the ELBO
`(1/S) Σ_s [Σ_patients Σ_τ log N(y | head(u^s_τ)) − KL_s]`
with `S = train_paths` weight paths (vmapped); under minibatching the likelihood sits in
the `"series"` plate (rescaled by N/B) and the KL outside it (not rescaled). Every
fourth series is left out of that likelihood, and the log score of its forecasts fits a
widening `κ_τ ≥ 1` of the head's sd per horizon (`min_widening`; see `BNCDE`).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from .._checks import check_int, check_real, is_int
from .._data import Batch, TimeSeries
from ..solvers._cde import fill_missing, observation_counts, solve_cde_grid
from ..solvers._sde import solve_sde_grid
from ._base import AbstractModel, Query, register_model
from ._common import check_positive, compiled, fit_scaling

__all__ = ["BNCDE", "AbstractCDEForecaster", "weight_sde", "ou_kl_closed_form"]


# --------------------------------------------------------------------- weight SDE
def _path_noise(key, num_paths: int, s_grid, p: int, dtype):
    """The standard normals of `num_paths` weight paths: initial `(num_paths, P)` and
    Brownian increments `(num_paths, G − 1, P)` on `s_grid`.

    They are drawn from a Threefry-4x32 key derived from `key` (`jax.random` with
    `impl="threefry4x32"`): the same key gives the same numbers on every backend, and on
    CPU it is faster than JAX's default Threefry-2x32, whose CPU lowering runs its rounds
    as a loop; these millions of normals are a large share of a BNCDE training step
    (`benchmarks/bncde_profile.py` measures both)."""
    key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="threefry4x32")
    # One call for every path and step (per-path keys under `vmap` make XLA's CPU compile
    # of the unrolled hash very slow).
    z = jax.random.normal(key, (num_paths, s_grid.shape[0], p), dtype)
    return z[:, 0], z[:, 1:] * jnp.sqrt(jnp.diff(s_grid)).astype(dtype)[:, None]


def weight_sde(key, mu0, sigma, s_grid, h, num_paths: int, sd0=None):
    """Weight paths of the posterior SDE `dw = (h(s, w) − w) ds + σ dB`,
    `w_0 ~ N(μ_0, sd0²)`, with the Girsanov KL to the OU prior `dw = −w ds + σ dB`,
    `KL = ½ ∫ |h(s, w_s)|² / σ² ds`, integrated alongside by Euler–Maruyama (the path
    KL only: where the prior of `w_0` differs from `N(μ_0, sd0²)`, that KL is the
    caller's).

    **Arguments:**

    - `key`: PRNG key; `mu0`: `(P,)` initial mean; `sigma`: the diffusion scale.
    - `s_grid`: `(G,)` weight-clock grid; `h`: `h(s, w) -> (P,)`.
    - `num_paths`: independent paths.
    - `sd0`: `(P,)` sd of the initial weights (default `σ`).

    **Returns:** `(w (num_paths, G, P), kl (num_paths,))`.
    """
    p = mu0.shape[0]
    z0, db = _path_noise(key, num_paths, s_grid, p, mu0.dtype)

    def one(z0_i, db_i):
        w0 = mu0 + (sigma if sd0 is None else sd0) * z0_i
        y0 = jnp.concatenate([w0, jnp.zeros((1,), mu0.dtype)])
        dw = jnp.concatenate([db_i, jnp.zeros(db_i.shape[:1] + (1,), mu0.dtype)], -1)  # no noise in the KL

        def drift(s, y, _):
            w = y[:p]
            hv = h(s, w)
            return jnp.concatenate([hv - w, 0.5 * jnp.sum(hv**2, keepdims=True) / sigma**2])

        def diffusion(s, y, _):
            return jnp.concatenate([jnp.full((p,), sigma, y.dtype), jnp.zeros((1,), y.dtype)])

        ys = solve_sde_grid(drift, diffusion, y0, s_grid, dw)
        return ys[:, :p], ys[-1, p]

    return jax.vmap(one)(z0, db)


def ou_kl_closed_form(m0, v0, kappa, sigma, t_end):
    """KL between the path laws of `dw = −(1+κ) w ds + σ dB` and the OU prior
    `dw = −w ds + σ dB` on `[0, t_end]`, both from `w_0 ~ N(m0, v0)` (scalar):
    `½ κ²/σ² ∫ E[w_s²] ds` with `E[w_s²] = (m0² + v0 − c) e^{−2 r s} + c`,
    `r = 1 + κ`, `c = σ²/(2r)`."""
    r = 1.0 + kappa
    c = sigma**2 / (2 * r)
    integral = (m0**2 + v0 - c) * (1 - np.exp(-2 * r * t_end)) / (2 * r) + c * t_end
    return 0.5 * kappa**2 / sigma**2 * integral


# --------------------------------------------------------------------- helpers
def _init_normal(shape, scale):
    return lambda key: scale * jax.random.normal(key, shape)


def _zeros(shape):
    return lambda key: jnp.zeros(shape)


def _full(shape, value):
    return lambda key: jnp.full(shape, value)


def _as_halflives(value):
    """`BNCDE.exposure_halflives` as a tuple of floats (refused in `adapt` unless positive)."""
    if value is None:
        return ()
    if isinstance(value, (int, float, np.number)):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return (value,)


def _exposure_step(e, dt, a, halflives):
    """One step of `exposures`: the exposures `e (..., K, H)` decayed over `dt (...)`, plus
    the doses `a (..., K)` of the new row."""
    return e * jnp.exp2(-dt[..., None, None] / halflives) + a[..., None]


def exposures(ts, treatments, halflives):
    """Each treatment channel's exposure with each half-life: `e_j = e_{j−1}·2^{−(t_j −
    t_{j−1})/h} + a_j` from `e_0 = a_0`, a dose that decays by half every `h` time units.

    **Arguments:** `ts (N, T)` times, `treatments (N, T, K)`, `halflives` a tuple of `H`
    half-lives in the units of `ts`.

    **Returns:** `(N, T, K·H)`, channel-major (all half-lives of channel 0 first).
    """
    if not halflives:
        return jnp.zeros(treatments.shape[:2] + (0,), treatments.dtype)
    h = jnp.asarray(halflives, treatments.dtype)

    def step(e, inp):
        e = _exposure_step(e, *inp, h)
        return e, e

    e0 = jnp.broadcast_to(treatments[:, 0, :, None], treatments.shape[:1] + treatments.shape[2:] + h.shape)
    dts, doses = jnp.moveaxis(jnp.diff(ts, axis=1), 1, 0), jnp.moveaxis(treatments[:, 1:], 1, 0)
    _, es = jax.lax.scan(step, e0, (dts, doses))
    es = jnp.concatenate([e0[None], es], 0)  # (T, N, K, H)
    return jnp.moveaxis(es, 0, 1).reshape(treatments.shape[:2] + (-1,))


def _check_transform(transform, owner):
    if transform not in ("auto", "log", "none"):
        raise ValueError(f"{owner}: transform must be 'auto', 'log' or 'none', got {transform!r}.")


def _upgrade_data_fields(config: dict) -> dict:
    """Runs saved before the data-derived fields took the names every model uses
    (`dim`, `t_scale`, `y_loc`, `y_scale` -> `data_dim`, `time_scale`, `loc`, `scale`)."""
    if "y_loc" not in config:
        return config
    config = dict(config)
    dim = config.pop("dim", 0)
    config["data_dim"] = None if not dim else dim
    config["time_scale"] = config.pop("t_scale", None) if dim else None
    loc, scale = config.pop("y_loc", None), config.pop("y_scale", None)
    config["loc"] = loc if dim else None
    config["scale"] = scale if dim else None
    return config


def _fixed_spread_before_it_existed(config: dict) -> dict:
    """Runs saved before `BNCDE.weight_spread` existed drew their initial weights with sd σ."""
    return config if "weight_spread" in config else dict(config, weight_spread="fixed")


def _decoder_before_rollout_existed(config: dict) -> dict:
    """Runs saved before `forecast` existed forecast as they did when saved: with the decoder."""
    return config if "forecast" in config else dict(config, forecast="decoder")


def _no_weight_prior_before_it_existed(config: dict) -> dict:
    """Runs saved before `weight_prior` existed fitted their point-estimated weights without a
    prior; they load as they were saved."""
    return config if "weight_prior" in config else dict(config, weight_prior="none")


def _widen_only_before_min_widening_existed(config: dict) -> dict:
    """Runs saved before `min_widening` existed could only widen (`κ ≥ 1`), and their
    `head.forecast_widening` is read that way."""
    return config if "min_widening" in config else dict(config, min_widening=1.0)


def _no_holdout_before_it_existed(config: dict) -> dict:
    """Runs saved before the held-back forecast scale (`forecast_series_every`) predict as
    they did when saved: without it (their parameters have no scale)."""
    return config if "forecast_series_every" in config else dict(config, forecast_series_every=0)


#: At most this many series are held back: enough to fit a widening per horizon and to
#: choose the step to keep, while a large cohort keeps nearly all of its series for the
#: networks (losing a quarter of a large cohort cost counterfactual coverage;
#: `docs/calibration.md`).
_MAX_HELD_BACK = 64


def _widening(theta, least=1.0):
    """The forecast's widening `κ = least + softplus(10 θ)` of the head's sd from its
    parameter `θ` (`head.forecast_widening`); `least` is the model's `min_widening`. The
    factor 10 lets Adam move `κ` ten times faster than the networks, so that it keeps up
    with them (`κ` has one number per horizon and is fitted by a smooth score)."""
    return least + jax.nn.softplus(10.0 * theta)


def _widening_start(least=1.0):
    """The `θ` at which every fit starts: `κ = 1 + softplus(−5)`, just above one, whatever
    `least` is (for `least = 1` that is `θ = −0.5`)."""
    gap = 1.0 + np.log1p(np.exp(-5.0)) - least
    return float(np.log(np.expm1(gap)) / 10.0)


def mixture_log_score(mu, sd, y, axis: int):
    """Minus the log density at `y` (broadcast without `axis`) of the equal-weight
    mixture of `N(mu_s, sd_s²)` (components along `axis`): exact, no sampling noise."""
    z = (jnp.expand_dims(y, axis) - mu) / sd
    log_pdf = -0.5 * z**2 - jnp.log(sd) - 0.5 * np.log(2.0 * np.pi)
    return np.log(mu.shape[axis]) - jax.scipy.special.logsumexp(log_pdf, axis=axis)


class AbstractCDEForecaster(AbstractModel):
    """Shared encoder/decoder neural CDE forecaster with a Gaussian head. Subclasses say
    how the field weights are drawn (`_draw`, `_num_paths`), how the field's hidden
    units are perturbed (`_perturb`) and which of their own fields to check
    (`_check_fields`)."""

    state_dim: int = 8
    width: int = 128
    horizon: int = 5
    fill: str = "forward"
    transform: str = "auto"
    # Data-derived (set by `adapt`).
    data_dim: Optional[int] = None
    n_treatments: int = 0
    n_static: int = 0
    time_scale: Optional[float] = None
    rows: int = 1
    loc: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    log_outcome: bool = False
    ahead_starts: int = 16
    forecast_series_every: int = 4
    exposure_halflives: tuple = eqx.field(default=(), converter=_as_halflives)
    forecast: str = "decoder"
    weight_prior: str = "none"
    min_widening: float = 1.0

    amortized = True
    needs_treatments = True
    held_out_site = "forecast_score"  # emitted in training when series are held back
    held_out_draws = 2  # the score is closed-form in the head's noise (and averages BNCDE's weight paths)
    _renamed = {"hidden": "state_dim"}
    _upgrades = (_upgrade_data_fields, _no_holdout_before_it_existed, _no_weight_prior_before_it_existed,
                 _widen_only_before_min_widening_existed)

    # ------------------------------------------------------------ sizes
    @property
    def _c_enc(self):
        return 1 + 2 * self.data_dim + self.n_treatments

    @property
    def _c_dec(self):
        return 1 + self.n_treatments

    @property
    def _field_in(self):
        return 1 + self.state_dim + self.n_treatments * (1 + len(self.exposure_halflives)) + self.n_static

    @property
    def _model_halflives(self):
        """`exposure_halflives` in model time (`(t − t₀) / time_scale`; they are given in data
        time units)."""
        return tuple(h / self.time_scale for h in self.exposure_halflives)

    def _exposures(self, tsc, treatments):
        """`exposures` of the treatments on model time `tsc`."""
        return exposures(tsc, treatments, self._model_halflives)

    def _layer_shapes(self, part):
        c = self._c_enc if part == "enc" else self._c_dec
        return {
            "W1": (self._field_in, self.width),
            "b1": (self.width,),
            "W2": (self.width, self.state_dim * c),
            "b2": (self.state_dim * c,),
        }

    def _layer_scale(self, part, name):
        """The sd of the layer's initial weights (its bias starts at zero; `BNCDE`'s
        learned weight spread takes the same sd as the prior of both)."""
        fan_in = self._layer_shapes(part)["W" + name[1]][0]
        return (1.0 if name[1] == "1" else 0.3) / np.sqrt(fan_in)

    def _layer_init(self, part, name):
        shape = self._layer_shapes(part)[name]
        if name.startswith("W"):
            return _init_normal(shape, self._layer_scale(part, name))
        return _zeros(shape)

    # ------------------------------------------------------------ adapt
    def adapt(self, data: TimeSeries) -> "AbstractCDEForecaster":
        owner = type(self).__name__
        self._check_fields()
        _check_transform(self.transform, owner)
        for name in ("state_dim", "width", "horizon"):
            check_int(f"{owner}.{name}", getattr(self, name))
        k = self.forecast_series_every
        if not is_int(k) or k < 0 or k == 1:
            raise ValueError(
                f"{owner}.forecast_series_every: expected 0 (no series held back) or an integer of at "
                f"least 2 (every k-th series held back), got {k!r}."
            )
        if self.fill not in ("forward", "linear"):
            raise ValueError(f"{owner}.fill: must be 'forward' or 'linear', got {self.fill!r}.")
        if self.forecast not in ("decoder", "rollout"):
            raise ValueError(f"{owner}.forecast: must be 'decoder' or 'rollout', got {self.forecast!r}.")
        if self.weight_prior not in ("none", "gaussian"):
            raise ValueError(f"{owner}.weight_prior: must be 'none' or 'gaussian', got {self.weight_prior!r}.")
        check_real(f"{owner}.min_widening", self.min_widening, 0.0, 1.0,
                   hint="the least factor the held-back score may put on the head's sd; 1 only widens")
        bad = [h for h in self.exposure_halflives if not (isinstance(h, float) and np.isfinite(h) and h > 0)]
        if bad:
            raise ValueError(
                f"{owner}.exposure_halflives: expected positive half-lives in the data's time unit, e.g. "
                f"(0.5, 2.0, 8.0), got {bad[0]!r}."
            )
        if data.treatments is None:
            raise ValueError(
                f"{owner}: the data has no treatments; pass TimeSeries(..., treatments=(N, T, K)) "
                "(use a column of zeros if no treatment was ever given)."
            )
        if data.n_times < 2:
            raise ValueError(f"{owner}: need at least 2 times per series, got {data.n_times}.")
        positive = bool(np.all(data.ys[data.mask] > 0))
        log = self.transform == "log" or (self.transform == "auto" and positive)
        if log:
            check_positive(data, f"{owner}: transform='log'", "use transform='none'")
        sc = fit_scaling(data, log=log, dtype=np.float64)
        return dataclasses.replace(
            self,
            data_dim=int(data.dim),
            n_treatments=int(data.treatments.shape[2]),
            n_static=0 if data.static is None else int(data.static.shape[1]),
            time_scale=sc.time_scale,
            rows=int(data.n_times),
            loc=sc.loc,
            scale=sc.scale,
            log_outcome=bool(log),
        )

    def _check_batch(self, batch: Batch):
        owner = type(self).__name__
        if self.data_dim is None:
            raise ValueError(f"{owner}: call model.adapt(data) (bd.fit does) before running the program.")
        if batch.treatments is None or batch.treatments.shape[-1] != self.n_treatments:
            raise ValueError(
                f"{owner}: expected treatments with {self.n_treatments} channels, got "
                f"{None if batch.treatments is None else batch.treatments.shape}."
            )
        if self.n_static and (batch.static is None or batch.static.shape[-1] != self.n_static):
            raise ValueError(
                f"{owner}: expected static covariates with {self.n_static} columns, got "
                f"{None if batch.static is None else batch.static.shape}."
            )

    # ------------------------------------------------------------ pieces
    def _to_z(self, ys):
        loc, scale = jnp.asarray(self.loc), jnp.asarray(self.scale)
        v = jnp.log(jnp.maximum(ys, 1e-30)) if self.log_outcome else ys
        return (v - loc) / scale

    def _obs_dist(self, m, s):
        """Outcome law on the data scale from a standardised (transformed) mean/scale."""
        loc, scale = jnp.asarray(self.loc), jnp.asarray(self.scale)
        mu, sd = loc + scale * m, scale * s
        if self.log_outcome:
            return dist.LogNormal(mu, sd), jnp.exp(mu + 0.5 * sd**2)
        return dist.Normal(mu, sd), mu

    def _common_params(self):
        h, ce, dim = self.state_dim, self._c_enc, self.data_dim
        return {
            "embed_W": numpyro.param("embed.W", _init_normal((ce + self.n_static, h), self._embed_scale)),
            "embed_b": numpyro.param("embed.b", _zeros((h,))),
            "head_W": numpyro.param("head.W", _init_normal((h, 2 * dim), 0.1 / np.sqrt(h))),
            "head_b": numpyro.param("head.b", lambda k: jnp.concatenate([jnp.zeros(dim), jnp.full(dim, -1.0)])),
        }

    @property
    def _embed_scale(self):
        """The sd of the embedding's initial weights (and of their prior): `1/√(inputs + 1)`."""
        return 1.0 / np.sqrt(self._c_enc + self.n_static + 1)

    def _point_log_prior(self, p, enc_fixed, dec_fixed):
        """`weight_prior="gaussian"`: the log density, up to a constant, of the point-estimated
        weights under zero-mean normal priors, each array's sd its initial scale (the field
        layers' `_layer_scale`, the embedding's `1/√(inputs + 1)`) and the head's weights
        `1/√state_dim` (ten times their initial scale: the head starts small, not the prior);
        the head's biases have none. Their fit is then a MAP estimate, and a small cohort's
        likelihood pulls them less far from small weights than a large one's."""
        terms = [(p["embed_W"], self._embed_scale), (p["embed_b"], 1.0),
                 (p["head_W"], 1.0 / np.sqrt(self.state_dim))]
        terms += [(v, self._layer_scale(part, nm))
                  for part, lay in (("enc", enc_fixed), ("dec", dec_fixed)) for nm, v in lay.items()]
        return -0.5 * sum(jnp.sum((v / sd) ** 2) for v, sd in terms)

    def _head(self, p, u):
        out = u @ p["head_W"] + p["head_b"]
        m, s = out[..., : self.data_dim], out[..., self.data_dim :]
        return m, jax.nn.softplus(s) + 1e-3

    def _controls(self, batch: Batch):
        """Encoder control path `(N, T, C)`: scaled time, filled standardised outcome,
        observation counts, treatments."""
        ts, ys, mask, tr = batch.ts, batch.ys, batch.mask, batch.treatments
        t0 = ts[:, :1]
        yz = jnp.where(mask, self._to_z(jnp.where(mask, ys, 1.0)), 0.0)
        filled = fill_missing(yz, mask, ts=ts, method=self.fill)
        counts = observation_counts(mask, scale=float(self.rows))
        tcol = ((ts - t0) / self.time_scale)[..., None]
        return jnp.concatenate([tcol, filled, counts, tr], axis=-1), (ts - t0) / self.time_scale

    def _static(self, batch: Batch, n):
        if self.n_static:
            return batch.static
        return jnp.zeros((n, 0))

    # Subclass hooks ----------------------------------------------------
    @abc.abstractmethod
    def _check_fields(self) -> None:
        """Refuse bad values of the subclass's own fields (called by `adapt`)."""

    @abc.abstractmethod
    def _draw(self, key, num_paths, n_rows):
        """Return `(enc_rows, enc_fixed, dec_rows, dec_fixed, kl)`: for each part the
        layers that vary by row (arrays with leading axes `(num_paths, n_rows)`) and the
        fixed ones, and the KL per path `(num_paths,)`."""

    @abc.abstractmethod
    def _num_paths(self, training: bool) -> int:
        """Weight paths per evaluation (training or prediction)."""

    @abc.abstractmethod
    def _perturb(self, hidden_act, key):
        """The field's hidden units after any perturbation (e.g. dropout)."""

    # ------------------------------------------------------------ fields
    @staticmethod
    def _mlp(lay, inp, perturb):
        hid = jnp.tanh(inp @ lay["W1"] + lay["b1"])
        hid = perturb(hid)
        return jnp.tanh(hid @ lay["W2"] + lay["b2"])

    def _encode(self, p, lay_rows, lay_fixed, batch, key):
        """Encoder states at every row, `(T, N, H)`."""
        n, t_len, _ = batch.ys.shape
        xs, tsc = self._controls(batch)
        st = self._static(batch, n)
        z0 = jnp.tanh(jnp.concatenate([xs[:, 0], st], -1) @ p["embed_W"] + p["embed_b"])
        tr = jnp.concatenate([batch.treatments, self._exposures(tsc, batch.treatments)], -1)
        a_next = jnp.moveaxis(tr[:, 1:], 1, 0)  # treatment (and exposures) over step j -> j+1
        keys = jax.random.split(key, t_len - 1)

        def field(t, z, x, e):
            rows, a, k = e
            return self._encoder_field({**lay_fixed, **rows}, t, z, a, st, k)

        return solve_cde_grid(
            field, z0, jnp.moveaxis(tsc, 1, 0), jnp.moveaxis(xs, 1, 0), (lay_rows, a_next, keys)
        )

    def _encoder_field(self, lay, t, z, a, st, key):
        """The encoder's field `f(t, z, a)`, a `(..., H, C_enc)` matrix for states `z (..., H)`
        at times `t (...)`, with treatments (and exposures) `a` and static covariates `st`."""
        inp = jnp.concatenate([t[..., None], z, a, st], -1)
        out = self._mlp(lay, inp, lambda hcur: self._perturb(hcur, key))
        return out.reshape(z.shape[:-1] + (self.state_dim, self._c_enc))

    def _decode_step(self, lay, u, t, a, dA, st, key):
        """One decoder Euler step for states `u (R, N, H)` with per-row layers."""
        inp = jnp.concatenate(
            [jnp.broadcast_to(t[..., None], u.shape[:-1] + (1,)), u, a,
             jnp.broadcast_to(st, u.shape[:-1] + st.shape[-1:])], -1)
        W1, b1 = lay["W1"], lay["b1"]
        pre = jnp.einsum("rni,ij->rnj", inp, W1) if W1.ndim == 2 else jnp.einsum("rni,rij->rnj", inp, W1)
        hid = jnp.tanh(pre + (b1 if b1.ndim == 1 else b1[:, None]))
        hid = self._perturb(hid, key)
        W2, b2 = lay["W2"], lay["b2"]
        out = jnp.einsum("rnw,wo->rno", hid, W2) if W2.ndim == 2 else jnp.einsum("rnw,rwo->rno", hid, W2)
        out = jnp.tanh(out + (b2 if b2.ndim == 1 else b2[:, None]))
        g = out.reshape(u.shape + (self._c_dec,))
        return u + jnp.einsum("rnhc,rnc->rnh", g, dA)

    # ------------------------------------------------------------ program
    def program(self, batch: Batch, query: Optional[Query] = None, *, subsample_size=None):
        self._check_batch(batch)
        n, t_len, d = batch.ys.shape
        h_max = self.horizon if query is None else query.ts.shape[1]
        training = query is None
        num_paths = self._num_paths(training)
        key = numpyro.prng_key()
        if key is None:
            raise ValueError(f"{type(self).__name__}.program needs a PRNG key: run it under numpyro.handlers.seed.")
        k_w, k_run = jax.random.split(key)
        p = self._common_params()
        # the forecast's scale on the head's sd per horizon, κ ≥ min_widening, fitted only by the held-back score
        kappa = None
        if self.forecast_series_every:
            start = jnp.full((self.horizon,), _widening_start(self.min_widening))
            kappa = _widening(numpyro.param("head.forecast_widening", start), self.min_widening)
        enc_rows, enc_fixed, dec_rows, dec_fixed, kl = self._draw(k_w, num_paths, t_len + h_max)
        numpyro.factor("kl_weights", -jnp.mean(kl))
        if self.weight_prior == "gaussian":
            numpyro.factor("weight_prior", self._point_log_prior(p, enc_fixed, dec_fixed))
        if not training:
            return self._predict(p, enc_rows, enc_fixed, dec_rows, dec_fixed, batch, query, k_run, kappa)
        scoring = bool(self.forecast_series_every) and n >= self.forecast_series_every
        layers = (enc_rows, enc_fixed, dec_rows, dec_fixed)
        take = lambda rows: Batch(*(None if a is None else a[rows] for a in batch))  # noqa: E731
        with numpyro.plate("series", n, subsample_size=subsample_size, dim=-1) as idx:
            sub = take(idx)
            ahead = compiled(self._ahead, p, layers, sub, k_run, num_paths)
            seen = sub
            if scoring:  # the held-back series are hidden from the likelihood (their encoder still reads them)
                back = self._is_held_back(idx)
                seen = sub._replace(mask=sub.mask & ~back[:, None, None])
            self._observe_train(seen, *ahead, num_paths)
        if scoring:
            if subsample_size is None:  # the held-back series are known: score a pass over only those
                rows = np.nonzero(self._is_held_back(np.arange(n)))[0]
                sub = take(rows)
                ahead = compiled(self._ahead, p, layers, sub, jax.random.fold_in(k_run, 1), num_paths)
                back = jnp.ones((rows.size,), bool)
            # outside the plate: a mean score, so κ's gradient stays O(1) beside the ELBO's
            numpyro.factor("forecast_score", -self._held_back_score(sub, back, ahead, kappa))
        return None

    def _is_held_back(self, index):
        """Whether the series at `index` (NumPy or JAX integers) are held back from the
        likelihood: every `forecast_series_every`-th, at most `_MAX_HELD_BACK` of them."""
        k = self.forecast_series_every
        return (index % k == k - 1) & (index < k * _MAX_HELD_BACK)

    def _ahead(self, p, layers, batch, key, num_paths):
        """The head's forecasts `(m1, s1, ma, sa, sel, ahead_scale)` that training scores:
        one step ahead from every row (`m1, s1 (S, T, N, D)`, start row `r` predicts row
        `r + 1`) and `τ = 2..horizon` steps ahead from the start rows `sel (R,)`
        (`ma, sa (S, horizon − 1, R, N, D)`, or None), standardised units."""
        enc_rows, enc_fixed, dec_rows, dec_fixed = layers
        n, t_len, d = batch.ys.shape
        hor = self.horizon
        xs, tsc = self._controls(batch)
        st = self._static(batch, n)
        tr = batch.treatments
        # Padded future rows (masked out of the likelihood) so every start row has `hor` steps.
        step = tsc[:, -1:] - tsc[:, -2:-1]
        t_pad = jnp.concatenate([tsc, tsc[:, -1:] + step * jnp.arange(1, hor + 1)], 1)
        a_pad = jnp.concatenate([tr, jnp.zeros((n, hor, tr.shape[-1]))], 1)
        A = jnp.concatenate([t_pad[..., None], a_pad], -1)  # (N, T+hor, C_dec)
        A = jnp.moveaxis(A, 1, 0)  # (T+hor, N, C)
        a_rows = jnp.moveaxis(jnp.concatenate([a_pad, self._exposures(t_pad, a_pad)], -1), 1, 0)
        t_rows = jnp.moveaxis(t_pad, 1, 0)

        # Start rows of the multi-step (tau >= 2) decoder: a random subset shared by the
        # paths when `ahead_starts` < T - 1 (an unbiased estimate of the sum over all
        # starts, rescaled by (T - 1) / R).
        k_sel, key = jax.random.split(key)
        pop = t_len - 1
        r_ahead = pop if (self.ahead_starts <= 0 or self.ahead_starts >= pop) else int(self.ahead_starts)
        if r_ahead == pop:
            sel = jnp.arange(pop)
        else:
            sel = jax.random.choice(k_sel, pop, (r_ahead,), replace=False)

        def one_path(enc_r, dec_r, k):
            k_enc, k_dec = jax.random.split(k)
            zs = self._encode(p, jax.tree_util.tree_map(lambda a: a[: t_len - 1], enc_r), enc_fixed, batch, k_enc)
            lay = {**dec_fixed, **jax.tree_util.tree_map(lambda a: a[1 : t_len + 1], dec_r)}
            dA = A[1 : t_len + 1] - A[:t_len]
            u = self._decode_step(lay, zs, t_rows[:t_len], a_rows[1 : t_len + 1], dA, st,
                                  jax.random.fold_in(k_dec, 1))
            m1, s1 = self._head(p, u)  # (T_start, N, D): target row start + 1
            u = u[sel]
            means, scales = [], []
            for tau in range(2, hor + 1):
                r = sel + tau
                lay = {**dec_fixed, **jax.tree_util.tree_map(lambda a: a[r], dec_r)}
                u = self._decode_step(lay, u, t_rows[r - 1], a_rows[r], A[r] - A[r - 1], st,
                                      jax.random.fold_in(k_dec, tau))
                m, s_ = self._head(p, u)
                means.append(m)
                scales.append(s_)
            if not means:
                return m1, s1, None, None
            return m1, s1, jnp.stack(means), jnp.stack(scales)  # (hor-1, R, N, D)

        keys = jax.random.split(key, num_paths)
        m1, s1, ma, sa = jax.vmap(one_path)(enc_rows, dec_rows, keys)
        return m1, s1, ma, sa, sel, pop / (r_ahead * num_paths)

    def _held_back_score(self, batch: Batch, back, ahead, kappa):
        """The score that fits the forecast widening `kappa (horizon,)`: minus the
        log density of the predictive (the mixture over weight paths of
        `N(m, (κ_τ s)²)`, exactly as `predict` forecasts) at the held-back series' (`back
        (N,)`) observed outcomes, one and `τ ≥ 2` steps ahead, standardised (transformed)
        units; the mean over each horizon's entries, averaged over horizons. Only `κ`
        receives its gradient: the networks and weight paths are fitted by the ELBO alone."""
        m1, s1, ma, sa, sel, _ = jax.tree_util.tree_map(jax.lax.stop_gradient, ahead)
        t_len = batch.ys.shape[1]
        z = self._to_z(jnp.where(batch.mask, batch.ys, 1.0))  # (N, T, D)
        scored = batch.mask & back[:, None, None]

        def mean_score(mu, sd, y, ok):  # mu, sd (N, S, ...); y, ok (N, ...)
            c = mixture_log_score(mu, sd, y, axis=1)
            return jnp.sum(jnp.where(ok, c, 0.0)) / jnp.maximum(jnp.sum(ok), 1)

        mv = lambda x: jnp.moveaxis(x, 2, 0)  # noqa: E731  (S, T, N, D) -> (N, S, T, D)
        scores = [mean_score(mv(m1[:, : t_len - 1]), kappa[0] * mv(s1[:, : t_len - 1]), z[:, 1:], scored[:, 1:])]
        if ma is not None:
            taus = jnp.arange(2, self.horizon + 1)
            tgt = sel[None, :] + taus[:, None]  # (hor-1, R) target rows
            tgt_c = jnp.minimum(tgt, t_len - 1)
            ok = scored[:, tgt_c] & (tgt < t_len)[None, :, :, None]  # (N, hor-1, R, D)
            mu, sd = jnp.moveaxis(ma, 3, 0), jnp.moveaxis(sa, 3, 0)  # (N, S, hor-1, R, D)
            for j in range(self.horizon - 1):
                scores.append(mean_score(mu[:, :, j], kappa[j + 1] * sd[:, :, j], z[:, tgt_c[j]], ok[:, j]))
        return jnp.mean(jnp.stack(scores))

    def _observe_train(self, batch: Batch, m1, s1, ma, sa, sel, ahead_scale, num_paths):
        """The training likelihood: one step ahead from every row (`"y"`), and `τ ≥ 2`
        steps ahead from the start rows `sel` (`"y_ahead"`, scaled by `ahead_scale`)."""
        t_len, hor = batch.ys.shape[1], self.horizon
        rows = jnp.arange(t_len)
        src = jnp.clip(rows - 1, 0, t_len - 1)
        mu1 = jnp.moveaxis(m1[:, src], 2, 0)  # (N, S, T, D), row r from start r - 1
        sd1 = jnp.moveaxis(s1[:, src], 2, 0)
        obs = jnp.where(batch.mask, batch.ys, 1.0)
        # Paths (and horizons) sit in the event shape, so the only batch axis is the
        # series plate; the 1/S scale makes the sum over paths a Monte Carlo mean.
        with numpyro.handlers.scale(scale=1.0 / num_paths):
            y_law, _ = self._obs_dist(mu1, sd1)
            m_y = (batch.mask & (rows >= 1)[None, :, None])[:, None]
            numpyro.sample("y", y_law.mask(m_y).to_event(3), obs=jnp.broadcast_to(obs[:, None], y_law.batch_shape))
        if hor > 1:
            taus = jnp.arange(2, hor + 1)
            tgt = sel[None, :] + taus[:, None]  # (hor-1, R) target rows
            valid = tgt < t_len
            tgt_c = jnp.minimum(tgt, t_len - 1)
            obs_a = obs[:, tgt_c]  # (N, hor-1, R, D)
            mask_a = batch.mask[:, tgt_c] & valid[None, :, :, None]
            a_law, _ = self._obs_dist(jnp.moveaxis(ma, 3, 0), jnp.moveaxis(sa, 3, 0))  # (N, S, hor-1, R, D)
            with numpyro.handlers.scale(scale=ahead_scale):
                numpyro.sample("y_ahead", a_law.mask(mask_a[:, None]).to_event(4),
                               obs=jnp.broadcast_to(obs_a[:, None], a_law.batch_shape))

    def _predict(self, p, enc_rows, enc_fixed, dec_rows, dec_fixed, batch, query, key, kappa):
        n, t_len, d = batch.ys.shape
        hq = query.ts.shape[1]
        t0 = batch.ts[:, :1]
        qts = (query.ts - t0) / self.time_scale
        k_enc, k_dec, k_y = jax.random.split(key, 3)
        enc_all = jax.tree_util.tree_map(lambda a: a[0], enc_rows)  # this draw's weight path
        enc_r = jax.tree_util.tree_map(lambda a: a[: t_len - 1], enc_all)
        dec_r = jax.tree_util.tree_map(lambda a: a[0], dec_rows)
        zs = self._encode(p, enc_r, enc_fixed, batch, k_enc)  # (T, N, H)
        xs, tsc = self._controls(batch)  # (N, T, C_enc)
        # Start from the last history row strictly before the first query time.
        i0 = jnp.clip(jnp.sum(batch.ts < query.ts[:, :1], axis=1) - 1, 0, t_len - 1)
        e_hist = self._exposures(tsc, batch.treatments)  # (N, T, K·H)
        halflives = jnp.asarray(self._model_halflives, tsc.dtype)
        n_tr = self.n_treatments
        n_rows = dec_r["W2"].shape[0] if dec_r else 1
        rollout = self.forecast == "rollout"
        # one-step widening for every step of a rollout; horizons past the training horizon keep the last
        if kappa is None:
            widen = jnp.ones((hq,))
        elif rollout:
            widen = jnp.full((hq,), kappa[0])
        else:
            widen = kappa[jnp.minimum(jnp.arange(hq), self.horizon - 1)]
        idx = jnp.arange(n)
        if rollout:
            upto = jnp.arange(t_len)[None, :, None] <= i0[:, None, None]
            rate = jnp.sum(batch.mask & upto, 1) / jnp.sum(upto, 1)  # (N, D) each history's observed share

        def one_series(inp):
            # Series n reads the weights at its own rows (the weight clock is the data row):
            # the decoder's at i0[n] + 1 + k, the encoder's at i0[n] + k. One series at a time
            # (`lax.map`), so the rows are sliced, not gathered: a gather would materialise a
            # copy of the weights for every series and draw.
            n_i, i0_i = inp
            z = zs[i0_i, n_i]  # (H,) the encoder's state at the start row
            u = z[None, None]  # (1, 1, H) the decoder's
            x_prev = xs[n_i, i0_i]
            t_prev, a_prev = tsc[n_i, i0_i], batch.treatments[n_i, i0_i]
            e_prev = e_hist[n_i, i0_i].reshape(n_tr, len(self.exposure_halflives))  # (K, H)
            st = self._static(batch, n)[n_i]
            k_n = jax.random.fold_in(k_dec, n_i)
            if rollout:
                k_draw, k_seen, k_field = jax.random.split(jax.random.fold_in(k_y, n_i), 3)
            means, scales, draws = [], [], []
            take = lambda a, r: jax.lax.dynamic_index_in_dim(a, r, keepdims=True)  # noqa: E731
            for k in range(hq):
                row = jnp.minimum(i0_i + 1 + k, n_rows - 1)
                lay = {**dec_fixed, **jax.tree_util.tree_map(lambda a: take(a, row), dec_r)}
                t_cur, a_cur = qts[n_i, k], query.treatments[n_i, k]
                dA = jnp.concatenate([(t_cur - t_prev)[None], a_cur - a_prev])
                e_cur = _exposure_step(e_prev, t_cur - t_prev, a_cur, halflives)
                a_in = jnp.concatenate([a_cur, e_cur.reshape(-1)])
                if rollout:  # one step from the encoder's state, which has read the draws so far
                    u = z[None, None]
                u = self._decode_step(lay, u, t_prev[None, None], a_in[None, None], dA[None, None], st[None, None],
                                      jax.random.fold_in(k_n, k))
                m, s = self._head(p, u[0, 0])
                s = s * widen[k]
                if rollout:
                    # a draw of the widened one-step law (the law new patients' next step was fitted to)
                    y = m + s * jax.random.normal(jax.random.fold_in(k_draw, k), m.shape)
                    # the encoder reads the draw as the data would show it: observed at the rate the
                    # series' history was (each column), else a missing row (the value carried forward)
                    seen = jax.random.uniform(jax.random.fold_in(k_seen, k), (d,)) < rate[n_i]
                    x_cur = jnp.concatenate([t_cur[None], jnp.where(seen, y, x_prev[1 : 1 + d]),
                                             x_prev[1 + d : 1 + 2 * d] + seen / self.rows, a_cur])
                    r_enc = jnp.minimum(i0_i + k, n_rows - 1)
                    lay_e = {**enc_fixed, **jax.tree_util.tree_map(lambda a: take(a, r_enc)[0], enc_all)}
                    g = self._encoder_field(lay_e, t_prev, z, a_in, st, jax.random.fold_in(k_field, k))
                    z = z + g @ (x_cur - x_prev)
                    x_prev = x_cur
                    draws.append(y)
                means.append(m)
                scales.append(s)
                t_prev, a_prev, e_prev = t_cur, a_cur, e_cur
            return jnp.stack(means), jnp.stack(scales), (jnp.stack(draws) if rollout else None)  # (Hq, D)

        m, s, y = jax.lax.map(one_series, (idx, i0))  # (N, Hq, D)
        law, mean = self._obs_dist(m, s)
        numpyro.deterministic("f_out", mean)
        if rollout:  # each step's law is conditional on the draws before it: the draws are the predictive
            loc, scale = jnp.asarray(self.loc), jnp.asarray(self.scale)
            y = loc + scale * y
            return numpyro.deterministic("y_out", jnp.exp(y) if self.log_outcome else y)
        return numpyro.sample("y_out", law)


@register_model
class BNCDE(AbstractCDEForecaster):
    """Bayesian neural CDE (Hess et al., ICLR 2024) for outcomes under treatment plans.

    Encoder `dz = f_{w_t}(t, z, a) dX_t` over the history control path
    `X = (t, outcome filled, observation counts, treatments)`; decoder
    `du = g_{w_t}(t, u, a) dA_t` over the plan `A = (t, treatments)`, started from each
    Monte Carlo sample's encoder state; Gaussian head (mean, softplus scale) on the
    standardised (log-)outcome. The weights of the stochastic layers follow
    `dw = (h_φ(s, w) − w) ds + σ dB` (prior: OU `dw = −w ds + σ dB`) with
    `h_φ(s, w) = MLP_φ(s) + d_φ ⊙ w` and KL `½ ∫ |h_φ|²/σ² ds` (Girsanov).

    **Arguments:**

    - `state_dim`: state size of the CDEs (8 in the paper; `hidden` is its deprecated
      name); `width`: field width (128 in the paper).
    - `horizon`: training horizon `τ = 1..horizon`; `τ = 1` is trained from every row,
      `τ ≥ 2` from `ahead_starts` random start rows per step (0: every row).
    - `stochastic`: `"all"` (default): every layer of both fields has stochastic weights,
      so the hidden features themselves vary and a plan whose inputs the data rarely show
      reads weights the data left uncertain; or `"last"` (the output layer of both fields,
      the paper's; faster to predict). Measured against each other in `docs/calibration.md`
      (`benchmarks/bncde_sweep.py` compares them on the paper's configuration).
    - `sigma`: diffusion of the weight SDE (the authors tuned 1e-2 … 1e-4 and ran 1e-3).
      It sets how far the weight paths spread along the rows (and where the learned
      initial spread starts), so it trades sharpness for coverage: tune it on held-out
      data (`benchmarks/bncde_sweep.py` sweeps it).
    - `train_paths`: weight paths per training step (10 in the paper); prediction draws
      one path per predictive sample.
    - `weight_spread`: `"learned"` (default): initial weights `N(μ_0, sd0²)` with a
      learned `sd0` per weight (param `w.log_sd0`, starting at `σ`) against the prior
      `N(μ_0, sd_p²)`, `sd_p` the layer's initial scale (`0.3/√width` for the output
      layers; the prior's mean is `μ_0` itself, which `weight_prior` puts its own prior
      on), its KL added to
      the path KL. The spread then scales with the width through `sd_p` and shrinks where
      the data pin a weight down, so a plan the data barely contain reads the spread of
      the weights they leave free. `"fixed"` is the paper's version, `N(μ_0, σ²)` under
      prior and posterior alike (runs saved before the option existed load with it).
      Measured against each other in `docs/calibration.md`.
    - `weight_prior`: `"gaussian"` (default): every weight the model point-estimates has a
      zero-mean normal prior at its layer's initial scale (the embedding and the fields'
      deterministic layers; the head's weights at `1/√state_dim`), fitted as a MAP
      estimate, and the stochastic layers' mean `μ_0` pays `½ Σ (μ_0/sd_p)²` in their KL
      (their prior centred at zero instead of fitted). Against a few dozen patients the
      prior holds the networks near small weights, so they overfit later and less (the
      held-back score keeps a later step) and a rollout stays in the range of the data,
      while a large cohort's likelihood outweighs it. `"none"`: no prior on those weights
      (the paper's; runs saved before the option load with it). Measured in
      `docs/calibration.md`.
    - `fill`: `"forward"` (causal, default) or `"linear"` filling of missing outcomes.
    - `transform`: `"auto"` (log for positive outcomes, giving a LogNormal head on the
      data scale), `"log"` or `"none"` (Normal head on the standardised outcome).
    - `forecast_series_every`: every this-many-th series (index `i % k == k − 1`), at most
      64 series, is held back from the likelihood to fit the forecast's widening (below);
      `0` turns it off.
    - `exposure_halflives`: half-lives in the data's time unit, e.g. `(0.5, 2.0, 8.0)`; for
      each, both fields read each treatment's exposure `e_j = e_{j−1}·2^{−Δt/h} + a_j` (a
      dose that decays by half every `h`) beside the treatment itself, over the history and
      on into a plan. Sustained treatment is then a growing input whose effect the isolated
      treatment days in the data can teach, rather than a run of identical inputs. Off by
      default (`()`); measured in `docs/calibration.md`.
    - `forecast`: how outcomes `τ ≥ 2` steps ahead are forecast. `"rollout"` (default):
      one step at a time, each step's outcome drawn from the one-step forecast (widened by
      `κ_1`) and read by the encoder before the next step, as the data would show it:
      observed at the rate the series' history was (each column), else as a missing row
      (the g-formula; the predictive draws are these sequences). Only the one-step
      forecast is used, and it conditions on everything that chose the treatment.
      `"decoder"` (the paper's; runs saved before the option load with it): the decoder
      runs on through the plan from the encoder's state at the origin, its head trained on
      the outcomes `τ` steps ahead. Under time-varying confounding (treatment given
      *because* of the outcomes between the origin and `τ`) that regression learns the
      treatments' effect mixed with the reasons they were given, and a plan the data
      rarely show is forecast with a bias that grows with `τ`. Training is the same for
      both: only the forecast differs. A rollout is only as good as the one-step
      forecast it repeats: on a small cohort whose fit stopped early its bands are wider
      than the decoder's. Measured in `docs/calibration.md`.

    **Widening fitted on held-back series.** On a small cohort the networks fit the
    training patients' outcomes more closely than they forecast new ones, and the
    head's sd, fitted by the ELBO on the same patients, comes out far too narrow for
    the forecasts (`docs/calibration.md` has the measurements). So every
    `forecast_series_every`-th series (at most 64) is left out of the likelihood (its
    encoder still reads it), and the log score (minus the log density) of its
    forecasts one to `horizon` steps ahead — the mixture over weight paths, made as
    `predict` makes them — fits a widening `κ_τ ≥ min_widening` (1 by default) of the
    head's sd per horizon (param `head.forecast_widening`, `κ = min_widening + softplus(10 θ)`;
    horizons past `horizon` keep the last) and nothing else. The log score, not the CRPS:
    errors on new patients are heavier-tailed than the Gaussian head, and the CRPS's best scale for
    them leaves the outer intervals short, while the log score's matches the errors'
    spread. `κ` only widens (`min_widening=1`): on the factual outcomes of a large cohort
    the ELBO's sd can be wider than the score's optimum, and narrowing it cost coverage of
    the plans the data rarely show; `min_widening=0` lets the score narrow it too, which
    cost coverage again with every layer's weights stochastic. The score is also the
    model's `held_out_site`, on which `SVI(keep_best=True)` keeps the parameters whose
    held-back forecasts were best: on a small cohort that early stopping is most of the
    gain; on a large one it can stop before the training that a rarely seen plan needs (both measured in
    `docs/calibration.md`; `keep_best=False` turns it off).
    Runs saved before it existed load with `forecast_series_every=0`.

    Data-derived fields set by `adapt`: `data_dim`, `n_treatments`, `n_static`, `rows`,
    `loc`, `scale` (standardisation of the (log-)outcome), `time_scale` (the longest
    series' span), `log_outcome`.

    The weight clock is the data row: `s_j = j / rows` (shared by the batch, as in the
    authors' code where every patient shares the daily grid); CDE increments use each
    series' own times. Treatments in row `j` act over the step ending at row `j`.

    Departures from the authors' code (paper's version kept): the field uses `w_t`
    (not the drift `h − w`); the decoder starts from each sample's encoder state; the KL
    is not rescaled by minibatching. One hidden layer per field.
    """

    stochastic: str = "all"
    sigma: float = 1e-2
    train_paths: int = 10
    weight_spread: str = "learned"
    forecast: str = "rollout"
    weight_prior: str = "gaussian"

    _upgrades = AbstractCDEForecaster._upgrades + (_fixed_spread_before_it_existed, _decoder_before_rollout_existed)

    def _check_fields(self) -> None:
        if self.stochastic not in ("last", "all"):
            raise ValueError(f"BNCDE.stochastic: must be 'last' or 'all', got {self.stochastic!r}.")
        if self.weight_spread not in ("fixed", "learned"):
            raise ValueError(f"BNCDE.weight_spread: must be 'fixed' or 'learned', got {self.weight_spread!r}.")
        check_real("BNCDE.sigma", self.sigma, 0.0, open_low=True)
        check_int("BNCDE.train_paths", self.train_paths)

    def _num_paths(self, training):
        return self.train_paths if training else 1

    def _perturb(self, hidden_act, key):
        return hidden_act

    def _stochastic_names(self):
        return ("W2", "b2") if self.stochastic == "last" else ("W1", "b1", "W2", "b2")

    def _draw(self, key, num_paths, n_rows):
        names = self._stochastic_names()
        fixed, shapes = {}, []
        for part in ("enc", "dec"):
            fixed[part] = {}
            for nm, shape in self._layer_shapes(part).items():
                if nm in names:
                    shapes.append((part, nm, shape))
                else:
                    fixed[part][nm] = numpyro.param(f"{part}.{nm}", self._layer_init(part, nm))
        sizes = [int(np.prod(s)) for _, _, s in shapes]
        total = sum(sizes)

        def init_mu(k):
            ks = jax.random.split(k, len(shapes))
            return jnp.concatenate([self._layer_init(pt, nm)(kk).reshape(-1) for (pt, nm, _), kk in zip(shapes, ks)])

        mu0 = numpyro.param("w.mu0", init_mu)
        hw = 16
        a1 = numpyro.param("h.a1", _init_normal((hw,), 1.0))
        b1 = numpyro.param("h.b1", _init_normal((hw,), 1.0))
        A2 = numpyro.param("h.A2", _zeros((hw, total)))
        b2 = numpyro.param("h.b2", _zeros((total,)))
        dd = numpyro.param("h.d", _zeros((total,)))
        sd0, kl0 = None, 0.0
        # sd_p, each weight's prior sd: its layer's initial scale
        prior_sd = np.concatenate([np.full(size, self._spread_prior(pt, nm))
                                   for (pt, nm, _), size in zip(shapes, sizes)])
        if self.weight_spread == "learned":
            # w_0 ~ N(μ_0, sd0²) against the prior N(μ_0, sd_p²) (its mean μ_0 itself, under the
            # weight prior below); sd0 starts at σ
            log_sd0 = numpyro.param("w.log_sd0", _full((total,), np.log(float(self.sigma))))
            sd0 = jnp.exp(log_sd0)
            kl0 = jnp.sum(jnp.log(prior_sd) - log_sd0 + 0.5 * (sd0 / prior_sd) ** 2 - 0.5)

        w, kl = compiled(self._weight_paths, key, mu0, (a1, b1, A2, b2, dd), n_rows, num_paths, sd0)  # (S, G, P)
        if self.weight_prior == "gaussian":  # the initial weights' mean under N(0, sd_p²): its MAP term
            kl0 = kl0 + 0.5 * jnp.sum((mu0 / prior_sd) ** 2)
        kl = kl + kl0
        rows = {"enc": {}, "dec": {}}
        off = 0
        for (part, nm, shape), size in zip(shapes, sizes):
            rows[part][nm] = w[..., off : off + size].reshape(w.shape[:2] + shape)
            off += size
        return rows["enc"], fixed["enc"], rows["dec"], fixed["dec"], kl

    def _spread_prior(self, part, name):
        """The prior sd `sd_p` of the stochastic layers' initial weights: of their learned
        spread (`weight_spread="learned"`) and of their mean (`weight_prior="gaussian"`)."""
        return self._layer_scale(part, name)

    def _weight_paths(self, key, mu0, drift, n_rows, num_paths, sd0=None):
        """`num_paths` paths of the weight SDE over `n_rows` rows and their KL, with the
        posterior drift's parameters `drift = (a1, b1, A2, b2, d)` and the initial
        weights' sd `sd0` (None: σ)."""
        a1, b1, A2, b2, dd = drift
        sigma = float(self.sigma)

        def h(s, w):
            # In units of sigma, so that the KL (and Adam's steps) are O(1).
            return sigma * (jnp.tanh(s * a1 + b1) @ A2 + b2 + dd * w)

        s_grid = jnp.arange(n_rows, dtype=mu0.dtype) / float(self.rows)
        return weight_sde(key, mu0, sigma, s_grid, h, num_paths, sd0)
