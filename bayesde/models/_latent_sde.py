"""Latent SDEs (Li, Wong, Chen & Duvenaud 2020) with the stable SDE families of Oh, Lim
& Kim (ICLR 2024), fitted by SVI on a path-space ELBO."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from .._checks import check_int, check_real
from .._data import Batch, TimeSeries
from ..networks import param_module
from ..networks._sde_nets import batched_linear, batched_mlp
from ..solvers._schemes import AbstractSDEScheme, Euler, Heun, as_sde_scheme, renamed_keyword
from ..solvers._sde import solve_sde_grid
from ._base import AbstractModel, Query, register_model
from ._common import (calendar_periods, check_adapted, check_holdout, check_observed, fit_scaling,
                      gaussian_kl, held_back, held_back_rows, holdout_split, holdout_stretches, interp_linear,
                      random_walk, refine_grid, sample_log_score, season_features, spacing_ratio, time_grid,
                      two_draw_crps, compiled)
from .encoders import AbstractEncoder, as_encoder
from .families import AbstractFamily, as_family
from .likelihoods import AbstractLikelihood, as_likelihood

__all__ = ["LatentSDE", "posterior_sde_with_kl", "time_changed_solve"]

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
    linear_drift: Optional[jax.Array] = None
    posterior_drift: Optional[eqx.nn.MLP] = None  # `posterior_drift="own"`: the posterior's own copy of the drift
    posterior_linear_drift: Optional[jax.Array] = None


def time_changed_solve(
    drift, diffusion, y0, ts, noise, *, scheme="euler", step_inputs=None, checkpoint=False, method=None
):
    """Solve `dy = f(t, y, a) dt + g(t, y, a) dW` (diagonal noise) for a batch of paths
    that each have their own time grid, as one `lax.scan` over the step index.

    In the step time `s` (step `n` spans `s ∈ [n, n + 1]`, real length `r_n`) the SDE
    reads `dy = r_n f ds + √r_n g dB_s`, so one solver loop with a shared unit grid
    steps every path on its own grid; the increments `dB_s` are the standard normals
    `noise`. Euler, Milstein and Heun steps are exactly those on the real grid (each
    stage reads the real time it is evaluated at).

    **Arguments:**

    - `drift`, `diffusion`: `f(t, y, a)`, `g(t, y, a)` on batched `y (*batch, L)` with
      the real times `t (*batch)` of the step's start; `a` is the step's entry of
      `step_inputs`. With `diffusion=None`, `drift` returns the pair `(f, g)`.
    - `y0`: `(*batch, L)`; `ts`: real grids broadcastable to `(*batch, n)`.
    - `noise`: standard normal increments `(n − 1, *batch, L)`.
    - `scheme`: a `bd.solvers.AbstractSDEScheme` or its name: `"euler"`, `"milstein"` or
      `"heun"`. (`method` is its deprecated name.)

    **Returns:** the states at every grid time, `(n, *batch, L)`.
    """
    batch = y0.shape[:-1]
    ts = jnp.broadcast_to(ts, batch + (ts.shape[-1],))
    n = ts.shape[-1]
    t_steps = jnp.moveaxis(ts[..., :-1], -1, 0)
    r = jnp.moveaxis(jnp.diff(ts, axis=-1), -1, 0)
    s = jnp.arange(n, dtype=y0.dtype)

    def terms(s_stage, y, a):
        t_start, rr, s_start, extra = a[1]
        t = t_start + rr * (s_stage - s_start)  # the stage's real time (a step's start, or its end for Heun)
        if diffusion is None:
            f, g = drift(t, y, extra)
        else:
            f, g = drift(t, y, extra), diffusion(t, y, extra)
        return f * rr[..., None], g * jnp.sqrt(rr)[..., None]

    scheme = renamed_keyword("time_changed_solve", "method", "scheme", scheme, method)
    if step_inputs is None:
        step_inputs = jnp.zeros((n - 1,), y0.dtype)
    return solve_sde_grid(
        terms, None, y0, s, noise, scheme=scheme, step_inputs=(t_steps, r, s[:-1], step_inputs), checkpoint=checkpoint
    )


def posterior_sde_with_kl(
    prior_drift, control, diffusion, z0, ts, noise, *, scheme="euler", step_inputs=None, checkpoint=False,
    method=None, posterior_drift=None,
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
    - `scheme`, `step_inputs`, `checkpoint`: as in `time_changed_solve`.
    - `posterior_drift(t, z, a)`: if given, the posterior drift is `f = b + g ⊙ u` with this
      base `b` instead of the prior drift `h`, and the KL integrand is
      `½ |(b − h)/g + u|²` (the same Girsanov KL, `(f − h)/g` written out). The prior
      drift then enters only the KL, whose gradient fits it to the posterior drift along
      the posterior paths (Li et al.'s two-network form); with `b = h` (the default) it
      learns only through the paths it shares with the posterior. `g` is kept at least
      `1e-3` in size in the division.

    **Returns:** `(zs, kl)`: the posterior paths `(n, *batch, L)` and the path KLs
    `(*batch)`.
    """
    L = z0.shape[-1]

    def aug_terms(t, y, a):
        z = y[..., :L]
        g = diffusion(t, z, a)  # once per stage: the drift's g ⊙ u and the noise share it
        c = control(t, z, a)
        h = prior_drift(t, z, a)
        if posterior_drift is None:
            base, v = h, c
        else:
            base = posterior_drift(t, z, a)
            g_safe = jnp.where(jnp.abs(g) < 1e-3, jnp.where(g < 0, -1e-3, 1e-3), g)
            v = (base - h) / g_safe + c
        f = jnp.concatenate([base + g * c, 0.5 * jnp.sum(v**2, -1, keepdims=True)], -1)
        return f, jnp.concatenate([g, jnp.zeros_like(y[..., L:])], -1)

    y0 = jnp.concatenate([z0, jnp.zeros_like(z0[..., :1])], -1)
    noise = jnp.concatenate([noise, jnp.zeros_like(noise[..., :1])], -1)
    scheme = renamed_keyword("posterior_sde_with_kl", "method", "scheme", scheme, method)
    ys = time_changed_solve(
        aug_terms, None, y0, ts, noise, scheme=scheme, step_inputs=step_inputs, checkpoint=checkpoint
    )
    return ys[..., :L], ys[-1, ..., L]


