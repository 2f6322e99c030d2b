"""Latent SDEs (Li, Wong, Chen & Duvenaud 2020) with the stable SDE families of Oh, Lim
& Kim (ICLR 2024), fitted by SVI on a path-space ELBO."""

from __future__ import annotations

import dataclasses
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from .._data import Batch, TimeSeries
from ..networks import param_module
from ..solvers._sde import solve_sde_grid
from ._base import AbstractModel, Query, register_model

__all__ = ["LatentSDE", "posterior_sde_with_kl", "time_changed_solve"]

_FAMILIES = ("neural", "langevin", "linear-noise", "geometric")
_ENCODERS = ("gru", "ncde")
_LIKELIHOODS = ("normal", "laplace")
_METHODS = ("euler", "heun", "milstein")


# --------------------------------------------------------------------------- networks
class _PerDimNet(eqx.Module):
    """`g_k(z_k) = sigmoid(MLP_k(z_k))`: one tiny MLP per latent coordinate, so the
    diffusion is diagonal *and* each entry depends only on its own coordinate (the
    noise is commutative: Milstein applies)."""

    w1: jax.Array
    b1: jax.Array
    w2: jax.Array
    b2: jax.Array

    def __init__(self, dim, width, *, key):
        k1, k2 = jax.random.split(key)
        self.w1 = jax.random.normal(k1, (dim, width))
        self.b1 = jnp.zeros((dim, width))
        self.w2 = jax.random.normal(k2, (dim, width)) / np.sqrt(width)
        self.b2 = jnp.zeros((dim,))

    def __call__(self, z):
        # The L tiny MLPs as two block-diagonal dense layers (plain matmuls): XLA's CPU
        # backend lowers the gradient of the broadcast-multiply-sum form to slow
        # reductions (several times the cost of the rest of the SDE solve at batch 1024).
        dim, width = self.w1.shape
        eye = jnp.eye(dim, dtype=self.w1.dtype)
        w1 = (eye[:, :, None] * self.w1[None]).reshape(dim, dim * width)
        w2 = (eye[:, None, :] * self.w2[:, :, None]).reshape(dim * width, dim)
        h = jax.nn.softplus(z @ w1 + self.b1.reshape(-1))
        return jax.nn.sigmoid(h @ w2 + self.b2)


class _TimeNet(eqx.Module):
    """`σ(t) = sigmoid(MLP(t))`, one output per latent coordinate."""

    mlp: eqx.nn.MLP

    def __init__(self, dim, width, *, key):
        self.mlp = eqx.nn.MLP(1, dim, width, 1, activation=jnp.tanh, key=key)

    def __call__(self, t):
        return jax.nn.sigmoid(_mlp(self.mlp, jnp.asarray(t)[..., None]))


class _GRUEncoder(eqx.Module):
    """A GRU run backwards in time over `[y·mask, mask, Δt]`; the context at
    observation `j` summarises the observations at times `>= t_j`."""

    cell: eqx.nn.GRUCell
    out: eqx.nn.Linear

    def __init__(self, data_dim, hidden, context_dim, *, key):
        k1, k2 = jax.random.split(key)
        self.cell = eqx.nn.GRUCell(2 * data_dim + 1, hidden, key=k1)
        self.out = eqx.nn.Linear(hidden, context_dim, key=k2)

    def __call__(self, ts, ys, mask):
        m = mask.astype(ys.dtype)
        gaps = jnp.concatenate([jnp.diff(ts), jnp.zeros((1,), ts.dtype)])
        xs = jnp.concatenate([ys * m, m, gaps[:, None]], axis=-1)
        seen = jnp.any(mask, axis=-1)

        def scan_step(h, inp):
            x, s = inp
            # Times with no observation (padding, fully missing rows) leave h unchanged.
            h = jnp.where(s, self.cell(x, h), h)
            return h, h

        h0 = jnp.zeros((self.cell.hidden_size,), ys.dtype)
        _, hs = jax.lax.scan(jax.checkpoint(scan_step), h0, (xs, seen), reverse=True)
        return jax.vmap(self.out)(hs)


