"""SDE simulators with known truth: stochastic Lorenz (the latent-SDE benchmark of
Li et al. 2020), geometric Brownian motion and a double-well diffusion."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_int, check_real
from .._data import TimeSeries
from ..solvers._sde import brownian_increments, solve_sde_grid
from ._registry import register

__all__ = ["stochastic_lorenz", "geometric_brownian_motion", "double_well", "gbm_moments"]


def _check_sizes(owner, n_series, n_times, t_max, missing):
    check_int(f"{owner}.n_series", n_series)
    check_int(f"{owner}.n_times", n_times, 2)
    check_real(f"{owner}.t_max", t_max, 0.0, open_low=True)
    if not 0.0 <= missing < 1.0:
        raise ValueError(f"{owner}: missing must be a probability in [0, 1), got {missing!r}.")


def _fine_grid(key, n_series, n_times, t_max, dt, irregular):
    """A simulation grid and, per series, the indices of the observation times on it."""
    if not irregular:
        sub = max(1, math.ceil((t_max / (n_times - 1)) / dt))
        fine = np.linspace(0.0, t_max, (n_times - 1) * sub + 1)
        idx = np.broadcast_to(np.arange(n_times) * sub, (n_series, n_times))
        return fine, np.asarray(idx)
    n_fine = max(math.ceil(t_max / dt) + 1, n_times)
    fine = np.linspace(0.0, t_max, n_fine)
    u = np.asarray(jax.random.uniform(key, (n_series, n_fine)))
    idx = np.sort(np.argsort(u, axis=1)[:, :n_times], axis=1)
    return fine, idx


def _finish(key, fine, idx, clean, noise_std, missing, names, truth, relative=False):
    k_noise, k_miss = jax.random.split(key)
    n = idx.shape[0]
    ts = fine[idx]
    obs = clean[np.arange(n)[:, None], idx]
    eps = np.asarray(jax.random.normal(k_noise, obs.shape), dtype=float)
    ys = obs * (1.0 + noise_std * eps) if relative else obs + noise_std * eps
    if missing > 0:
        drop = np.asarray(jax.random.uniform(k_miss, ys.shape)) < missing
        # Keep the first time of every series fully observed, so each series has data.
        drop[:, 0] = False
        ys = np.where(drop, np.nan, ys)
    out = TimeSeries(ts, ys, names=names)
    truth["clean"] = obs
    out.truth = truth
    return out


#: Parameters of `stochastic_lorenz` (torchsde's latent-SDE example).
LORENZ_TRUTH = {"a": (10.0, 28.0, 8.0 / 3.0), "b": (0.1, 0.28, 0.3)}


def stochastic_lorenz(
    n_series: int = 1024,
    n_times: int = 100,
    t_max: float = 2.0,
    *,
    key,
    noise_std: float = 0.01,
    normalize: bool = True,
    irregular: bool = False,
    missing: float = 0.0,
    dt: float = 1e-3,
) -> TimeSeries:
    """The stochastic Lorenz attractor of the latent-SDE benchmark (Li et al. 2020):

    `dx = a₁(y − x) dt + b₁ x dW₁`, `dy = (a₂ x − y − x z) dt + b₂ y dW₂`,
    `dz = (x y − a₃ z) dt + b₃ z dW₃`, `(a₁, a₂, a₃) = (10, 28, 8/3)`,
    `(b₁, b₂, b₃) = (0.1, 0.28, 0.3)`, `(x, y, z)(0) ~ N(0, I)`.

    Solved by Itô–Milstein with step `dt`; with `normalize` each dimension is
    standardised over all series and times, then Gaussian observation noise of sd
    `noise_std` is added (as in torchsde's example).

    **Arguments:**

    - `n_series`, `n_times`, `t_max`: sizes; times in `[0, t_max]`.
    - `key`: a JAX PRNG key.
    - `noise_std`: observation noise sd (in normalised units when `normalize`).
    - `normalize`: standardise each dimension.
    - `irregular`: each series observed at its own `n_times` random times on the
      simulation grid (sorted), instead of an even grid shared by all.
    - `missing`: probability that each value is missing (NaN); the first time of each
      series stays observed.
    - `dt`: simulation step.

    **Returns:** a `TimeSeries` `(n_series, n_times, 3)` with a `truth` dict: `a`, `b`,
    `mean`, `std` (the normalisation), `clean` (noise-free values at the observation
    times, normalised like `ys`).
    """
    _check_sizes("stochastic_lorenz", n_series, n_times, t_max, missing)
    k_grid, k0, kw, k_obs = jax.random.split(key, 4)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)
    a1, a2, a3 = LORENZ_TRUTH["a"]
    b = jnp.asarray(LORENZ_TRUTH["b"])

    def drift(t, u, args):
        x, y, z = u[..., 0], u[..., 1], u[..., 2]
        return jnp.stack([a1 * (y - x), a2 * x - y - x * z, x * y - a3 * z], axis=-1)

    def diffusion(t, u, args):
        return b * u

    x0 = jax.random.normal(k0, (n_series, 3))
    ts = jnp.asarray(fine, dtype=x0.dtype)
    dW = brownian_increments(kw, ts, (n_series, 3))
    path = solve_sde_grid(drift, diffusion, x0, ts, dW, scheme="milstein")
    clean = np.asarray(jnp.swapaxes(path, 0, 1), dtype=float)
    if normalize:
        obs = clean[np.arange(n_series)[:, None], idx]
        mean, std = obs.mean(axis=(0, 1)), obs.std(axis=(0, 1))
    else:
        mean, std = np.zeros(3), np.ones(3)
    clean = (clean - mean) / std
    truth = {"a": LORENZ_TRUTH["a"], "b": LORENZ_TRUTH["b"], "mean": mean, "std": std}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x", "y", "z"], truth)


def gbm_moments(t, x_s, s, mu, sigma):
    """Mean and variance of geometric Brownian motion at `t >= s` given `X(s) = x_s`:
    `E = x_s e^{μ(t−s)}`, `Var = x_s² e^{2μ(t−s)} (e^{σ²(t−s)} − 1)`."""
    h = np.asarray(t) - np.asarray(s)
    mean = x_s * np.exp(mu * h)
    return mean, x_s**2 * np.exp(2 * mu * h) * np.expm1(sigma**2 * h)


def geometric_brownian_motion(
    n_series: int = 64,
    n_times: int = 50,
    t_max: float = 1.0,
    *,
    key,
    mu: float = 0.5,
    sigma: float = 0.3,
    x0: float = 1.0,
    noise_std: float = 0.0,
    irregular: bool = False,
    missing: float = 0.0,
) -> TimeSeries:
    """Geometric Brownian motion `dX = μ X dt + σ X dW`, `X(0) = x0`, sampled exactly:
    `X(t) = x0 exp((μ − σ²/2) t + σ W(t))`.

    Known truth: `E[X(t) | X(s)] = X(s) e^{μ(t−s)}`,
    `Var[X(t) | X(s)] = X(s)² e^{2μ(t−s)} (e^{σ²(t−s)} − 1)` (`gbm_moments`).

    **Arguments:**

    - `n_series`, `n_times`, `t_max`: sizes; times in `[0, t_max]`.
    - `key`: a JAX PRNG key.
    - `mu`, `sigma`, `x0`: drift, volatility and initial value.
    - `noise_std`: multiplicative observation noise, `y = X (1 + noise_std ε)`.
    - `irregular`, `missing`: as in `stochastic_lorenz`.

    **Returns:** a `TimeSeries` `(n_series, n_times, 1)` with a `truth` dict
    (`mu`, `sigma`, `x0`, `clean`).
    """
    _check_sizes("geometric_brownian_motion", n_series, n_times, t_max, missing)
    if not (sigma >= 0 and x0 > 0):
        raise ValueError("geometric_brownian_motion: need sigma >= 0 and x0 > 0.")
    k_grid, kw, k_obs = jax.random.split(key, 3)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, t_max / (n_times - 1), irregular)
    ts = jnp.asarray(fine)
    dW = brownian_increments(kw, ts, (n_series,))
    W = np.concatenate([np.zeros((1, n_series)), np.cumsum(np.asarray(dW, dtype=float), axis=0)])
    clean = x0 * np.exp((mu - 0.5 * sigma**2) * fine[:, None] + sigma * W)
    clean = clean.T[..., None]
    truth = {"mu": mu, "sigma": sigma, "x0": x0}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x"], truth, relative=True)


def double_well(
    n_series: int = 64,
    n_times: int = 100,
    t_max: float = 10.0,
    *,
    key,
    theta: float = 1.0,
    sigma: float = 0.5,
    noise_std: float = 0.05,
    irregular: bool = False,
    missing: float = 0.0,
    dt: float = 1e-2,
) -> TimeSeries:
    """The double-well diffusion `dX = θ (X − X³) dt + σ dW`, `X(0) ~ N(0, 0.5²)`.

    Wells at `±1`, a barrier at `0`; stationary density `∝ exp((2θ/σ²)(x²/2 − x⁴/4))`.
    Solved by Euler–Maruyama with step `dt`; Gaussian observation noise `noise_std`.

    **Arguments:** as in `stochastic_lorenz`, with `theta` (drift strength) and `sigma`
    (noise level).

    **Returns:** a `TimeSeries` `(n_series, n_times, 1)` with a `truth` dict
    (`theta`, `sigma`, `clean`).
    """
    _check_sizes("double_well", n_series, n_times, t_max, missing)
    k_grid, k0, kw, k_obs = jax.random.split(key, 4)
    fine, idx = _fine_grid(k_grid, n_series, n_times, t_max, dt, irregular)

    def drift(t, x, args):
        return theta * (x - x**3)

    def diffusion(t, x, args):
        return sigma * jnp.ones_like(x)

    x0 = 0.5 * jax.random.normal(k0, (n_series, 1))
    ts = jnp.asarray(fine, dtype=x0.dtype)
    dW = brownian_increments(kw, ts, (n_series, 1))
    path = solve_sde_grid(drift, diffusion, x0, ts, dW, scheme="euler")
    clean = np.asarray(jnp.swapaxes(path, 0, 1), dtype=float)
    truth = {"theta": theta, "sigma": sigma}
    return _finish(k_obs, fine, idx, clean, noise_std, missing, ["x"], truth)


def _with_default_key(fn):
    def loader(**kwargs):
        kwargs.setdefault("key", jax.random.key(0))
        return fn(**kwargs)

    return loader


register(
    "stochastic_lorenz",
    _with_default_key(stochastic_lorenz),
    "Stochastic Lorenz attractor (1024 paths, 100 times on [0, 2], normalised); simulator with known truth.",
)
register(
    "geometric_brownian_motion",
    _with_default_key(geometric_brownian_motion),
    "Geometric Brownian motion (exact sampling; known conditional mean and variance); simulator.",
)
register(
    "double_well",
    _with_default_key(double_well),
    "Double-well diffusion dX = θ(X − X³)dt + σ dW; simulator with known truth.",
)
