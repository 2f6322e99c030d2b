"""The fixed-grid SDE path (`lax.scan`) against diffrax, and its building blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesde as bd
from bayesde.solvers._sde import (
    GridBrownianPath,
    brownian_increments,
    solve_sde_diffrax,
    solve_sde_grid,
)
from bayesde.models._latent_sde import time_changed_solve


@pytest.fixture
def getkey():
    keys = iter(jax.random.split(jax.random.key(1234), 64))
    return lambda: next(keys)


def drift(t, y, args):
    return -y + jnp.sin(3.0 * t)


def diffusion(t, y, args):
    return 0.3 * jnp.tanh(y) + 0.5


@pytest.mark.parametrize("scheme", ["euler", "heun", "milstein", bd.solvers.Milstein()])
def test_grid_solver_matches_diffrax_for_the_same_increments(scheme, getkey):
    ts = jnp.linspace(0.0, 1.0, 41)
    y0 = jnp.array([0.5, -1.0, 2.0])
    dW = brownian_increments(getkey(), ts, y0.shape)
    ours = solve_sde_grid(drift, diffusion, y0, ts, dW, scheme=scheme)
    ref = solve_sde_diffrax(drift, diffusion, y0, ts, dW, scheme=scheme)
    assert ours.shape == (41, 3)
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-5)


def test_gradients_through_both_solvers_agree(getkey):
    ts = jnp.linspace(0.0, 1.0, 21)
    y0 = jnp.array([0.3, -0.2])
    dW = brownian_increments(getkey(), ts, y0.shape)

    def loss(solve, y):
        return jnp.sum(solve(drift, diffusion, y, ts, dW) ** 2)

    g_ours = jax.grad(lambda y: loss(solve_sde_grid, y))(y0)
    g_ref = jax.grad(lambda y: loss(solve_sde_diffrax, y))(y0)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-5)


def test_grid_brownian_path_reproduces_its_increments(getkey):
    ts = jnp.sort(jax.random.uniform(getkey(), (12,)))
    dW = brownian_increments(getkey(), ts, (2,))
    path = GridBrownianPath(ts, dW)
    got = jax.vmap(lambda a, b: path.evaluate(a, b))(ts[:-1], ts[1:])
    np.testing.assert_allclose(got, dW, atol=1e-6)


def test_brownian_increments_have_variance_dt(getkey):
    ts = jnp.array([0.0, 0.1, 0.5, 1.5])
    dW = brownian_increments(getkey(), ts, (20000,))
    np.testing.assert_allclose(np.var(np.asarray(dW), axis=1), np.diff(np.asarray(ts)), rtol=0.05)


def test_virtual_brownian_tree_reference_runs(getkey):
    ts = jnp.linspace(0.0, 1.0, 11)
    ys = solve_sde_diffrax(drift, diffusion, jnp.zeros(2), ts, key=getkey(), dt0=0.01)
    assert ys.shape == (11, 2) and bool(jnp.all(jnp.isfinite(ys)))


def test_step_inputs_reach_the_vector_fields():
    ts = jnp.linspace(0.0, 1.0, 5)
    inputs = jnp.arange(4.0)
    ys = solve_sde_grid(
        lambda t, y, a: jnp.full_like(y, a[1]),
        lambda t, y, a: jnp.zeros_like(y),
        jnp.zeros(1),
        ts,
        jnp.zeros((4, 1)),
        step_inputs=inputs,
    )
    np.testing.assert_allclose(ys[:, 0], np.cumsum(np.r_[0.0, np.arange(4.0)]) * 0.25, atol=1e-6)


def test_time_changed_solve_equals_the_real_grid_solve(getkey):
    """Per-path grids through one scan: the same Euler, Milstein and Heun steps as on each
    grid (Heun's second stage at the step's end time: the drift here depends on time)."""
    grids = jnp.stack([jnp.linspace(0.0, 1.0, 9), jnp.sort(jax.random.uniform(getkey(), (9,)))])
    noise = jax.random.normal(getkey(), (8, 2, 1))
    y0 = jnp.array([[0.5], [-0.4]])
    def batched_drift(t, y, a):  # t has the batch shape (here (2,)); y is (2, 1)
        return drift(t[..., None], y, a)

    for method in ("euler", "milstein", "heun"):
        batched = time_changed_solve(batched_drift, diffusion, y0, grids, noise, scheme=method)
        for i in range(2):
            dW = noise[:, i] * jnp.sqrt(jnp.diff(grids[i]))[:, None]
            one = solve_sde_grid(drift, diffusion, y0[i], grids[i], dW, scheme=method)
            np.testing.assert_allclose(batched[:, i], one, atol=1e-5)


def test_milstein_converges_strongly_on_gbm(getkey):
    """GBM has a closed form along the same Brownian path: Milstein's strong error is
    well below Euler's."""
    mu, sigma, n_paths = 0.5, 0.8, 2000
    ts = jnp.linspace(0.0, 1.0, 65)
    dW = brownian_increments(getkey(), ts, (n_paths,))
    exact = jnp.exp((mu - 0.5 * sigma**2) * ts[-1] + sigma * dW.sum(0))
    errs = {}
    for method in ("euler", "milstein"):
        y = solve_sde_grid(
            lambda t, y, a: mu * y, lambda t, y, a: sigma * y, jnp.ones(n_paths), ts, dW, scheme=method
        )
        errs[method] = float(jnp.mean(jnp.abs(y[-1] - exact)))
    assert errs["milstein"] < 0.3 * errs["euler"]
    assert errs["milstein"] < 0.02