class _NCDEEncoder(eqx.Module):
    """A neural CDE run backwards in time, `dh = F(h) dX`, driven by the control path
    `X = [t, ỹ, c]` (Kidger et al. 2020): `ỹ` the values with each missing entry
    filled by the next observation, `c` the backward running count of observations
    (so the encoder sees *when* a series was measured). Euler on the observation
    times; the state is (re)initialised from `X` until the first observation is met,
    so trailing padding is ignored."""

    init: eqx.nn.Linear
    field: eqx.nn.MLP
    out: eqx.nn.Linear
    hidden: int = eqx.field(static=True)
    in_dim: int = eqx.field(static=True)

    def __init__(self, data_dim, hidden, context_dim, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.in_dim = 2 * data_dim + 1
        self.hidden = hidden
        self.init = eqx.nn.Linear(self.in_dim, hidden, key=k1)
        self.field = eqx.nn.MLP(
            hidden, hidden * self.in_dim, hidden, 1, activation=jax.nn.softplus,
            final_activation=jnp.tanh, key=k2,
        )
        self.out = eqx.nn.Linear(hidden, context_dim, key=k3)

    def __call__(self, ts, ys, mask):
        n_t = ts.shape[0]
        m = mask.astype(ys.dtype)
        seen_row = jnp.any(mask, axis=-1)

        def step(carry, inp):
            h, last_y, count, x_prev, started = carry
            t, y, mk, s = inp
            last_y = jnp.where(mk, y, last_y)
            count = count + mk.astype(y.dtype) / n_t
            x = jnp.concatenate([t[None], last_y, count])
            h_new = h + (self.field(h).reshape(self.hidden, self.in_dim) @ (x - x_prev))
            h = jnp.where(started, h_new, self.init(x))
            started = started | s
            return (h, last_y, count, x, started), h

        d = ys.shape[-1]
        carry = (
            jnp.zeros((self.hidden,), ys.dtype),
            jnp.zeros((d,), ys.dtype),
            jnp.zeros((d,), ys.dtype),
            jnp.zeros((self.in_dim,), ys.dtype),
            jnp.asarray(False),
        )
        _, hs = jax.lax.scan(step, carry, (ts, ys * m, mask, seen_row), reverse=True)
        return jax.vmap(self.out)(hs)


class _Networks(eqx.Module):
    encoder: eqx.Module
    qz0: eqx.nn.Linear
    pz0_mean: jax.Array
    pz0_logstd: jax.Array
    prior_drift: eqx.nn.MLP
    control: eqx.nn.MLP
    diffusion: eqx.Module
    decoder: eqx.nn.Linear
    log_noise: jax.Array


# ------------------------------------------------------------------- path-space KL
def _linear(layer, x):
    out = x @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


def _mlp(mlp, x, first=None):
    """An `eqx.nn.MLP` on inputs with any leading batch dims; `first`, when given, is the
    already computed pre-activation of the first layer."""
    layers = mlp.layers
    h = _linear(layers[0], x) if first is None else first
    for layer in layers[1:]:
        h = _linear(layer, mlp.activation(h))
    return mlp.final_activation(h)


def time_changed_solve(drift, diffusion, y0, ts, noise, *, method="euler", step_inputs=None, checkpoint=False):
    """Solve `dy = f(t, y, a) dt + g(t, y, a) dW` (diagonal noise) for a batch of paths
    that each have their own time grid, as one `lax.scan` over the step index.

    In the step time `s` (step `n` spans `s ∈ [n, n + 1]`, real length `r_n`) the SDE
    reads `dy = r_n f ds + √r_n g dB_s`, so one solver loop with a shared unit grid
    steps every path on its own grid; the increments `dB_s` are the standard normals
    `noise`. Euler and Milstein steps are exactly those on the real grid.

    **Arguments:**

    - `drift`, `diffusion`: `f(t, y, a)`, `g(t, y, a)` on batched `y (*batch, L)` with
      the real times `t (*batch)` of the step's start; `a` is the step's entry of
      `step_inputs`. With `diffusion=None`, `drift` returns the pair `(f, g)`.
    - `y0`: `(*batch, L)`; `ts`: real grids broadcastable to `(*batch, n)`.
    - `noise`: standard normal increments `(n − 1, *batch, L)`.
    - `method`: `"euler"`, `"milstein"` or `"heun"` (Heun evaluates its second stage
      at the step's start time).

    **Returns:** the states at every grid time, `(n, *batch, L)`.
    """
    batch = y0.shape[:-1]
    ts = jnp.broadcast_to(ts, batch + (ts.shape[-1],))
    n = ts.shape[-1]
    t_steps = jnp.moveaxis(ts[..., :-1], -1, 0)
    r = jnp.moveaxis(jnp.diff(ts, axis=-1), -1, 0)
    s = jnp.arange(n, dtype=y0.dtype)

    def terms(_, y, a):
        t, rr, extra = a[1]
        if diffusion is None:
            f, g = drift(t, y, extra)
        else:
            f, g = drift(t, y, extra), diffusion(t, y, extra)
        return f * rr[..., None], g * jnp.sqrt(rr)[..., None]

    if step_inputs is None:
        step_inputs = jnp.zeros((n - 1,), y0.dtype)
    return solve_sde_grid(
        terms, None, y0, s, noise, method=method, step_inputs=(t_steps, r, step_inputs), checkpoint=checkpoint
    )


def posterior_sde_with_kl(
    prior_drift, control, diffusion, z0, ts, noise, *, method="euler", step_inputs=None, checkpoint=False
):
    """Solve the posterior SDE of a latent SDE together with its path-space KL.

    The posterior drift is written through its Girsanov control `u`:
    `f = h + g ⊙ u`, so that `u = (f − h) / g` and the KL between the posterior and
    prior path measures (same diffusion `g`, same start) is
    `KL = E ∫ ½ |u(t, z)|² dt` (Li et al. 2020, eq. 10; Girsanov). The integral is
    solved as one more state coordinate (zero diffusion), on the same grid and with
    the same Brownian increments as the state.

    **Arguments:**

    - `prior_drift(t, z, a)`, `control(t, z, a)`, `diffusion(t, z, a)`: on batched
      `z (*batch, L)`, each returns an array shaped like `z` (diagonal noise); `t` is
      `(*batch)`, `a` the step's entry of `step_inputs` (e.g. the encoder's context).
    - `z0`: `(*batch, L)`; `ts`: real time grids broadcastable to `(*batch, n)`.
    - `noise`: standard normal increments `(n − 1, *batch, L)` (the Brownian increment
      of step `k` is `√(t_{k+1} − t_k) · noise[k]`).

    **Returns:** `(zs, kl)`: the posterior paths `(n, *batch, L)` and the path KLs
    `(*batch)`.
    """
    L = z0.shape[-1]

    def aug_terms(t, y, a):
        z = y[..., :L]
        g = diffusion(t, z, a)  # once per stage: the drift's g ⊙ u and the noise share it
        c = control(t, z, a)
        f = jnp.concatenate([prior_drift(t, z, a) + g * c, 0.5 * jnp.sum(c**2, -1, keepdims=True)], -1)
        return f, jnp.concatenate([g, jnp.zeros_like(y[..., L:])], -1)

    y0 = jnp.concatenate([z0, jnp.zeros_like(z0[..., :1])], -1)
    noise = jnp.concatenate([noise, jnp.zeros_like(noise[..., :1])], -1)
    ys = time_changed_solve(
        aug_terms, None, y0, ts, noise, method=method, step_inputs=step_inputs, checkpoint=checkpoint
    )
    return ys[..., :L], ys[-1, ..., L]


def _refine(knots, substeps):
    """`substeps` equal steps in every interval of `knots (T,)` → grid `((T−1)S + 1,)`."""
    if substeps == 1:
        return knots
    frac = jnp.arange(substeps, dtype=knots.dtype) / substeps
    fine = (knots[:-1, None] + frac[None] * jnp.diff(knots)[:, None]).reshape(-1)
    return jnp.concatenate([fine, knots[-1:]])


def _interp(grid, path, t):
    """Linear interpolation of `path (G, L)` on `grid (G,)` at times `t (T',)`."""
    if grid.shape[0] == 1:
        return jnp.broadcast_to(path[0], t.shape + path.shape[1:])
    j = jnp.clip(jnp.searchsorted(grid, t, side="right") - 1, 0, grid.shape[0] - 2)
    width = grid[j + 1] - grid[j]
    lam = jnp.clip(jnp.where(width > 0, (t - grid[j]) / jnp.where(width > 0, width, 1.0), 0.0), 0.0, 1.0)
    return path[j] + lam[:, None] * (path[j + 1] - path[j])


def _positive_int(owner, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{owner}.{name}: expected an integer >= {minimum}, got {value!r}.")


# ------------------------------------------------------------------------------ model
@register_model
class LatentSDE(AbstractModel):
    """A latent SDE (Li, Wong, Chen & Duvenaud 2020) fitted by SVI on its path-space
    ELBO, with the stable SDE families of Oh, Lim & Kim (ICLR 2024).

    For each series an encoder reads the (irregular, partly missing) observations
    backwards in time and gives a context path `ctx(t)` and `q(z₀) = N(μ, diag s²)`.
    The latent state follows

    - prior: `dz = h_θ(z) dt + g(t, z) dW`, `z₀ ~ N(m, diag v²)` (learned);
    - posterior: `dz = [h_θ(z) + g(t, z) ⊙ u_φ(z, ctx(t))] dt + g(t, z) dW`, i.e. the
      drift `f_φ = h_θ + g ⊙ u_φ`, so that `(f − h)/g = u` stays finite where `g → 0`;

    and the data `y(t) ~ N(D z(t), σ²)` (or Laplace) at the observed entries. The ELBO

    `E_q[Σ log p(y | z)] − KL(q(z₀) ‖ p(z₀)) − E_q ∫ ½ |u|² dt`

    (Girsanov; the integral is one more state coordinate) is estimated with
    `num_paths` Brownian paths per series, stepped on a fixed grid by `lax.scan`
    (`bd.solvers.solve_sde_grid`): `substeps` steps between consecutive observation
    times of each series, Brownian increments drawn from explicit keys.

    Diffusion families (`family`):

    - `"neural"`: `g_k(z) = sigmoid(MLP_k(z_k))` (Li et al.; torchsde's example);
    - `"langevin"`: `g(t) = σ(t)` (Langevin-type SDE, Oh et al. 2024);
    - `"linear-noise"`: `g(t, z) = σ(t) ⊙ z` (linear multiplicative noise);
    - `"geometric"`: `dz / z = γ(z) dt + σ(t) dW`, i.e. `h = z ⊙ γ(z)`, `g = z ⊙ σ(t)`;

    with `σ(t) = sigmoid(MLP(t))`. The prior drift is time-homogeneous in every family
    (time enters only through `σ(t)`), so that the prior can run past the training
    window. In Oh et al. the drift reads `z̃ = ζ(t, z, X)`, a linear embedding of state
    and control path; here the control's first layer is that embedding of `[z, ctx]`.

    **Forecasts** (`Posterior.predict(ts)`): the posterior SDE runs over each series'
    history (the encoder reads the `batch`), then the *prior* SDE continues from the
    state at the series' last observed time through the query times (each query
    interval split into `forecast_substeps` Euler steps). Query times inside the
    history read the posterior path (linear interpolation on the grid). Outputs are
    in data units, observation noise included in `y_out`.

    **Arguments:**

    - `latent_dim`, `context_dim`, `hidden`: sizes (latent state, encoder context,
      width of every network).
    - `encoder`: `"gru"` (backward GRU) or `"ncde"` (backward neural CDE).
    - `family`: `"neural"`, `"langevin"`, `"linear-noise"` or `"geometric"`.
    - `likelihood`: `"normal"` or `"laplace"`.
    - `noise`: a fixed observation noise sd (standardised units); `None` learns it.
    - `substeps`: solver steps between consecutive observations (training grid).
    - `forecast_substeps`: solver steps between consecutive query times.
    - `method`: `"euler"` (Itô Euler–Maruyama), `"milstein"` (Itô) or `"heun"`
      (Stratonovich).
    - `num_paths`: Brownian paths per series in each ELBO estimate (vmapped).
    - `kl_weight`: weight of both KL terms (1 = the ELBO).
    - `kl_anneal_steps`: if > 0, the KL weight rises linearly from `kl_anneal_start`
      to `kl_weight` over this many SVI steps (needs `num_particles=1`).

    Data-derived fields set by `adapt`: `loc`, `scale` (per-dimension standardisation),
    `t_ref`, `time_scale` (time is `(t − t_ref) / time_scale` inside the model).

    Sites: `y` (observed; `(num_paths, N, T, D)` when `num_paths > 1`), factors
    `kl_z0`, `kl_path`; with a query `f_out`, `y_out`. Networks are `numpyro.param`
    point estimates named `latent_sde.*`.
    """

    latent_dim: int = 4
    context_dim: int = 16
    hidden: int = 32
    encoder: str = "gru"
    family: str = "neural"
    likelihood: str = "normal"
    noise: Optional[float] = None
    substeps: int = 2
    forecast_substeps: int = 4
    method: str = "euler"
    num_paths: int = 1
    kl_weight: float = 1.0
    kl_anneal_steps: int = 0
    kl_anneal_start: float = 1e-2
    checkpoint: bool = True
    loc: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    t_ref: Optional[float] = None
    time_scale: Optional[float] = None

    amortized = True

    def __check_init__(self):
        owner = "LatentSDE"
        for name in ("latent_dim", "context_dim", "hidden", "substeps", "forecast_substeps", "num_paths"):
            _positive_int(owner, name, getattr(self, name))
        _positive_int(owner, "kl_anneal_steps", self.kl_anneal_steps, minimum=0)
        for name, value, allowed in (
            ("encoder", self.encoder, _ENCODERS),
            ("family", self.family, _FAMILIES),
            ("likelihood", self.likelihood, _LIKELIHOODS),
            ("method", self.method, _METHODS),
        ):
            if value not in allowed:
                raise ValueError(f"{owner}.{name}: {value!r} is not one of {list(allowed)}.")
        if self.noise is not None and not (float(self.noise) > 0):
            raise ValueError(f"{owner}.noise: expected a positive sd or None (learned), got {self.noise!r}.")
        if not float(self.kl_weight) >= 0:
            raise ValueError(f"{owner}.kl_weight: expected a weight >= 0, got {self.kl_weight!r}.")

    # ------------------------------------------------------------------ data
    def adapt(self, data: TimeSeries) -> "LatentSDE":
        ys = np.where(data.mask, data.ys, np.nan)
        counts = data.mask.sum(axis=(0, 1))
        if np.any(counts == 0):
            d = int(np.argmax(counts == 0))
            raise ValueError(
                f"LatentSDE: value column {d} ({data.names[d]!r}) is never observed; drop it "
                "from the TimeSeries."
            )
        loc = np.nanmean(ys, axis=(0, 1))
        scale = np.nanstd(ys, axis=(0, 1))
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        real = np.arange(data.n_times)[None, :] < data.lengths[:, None]
        t_first = data.ts[:, 0]
        t_last = np.where(real, data.ts, -np.inf).max(axis=1)
        span = float(np.max(t_last - t_first))
        return dataclasses.replace(
            self,
            loc=np.asarray(loc, dtype=np.float32),
            scale=np.asarray(scale, dtype=np.float32),
            t_ref=float(t_first.min()),
            time_scale=span if span > 0 else 1.0,
        )

    def _check_adapted(self):
        if self.loc is None or self.scale is None or self.time_scale is None:
            raise ValueError(
                "LatentSDE: the model has not been adapted to data; fit it with bd.fit(model, data, ...) "
                "or call model.adapt(data) first."
            )

    # -------------------------------------------------------------- networks
    def _make_networks(self, data_dim):
        L, C, H = self.latent_dim, self.context_dim, self.hidden
        enc_cls = _GRUEncoder if self.encoder == "gru" else _NCDEEncoder

        def make(key):
            ks = jax.random.split(key, 7)
            if self.family == "neural":
                diffusion = _PerDimNet(L, H, key=ks[0])
            else:
                diffusion = _TimeNet(L, H, key=ks[0])
            return _Networks(
                encoder=enc_cls(data_dim, H, C, key=ks[1]),
                qz0=eqx.nn.Linear(C, 2 * L, key=ks[2]),
                pz0_mean=jnp.zeros((L,)),
                pz0_logstd=jnp.zeros((L,)),
                prior_drift=eqx.nn.MLP(L, L, H, 2, activation=jax.nn.softplus, key=ks[3]),
                control=eqx.nn.MLP(L + C, L, H, 2, activation=jax.nn.softplus, key=ks[4]),
                diffusion=diffusion,
                decoder=eqx.nn.Linear(L, data_dim, key=ks[5]),
                log_noise=jnp.full((data_dim,), np.log(0.1)),
            )

        return param_module("latent_sde", make)

    def _sde(self, nets):
        """`(h, u, g)` as batched functions `(t, z, cproj)` of the standardised time;
        `cproj` is the context's share of the control's first layer (precomputed once
        per observation, outside the solver loop)."""
        fam = self.family
        L = self.latent_dim
        w_z = nets.control.layers[0].weight[:, :L]

        def h(t, z, a):
            out = _mlp(nets.prior_drift, z)
            return z * out if fam == "geometric" else out

        def u(t, z, cproj):
            return _mlp(nets.control, None, first=z @ w_z.T + cproj)

        def g(t, z, a):
            if fam == "neural":
                return nets.diffusion(z)
            s = nets.diffusion(t)
            return s * z if fam in ("linear-noise", "geometric") else s

        return h, u, g

    def _context_projection(self, nets, ctx):
        """`ctx (…, C)` → its share of the control's first layer, `(…, hidden)`."""
        first = nets.control.layers[0]
        return ctx @ first.weight[:, self.latent_dim:].T + first.bias

    # --------------------------------------------------------------- program
    def _kl_weight(self, training):
        w = jnp.asarray(self.kl_weight, dtype=jnp.float32)
        if not training or self.kl_anneal_steps <= 0:
            return w
        state = numpyro.primitives.mutable("latent_sde.step", {"n": jnp.zeros(())})
        n = state["n"]
        state["n"] = n + 1.0
        frac = jnp.clip(n / self.kl_anneal_steps, 0.0, 1.0)
        return w * (self.kl_anneal_start + (1.0 - self.kl_anneal_start) * frac)

    def program(self, batch: Batch, query: Optional[Query] = None, *, subsample_size=None):
        self._check_adapted()
        n, T, D = batch.ys.shape
        L, S = self.latent_dim, self.substeps
        nets = self._make_networks(D)
        h, u, g = self._sde(nets)
        loc = jnp.asarray(self.loc, batch.ys.dtype)
        scale = jnp.asarray(self.scale, batch.ys.dtype)
        noise = (
            jnp.full((D,), float(self.noise), batch.ys.dtype)
            if self.noise is not None
            else jnp.exp(nets.log_noise) + 1e-4
        )
        K = self.num_paths if query is None else 1
        kl_w = self._kl_weight(query is None)

        with numpyro.plate("series", n, subsample_size=subsample_size) as idx:
            ts = (batch.ts[idx] - self.t_ref) / self.time_scale
            mask = batch.mask[idx]
            ys = jnp.where(mask, (batch.ys[idx] - loc) / scale, 0.0)
            B = ts.shape[0]
            key = numpyro.prng_key()
            k0, kw, kf = jax.random.split(key, 3)

            ctx = jax.vmap(nets.encoder)(ts, ys, mask)  # (B, T, C)
            stats = jax.vmap(nets.qz0)(ctx[:, 0])
            q_mean, q_std = stats[:, :L], jax.nn.softplus(stats[:, L:]) + 1e-4
            p_mean, p_std = nets.pz0_mean, jnp.exp(nets.pz0_logstd)
            kl0 = jnp.sum(
                jnp.log(p_std / q_std) + (q_std**2 + (q_mean - p_mean) ** 2) / (2 * p_std**2) - 0.5,
                axis=-1,
            )
            z0 = q_mean[None] + q_std[None] * jax.random.normal(k0, (K, B, L), q_mean.dtype)

            grids = jax.vmap(lambda k: _refine(k, S))(ts)  # (B, G)
            G = grids.shape[1]
            cproj = self._context_projection(nets, ctx[:, 1:])  # (B, T-1, H)
            cproj = jnp.moveaxis(jnp.repeat(cproj, S, axis=1), 1, 0)  # (G-1, B, H)
            noise_w = jax.random.normal(kw, (G - 1, K, B, L), q_mean.dtype)
            zs, kl_path = posterior_sde_with_kl(
                h, u, g, z0, grids, noise_w, method=self.method, step_inputs=cproj,
                checkpoint=self.checkpoint,
            )  # (G, K, B, L), (K, B)
            z_obs = zs[::S]  # (T, K, B, L)
            mean = loc + scale * _linear(nets.decoder, jnp.moveaxis(z_obs, 0, 2))  # (K, B, T, D)

            numpyro.factor("kl_z0", -kl_w * kl0)
            numpyro.factor("kl_path", -kl_w * jnp.mean(kl_path, axis=0))
            self._observe_y(mean, scale * noise, mask, batch.ys[idx], K)

            if query is not None:
                f_out = self._forecast(nets, h, g, ts, mask, grids, jnp.moveaxis(zs[:, 0], 0, 1), query, kf)
                f_out = numpyro.deterministic("f_out", f_out)
                numpyro.sample("y_out", self._obs_dist(f_out, scale * noise).to_event(2))

    def _obs_dist(self, mean, sd):
        if self.likelihood == "laplace":
            # Laplace with standard deviation `sd` (scale b = sd / √2).
            return dist.Laplace(mean, sd / np.sqrt(2.0))
        return dist.Normal(mean, sd)

    def _observe_y(self, mean, sd, mask, ys, K):
        d = self._obs_dist(mean if K > 1 else mean[0], sd)
        if K > 1:
            with numpyro.handlers.scale(scale=1.0 / K):
                d = d.mask(jnp.broadcast_to(mask, mean.shape)).to_event(2)
                with numpyro.plate("paths", K, dim=-2):
                    numpyro.sample("y", d, obs=jnp.broadcast_to(ys, mean.shape))
        else:
            numpyro.sample("y", d.mask(mask).to_event(2), obs=ys)

    def _forecast(self, nets, h, g, ts, mask, grids, zs, query, key):
        """Posterior path over the history, prior SDE from each series' last observed
        time through the query times. `zs (B, G, L)`; returns `(B, T', D)` in data units."""
        loc = jnp.asarray(self.loc, zs.dtype)
        scale = jnp.asarray(self.scale, zs.dtype)
        qs = (query.ts - self.t_ref) / self.time_scale  # (B, T')
        S, Sf, L = self.substeps, self.forecast_substeps, self.latent_dim
        seen = jnp.any(mask, axis=-1)  # (B, T)
        j_last = ts.shape[1] - 1 - jnp.argmax(seen[:, ::-1], axis=1)
        t_last = jnp.take_along_axis(ts, j_last[:, None], axis=1)[:, 0]
        z_last = jnp.take_along_axis(zs, (j_last * S)[:, None, None], axis=1)[:, 0]
        B = qs.shape[0]
        knots = jnp.concatenate([t_last[:, None], jnp.maximum(qs, t_last[:, None])], axis=1)
        fgrids = jax.vmap(lambda k: _refine(k, Sf))(knots)  # (B, G2)
        noise = jax.random.normal(key, (fgrids.shape[1] - 1, B, L), zs.dtype)
        fpath = time_changed_solve(h, g, z_last, fgrids, noise, method=self.method)  # (G2, B, L)
        z_future = jnp.moveaxis(fpath[Sf::Sf], 0, 1)  # (B, T', L)
        z_past = jax.vmap(_interp)(grids, zs, qs)
        z_q = jnp.where((qs <= t_last[:, None])[..., None], z_past, z_future)
        return loc + scale * _linear(nets.decoder, z_q)
