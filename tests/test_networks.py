"""Building blocks of the networks."""

import jax
import jax.numpy as jnp
import numpy as np

from bayesde.networks import softplus


def test_softplus_equals_jax_softplus_with_the_same_gradient():
    x = jnp.concatenate([jnp.linspace(-100.0, 100.0, 4001), jnp.array([0.0, -0.0, 1e-30, -1e-30])])
    np.testing.assert_array_equal(softplus(x), jax.nn.softplus(x))
    ours = jax.vmap(jax.grad(softplus))(x)
    np.testing.assert_allclose(ours, jax.nn.sigmoid(x), rtol=1e-6, atol=1e-30)
    # Second derivatives follow the custom rule too (it is differentiable).
    s = jax.nn.sigmoid(0.3)
    np.testing.assert_allclose(jax.grad(jax.grad(softplus))(0.3), s * (1 - s), rtol=1e-5)
