"""A model discrepancy for deterministic dynamics: an Ornstein–Uhlenbeck process added to
the ODE's path, marginalised by a Kalman filter.

An ODE fitted to a stochastic process explains the data's wiggles as observation noise,
which is independent from one time to the next, so its forecasts are as wide one step
after the last observation as a hundred steps after it. The data say otherwise: the
residuals of an ODE fit are correlated in time, and a forecast's error grows with the
horizon. Writing the observations as

    g(y_ij) = m_i(t_ij) + δ_i(t_ij) + ε_ij,    δ_i ~ OU(sd ρ, time constant ℓ),  ε_ij ~ N(0, s²)

(`g` the identity or `log`, `m` the ODE's path in those units, one independent `δ` per
series and data dimension) gives the discrepancy its own two parameters, fitted with the
rest by the likelihood of the history: the correlated part of the residuals becomes `δ`,
and a forecast continues `δ` from its state at the last observation, so that its spread
grows from the filtered uncertainty there towards `ρ` over a few `ℓ`.

`δ` is linear and Gaussian, so it is integrated out exactly (a scalar Kalman filter along
each series' times): the model gains two parameters, not one per observation, and NUTS
sees the same number of dimensions as before. `log_prob` returns each observed entry's
one-step-ahead predictive log-density, which sum to the joint log-likelihood (entries
that are missing contribute 0).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from numpyro.distributions import constraints

__all__ = ["OUDiscrepancy", "ou_filter", "ou_draw"]

_TINY = 1e-12


def _transitions(ts, rho, ell):
    """Per step `k` of `ts (N, L)`: the OU's decay `a_k = exp(−Δt/ℓ)` and added variance
    `ρ²(1 − a_k²)` since step `k − 1` (step 0: `a = 1`, variance 0, the stationary start)."""
    dt = jnp.diff(ts, axis=1, prepend=ts[:, :1])
    a = jnp.exp(-jnp.maximum(dt, 0.0) / ell)[..., None]  # (N, L, 1)
    return a, rho**2 * (1.0 - a**2)  # (N, L, 1), (N, L, D)


def ou_filter(r, ts, mask, noise, rho, ell):
    """Kalman filter of `δ` given residuals `r (N, L, D)` at times `ts (N, L)` (entries with
    `mask` False are not observed). Returns the one-step-ahead log-densities `(N, L, D)`
    (0 where unobserved), the filtered means and variances `(N, L, D)`, and the
    transitions of `_transitions`."""
    a, q = _transitions(ts, rho, ell)
    q = jnp.broadcast_to(q, r.shape)
    a = jnp.broadcast_to(a, r.shape)
    noise2 = jnp.broadcast_to(noise**2, r.shape[-1:])

    def step(carry, x):
        m, p = carry
        a_k, q_k, r_k, o_k = x
        m_p, p_p = a_k * m, a_k**2 * p + q_k
        s = p_p + noise2
        lp = jnp.where(o_k, -0.5 * (jnp.log(2 * jnp.pi * s) + (r_k - m_p) ** 2 / s), 0.0)
        gain = p_p / s
        m_n = jnp.where(o_k, m_p + gain * (r_k - m_p), m_p)
        p_n = jnp.where(o_k, (1.0 - gain) * p_p, p_p)
        return (m_n, p_n), (lp, m_n, p_n)

    n, _, d = r.shape
    init = (jnp.zeros((n, d), r.dtype), jnp.broadcast_to(rho**2, (n, d)).astype(r.dtype))
    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (a, q, r, mask))
    _, (lp, m, p) = jax.lax.scan(step, init, xs)
    return tuple(jnp.moveaxis(x, 0, 1) for x in (lp, m, p)) + (a, q)


def ou_draw(key, r, ts, mask, ts_query, noise, rho, ell):
    """One joint draw of `δ` at `ts_query (N, Q)` given residuals `r (N, T, D)` observed at
    `ts (N, T)` where `mask`: forward filtering, backward sampling on the union of both
    sets of times (a query time equal to an observed one reads that time's `δ`). Queries
    inside the history are smoothed by the data on both sides; queries after it continue
    the process from its state at the last observation."""
    n, t, d = r.shape
    q_len = ts_query.shape[1]
    t_all = jnp.concatenate([ts, ts_query], axis=1)
    r_all = jnp.concatenate([r, jnp.zeros((n, q_len, d), r.dtype)], axis=1)
    o_all = jnp.concatenate([mask, jnp.zeros((n, q_len, d), bool)], axis=1)
    order = jnp.argsort(t_all, axis=1, stable=True)  # ties: the observation first
    take = lambda x: jnp.take_along_axis(x, order if x.ndim == 2 else order[..., None], axis=1)  # noqa: E731
    _, m, p, a, q = ou_filter(take(r_all), take(t_all), take(o_all), noise, rho, ell)
    z = jax.random.normal(key, m.shape, m.dtype)

    def back(nxt, x):
        m_k, p_k, a_n, q_n, z_k = x  # filtered at k, transition k -> k + 1
        p_p = a_n**2 * p_k + q_n
        gain = jnp.where(p_p > _TINY, p_k * a_n / jnp.maximum(p_p, _TINY), 0.0)
        mean = m_k + gain * (nxt - a_n * m_k)
        var = jnp.where(p_p > _TINY, p_k * q_n / jnp.maximum(p_p, _TINY), 0.0)
        cur = mean + jnp.sqrt(jnp.maximum(var, 0.0)) * z_k
        return cur, cur

    last = m[:, -1] + jnp.sqrt(jnp.maximum(p[:, -1], 0.0)) * z[:, -1]
    xs = tuple(jnp.moveaxis(x[:, i], 1, 0) for x, i in
               ((m, slice(None, -1)), (p, slice(None, -1)), (a, slice(1, None)), (q, slice(1, None)),
                (z, slice(None, -1))))
    _, rest = jax.lax.scan(back, last, xs, reverse=True)
    draw = jnp.concatenate([jnp.moveaxis(rest, 0, 1), last[:, None]], axis=1)  # sorted order
    unsorted = jnp.zeros_like(draw)
    unsorted = unsorted.at[jnp.arange(n)[:, None], order].set(draw)
    return unsorted[:, t:]


class OUDiscrepancy(dist.Distribution):
    """Observations `g(y) = loc + δ + ε` along axis 1 of `(N, T, D)`: `δ` an OU process per
    series and dimension (sd `rho (D,)`, time constant `ell`), `ε ~ N(0, noise²)` with
    `noise (D,)`, `g = log` when `log` (a LogNormal observation) else the identity.
    Entries where `observed` is False are missing: skipped by the filter, 0 in `log_prob`.
    `log_prob` gives each entry's one-step-ahead predictive log-density (module docstring)."""

    arg_constraints = {"loc": constraints.real}
    pytree_data_fields = ("loc", "ts", "noise", "rho", "ell", "observed")
    pytree_aux_fields = ("log",)

    def __init__(self, loc, ts, noise, rho, ell, observed, log=False, *, validate_args=None):
        # `observed`, not `mask`: `Distribution.mask` is a method
        self.loc, self.ts, self.noise, self.rho, self.ell, self.observed = loc, ts, noise, rho, ell, observed
        self.log = log
        super().__init__(batch_shape=jnp.shape(loc), event_shape=(), validate_args=validate_args)

    @property
    def support(self):
        return constraints.positive if self.log else constraints.real

    def sample(self, key, sample_shape=()):
        n, _, d = self.loc.shape
        none = jnp.zeros((n, 0, d), self.loc.dtype)  # no history: a draw from the process itself

        def one(k):
            k_d, k_e = jax.random.split(k)
            delta = ou_draw(k_d, none, self.ts[:, :0], none.astype(bool), self.ts, self.noise, self.rho, self.ell)
            g = self.loc + delta + self.noise * jax.random.normal(k_e, self.loc.shape, self.loc.dtype)
            return jnp.exp(g) if self.log else g

        keys = jax.random.split(key, math.prod(sample_shape))
        out = jax.vmap(one)(keys)
        return out.reshape(tuple(sample_shape) + self.loc.shape)

    def log_prob(self, value):
        g = jnp.log(jnp.where(self.observed, value, 1.0)) if self.log else value
        lp, *_ = ou_filter(g - self.loc, self.ts, self.observed, self.noise, self.rho, self.ell)
        if self.log:
            lp = lp - jnp.where(self.observed, g, 0.0)
        return lp