def _as_scheme(value):
    """`"auto"`, or the scheme object `value` names."""
    if isinstance(value, str) and value == "auto":
        return value
    return as_sde_scheme(value, "LatentSDE.scheme")


def _warn_old_geometric(config: dict) -> dict:
    """Runs saved before `steps_per_unit` existed used the geometric family with `z`
    itself as the SDE state; the family is now solved in log coordinates, so the saved
    networks mean something else: say so rather than predict silently differently."""
    if "steps_per_unit" not in config and config.get("family") == "geometric":
        warnings.warn(
            "LatentSDE: this run was saved with the old geometric family (z as the SDE state); the "
            "family is now solved in log coordinates, so its predictions differ from the saved fit. "
            "Refit the model to use this run.",
            UserWarning,
            stacklevel=2,
        )
    return config


def _frozen(tree):
    """`tree` with a stop-gradient on every array: constants of a score that fits only `κ`, `ρ`."""
    return jax.tree_util.tree_map(lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, tree)


def _soft_bound(x, bound):
    """`x` squashed smoothly into `(−bound, bound)` (`bound·tanh(x / bound)`, the identity
    near 0), or `x` itself when `bound` is `None`."""
    return x if bound is None else bound * jnp.tanh(x / bound)


def _no_discrepancy_before_it_existed(config: dict) -> dict:
    """Runs saved before the forecast discrepancy existed (their config has no
    `forecast_discrepancy`) forecast as they did when saved: without it."""
    return config if "forecast_discrepancy" in config else dict(config, forecast_discrepancy=False)


def _no_control_bound_before_it_existed(config: dict) -> dict:
    """Runs saved before the control bound existed (no `control_bound` in their config)
    used an unbounded control in every family, and load that way."""
    return config if "control_bound" in config else dict(config, control_bound=None)


def _no_diffusion_floor_before_it_existed(config: dict) -> dict:
    """Runs saved before the diffusion floor existed (no `diffusion_floor` in their
    config) used the diffusion network's scale as it came, and load that way."""
    return config if "diffusion_floor" in config else dict(config, diffusion_floor=None)


def _no_drift_bound_before_it_existed(config: dict) -> dict:
    """Runs saved before the drift bound existed (no `drift_bound` in their config) used
    an unbounded prior drift in every family, and load that way."""
    return config if "drift_bound" in config else dict(config, drift_bound=None)


class _Floored(eqx.Module):
    """A diffusion network whose scale `σ ∈ (0, 1)` is read as `floor + (1 − floor)·σ`."""

    net: eqx.Module
    floor: float = eqx.field(static=True)

    def __call__(self, x):
        return self.floor + (1.0 - self.floor) * self.net(x)


def _as_seasons(value):
    """`"auto"`, or the periods of `LatentSDE.seasons` as a tuple of positive floats."""
    if isinstance(value, str) and value == "auto":
        return value
    items = () if value is None else (value,) if isinstance(value, (int, float, np.number)) else value
    try:
        periods = tuple(float(p) for p in items)
    except (TypeError, ValueError):
        periods = None
    if periods is None or isinstance(value, str) or not all(np.isfinite(p) and p > 0 for p in periods):
        raise ValueError(
            f"LatentSDE.seasons: expected 'auto', None or positive periods in the data's time unit "
            f"(e.g. (1.0,) for a yearly cycle in years), got {value!r}."
        )
    return periods


def _no_seasons_before_they_existed(config: dict) -> dict:
    """Runs saved before seasons existed have a prior drift of the state alone."""
    return config if "seasons" in config else dict(config, seasons=())


def _rows_grid_before_time_grid(config: dict) -> dict:
    """Runs saved before the time-placed grid (no `grid` in their config) stepped `substeps`
    times between consecutive rows, and predict as they did when saved."""
    return config if "grid" in config else dict(config, grid="rows")


def _no_window_before_it_existed(config: dict) -> dict:
    """Runs saved before training windows existed (no `window` in their config) read every
    series whole, as they did when saved."""
    return config if "window" in config else dict(config, window=None)


#: The most a data set's mean spacing over its median raises the training grid's steps
#: (`LatentSDE.steps_per_interval`): a few very long gaps cost at most this factor.
_MAX_SPACING_RATIO = 4.0