@pytest.mark.parametrize("scheme", ["euler", "heun", "milstein", bd.solvers.Milstein()])
def test_joint_terms_and_checkpointing_change_nothing(scheme, getkey):
    # `diffusion=None` (drift returns (f, g)) and `checkpoint=True` are speed options:
    # same paths and same gradients as the plain call.
    ts = jnp.linspace(0.0, 1.0, 31)
    y0 = jnp.array([0.5, -1.0, 2.0])
    dW = brownian_increments(getkey(), ts, y0.shape)

    def loss(scale, joint, checkpoint):
        f = lambda t, y, a: scale * drift(t, y, a)  # noqa: E731
        g = lambda t, y, a: scale * diffusion(t, y, a)  # noqa: E731
        if joint:
            ys = solve_sde_grid(lambda t, y, a: (f(t, y, a), g(t, y, a)), None, y0, ts, dW,
                                scheme=scheme, checkpoint=checkpoint)
        else:
            ys = solve_sde_grid(f, g, y0, ts, dW, scheme=scheme, checkpoint=checkpoint)
        return jnp.sum(ys**2)

    ref, ref_grad = jax.value_and_grad(loss)(1.3, False, False)
    for joint, checkpoint in [(True, False), (False, True), (True, True)]:
        val, grad = jax.value_and_grad(loss)(1.3, joint, checkpoint)
        np.testing.assert_allclose(val, ref, rtol=1e-6)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-5)


def test_the_old_method_keyword_still_works_with_a_deprecation_warning(getkey):
    ts = jnp.linspace(0.0, 1.0, 11)
    dW = brownian_increments(getkey(), ts, (2,))
    new = solve_sde_grid(drift, diffusion, jnp.ones(2), ts, dW, scheme="heun")
    with pytest.warns(DeprecationWarning, match="`method` is now called `scheme`"):
        old = solve_sde_grid(drift, diffusion, jnp.ones(2), ts, dW, method="heun")
    np.testing.assert_array_equal(new, old)
    with pytest.raises(ValueError, match="solve_sde_grid.scheme: 'rk4' is not an SDE scheme"):
        solve_sde_grid(drift, diffusion, jnp.ones(2), ts, dW, scheme="rk4")


def test_refine_grid_puts_the_knots_every_substeps_points():
    knots = jnp.array([0.0, 1.0, 1.5, 4.0])
    grid = bd.solvers.refine_grid(knots, 4)
    assert grid.shape == (13,)
    np.testing.assert_array_equal(grid[::4], knots)
    np.testing.assert_allclose(jnp.diff(grid[:5]), 0.25)
    assert bd.solvers.refine_grid(knots, 1) is knots or np.array_equal(bd.solvers.refine_grid(knots, 1), knots)
    with pytest.raises(ValueError, match="substeps must be >= 1"):
        bd.solvers.refine_grid(knots, 0)


def test_time_grid_shares_the_steps_out_by_time():
    knots = jnp.array([0.0, 1.0, 2.0, 3.0, 15.0, 16.0, 16.0])  # one long gap, one repeated knot
    grid, pos, seg = bd.solvers.time_grid(knots, 18)
    assert grid.shape == (19,) and pos.shape == (7,) and seg.shape == (18,)
    np.testing.assert_array_equal(grid[pos], knots)  # every knot on the grid, in order
    steps = np.diff(np.asarray(pos))
    assert steps.min() >= 1 and steps.sum() == 18
    # one step each, the other 12 by length (cumulative rounding): the gap gets 10 of the 18
    np.testing.assert_array_equal(steps, [2, 2, 1, 10, 2, 1])
    assert float(jnp.max(jnp.diff(grid))) <= 16.0 / 12  # no step longer than span / free steps
    np.testing.assert_array_equal(np.asarray(seg), np.repeat(np.arange(6), steps))  # each step's interval
    # equal intervals: the grid of refine_grid
    even = jnp.array([0.0, 0.5, 1.0, 1.5])
    grid, pos, _ = bd.solvers.time_grid(even, 12)
    np.testing.assert_allclose(grid, bd.solvers.refine_grid(even, 4), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pos, [0, 4, 8, 12])
    with pytest.raises(ValueError, match="time_grid: num_steps must be >= the 3 intervals, got 2"):
        bd.solvers.time_grid(even, 2)


def test_interp_linear_reads_the_path_between_and_clamps_outside():
    grid = jnp.array([0.0, 1.0, 1.0, 3.0])  # a zero-length interval reads its left end
    path = jnp.array([[0.0, 10.0], [1.0, 20.0], [5.0, 0.0], [7.0, 4.0]])
    out = bd.solvers.interp_linear(grid, path, jnp.array([-1.0, 0.25, 2.0, 9.0]))
    np.testing.assert_allclose(out, [[0.0, 10.0], [0.25, 12.5], [6.0, 2.0], [7.0, 4.0]])
    # The Brownian path of the diffrax reference reads its grid the same way.
    W = GridBrownianPath(grid[jnp.array([0, 1, 3])], jnp.array([[1.0], [2.0]]))
    np.testing.assert_allclose(W.evaluate(2.0), [2.0])
