"""The calibration panel: simulators of processes the models were not developed on, and
one list of panel cases (`panel()`) that `benchmarks/calibration.py --panel` and the
tests share.

Every simulator observes each series at its own times (`irregular=True`), drops a
fraction `missing` of the values, adds observation noise and attaches the truth the way
`_sde_sims` does (`TimeSeries.truth`, with `clean` the noise-free values at the
observation times).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._data import TimeSeries
from ..solvers._sde import brownian_increments, solve_sde_grid
from ._registry import register
from ._sde_sims import _check_sizes, _finish, _fine_grid, geometric_brownian_motion
from ._tumor import tumor_growth

__all__ = [
    "ornstein_uhlenbeck",
    "cir",
    "damped_oscillator",
    "regime_switching",
    "lv_process_noise",
    "seasonal_trend",
    "PanelCase",
    "panel",
]


def _exact_linear(key, x0, a, b, c, n_steps):
    """`x_{k+1} = a x_k + b + c ε_k`, `ε_k ~ N(0, 1)` (the exact transition of a linear
    SDE over one step of a uniform grid), stacked as `(n_steps + 1, *x0.shape)`."""
    eps = jax.random.normal(key, (n_steps,) + x0.shape, dtype=x0.dtype)

    def step(x, e):
        x = a * x + b + c * e
        return x, x

    _, path = jax.lax.scan(step, x0, eps)
    return jnp.concatenate([x0[None], path], axis=0)


def _euler(key, drift, diffusion, x0, fine):
    ts = jnp.asarray(fine, dtype=x0.dtype)
    dW = brownian_increments(key, ts, x0.shape)
    path = solve_sde_grid(drift, diffusion, x0, ts, dW, scheme="euler")
    return np.asarray(jnp.swapaxes(path, 0, 1), dtype=float)


def ornstein_uhlenbeck(
    n_series: int = 64,
    n_times: int = 50,
    t_max: float = 10.0,
    *,
    key,
    theta: float = 1.0,
    mu: float = 0.0,
    sigma: float = 0.5,
    noise_std: float = 0.05,
    irregular: bool = True,
    missing: float = 0.0,
    dt: float = 1e-2,
) -> TimeSeries:
    """The Ornstein–Uhlenbeck process `dX = θ (μ − X) dt + σ dW`, started in its
    stationary law `X(0) ~ N(μ, σ²/(2θ))` and sampled exactly on a grid of step `dt`:
    `X(t+h) = μ + (X(t) − μ) e^{−θh} + σ √((1 − e^{−2θh})/(2θ)) ε`.

    **Arguments:**

    - `n_series`, `n_times`, `t_max`: sizes; times in `[0, t_max]`.
    - `key`: a JAX PRNG key.
    - `theta`, `mu`, `sigma`: mean-reversion rate, mean and volatility.
    - `noise_std`: Gaussian observation noise sd.
    - `irregular`: each series observed at its own `n_times` random grid times.
    - `missing`: probability that each value is missing (NaN); the first time of each
      series stays observed.
    - `dt`: simulation grid step.

    **Returns:** a `TimeSeries` `(n_series, n_times, 1)` with a `truth` dict (`theta`,
    `mu`, `sigma`, `stationary_var = σ²/(2θ)`, `clean`).
    """
    _check_sizes("ornstein_uhlenbeck", n_series, n_times, t_max, missing)
    if not (theta > 0 and sigma >= 0):
        raise ValueError("ornstein_uhlenbeck: need theta > 0 and sigma >= 0.")
    k_grid, k0, kw, k_obs = jax.random.split(key, 4)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)
    h = float(fine[1] - fine[0])
    var = sigma**2 / (2 * theta)
    x0 = mu + math.sqrt(var) * jax.random.normal(k0, (n_series, 1))
    a = math.exp(-theta * h)
    path = _exact_linear(kw, x0, a, mu * (1 - a), math.sqrt(var * (1 - a**2)), len(fine) - 1)
    clean = np.asarray(jnp.swapaxes(path, 0, 1), dtype=float)
    truth = {"theta": theta, "mu": mu, "sigma": sigma, "stationary_var": var}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x"], truth)


def cir(
    n_series: int = 64,
    n_times: int = 50,
    t_max: float = 10.0,
    *,
    key,
    kappa: float = 1.5,
    theta: float = 1.0,
    sigma: float = 0.4,
    x0: float | None = None,
    noise_std: float = 0.02,
    irregular: bool = True,
    missing: float = 0.0,
    dt: float = 5e-3,
) -> TimeSeries:
    """The Cox–Ingersoll–Ross process `dX = κ (θ − X) dt + σ √X dW` (positive when
    `2κθ ≥ σ²`, the Feller condition), by full-truncation Euler–Maruyama with step `dt`.

    Known truth: `E[X(t)] = θ + (X(0) − θ) e^{−κt}`; the stationary law is
    `Gamma(2κθ/σ², scale σ²/(2κ))`, from which `X(0)` is drawn when `x0` is None.

    **Arguments:** as in `ornstein_uhlenbeck`, with `kappa`, `theta`, `sigma` and `x0`
    (a fixed start, or None for the stationary law).

    **Returns:** a `TimeSeries` `(n_series, n_times, 1)` with a `truth` dict (`kappa`,
    `theta`, `sigma`, `x0`, `clean`).
    """
    _check_sizes("cir", n_series, n_times, t_max, missing)
    if not (kappa > 0 and theta > 0 and sigma > 0):
        raise ValueError("cir: need kappa > 0, theta > 0 and sigma > 0.")
    if x0 is not None and not x0 > 0:
        raise ValueError(f"cir: x0 must be positive (or None for the stationary law), got {x0!r}.")
    k_grid, k0, kw, k_obs = jax.random.split(key, 4)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)
    if x0 is None:
        shape = 2 * kappa * theta / sigma**2
        start = jax.random.gamma(k0, shape, (n_series, 1)) * sigma**2 / (2 * kappa)
    else:
        start = jnp.full((n_series, 1), float(x0))

    def drift(t, x, args):
        return kappa * (theta - jnp.maximum(x, 0.0))

    def diffusion(t, x, args):
        return sigma * jnp.sqrt(jnp.maximum(x, 0.0))

    clean = np.maximum(_euler(kw, drift, diffusion, start, fine), 0.0)
    truth = {"kappa": kappa, "theta": theta, "sigma": sigma, "x0": x0}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x"], truth)


def damped_oscillator(
    n_series: int = 64,
    n_times: int = 60,
    t_max: float = 10.0,
    *,
    key,
    omega: float = 2.0,
    zeta: float = 0.1,
    sigma: float = 0.5,
    noise_std: float = 0.05,
    irregular: bool = True,
    missing: float = 0.0,
    dt: float = 5e-3,
) -> TimeSeries:
    """A damped stochastic oscillator, 2-D: position `x` and velocity `v` with
    `dx = v dt`, `dv = (−ω² x − 2ζω v) dt + σ dW`, by Euler–Maruyama with step `dt`,
    started in the stationary law (independent `x ~ N(0, σ²/(4ζω³))`,
    `v ~ N(0, σ²/(4ζω))`).

    **Arguments:** as in `ornstein_uhlenbeck`, with `omega` (natural frequency), `zeta`
    (damping ratio) and `sigma`.

    **Returns:** a `TimeSeries` `(n_series, n_times, 2)` (`x`, `v`) with a `truth` dict
    (`omega`, `zeta`, `sigma`, `stationary_var = (σ²/(4ζω³), σ²/(4ζω))`, `clean`).
    """
    _check_sizes("damped_oscillator", n_series, n_times, t_max, missing)
    if not (omega > 0 and zeta > 0 and sigma >= 0):
        raise ValueError("damped_oscillator: need omega > 0, zeta > 0 and sigma >= 0.")
    k_grid, k0, kw, k_obs = jax.random.split(key, 4)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)
    var = np.array([sigma**2 / (4 * zeta * omega**3), sigma**2 / (4 * zeta * omega)])
    start = jnp.sqrt(jnp.asarray(var)) * jax.random.normal(k0, (n_series, 2))
    scale = jnp.array([0.0, sigma])

    def drift(t, u, args):
        x, v = u[..., 0], u[..., 1]
        return jnp.stack([v, -(omega**2) * x - 2 * zeta * omega * v], axis=-1)

    def diffusion(t, u, args):
        return scale * jnp.ones_like(u)

    clean = _euler(kw, drift, diffusion, start, fine)
    truth = {"omega": omega, "zeta": zeta, "sigma": sigma, "stationary_var": tuple(var)}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x", "v"], truth)


def regime_switching(
    n_series: int = 64,
    n_times: int = 50,
    t_max: float = 10.0,
    *,
    key,
    levels: tuple = (-1.0, 1.0),
    rate: float = 0.3,
    theta: float = 2.0,
    sigma: float = 0.3,
    noise_std: float = 0.05,
    irregular: bool = True,
    missing: float = 0.0,
    dt: float = 1e-2,
) -> TimeSeries:
    """A regime-switching OU process: a two-state Markov chain `s(t)` switches between
    the levels `μ_0, μ_1` at rate `rate` (each way), and
    `dX = θ (μ_{s(t)} − X) dt + σ dW`, `X(0) = μ_{s(0)}`, `s(0)` uniform. Between
    switches the OU transition is exact on the grid; switches happen with probability
    `1 − e^{−rate·dt}` per grid step.

    **Arguments:** as in `ornstein_uhlenbeck`, with `levels` (the two means), `rate`
    (switches per unit time), `theta` and `sigma`.

    **Returns:** a `TimeSeries` `(n_series, n_times, 1)` with a `truth` dict (`levels`,
    `rate`, `theta`, `sigma`, `regime` (the state at the observation times), `clean`).
    """
    _check_sizes("regime_switching", n_series, n_times, t_max, missing)
    if not (rate >= 0 and theta > 0 and sigma >= 0 and len(levels) == 2):
        raise ValueError("regime_switching: need two levels, rate >= 0, theta > 0 and sigma >= 0.")
    k_grid, k_s0, k_sw, kw, k_obs = jax.random.split(key, 5)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)
    h = float(fine[1] - fine[0])
    n_steps = len(fine) - 1
    s0 = jax.random.bernoulli(k_s0, 0.5, (n_series,)).astype(jnp.int32)
    flips = jax.random.bernoulli(k_sw, -math.expm1(-rate * h), (n_steps, n_series)).astype(jnp.int32)
    regime = jnp.concatenate([s0[None], (s0[None] + jnp.cumsum(flips, axis=0)) % 2], axis=0)
    mus = jnp.asarray(levels, dtype=float)[regime]
    a = math.exp(-theta * h)
    c = sigma * math.sqrt((1 - a**2) / (2 * theta))
    eps = jax.random.normal(kw, (n_steps, n_series))

    def step(x, inp):
        m, e = inp
        x = m + (x - m) * a + c * e
        return x, x

    _, path = jax.lax.scan(step, mus[0], (mus[1:], eps))
    path = jnp.concatenate([mus[:1], path], axis=0)
    clean = np.asarray(path, dtype=float).T[..., None]
    reg = np.asarray(regime).T[np.arange(n_series)[:, None], idx]
    truth = {"levels": tuple(levels), "rate": rate, "theta": theta, "sigma": sigma, "regime": reg}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x"], truth)


def lv_process_noise(
    n_series: int = 64,
    n_times: int = 50,
    t_max: float = 15.0,
    *,
    key,
    alpha: float = 1.0,
    beta: float = 0.5,
    gamma: float = 1.0,
    delta: float = 0.5,
    sigma: float = 0.1,
    noise_std: float = 0.05,
    irregular: bool = True,
    missing: float = 0.0,
    dt: float = 1e-2,
) -> TimeSeries:
    """Lotka–Volterra with process noise, positive by construction: on the log scale
    `d log x = (α − β y) dt + σ dW₁`, `d log y = (δ x − γ) dt + σ dW₂` (Euler–Maruyama
    with step `dt`), started at `(x, y) = (γ/δ, α/β) · e^{N(0, 0.3²)}` around the
    equilibrium. Observations carry multiplicative noise `y = X (1 + noise_std ε)`.

    **Arguments:** as in `ornstein_uhlenbeck`, with the rates `alpha`, `beta`, `gamma`,
    `delta` and the log-scale volatility `sigma`.

    **Returns:** a `TimeSeries` `(n_series, n_times, 2)` (`prey`, `predator`) with a
    `truth` dict (the rates, `sigma`, `equilibrium`, `clean`).
    """
    _check_sizes("lv_process_noise", n_series, n_times, t_max, missing)
    if not (min(alpha, beta, gamma, delta) > 0 and sigma >= 0):
        raise ValueError("lv_process_noise: need positive rates and sigma >= 0.")
    k_grid, k0, kw, k_obs = jax.random.split(key, 4)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)
    eq = np.array([gamma / delta, alpha / beta])
    start = jnp.log(jnp.asarray(eq)) + 0.3 * jax.random.normal(k0, (n_series, 2))

    def drift(t, u, args):
        x, y = jnp.exp(u[..., 0]), jnp.exp(u[..., 1])
        return jnp.stack([alpha - beta * y, delta * x - gamma], axis=-1)

    def diffusion(t, u, args):
        return sigma * jnp.ones_like(u)

    clean = np.exp(_euler(kw, drift, diffusion, start, fine))
    truth = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta, "sigma": sigma,
             "equilibrium": tuple(eq)}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["prey", "predator"], truth,
                   relative=True)


def seasonal_trend(
    n_series: int = 64,
    n_times: int = 48,
    t_max: float = 4.0,
    *,
    key,
    period: float = 1.0,
    slope: float = 0.5,
    amplitude: float = 1.0,
    residual_sd: float = 0.3,
    residual_rate: float = 4.0,
    noise_std: float = 0.05,
    irregular: bool = True,
    missing: float = 0.0,
    dt: float = 1e-2,
) -> TimeSeries:
    """A seasonal series with trend, in years: per series
    `y(t) = a + b t + A sin(2π t / period + φ) + r(t)` with level `a ~ N(0, 1)`, slope
    `b ~ N(slope, 0.2²)`, amplitude `A ~ amplitude · U(0.5, 1.5)`, phase `φ ~ U(0, 2π)`
    and `r` a stationary OU residual of sd `residual_sd` and mean-reversion rate
    `residual_rate` (sampled exactly on a grid of step `dt`).

    **Arguments:** as in `ornstein_uhlenbeck`, with `period`, `slope`, `amplitude`,
    `residual_sd` and `residual_rate`.

    **Returns:** a `TimeSeries` `(n_series, n_times, 1)` with a `truth` dict (`level`,
    `slope`, `amplitude`, `phase` per series, `period`, `residual_sd`, `residual_rate`,
    `clean`).
    """
    _check_sizes("seasonal_trend", n_series, n_times, t_max, missing)
    if not (period > 0 and residual_rate > 0 and residual_sd >= 0):
        raise ValueError("seasonal_trend: need period > 0, residual_rate > 0 and residual_sd >= 0.")
    k_grid, k_par, k0, kw, k_obs = jax.random.split(key, 5)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)
    u = np.asarray(jax.random.uniform(k_par, (4, n_series)), dtype=float)
    z = np.asarray(jax.random.normal(jax.random.fold_in(k_par, 1), (2, n_series)), dtype=float)
    level, b = z[0], slope + 0.2 * z[1]
    amp, phase = amplitude * (0.5 + u[0]), 2 * np.pi * u[1]
    h = float(fine[1] - fine[0])
    a = math.exp(-residual_rate * h)
    r0 = residual_sd * jax.random.normal(k0, (n_series,))
    r = np.asarray(_exact_linear(kw, r0, a, 0.0, residual_sd * math.sqrt(1 - a**2), len(fine) - 1)).T
    t = fine[None, :]
    clean = level[:, None] + b[:, None] * t + amp[:, None] * np.sin(2 * np.pi * t / period + phase[:, None]) + r
    truth = {"level": level, "slope": b, "amplitude": amp, "phase": phase, "period": period,
             "residual_sd": residual_sd, "residual_rate": residual_rate}
    return _finish(k_obs, fine, idx, clean[..., None], noise_std, missing, ["y"], truth)


class PanelCase(NamedTuple):
    """One process of the calibration panel.

    - `name`: the case name (also its key in `panel()`).
    - `builder`: the simulator; called as `builder(**sizes, key=..., ...)`.
    - `sizes`: keyword arguments of the full-size run; `quick`: of the quick run.
    - `kind`: `"forecast"` (a `TimeSeries` whose last part is held out) or `"treatment"`
      (a `TumorSimulation` with true counterfactuals; scored under plans).
    - `summary`: one line for tables and the docs.
    """

    name: str
    builder: Callable
    sizes: dict
    quick: dict
    kind: str
    summary: str

    def simulate(self, *, key, missing: float = 0.0, quick: bool = False, **overrides):
        """Run the simulator at the case's sizes (`quick` ones if asked), with the given
        `missing` fraction (forecast cases; treatment cases carry their own informative
        sampling) and any keyword overrides."""
        kw = dict(self.quick if quick else self.sizes, **overrides)
        if self.kind == "forecast":
            return self.builder(key=key, irregular=True, missing=missing, **kw)
        return self.builder(key=key, **kw)


def _gbm(n_series=64, n_times=50, t_max=1.0, *, key, noise_std=0.0, irregular=True, missing=0.0,
         oversample=8, **kw):
    """`geometric_brownian_motion` observed at per-series irregular times: the exact path
    on a grid `oversample` times finer, of which each series keeps `n_times` random
    points (the simulator's own `irregular` grid has no finer points to draw from)."""
    k_path, k_idx, k_obs = jax.random.split(key, 3)
    n_fine = (n_times - 1) * oversample + 1 if irregular else n_times
    path = geometric_brownian_motion(n_series, n_fine, t_max, key=k_path, **kw)
    fine, clean = path.ts[0], path.truth.pop("clean")
    if irregular:
        u = np.asarray(jax.random.uniform(k_idx, (n_series, n_fine)))
        idx = np.sort(np.argsort(u, axis=1)[:, :n_times], axis=1)
    else:
        idx = np.broadcast_to(np.arange(n_times), (n_series, n_times))
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x"], path.truth, relative=True)


def _tumor(gamma):
    def build(*, key, **kw):
        return tumor_growth(gamma=gamma, key=key, **kw)

    build.__name__ = f"tumor_growth_gamma{gamma:g}"
    return build


def panel() -> dict[str, PanelCase]:
    """The calibration panel: processes the models were not developed on, as
    `name -> PanelCase`. Forecast cases are observed at irregular per-series times;
    the tumour cases (`tumor_gamma0/4/8`, confounding strength γ) give true outcomes
    under treatment plans inside (`"factual"`) and outside (`"none"`, `"chemo"` every
    day) the observed treatment patterns.

    **Returns:** a dict in a fixed order, shared by `benchmarks/calibration.py --panel`
    and the tests.
    """
    f = "forecast"
    cases = [
        PanelCase("ou", ornstein_uhlenbeck, dict(n_series=32, n_times=40), dict(n_series=16, n_times=30), f,
                  "Ornstein-Uhlenbeck, exact sampling"),
        PanelCase("cir", cir, dict(n_series=32, n_times=40), dict(n_series=16, n_times=30), f,
                  "Cox-Ingersoll-Ross (positive, sqrt diffusion)"),
        PanelCase("oscillator", damped_oscillator, dict(n_series=32, n_times=50), dict(n_series=16, n_times=40), f,
                  "damped stochastic oscillator, 2-D (position, velocity)"),
        PanelCase("regime", regime_switching, dict(n_series=32, n_times=40), dict(n_series=16, n_times=30), f,
                  "two-regime switching OU (jumps in the mean)"),
        PanelCase("gbm", _gbm, dict(n_series=32, n_times=40, noise_std=0.02),
                  dict(n_series=16, n_times=30, noise_std=0.02), f, "geometric Brownian motion"),
        PanelCase("lv_sde", lv_process_noise, dict(n_series=32, n_times=50), dict(n_series=16, n_times=40), f,
                  "Lotka-Volterra with process noise, 2-D, positive"),
        PanelCase("seasonal", seasonal_trend, dict(n_series=32, n_times=48), dict(n_series=16, n_times=36), f,
                  "trend + yearly cycle + OU residual"),
    ]
    tumor_sizes = dict(n_patients=200, n_test=50, n_days=30, min_history=10)
    tumor_quick = dict(n_patients=100, n_test=30, n_days=30, min_history=10)
    for g in (0, 4, 8):
        cases.append(PanelCase(f"tumor_gamma{g}", _tumor(float(g)), tumor_sizes, tumor_quick, "treatment",
                               f"tumour growth, confounding gamma={g}, plans inside/outside the data"))
    return {c.name: c for c in cases}


def _with_default_key(fn):
    def loader(**kwargs):
        kwargs.setdefault("key", jax.random.key(0))
        return fn(**kwargs)

    return loader


for _name, _fn, _summary in (
    ("ornstein_uhlenbeck", ornstein_uhlenbeck, "Ornstein-Uhlenbeck process, exact sampling, irregular times; simulator."),
    ("cir", cir, "Cox-Ingersoll-Ross process (positive), irregular times; simulator."),
    ("damped_oscillator", damped_oscillator, "Damped stochastic oscillator, 2-D, irregular times; simulator."),
    ("regime_switching", regime_switching, "Two-regime switching OU process, irregular times; simulator."),
    ("lv_process_noise", lv_process_noise, "Lotka-Volterra SDE with process noise (positive), 2-D; simulator."),
    ("seasonal_trend", seasonal_trend, "Trend + yearly cycle + OU residual, irregular times; simulator."),
):
    register(_name, _with_default_key(_fn), _summary)