#: Forecast draws per held-back tail for `forecast_score="log"` (its variance is estimated from them).
_LOG_SCORE_DRAWS = 8


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
    (`bd.solvers.solve_sde_grid`): steps of about a `substeps`-th of the data's median
    spacing, placed by time (`grid`), Brownian increments drawn from explicit keys.

    Diffusion families (`family`, `bd.models.families`):

    - `Neural()` / `"neural"`: `g_k(z) = sigmoid(MLP_k(z_k))` (Li et al.; torchsde's example);
    - `Langevin()` / `"langevin"`: `g(t) = σ(t)` (Langevin-type SDE, Oh et al. 2024);
    - `LinearNoise()` / `"linear-noise"`: `g(t, z) = σ(t) ⊙ z` (linear multiplicative noise);
    - `Geometric()` / `"geometric"`: `dz / z = γ dt + σ(t) dW`, a positive state solved
      in log coordinates (`x = log z`, `dx = γ̃(x) dt + σ(t) dW`; the decoder reads `z`);

    with `σ(t) = sigmoid(MLP(t))`. The prior drift is time-homogeneous in every family
    (time enters only through `σ(t)`), so that the prior can run past the training
    window — except for calendar seasons (`seasons`): with periods `P`, the drift reads
    `[z, sin 2πt/P, cos 2πt/P]`, so that a forecast months ahead knows the time of year.
    By default (`"auto"`) dated data sampled at least four times a year over at least two
    years get a yearly cycle (and sub-daily data a daily one); plain numbers get none.
    In Oh et al. the drift reads `z̃ = ζ(t, z, X)`, a linear embedding of state
    and control path; here the control's first layer is that embedding of `[z, ctx]`.

    **Forecasts** (`Posterior.predict(ts)`): the posterior SDE runs over each series'
    history (the encoder reads the `batch`), then the *prior* SDE continues from the
    state at the series' last observed time through the query times (each query
    interval split into `forecast_substeps` solver steps) with diffusion `κ·g`; the
    decoded path gains a discrepancy `ρ·W(t − t_last)`, a random walk per data
    dimension started at the last observed time (`ρ` in standardised units per √unit
    of model time). Query times inside the history read the posterior path (linear
    interpolation on the grid) and carry no discrepancy. Outputs are in data units,
    observation noise included in `y_out`.

    **Fitting `κ` and `ρ` on held-back forecasts.** The ELBO fits the diffusion to
    explain the history given the encoder's view of it, not to forecast: with a
    flexible posterior it spends the spread on observation noise and lets `g` shrink,
    and networks fitted on a few series partly memorise them, so the prior's forecasts
    of new times come out too narrow, and no scale of `g` widens them where the
    learned dynamics are strongly contracting (hence `ρ`, the model's discrepancy from
    the data over the horizon). So while training, every `forecast_series_every`-th
    series (index `i % k == k − 1`) has the last `forecast_holdout` of its observed
    span held back from the ELBO itself (encoder and likelihood see only the head),
    and its tail is forecast from the head exactly as `predict` forecasts; the CRPS
    of those forecasts (two draws from the posterior state at the cut) fits `κ` and
    `ρ` (params `latent_sde.forecast_log_scale` = `log κ`,
    `latent_sde.forecast_log_discrepancy` = `log ρ`) and nothing else. The networks
    never see those tails, so `κ` and `ρ` are fitted on forecasts of data the model
    did not learn — the situation of a real forecast. The networks are fitted by the
    ELBO alone (the two scales' gradients only enter the optimiser's global-norm
    clipping). With fewer than `forecast_series_every` series (a single record) every
    series' tail is held back, a shorter one: the last `forecast_holdout /
    forecast_series_every` of its span, the same share of the data as with many
    series, so that the networks still train on the record's recent past (a trending
    record's level); the forecast conditions on all of it. One tail is one draw of
    what the record does next (a tail that holds an El Niño fits a wide spread, a calm
    one a narrow spread), so with `forecast_stretches = S > 1` a single record also
    holds back `S − 1` earlier stretches, each as many rows as its tail: the record is
    cut into `S` equal blocks of rows and every block but the last holds back its last
    rows (`holdout_stretches`). Each stretch is hidden from the ELBO and
    forecast from a posterior over the `window` rows just before it, read as a window
    of its own, so that nothing after the stretch's start informs the state its
    forecast starts from; the score is the mean over the tail's and the stretches'
    entries. The score is also the
    model's `held_out_site`, on which `SVI(keep_best=True)` stops early. It costs a
    forecast solve of the held-back series per step (`docs/calibration.md` has the
    measured cost); `forecast_holdout=0` turns it off (`κ = 1`, no discrepancy).

    **Long records are read in windows.** A series of more than `window` rows is cut
    into windows of `window` consecutive rows, each read by the encoder and followed by
    the posterior SDE from its own `z₀` (the KL terms add up over the windows), at a
    random offset every training step; predictions place the last window at the last
    row. One long record then trains the dynamics like many short series — the
    networks learn what happens over a window from every stretch of the record, rather
    than one path through all of it — and model time is counted in windows (one unit
    is at most `window` median spacings, unless `steps_per_unit` says otherwise), so
    that a cycle of a few dozen rows is an O(1) rotation for the drift network.

    **Arguments:**

    - `latent_dim`, `context_dim`: sizes of the latent state and the encoder context.
    - `width`: width of every network (`hidden` is its deprecated name).
    - `encoder`: `bd.models.encoders.GRU()` / `"gru"` (backward GRU), `NCDE()` /
      `"ncde"` (backward neural CDE) or `ForwardGRU()` / `"forward-gru"` (a GRU run
      forwards: the posterior sees no observation past the next one).
    - `family`: a `bd.models.families` object or its name (above).
    - `likelihood`: `bd.models.likelihoods.Normal()` / `"normal"` or `Laplace()` /
      `"laplace"`.
    - `noise`: a fixed observation noise sd (standardised units); `None` learns it.
    - `substeps`: solver steps per median spacing of the training data's times (training
      grid).
    - `grid`: where the training grid's steps go. `"time"` (default): a window of `W` rows
      is crossed in `(W − 1)·steps_per_interval` steps, one per interval and the rest in
      proportion to the intervals' lengths (`bd.solvers.time_grid`), so that every step
      is about a `substeps`-th of the median spacing: a long gap is crossed in many
      steps, and a record with gaps as absent rows is solved on about the steps it gets
      with the gaps as empty rows. `"rows"`: `substeps` steps in every interval whatever
      its length (the grid of runs saved before `grid` existed, which load with it).
    - `steps_per_interval`: set by `adapt`: `substeps` × the data's mean spacing over its
      median (`spacing_ratio`, taken between 1 and 4), the time grid's mean steps per
      interval (about 1.4 × `substeps` for times drawn at random, `substeps` for evenly
      spaced rows, with or without empty ones, and for calendar months).
    - `forecast_substeps`: solver steps between consecutive query times.
    - `scheme`: the SDE solver scheme, `bd.solvers.Heun()` / `"heun"` (Stratonovich),
      `Euler()` / `"euler"` (Itô Euler–Maruyama), `Milstein()` / `"milstein"` (Itô), or
      `"auto"` (default; `solver_scheme` says which): Heun for a model without
      seasons, Euler for one with them. Without seasons any cycle must be a rotation
      of the state, and an Euler step turns a rotation into a spiral outwards by a
      factor that depends on the step's length: on a grid whose steps vary (irregular
      times, gaps) no one drift is right at every step, and a fit can explain the cycle
      as noise. Heun's second stage removes that first-order error, for two drift
      evaluations a step. With seasons the calendar gives the cycle's phase, and on
      the seasonal records measured Heun gained nothing or lost (`docs/real-series.md`).
      The networks are learned under whichever scheme fits them, so Itô or
      Stratonovich changes what they mean, not what the model can express. (`method`
      is its deprecated name; `method` is the inference engine of `bd.fit`.)
    - `num_paths`: Brownian paths per series in each ELBO estimate (vmapped).
    - `kl_weight`: weight of both KL terms (1 = the ELBO).
    - `kl_anneal_steps`: if > 0, the KL weight rises linearly from `kl_anneal_start`
      to `kl_weight` over this many SVI steps (needs `num_particles=1`).
    - `steps_per_unit`: if set, one unit of model time spans at most this many median
      observation spacings (default `None`: `window` of them, or the longest series'
      span if that is shorter or `window` is `None`). On a long record the span
      squeezes each cycle into a small fraction of a unit. The `linear-noise` family
      always keeps the span: its paths can blow up over many units.
    - `forecast_holdout`: the fraction of each series' observed span held back to fit
      `κ` and `ρ` (above); `0` keeps `κ = 1` and adds no discrepancy.
    - `forecast_series_every`: every this-many-th series is held back that way (the
      others train on their whole span); `1` holds back every series' tail.
    - `forecast_stretches`: the number of stretches of a single record (fewer series than
      `forecast_series_every`) whose forecasts fit `κ` and `ρ`: its tail and
      `forecast_stretches − 1` earlier ones (above). `1` (default): the tail alone. Worth
      trying (and backtesting) on a long stationary record with rare large episodes,
      where one tail is a poor sample of the spread; not on a trending record, whose
      fits it made worse (`docs/real-series.md`). Series of a panel are not affected.
    - `forecast_discrepancy`: whether forecasts carry the discrepancy `ρ` (runs saved
      before it existed load with `False`).
    - `window`: rows per training window of a long series (above); `None` reads every
      series whole (runs saved before windows existed load with `None`).
    - `seasons`: `"auto"` (calendar cycles of dated data, above), `None`/`()` for none, or
      periods in the data's time unit, e.g. `(1.0,)` for a yearly cycle in years (runs
      saved before seasons existed load with none).
    - `control_bound`: the largest `|u|` the Girsanov control may take (`c·tanh(u / c)`).
      `"auto"` takes the family's bound: 5 for `linear-noise`, where the posterior
      drift's `σ(t) z ⊙ u` would otherwise grow like `z²` and blow up, none for the
      others. `None` never bounds it (runs saved before it existed load that way).
    - `diffusion_floor`: the least diffusion scale: the diffusion network's `σ ∈ (0, 1)`
      is read as `floor + (1 − floor)·σ`. `"auto"` takes the family's floor: 0.05 for
      `geometric`, whose ELBO otherwise drives `σ` to zero and leaves a damped ODE that
      forecasts a flat level, none for the others. `None` (or 0) never floors it (runs
      saved before it existed load that way).
    - `drift_bound`: the largest `|h|` the prior drift network may give (`b·tanh(h / b)`).
      `"auto"` takes the family's bound: 5 for `geometric`, whose decoder reads `exp(x)`,
      so that an unbounded drift would let forecasts of a growing process blow up; none
      for the others. `None` never bounds it (runs saved before it existed load that way).
    - `linear_drift`: give the prior drift a linear term, `h(z) = A z + MLP(z)` with `A`
      a `latent_dim × latent_dim` parameter (`latent_sde.linear_drift`) that starts at
      zero, so that linear dynamics — a rotation of a cycle, a mean reversion — need no
      large weights in the network. Off by default: on a record with a cycle (sunspots)
      it forecast better, on the simulated panel no better than another draw of the
      initial weights (`docs/calibration.md`, `docs/real-series.md`).
    - `posterior_drift`: `"shared"` (default) writes the posterior drift as `h + g ⊙ u`, the
      prior drift plus the control, so the prior drift learns only through the paths the
      two share. `"own"` gives the posterior its own copy of the drift (params
      `latent_sde.posterior_drift`, `latent_sde.posterior_linear_drift`; it starts at the
      prior's weights): `f = b + g ⊙ u`, KL integrand `½ |(b − h)/g + u|²`, so that the
      prior drift is fitted to the posterior drift along the posterior paths, the gradient of
      Li et al.'s two-network form (`posterior_sde_with_kl`). Not the default: on sunspots
      from six origins its forecasts were worse, about the climatology's
      (`docs/real-series.md`).
    - `forecast_score`: the score of the held-back forecasts that fits `κ` and `ρ` (and
      that `keep_best` stops on): `"crps"` (default; two draws per tail) or `"log"`, the log
      score of the Gaussian that 8 draws per tail give (`sample_log_score` in
      `bayesde.models._common`), steeper in the spread than the CRPS. Off by default:
      measured in `docs/calibration.md`.

    Data-derived fields set by `adapt`: `loc`, `scale` (per-dimension standardisation),
    `t_ref`, `time_scale` (time is `(t − t_ref) / time_scale` inside the model), and
    `seasons` when it is `"auto"`.

    Sites: `y` (observed; `(num_paths, N, T, D)` when `num_paths > 1`), factors
    `kl_z0`, `kl_path` and (training, `forecast_holdout > 0`) `forecast_score` (the
    `held_out_site`); with a query `f_out`, `y_out`. Networks are `numpyro.param`
    point estimates named `latent_sde.*`.
    """

    latent_dim: int = 4
    context_dim: int = 16
    width: int = 32
    encoder: AbstractEncoder = eqx.field(default="gru", converter=as_encoder)
    family: AbstractFamily = eqx.field(default="neural", converter=as_family)
    likelihood: AbstractLikelihood = eqx.field(default="normal", converter=as_likelihood)
    noise: Optional[float] = None
    substeps: int = 2
    grid: str = "time"
    steps_per_interval: Optional[float] = None
    forecast_substeps: int = 4
    scheme: object = eqx.field(default="auto", converter=_as_scheme)
    num_paths: int = 1
    kl_weight: float = 1.0
    kl_anneal_steps: int = 0
    kl_anneal_start: float = 1e-2
    checkpoint: bool = True
    steps_per_unit: Optional[float] = None
    forecast_holdout: float = 0.25
    forecast_series_every: int = 4
    forecast_stretches: int = 1
    forecast_discrepancy: bool = True
    window: Optional[int] = 64
    seasons: object = eqx.field(default="auto", converter=_as_seasons)
    control_bound: object = "auto"
    diffusion_floor: object = "auto"
    drift_bound: object = "auto"
    linear_drift: bool = False
    posterior_drift: str = "shared"
    forecast_score: str = "crps"
    loc: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    t_ref: Optional[float] = None
    time_scale: Optional[float] = None

    amortized = True
    held_out_site = "forecast_score"  # emitted in training when forecast_holdout > 0
    held_out_params = ("latent_sde.forecast_log_scale", "latent_sde.forecast_log_discrepancy")
    fold_param = "latent_sde.holdout_fold"  # which series are held back (`member_fold`); never trained
    _renamed = {"hidden": "width", "method": "scheme"}
    _upgrades = (_warn_old_geometric, _no_discrepancy_before_it_existed, _no_window_before_it_existed,
                 _no_seasons_before_they_existed, _no_control_bound_before_it_existed,
                 _no_diffusion_floor_before_it_existed, _no_drift_bound_before_it_existed,
                 _rows_grid_before_time_grid)

    def __check_init__(self):
        owner = "LatentSDE"
        for name in ("latent_dim", "context_dim", "width", "substeps", "forecast_substeps", "num_paths",
                     "forecast_stretches"):
            check_int(f"{owner}.{name}", getattr(self, name))
        check_holdout(owner, self.forecast_holdout, self.forecast_series_every, "the forecast scale")
        if self.posterior_drift not in ("shared", "own"):
            raise ValueError(f"{owner}.posterior_drift: expected 'shared' or 'own', got {self.posterior_drift!r}.")
        if self.grid not in ("time", "rows"):
            raise ValueError(f"{owner}.grid: expected 'time' or 'rows', got {self.grid!r}.")
        if self.forecast_score not in ("crps", "log"):
            raise ValueError(f"{owner}.forecast_score: expected 'crps' or 'log', got {self.forecast_score!r}.")
        if not isinstance(self.linear_drift, (bool, np.bool_)) and self.linear_drift not in (0, 1):
            raise ValueError(f"{owner}.linear_drift: expected True or False, got {self.linear_drift!r}.")
        check_int(f"{owner}.kl_anneal_steps", self.kl_anneal_steps, 0)
        if self.window is not None:
            check_int(f"{owner}.window", self.window, 2)
        check_real(f"{owner}.noise", self.noise, 0.0, open_low=True, optional=True, noun="an sd",
                   hint="None: learned")
        check_real(f"{owner}.kl_weight", self.kl_weight, 0.0, noun="a weight")
        for name in ("control_bound", "drift_bound"):
            c = getattr(self, name)
            if not (c is None or (isinstance(c, str) and c == "auto")):
                check_real(f"{owner}.{name}", c, 0.0, open_low=True,
                           noun="'auto' (the family's own bound), None (unbounded) or a number")
        f = self.diffusion_floor
        if not (f is None or (isinstance(f, str) and f == "auto")):
            check_real(f"{owner}.diffusion_floor", f, 0.0, 1.0, open_high=True,
                       noun="'auto' (the family's own floor), None (none) or a number")

    # ------------------------------------------------------------------ data
    @property
    def solver_scheme(self) -> AbstractSDEScheme:
        """The scheme the SDEs are solved with: `scheme`, or for `"auto"` Heun without
        seasons and Euler with them."""
        if self.scheme != "auto":
            return self.scheme
        if isinstance(self.seasons, str):  # "auto": the data decide, in `adapt`
            raise ValueError(
                "LatentSDE.solver_scheme: scheme='auto' depends on the seasons, and seasons='auto' is read from "
                "the data: adapt the model first (model.adapt(data)), read post.model.solver_scheme after a fit, "
                "or give seasons or scheme explicitly."
            )
        return Euler() if self.seasons else Heun()

    def adapt(self, data: TimeSeries) -> "LatentSDE":
        check_observed(data, "LatentSDE")
        steps = self.steps_per_unit if self.steps_per_unit is not None else self.window
        steps = steps if self.family.many_time_units else None
        sc = fit_scaling(data, steps_per_unit=steps)
        seasons = calendar_periods(data) if self.seasons == "auto" else self.seasons
        ratio = min(max(spacing_ratio(data), 1.0), _MAX_SPACING_RATIO)
        return dataclasses.replace(
            self, loc=sc.loc, scale=sc.scale, t_ref=sc.t_ref, time_scale=sc.time_scale, seasons=seasons,
            steps_per_interval=float(self.substeps * ratio),
        )

    # -------------------------------------------------------------- networks
    def _make_networks(self, data_dim):
        L, C, H = self.latent_dim, self.context_dim, self.width

        def make(key):
            ks = jax.random.split(key, 7)
            drift = lambda: eqx.nn.MLP(L + 2 * len(self.seasons), L, H, 2, activation=jax.nn.softplus, key=ks[3])  # noqa: E731
            own = self.posterior_drift == "own"
            return _Networks(
                encoder=self.encoder.make(data_dim, H, C, key=ks[1]),
                qz0=eqx.nn.Linear(C, 2 * L, key=ks[2]),
                pz0_mean=jnp.zeros((L,)),
                pz0_logstd=jnp.zeros((L,)),
                prior_drift=drift(),
                control=eqx.nn.MLP(L + C, L, H, 2, activation=jax.nn.softplus, key=ks[4]),
                diffusion=self.family.diffusion_net(L, H, key=ks[0]),
                decoder=eqx.nn.Linear(L, data_dim, key=ks[5]),
                log_noise=jnp.full((data_dim,), np.log(0.1)),
                linear_drift=jnp.zeros((L, L)) if self.linear_drift else None,
                # the posterior's own copy starts at the prior's weights, so that the two forms start paired
                posterior_drift=drift() if own else None,
                posterior_linear_drift=jnp.zeros((L, L)) if own and self.linear_drift else None,
            )

        return param_module("latent_sde", make)

    def _family_default(self, name):
        """A field that may be `"auto"` (the family's own value, a ClassVar of the same
        name) or a value given by the user."""
        value = getattr(self, name)
        return getattr(self.family, name) if isinstance(value, str) else value

    def _drift(self, mlp, linear):
        """A drift `(t, z, a) → …` of the prior's form (network on the state and the season
        features, the optional linear term, the family's bound) with the weights `mlp`, `linear`."""
        b = self._family_default("drift_bound")

        def h(t, z, a):
            if not self.seasons:
                out = batched_mlp(mlp, z)
            else:
                season = season_features(jnp.broadcast_to(t, z.shape[:-1]) * self.time_scale, self.seasons, self.t_ref)
                out = batched_mlp(mlp, jnp.concatenate([z, season.astype(z.dtype)], -1))
            if linear is not None:
                out = out + z @ linear.T
            return _soft_bound(out, b)

        return h

    def _posterior_base(self, nets):
        """The posterior drift's base `b` of `posterior_sde_with_kl`: `None` (the prior drift,
        `posterior_drift="shared"`) or the posterior's own copy of it (`"own"`)."""
        if nets.posterior_drift is None:
            return None
        return self._drift(nets.posterior_drift, nets.posterior_linear_drift)

    def _sde(self, nets):
        """`(h, u, g)` as batched functions `(t, z, cproj)` of the standardised time;
        `cproj` is the context's share of the control's first layer (precomputed once
        per observation, outside the solver loop)."""
        fam = self.family
        L = self.latent_dim
        w_z = nets.control.layers[0].weight[:, :L]
        h = self._drift(nets.prior_drift, nets.linear_drift)

        c = self._family_default("control_bound")
        lo = self._family_default("diffusion_floor")
        dnet = nets.diffusion if not lo else _Floored(nets.diffusion, float(lo))

        def u(t, z, cproj):
            return _soft_bound(batched_mlp(nets.control, None, first=z @ w_z.T + cproj), c)

        def g(t, z, a):
            return fam.diffusion(dnet, t, z)

        return h, u, g

    def _context_projection(self, nets, ctx):
        """`ctx (…, C)` → its share of the control's first layer, `(…, width)`."""
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
        check_adapted(self, "loc", "scale", "t_ref", "time_scale")
        if isinstance(self.seasons, str):
            raise ValueError("LatentSDE: seasons='auto' is resolved from the data by adapt; fit the model with "
                             "bd.fit or call model.adapt(data) first.")
        n, T, D = batch.ys.shape
        nets = self._make_networks(D)
        loc = jnp.asarray(self.loc, batch.ys.dtype)
        scale = jnp.asarray(self.scale, batch.ys.dtype)
        noise = (
            jnp.full((D,), float(self.noise), batch.ys.dtype)
            if self.noise is not None
            else jnp.exp(nets.log_noise) + 1e-4
        )
        K = self.num_paths if query is None else 1
        kl_w = self._kl_weight(query is None)
        # the forecast's diffusion scale κ and discrepancy sd ρ: fitted only by the held-back score below
        log_scale = numpyro.param("latent_sde.forecast_log_scale", jnp.zeros(()))
        log_rho = (
            numpyro.param("latent_sde.forecast_log_discrepancy", jnp.full((D,), np.log(0.3)))
            if self.forecast_discrepancy and self.forecast_holdout > 0
            else jnp.full((D,), -jnp.inf)
        )
        scoring = query is None and self.forecast_holdout > 0
        # which series hold back their tails (`held_back`): a constant of the fit, never trained;
        # a cross-fitted ensemble gives each member its own (`member_fold`)
        fold = None
        if scoring:
            fold = numpyro.param(self.fold_param, float(self.member_fold(0)))
            fold = jnp.round(jax.lax.stop_gradient(fold)).astype(jnp.int32)

        with numpyro.plate("series", n, subsample_size=subsample_size) as idx:
            ts = (batch.ts[idx] - self.t_ref) / self.time_scale
            mask = batch.mask[idx]
            key = numpyro.prng_key()
            k_post, kf = jax.random.split(key)
            segments = self._segments(T, query is None, jax.random.fold_in(key, 3))
            observed = mask
            stretches = self._stretches(n, T) if scoring else (0, 0, ())
            if scoring:
                head, tail = self._holdout_split(ts, mask, n)
                scored = self._is_held_back(idx, n, fold)
            y_all = jnp.where(mask, (batch.ys[idx] - loc) / scale, 0.0)
            if scoring:  # the scored series' held-back tails (and stretches) are hidden from the ELBO as well
                mask = jnp.where(scored[:, None, None], head & ~self._stretch_rows(T, stretches)[:, None], mask)
            ys = jnp.where(mask, y_all, 0.0)

            grids, zs, kl0, kl_path, pos = compiled(self._posterior, nets, ts, ys, mask, K, k_post, segments)
            z_obs = jax.vmap(lambda z, p: z[p], in_axes=(2, 0), out_axes=2)(zs, pos)  # (T, K, B, L)
            mean = loc + scale * batched_linear(nets.decoder, self.family.readout(jnp.moveaxis(z_obs, 0, 2)))

            numpyro.factor("kl_z0", -kl_w * kl0)
            numpyro.factor("kl_path", -kl_w * jnp.mean(kl_path, axis=0))
            self._observe_y(mean, scale * noise, mask, batch.ys[idx], K)

            if query is not None:
                qs = (query.ts - self.t_ref) / self.time_scale
                f_std = compiled(
                    self._forecast, nets, jnp.exp(log_scale), jnp.exp(log_rho), ts, mask, grids, jnp.moveaxis(zs[:, 0], 0, 1), pos, qs, kf
                )
                f_out = numpyro.deterministic("f_out", loc + scale * f_std)
                numpyro.sample("y_out", self._obs_dist(f_out, scale * noise).to_event(2))
            elif scoring:  # the ELBO's own posterior over the head is the forecast's start
                rows = slice(None)
                if subsample_size is None:  # the scored series are known: forecast only those
                    rows = held_back_rows(n, self.forecast_series_every, fold)
                pick = lambda x: x[rows]  # noqa: E731
                scored_tail = pick(tail & scored[:, None, None])
                score = compiled(
                    self._holdout_score, nets, (log_scale, log_rho), pick(ts), pick(y_all), pick(head), scored_tail,
                    pick(grids), pick(jnp.moveaxis(zs[:, 0], 0, 1)), pick(pos), noise, jax.random.fold_in(key, 2),
                )
                if stretches[2]:  # a single record: its earlier stretches too, weighted by their entries
                    count = jnp.sum(scored_tail)
                    more, more_count = compiled(
                        self._stretch_score, nets, (log_scale, log_rho), ts, y_all, observed, stretches, noise,
                        jax.random.fold_in(key, 4),
                    )
                    score = (score * count + more * more_count) / jnp.maximum(count + more_count, 1)
        if scoring:
            # outside the plate: a mean score, so κ's gradient stays O(1) beside the ELBO's
            numpyro.factor("forecast_score", -score)

    def _segments(self, T, training, key):
        """How the `T` rows are read: `(W, M, o)`, `M` windows of `W` rows, the data starting
        `o` rows into the first. Series of at most `window` rows are read whole (`(T, 1, 0)`);
        longer ones in windows, at a random offset while training (every row in exactly
        one window; `M = ⌈T/W⌉ + 1`), and at prediction so that the last window ends at
        the last row."""
        W = self.window
        if W is None or T <= W:
            return T, 1, 0
        if training:
            return W, -(-T // W) + 1, jax.random.randint(key, (), 0, W)
        M = -(-T // W)
        return W, M, M * W - T

    def _posterior(self, nets, ts, ys, mask, K, key, segments):
        """The encoder, `q(z₀)` and the posterior SDE with its KL, for `K` paths per series,
        each series read in the windows `segments = (W, M, o)` of `_segments` (each window
        its own encoder pass, `z₀` and path; empty windows add no KL). Returns
        `(grids (B, M·G), zs (M·G, K, B, L), kl_z0 (B), kl_path (K, B), pos (B, T))`: the
        windows' grids and paths side by side, and `pos`, the index of each row on them."""
        L, S = self.latent_dim, self.substeps
        B, T = ts.shape
        W, M, o = segments
        h, u, g = self._sde(nets)
        k0, kw = jax.random.split(key)
        p = jnp.arange(M * W) - o  # the data row at each padded place
        src, valid = jnp.clip(p, 0, T - 1), (p >= 0) & (p < T)
        ts_w = ts[:, src].reshape(B * M, W)
        ys_w = ys[:, src].reshape(B * M, W, -1)
        mask_w = (mask[:, src] & valid[None, :, None]).reshape(B * M, W, -1)
        ctx = jax.vmap(nets.encoder)(ts_w, ys_w, mask_w)  # (B·M, W, C)
        stats = jax.vmap(nets.qz0)(ctx[:, 0])
        q_mean, q_std = stats[:, :L], jax.nn.softplus(stats[:, L:]) + 1e-4
        kl0 = gaussian_kl(q_mean, q_std, nets.pz0_mean, jnp.exp(nets.pz0_logstd))
        z0 = q_mean[None] + q_std[None] * jax.random.normal(k0, (K, B * M, L), q_mean.dtype)
        grids, at, seg = jax.vmap(lambda k: self._grid(k, S))(ts_w)  # (B·M, G), (B·M, W), (B·M, G-1)
        G = grids.shape[1]
        cproj = self._context_projection(nets, ctx[:, 1:])  # (B·M, W-1, H): one per interval
        cproj = jnp.moveaxis(jnp.take_along_axis(cproj, seg[..., None], axis=1), 1, 0)  # (G-1, B·M, H)
        noise_w = jax.random.normal(kw, (G - 1, K, B * M, L), q_mean.dtype)
        zs, kl_path = posterior_sde_with_kl(
            h, u, g, z0, grids, noise_w, scheme=self.solver_scheme, step_inputs=cproj, checkpoint=self.checkpoint,
            posterior_drift=self._posterior_base(nets),
        )
        if M == 1:
            return grids, zs, kl0, kl_path, at
        seen = jnp.any(mask_w, axis=(1, 2))  # a window of padding or gaps only is no data
        kl0 = jnp.sum(jnp.where(seen, kl0, 0.0).reshape(B, M), axis=1)
        kl_path = jnp.sum(jnp.where(seen, kl_path, 0.0).reshape(K, B, M), axis=2)
        zs = jnp.moveaxis(zs.reshape(G, K, B, M, L), 3, 0).reshape(M * G, K, B, L)
        r = jnp.arange(T) + o
        pos = (r // W) * G + at.reshape(B, M * W)[:, r]
        return grids.reshape(B, M * G), zs, kl0, kl_path, pos

    def _grid(self, knots, S):
        """One window's training grid through its rows' times `knots (W,)`: `(grid,
        pos (W,), seg)`, `seg` the interval of each step (`bd.solvers.time_grid`)."""
        W = knots.shape[0]
        if self.grid == "time":
            per = S if self.steps_per_interval is None else self.steps_per_interval
            return time_grid(knots, max(W - 1, int(round((W - 1) * per))))
        return refine_grid(knots, S), jnp.arange(W) * S, jnp.arange((W - 1) * S) // S

    def _is_held_back(self, index, n, fold=None):
        """Whether the series at `index` (NumPy or JAX integers) of `n` have their tails held
        back: every `forecast_series_every`-th from `fold`, or every one when there are fewer."""
        return held_back(index, n, self.forecast_series_every, fold)

    def member_fold(self, member: int) -> int:
        """The fold of series (`held_back`) whose tails ensemble member `member` holds back
        when the ensemble cross-fits (`bd.Ensemble(cross_fit=True)`): member 0 holds back
        those a single fit holds back, the next members the other folds in turn, so that
        `forecast_series_every` members fit their forecast spread on disjoint series and
        every series trains all but one of them."""
        k = self.forecast_series_every
        return (k - 1 - member) % k

    def _holdout_split(self, ts, mask, n):
        """`(head, tail)` masks of the held-back tails (`holdout_split`: the last
        `forecast_holdout` of a series' span, a shorter one with fewer than
        `forecast_series_every` series)."""
        return holdout_split(ts, mask, self.forecast_holdout, n, self.forecast_series_every)

    def _stretches(self, n, T):
        """The earlier stretches a single record (fewer than `forecast_series_every` series)
        holds back beside its tail: `(head, length, starts)` (`holdout_stretches`), static."""
        if n >= self.forecast_series_every:
            return 0, 0, ()
        return holdout_stretches(T, self.forecast_holdout, self.forecast_series_every, self.forecast_stretches,
                                 self.window)

    @staticmethod
    def _stretch_rows(T, stretches):
        """`(T,)` booleans: the rows of the held-back stretches."""
        _, length, starts = stretches
        rows = np.zeros(T, bool)
        for b in starts:
            rows[b:b + length] = True
        return jnp.asarray(rows)

    def _stretch_score(self, nets, log_scales, ts, ys, mask, stretches, noise, key):
        """The forecast score of a single record's earlier held-back stretches (`_stretches`)
        and its number of entries: each stretch is forecast from a posterior over the `head`
        rows just before it, read as one window of its own (so that nothing after the
        stretch's start informs the state it starts from), exactly as `_holdout_score`
        forecasts a tail. `ts (B, T)`, `ys`, `mask (B, T, D)` (every observed entry: the
        conditioning may read earlier stretches, as a forecast reads the whole history)."""
        head, length, starts = stretches
        rows = np.stack([np.arange(b - head, b + length) for b in starts])  # (S, head + length)
        cut = lambda x: x[:, rows].reshape((-1, head + length) + x.shape[2:])  # noqa: E731 (B·S, …)
        ts_s, ys_s, mask_s = cut(ts), cut(ys), cut(mask)
        in_head = jnp.asarray(np.arange(head + length) < head)[None, :, None]
        head_s = mask_s & in_head
        tail_s = mask_s & ~in_head & jnp.any(head_s, axis=(1, 2))[:, None, None]
        frozen = _frozen(nets)
        k_post, k_score = jax.random.split(key)
        grids, zs, _, _, pos = self._posterior(
            frozen, ts_s, jnp.where(head_s, ys_s, 0.0), head_s, 1, k_post, (head + length, 1, 0)
        )
        score = self._holdout_score(
            nets, log_scales, ts_s, ys_s, head_s, tail_s, grids, jnp.moveaxis(zs[:, 0], 0, 1), pos, noise, k_score
        )
        return score, jnp.sum(tail_s)

    def _obs_dist(self, mean, sd):
        return self.likelihood.dist(mean, sd)

    def _observe_y(self, mean, sd, mask, ys, K):
        d = self._obs_dist(mean if K > 1 else mean[0], sd)
        if K > 1:
            with numpyro.handlers.scale(scale=1.0 / K):
                d = d.mask(jnp.broadcast_to(mask, mean.shape)).to_event(2)
                with numpyro.plate("paths", K, dim=-2):
                    numpyro.sample("y", d, obs=jnp.broadcast_to(ys, mean.shape))
        else:
            numpyro.sample("y", d.mask(mask).to_event(2), obs=ys)

    def _forecast(self, nets, kappa, rho, ts, mask, grids, zs, pos, qs, key):
        """Posterior path over the history, prior SDE (diffusion `κ·g`, `kappa` = κ) from each series'
        last observed time through the query times `qs (B, T')` (model time, sorted per
        series), decoded, plus the discrepancy: a random walk with sd `rho (D)` per unit
        of √time started at the last observed time (zero over the history).
        `grids (B, G)`, `zs (B, G, L)` and the rows' places on them `pos (B, T)` as
        `_posterior` gives them; returns `(B, T', D)` in standardised units."""
        Sf = self.forecast_substeps
        h, _, g = self._sde(nets)
        g_kappa = lambda t, z, a: kappa * g(t, z, a)  # noqa: E731
        seen = jnp.any(mask, axis=-1)  # (B, T)
        j_last = ts.shape[1] - 1 - jnp.argmax(seen[:, ::-1], axis=1)
        t_last = jnp.take_along_axis(ts, j_last[:, None], axis=1)[:, 0]
        p_last = jnp.take_along_axis(pos, j_last[:, None], axis=1)  # (B, 1)
        z_last = jnp.take_along_axis(zs, p_last[:, :, None], axis=1)[:, 0]
        B = qs.shape[0]
        knots = jnp.concatenate([t_last[:, None], jnp.maximum(qs, t_last[:, None])], axis=1)
        fgrids = jax.vmap(lambda k: refine_grid(k, Sf))(knots)  # (B, G2)
        k_sde, k_walk = jax.random.split(key)
        noise = jax.random.normal(k_sde, (fgrids.shape[1] - 1, B, self.latent_dim), zs.dtype)
        fpath = time_changed_solve(h, g_kappa, z_last, fgrids, noise, scheme=self.solver_scheme)  # (G2, B, L)
        z_future = jnp.moveaxis(fpath[Sf::Sf], 0, 1)  # (B, T', L)
        z_past = jax.vmap(interp_linear)(grids, zs, qs)
        z_q = jnp.where((qs <= t_last[:, None])[..., None], z_past, z_future)
        walk = random_walk(k_walk, t_last, qs, rho.shape[-1])
        return batched_linear(nets.decoder, self.family.readout(z_q)) + rho * walk

    def _holdout_score(self, nets, log_scales, ts, ys, head, tail, grids, zs, pos, noise, key):
        """The score that fits the forecast scales `log_scales = (log κ, log ρ)`: from the
        posterior path `zs (B, G, L)` over each series' head, forecasts of the held-back
        `tail` entries made exactly as `predict` forecasts (prior SDE with diffusion κ·g
        from the head's last observed time, plus the discrepancy ρ; observation noise
        included), scored by `forecast_score`: two draws and the CRPS
        `½(|x₁ − y| + |x₂ − y|) − ½|x₁ − x₂|`, or eight and `sample_log_score`. Only κ
        and ρ receive its gradient: networks, path and noise are constants here, fitted by
        the ELBO alone. Returns the mean score over the tail entries (standardised units)."""
        nets, zs, noise = _frozen((nets, zs, noise))
        B = ts.shape[0]
        log_kappa, log_rho = log_scales
        M = 2 if self.forecast_score == "crps" else _LOG_SCORE_DRAWS
        rep = lambda x: jnp.concatenate([x] * M, axis=0)  # noqa: E731
        kf, ke = jax.random.split(key)
        f = self._forecast(
            nets, jnp.exp(log_kappa), jnp.exp(log_rho), rep(ts), rep(head), rep(grids), rep(zs), rep(pos), rep(ts), kf
        )
        x = self._obs_dist(f, noise).rsample(ke)
        if self.forecast_score == "crps":
            return two_draw_crps(x[:B], x[B:], ys, tail)
        return sample_log_score(x.reshape((M, B) + x.shape[1:]), ys, tail)
