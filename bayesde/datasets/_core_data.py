"""The hare–lynx series (real, shipped) and the Lotka–Volterra simulator (known truth)."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .._data import TimeSeries
from ._registry import data_path, register

__all__ = ["hare_lynx", "lotka_volterra", "LV_TRUTH", "lotka_volterra_field"]

#: The parameters `lotka_volterra` simulates with by default.
LV_TRUTH = {"alpha": 0.55, "beta": 0.028, "gamma": 0.80, "delta": 0.024, "sigma": 0.1}


def lotka_volterra_field(t, y, theta):
    """Lotka–Volterra: `dx = (α − β y) x`, `dy = (−γ + δ x) y`.

    `theta` is a dict with keys `alpha, beta, gamma, delta` or a sequence in that order.
    """
    x, z = y[..., 0], y[..., 1]
    if isinstance(theta, dict):
        alpha, beta, gamma, delta = (theta[k] for k in ("alpha", "beta", "gamma", "delta"))
    else:
        alpha, beta, gamma, delta = theta[0], theta[1], theta[2], theta[3]
    return jnp.stack([(alpha - beta * z) * x, (-gamma + delta * x) * z], axis=-1)


def lotka_volterra_priors(alpha=0.5, beta=0.03, gamma=0.8, delta=0.03, *, scale=0.5) -> dict:
    """LogNormal priors for `lotka_volterra_field`, each with the given median and
    log-scale `scale`: `{"alpha": LogNormal(log α, scale), ...}`, ready for
    `bd.models.ODE(bd.models.lotka_volterra_field, priors)`."""
    import numpyro.distributions as dist

    medians = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta}
    return {k: dist.LogNormal(np.log(v), scale) for k, v in medians.items()}


def hare_lynx() -> TimeSeries:
    """Hudson Bay hare and lynx pelts (thousands), 1900–1920, `t` in years since 1900.

    See the data card: `bd.datasets.card("hare_lynx")`.
    """
    import pandas as pd

    with data_path("hare_lynx.csv").open() as f:
        df = pd.read_csv(f)
    return TimeSeries(
        df["year"].to_numpy(dtype=float) - 1900.0,
        df[["hare", "lynx"]].to_numpy(dtype=float)[None],
        names=["hare", "lynx"],
        series_ids=["hudson_bay"],
    )


def lotka_volterra(
    n_series: int = 3,
    n_times: int = 40,
    t_max: float = 15.0,
    *,
    key,
    theta=None,
    sigma: float | None = None,
    irregular: bool = False,
    missing: float = 0.0,
) -> TimeSeries:
    """Lotka–Volterra trajectories with LogNormal observation noise and known truth.

    **Arguments:**

    - `n_series`, `n_times`, `t_max`: sizes; times in `[0, t_max]`.
    - `key`: a JAX PRNG key.
    - `theta`: `(α, β, γ, δ)`; default `LV_TRUTH`.
    - `sigma`: LogNormal observation scale; default `LV_TRUTH["sigma"]`.
    - `irregular`: draw each series' times uniformly (sorted) instead of a shared grid.
    - `missing`: probability that each value is missing (NaN).

    Initial states per series are `(x0, y0) ~ (LogNormal(log 30, 0.2), LogNormal(log 5, 0.2))`.

    **Returns:** a `TimeSeries` whose `truth` attribute holds the parameters, the
    initial states and the noise-free trajectories.
    """
    if n_series < 1 or n_times < 2:
        raise ValueError("lotka_volterra: need n_series >= 1 and n_times >= 2.")
    theta = jnp.asarray(
        [LV_TRUTH[k] for k in ("alpha", "beta", "gamma", "delta")] if theta is None else theta
    )
    sigma = LV_TRUTH["sigma"] if sigma is None else float(sigma)
    k_y0, k_t, k_obs, k_miss = jax.random.split(key, 4)
    y0 = jnp.exp(
        jnp.log(jnp.array([30.0, 5.0])) + 0.2 * jax.random.normal(k_y0, (n_series, 2))
    )
    if irregular:
        ts = jnp.sort(jax.random.uniform(k_t, (n_series, n_times), maxval=t_max), axis=1)
        ts = ts.at[:, 0].set(0.0)
    else:
        ts = jnp.broadcast_to(jnp.linspace(0.0, t_max, n_times), (n_series, n_times))

    def solve(y0_i, ts_i):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: lotka_volterra_field(t, y, a)),
            diffrax.Tsit5(),
            0.0,
            t_max,
            0.05,
            y0_i,
            args=theta,
            saveat=diffrax.SaveAt(ts=ts_i),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
            max_steps=100_000,
        )
        return sol.ys

    f = jax.vmap(solve)(y0, ts)
    ys = f * jnp.exp(sigma * jax.random.normal(k_obs, f.shape))
    ys = np.asarray(ys, dtype=float)
    if missing > 0:
        drop = np.asarray(jax.random.uniform(k_miss, ys.shape) < missing)
        drop[:, 0] = False
        ys = np.where(drop, np.nan, ys)
    out = TimeSeries(np.asarray(ts), ys, names=["prey", "predator"])
    out.truth = {
        **{k: float(v) for k, v in zip(("alpha", "beta", "gamma", "delta"), theta)},
        "sigma": sigma,
        "y0": np.asarray(y0),
        "f": np.asarray(f),
    }
    return out


register("hare_lynx", hare_lynx, "Hudson Bay hare and lynx pelts 1900-1920 (real, 1 series, 2 dims)", "hare_lynx.md")
register(
    "lotka_volterra",
    lambda **kw: lotka_volterra(**{"key": jax.random.key(0), **kw}),
    "Lotka-Volterra simulator with LogNormal noise and known parameters (simulated)",
)
