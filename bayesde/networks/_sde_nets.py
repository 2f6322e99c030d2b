"""The networks of the latent SDE: per-coordinate and time-only diffusions, and
encoders that read a series backwards in time."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["batched_linear", "batched_mlp", "PerDimNet", "TimeNet", "GRUEncoder", "NCDEEncoder"]


def batched_linear(layer, x):
    """An `eqx.nn.Linear` on inputs with any leading batch dims (a plain matmul)."""
    out = x @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


def batched_mlp(mlp, x, first=None):
    """An `eqx.nn.MLP` on inputs with any leading batch dims; `first`, when given, is the
    already computed pre-activation of the first layer."""
    layers = mlp.layers
    h = batched_linear(layers[0], x) if first is None else first
    for layer in layers[1:]:
        h = batched_linear(layer, mlp.activation(h))
    return mlp.final_activation(h)



class PerDimNet(eqx.Module):
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


class TimeNet(eqx.Module):
    """`σ(t) = sigmoid(MLP(t))`, one output per latent coordinate."""

    mlp: eqx.nn.MLP

    def __init__(self, dim, width, *, key):
        self.mlp = eqx.nn.MLP(1, dim, width, 1, activation=jnp.tanh, key=key)

    def __call__(self, t):
        return jax.nn.sigmoid(batched_mlp(self.mlp, jnp.asarray(t)[..., None]))


class GRUEncoder(eqx.Module):
    """A GRU run backwards in time over `[y·mask, mask, Δt]`; the context at
    observation `j` summarises the observations at times `>= t_j`. With
    `backward=False` it runs forwards, and the context at `j` summarises those at
    times `<= t_j` (`Δt` then to the previous observation)."""

    cell: eqx.nn.GRUCell
    out: eqx.nn.Linear
    backward: bool = eqx.field(static=True, default=True)

    def __init__(self, data_dim, width, context_dim, *, key, backward=True):
        k1, k2 = jax.random.split(key)
        self.cell = eqx.nn.GRUCell(2 * data_dim + 1, width, key=k1)
        self.out = eqx.nn.Linear(width, context_dim, key=k2)
        self.backward = backward

    def __call__(self, ts, ys, mask):
        m = mask.astype(ys.dtype)
        seen = jnp.any(mask, axis=-1)

        def scan_step(carry, inp):
            h, t_other = carry
            t, y, mk, s = inp
            # Δt to the neighbouring time with an observation in the reading direction (0 at
            # the first one read), so that a fully missing row reads as a longer gap, exactly
            # as if the row were absent.
            gap = jnp.where(jnp.isfinite(t_other), jnp.abs(t_other - t), 0.0)
            x = jnp.concatenate([y * mk, mk, gap[None]])
            # Times with no observation (padding, fully missing rows) leave h unchanged.
            h = jnp.where(s, self.cell(x, h), h)
            return (h, jnp.where(s, t, t_other)), h

        h0 = jnp.zeros((self.cell.hidden_size,), ys.dtype)
        carry = (h0, jnp.asarray(jnp.inf, ts.dtype))
        _, hs = jax.lax.scan(jax.checkpoint(scan_step), carry, (ts, ys, m, seen), reverse=self.backward)
        return jax.vmap(self.out)(hs)


class NCDEEncoder(eqx.Module):
    """A neural CDE run backwards in time, `dh = F(h) dX`, driven by the control path
    `X = [t, ỹ, c]` (Kidger et al. 2020): `ỹ` the values with each missing entry
    filled by the next observation, `c` the backward running count of observations
    (so the encoder sees *when* a series was measured). Euler on the observation
    times; the state is (re)initialised from `X` until the first observation is met,
    so trailing padding is ignored."""

    init: eqx.nn.Linear
    field: eqx.nn.MLP
    out: eqx.nn.Linear
    width: int = eqx.field(static=True)
    in_dim: int = eqx.field(static=True)

    def __init__(self, data_dim, width, context_dim, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.in_dim = 2 * data_dim + 1
        self.width = width
        self.init = eqx.nn.Linear(self.in_dim, width, key=k1)
        self.field = eqx.nn.MLP(
            width, width * self.in_dim, width, 1, activation=jax.nn.softplus,
            final_activation=jnp.tanh, key=k2,
        )
        self.out = eqx.nn.Linear(width, context_dim, key=k3)

    def __call__(self, ts, ys, mask):
        m = mask.astype(ys.dtype)
        seen_row = jnp.any(mask, axis=-1)
        # Counts are per observed row (not per row of the padded grid), so that empty
        # rows and padding change nothing.
        n_t = jnp.maximum(jnp.sum(seen_row), 1).astype(ys.dtype)

        def step(carry, inp):
            h, last_y, count, x_prev, started = carry
            t, y, mk, s = inp
            last_y = jnp.where(mk, y, last_y)
            count = count + mk.astype(y.dtype) / n_t
            x = jnp.concatenate([t[None], last_y, count])
            h_new = h + (self.field(h).reshape(self.width, self.in_dim) @ (x - x_prev))
            # Once started, a fully missing row leaves the state and the control where they
            # were: the next Euler step spans the whole gap, as if the row were absent.
            move = s | ~started
            h = jnp.where(move, jnp.where(started, h_new, self.init(x)), h)
            x = jnp.where(move, x, x_prev)
            started = started | s
            return (h, last_y, count, x, started), h

        d = ys.shape[-1]
        carry = (
            jnp.zeros((self.width,), ys.dtype),
            jnp.zeros((d,), ys.dtype),
            jnp.zeros((d,), ys.dtype),
            jnp.zeros((self.in_dim,), ys.dtype),
            jnp.asarray(False),
        )
        _, hs = jax.lax.scan(step, carry, (ts, ys * m, mask, seen_row), reverse=True)
        return jax.vmap(self.out)(hs)
