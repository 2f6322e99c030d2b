"""Simulation-based calibration (Talts et al. 2018) of the NUTS engine on a small ODE.

The model is exponential decay `dy/dt = -k y`, `y(t0) = 1`, with `k ~ LogNormal(0, 0.5)`
and Normal observation noise of known scale. The ODE is integrated with classical RK4
on a fixed sub-grid, and the simulator uses the same integrator, so SBC checks the
inference and nothing else: if NUTS samples the exact posterior, the rank of the true
`k` among the posterior draws is uniform.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesde as bd

SIGMA = 0.1
N_SERIES, N_TIMES, T_MAX = 2, 8, 2.0
SUBSTEPS = 4


def decay_solution(k, ts):
    """RK4 solution of `dy/dt = -k y`, `y(ts[:, 0]) = 1`, at the times `ts (N, T)`."""

    def one_series(t):
        def interval(y, dt):
            h = dt / SUBSTEPS

            def rk4(_, y):
                k1 = -k * y
                k2 = -k * (y + 0.5 * h * k1)
                k3 = -k * (y + 0.5 * h * k2)
                k4 = -k * (y + h * k3)
                return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

            y = jax.lax.fori_loop(0, SUBSTEPS, rk4, y)
            return y, y

        _, rest = jax.lax.scan(interval, jnp.ones(()), jnp.diff(t))
        return jnp.concatenate([jnp.ones((1,)), rest])

    return jax.vmap(one_series)(ts)


def decay_program(batch, query=None):
    k = numpyro.sample("k", dist.LogNormal(0.0, 0.5))
    f = decay_solution(k, batch.ts)[..., None]
    numpyro.sample("y", dist.Normal(f, SIGMA).mask(batch.mask), obs=batch.ys)
    if query is not None:
        f_out = numpyro.deterministic("f_out", decay_solution(k, query.ts)[..., None])
        numpyro.sample("y_out", dist.Normal(f_out, SIGMA))


def decay_program_exact(batch, query=None):
    """The same model with the closed-form solution `y = exp(-k (t - t0))`: compiles in a
    fraction of the time, for the fast smoke test."""
    k = numpyro.sample("k", dist.LogNormal(0.0, 0.5))
    f = jnp.exp(-k * (batch.ts - batch.ts[:, :1]))[..., None]
    numpyro.sample("y", dist.Normal(f, SIGMA).mask(batch.mask), obs=batch.ys)


def simulate(key):
    k_k, k_y = jax.random.split(key)
    k = jnp.exp(0.5 * jax.random.normal(k_k))
    ts = jnp.broadcast_to(jnp.linspace(0.0, T_MAX, N_TIMES), (N_SERIES, N_TIMES))
    f = decay_solution(k, ts)[..., None]
    ys = f + SIGMA * jax.random.normal(k_y, f.shape)
    return {"k": k}, bd.TimeSeries(np.asarray(ts), np.asarray(ys))


def simulate_exact(key):
    seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).tolist()
    rng = np.random.default_rng(seed)
    k = float(np.exp(0.5 * rng.standard_normal()))
    ts = np.linspace(0.0, T_MAX, N_TIMES)
    ys = np.exp(-k * ts)[None, :, None] + SIGMA * rng.standard_normal((N_SERIES, N_TIMES, 1))
    return {"k": np.float32(k)}, bd.TimeSeries(ts, ys)


def test_rank_uniformity_accepts_uniform_and_rejects_biased_ranks():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 100, size=500)
    assert bd.calibration.rank_uniformity(uniform, 99)["pvalue"] > 0.01
    biased = rng.integers(0, 30, size=500)  # the truth sits low: an over-estimating sampler
    assert bd.calibration.rank_uniformity(biased, 99)["pvalue"] < 1e-6
    res = bd.calibration.rank_uniformity(uniform, 99, bins=7)
    assert res["bins"] == 7 and res["expected"].sum() == pytest.approx(500)


@pytest.mark.parametrize(
    "ranks, num_draws, field",
    [([0, 1, 2], 0, "num_draws"), ([0, 5], 3, "ranks"), ([0.5, 1], 3, "ranks"), ([1], 3, "ranks")],
)
def test_rank_uniformity_refuses_bad_input(ranks, num_draws, field):
    with pytest.raises(ValueError, match=field):
        bd.calibration.rank_uniformity(ranks, num_draws)


def test_sbc_refuses_bad_arguments_before_fitting():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_datasets"):
        bd.calibration.sbc(decay_program, simulate=simulate, num_datasets=1, key=key)
    with pytest.raises(ValueError, match="thin"):
        bd.calibration.sbc(decay_program, simulate=simulate, num_datasets=4, thin=0, key=key)
    with pytest.raises(TypeError, match="simulate"):
        bd.calibration.sbc(decay_program, simulate=None, num_datasets=4, key=key)
    with pytest.raises(TypeError, match="fit_kwargs"):
        bd.calibration.sbc(decay_program, simulate=simulate, num_datasets=4, fit_kwargs=[1], key=key)


def test_sbc_smoke_returns_ranks_in_range():
    res = bd.calibration.sbc(
        decay_program_exact,
        simulate=simulate_exact,
        num_datasets=6,
        fit_kwargs=dict(method="nuts", num_warmup=15, num_samples=15),
        key=jax.random.key(0),
    )
    assert res.num_draws == 15
    assert res.ranks["k"].shape == (6,)
    assert res.ranks["k"].dtype.kind == "i"
    assert np.all((res.ranks["k"] >= 0) & (res.ranks["k"] <= 15))
    assert res.truths["k"].shape == (6,) and np.all(res.truths["k"] > 0)
    assert set(res.pvalues) == {"k"} and 0.0 <= res.pvalues["k"] <= 1.0
    # Not every truth may sit at the edge: that would mean the posterior ignores the data.
    assert 0 < np.mean(res.ranks["k"]) < 15


@pytest.mark.slow
def test_sbc_nuts_ranks_are_uniform():
    """100 data sets, closed-form solution of the ODE: checks NUTS and nothing else."""
    res = bd.calibration.sbc(
        decay_program_exact,
        simulate=simulate_exact,
        num_datasets=100,
        fit_kwargs=dict(method="nuts", num_warmup=200, num_samples=200),
        thin=2,
        key=jax.random.key(2018),
    )
    assert res.num_draws == 100
    assert res.ranks["k"].shape == (100,)
    assert res.pvalues["k"] > 0.01, res.tests["k"]


@pytest.mark.slow
def test_sbc_nuts_on_numerically_solved_ode_ranks_are_uniform():
    """The same check with the ODE solved by RK4 inside the likelihood (and the
    simulator): the numerical solve must not bias the posterior."""
    res = bd.calibration.sbc(
        decay_program,
        simulate=simulate,
        num_datasets=100,
        fit_kwargs=dict(method="nuts", num_warmup=200, num_samples=200),
        thin=2,
        key=jax.random.key(2018),
    )
    assert res.num_draws == 100
    assert res.pvalues["k"] > 0.01, res.tests["k"]
