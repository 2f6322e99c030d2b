"""Exact fractional Brownian motion (Davies–Harte), fractional Ornstein–Uhlenbeck paths
with known truth, and the Nile river flow (a classic long-memory series)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._data import TimeSeries
from ._registry import data_path, register

__all__ = ["fgn_autocovariance", "davies_harte_fgn", "fbm_paths", "fractional_ou", "nile"]


def fgn_autocovariance(hurst, n: int):
    """Autocovariance of unit-step fractional Gaussian noise (increments of standard fBM,
    `Var B^H(t) = t^{2H}`): `ρ(k) = ½ (|k+1|^{2H} − 2|k|^{2H} + |k−1|^{2H})`, `k = 0..n−1`."""
    k = np.arange(n, dtype=np.float64)
    h2 = 2.0 * float(hurst)
    return 0.5 * (np.abs(k + 1) ** h2 - 2 * np.abs(k) ** h2 + np.abs(k - 1) ** h2)


def _circulant_eigs(hurst, n: int) -> np.ndarray:
    rho = fgn_autocovariance(hurst, n + 1)
    row = np.concatenate([rho, rho[-2:0:-1]])  # length 2n
    lam = np.fft.fft(row).real
    # fGn's circulant embedding is non-negative definite (Craigmile 2003); clip round-off.
    return np.clip(lam, 0.0, None)


def fgn_from_normals(z1, z2, hurst):
    """The Davies–Harte map from standard normals `z1, z2` (shape `(..., 2n)`) to two
    independent unit-step fGn samples of length `n` each (`(..., 2, n)`).

    `W = FFT(√(λ / 2n) ⊙ (z1 + i z2))` with `λ` the eigenvalues of the circulant that
    embeds the `n × n` Toeplitz covariance; `Re W[:n]` and `Im W[:n]` are independent with
    exactly that covariance (Davies & Harte 1987; Dietrich & Newsam 1997).
    """
    m = z1.shape[-1]
    lam = jnp.asarray(_circulant_eigs(hurst, m // 2), z1.dtype)
    w = jnp.fft.fft(jnp.sqrt(lam / m) * (z1 + 1j * z2), axis=-1)
    return jnp.stack([w.real[..., : m // 2], w.imag[..., : m // 2]], axis=-2)


def davies_harte_fgn(key, hurst: float, n: int, shape=()):
    """Exact unit-step fractional Gaussian noise, `(*shape, n)` (Davies–Harte)."""
    if not 0.0 < float(hurst) < 1.0:
        raise ValueError(f"davies_harte_fgn: hurst={hurst!r} is outside (0, 1).")
    count = int(np.prod(shape)) if shape else 1
    pairs = -(-count // 2)
    k1, k2 = jax.random.split(key)
    z1 = jax.random.normal(k1, (pairs, 2 * n))
    z2 = jax.random.normal(k2, (pairs, 2 * n))
    x = fgn_from_normals(z1, z2, hurst).reshape(2 * pairs, n)[:count]
    return x.reshape(*shape, n)


def fbm_paths(key, hurst: float, ts, shape=()):
    """Exact standard fBM (`Var B^H(t) = t^{2H}`) on an equally spaced grid `ts` starting
    at `B^H(ts[0]) = 0`; shape `(*shape, len(ts))`."""
    ts = np.asarray(ts, dtype=np.float64)
    dt = np.diff(ts)
    if ts.ndim != 1 or len(ts) < 2 or not np.allclose(dt, dt[0], rtol=1e-6, atol=0):
        raise ValueError("fbm_paths: ts must be an equally spaced 1-d grid of at least 2 times.")
    inc = davies_harte_fgn(key, hurst, len(ts) - 1, shape) * dt[0] ** float(hurst)
    zero = jnp.zeros((*shape, 1), inc.dtype)
    return jnp.concatenate([zero, jnp.cumsum(inc, axis=-1)], axis=-1)


def fractional_ou(
    hurst: float = 0.3,
    n_series: int = 32,
    n_times: int = 200,
    t_max: float = 10.0,
    *,
    key,
    theta: float = 1.0,
    mu: float = 0.0,
    sigma: float = 1.0,
    x0: float | None = None,
    obs_noise: float = 0.0,
    substeps: int = 8,
) -> TimeSeries:
    """Fractional Ornstein–Uhlenbeck paths `dX = θ (μ − X) dt + σ dB^H` driven by *exact*
    standard fBM (`Var B^H(t) = t^{2H}`, Davies–Harte on a grid `substeps` times finer
    than the observations; Euler in between), observed at `n_times` equally spaced times
    in `[0, t_max]` with optional Gaussian noise.

    **Arguments:**

    - `hurst`: `H ∈ (0, 1)`; `H = ½` is the ordinary OU process.
    - `n_series`, `n_times`, `t_max`: sizes.
    - `key`: a JAX PRNG key.
    - `theta`, `mu`, `sigma`: mean reversion, level and noise scale.
    - `x0`: initial value of every series (default `mu`).
    - `obs_noise`: standard deviation of the observation noise.
    - `substeps`: fine steps per observation interval of the simulation.

    **Returns:** a `bd.TimeSeries` (`names=["x"]`) with a `truth` dict attribute:
    `hurst, theta, mu, sigma, x0, obs_noise` and the noise-free paths `x (N, T)`.
    """
    hurst = float(hurst)
    if not 0.0 < hurst < 1.0:
        raise ValueError(f"fractional_ou: hurst={hurst!r} is outside (0, 1); pass 0 < hurst < 1.")
    if n_series < 1 or n_times < 2:
        raise ValueError(
            f"fractional_ou: need n_series >= 1 and n_times >= 2, got {n_series} and {n_times}."
        )
    if not t_max > 0 or substeps < 1 or sigma < 0 or obs_noise < 0:
        raise ValueError("fractional_ou: need t_max > 0, substeps >= 1, sigma >= 0, obs_noise >= 0.")
    x0 = mu if x0 is None else float(x0)
    k_b, k_obs = jax.random.split(key)
    n_fine = (n_times - 1) * substeps
    dt = t_max / n_fine
    dB = davies_harte_fgn(k_b, hurst, n_fine, (n_series,)) * dt**hurst

    def step(x, db):
        x1 = x + theta * (mu - x) * dt + sigma * db
        return x1, x1

    _, xs = jax.lax.scan(step, jnp.full((n_series,), x0, dB.dtype), dB.T)
    xs = jnp.concatenate([jnp.full((1, n_series), x0, dB.dtype), xs], axis=0)[::substeps].T
    ts = np.linspace(0.0, t_max, n_times)
    ys = xs + obs_noise * jax.random.normal(k_obs, xs.shape, xs.dtype)
    out = TimeSeries(ts, np.asarray(ys, dtype=np.float64)[..., None], names=["x"])
    out.truth = {
        "hurst": hurst,
        "theta": float(theta),
        "mu": float(mu),
        "sigma": float(sigma),
        "x0": x0,
        "obs_noise": float(obs_noise),
        "x": np.asarray(xs, dtype=np.float64),
    }
    return out


def nile() -> TimeSeries:
    """Annual flow of the Nile at Aswan, 1871–1970 (10⁸ m³), `t` in years since 1871.

    Read from the shipped `nile.csv` (extracted once from `statsmodels.datasets.nile`;
    statsmodels is not needed). See the data card: `bd.datasets.card("nile")`.
    """
    import pandas as pd

    with data_path("nile.csv").open() as f:
        df = pd.read_csv(f)
    year = df["year"].to_numpy(dtype=float)
    return TimeSeries(
        year - year[0],
        df["volume"].to_numpy(dtype=float)[None, :, None],
        names=["volume"],
        series_ids=["aswan"],
    )


register(
    "fractional_ou",
    lambda **kw: fractional_ou(**{"key": jax.random.key(0), **kw}),
    "Fractional Ornstein-Uhlenbeck paths from exact fBM with known H, theta, mu, sigma (simulated)",
)
register("nile", nile, "Nile river annual flow at Aswan 1871-1970 (real, long memory, 1 series)", "nile.md")
