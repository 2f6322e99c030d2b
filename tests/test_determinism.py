"""Same inputs and key -> bit-identical numbers, for every engine and across save/load.

Each engine fits a tiny closed-form model twice with the same key (the second fit
compiles afresh, so this checks that nothing depends on hidden state: global seeds,
dictionary order, wall-clock time). Each fit is then saved, loaded and predicted with
the same key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesde as bd
from bayesde.models._base import register_model

ENGINES = {
    "svi": dict(num_steps=20, num_samples=10),
    "nuts": dict(num_warmup=20, num_samples=20),
    "blackjax-nuts": dict(num_warmup=20, num_samples=20, num_chains=2),
}


@register_model
class DeterminismDecay(bd.models.AbstractModel):
    """`y ~ Normal(exp(-k (t - t0)), sigma)`: a closed-form decay, so that the tests
    compile in seconds. Registered like any model, so that runs of it can be loaded."""

    prior_scale: float = 0.5

    def program(self, batch, query=None, *, subsample_size=None):
        k = numpyro.sample("k", dist.LogNormal(0.0, self.prior_scale))
        sigma = numpyro.sample("sigma", dist.HalfNormal(0.3))
        t0 = batch.ts[:, :1]
        f = jnp.exp(-k * (batch.ts - t0))[..., None]
        numpyro.sample("y", dist.Normal(f, sigma).mask(batch.mask), obs=batch.ys)
        if query is not None:
            f_out = numpyro.deterministic("f_out", jnp.exp(-k * (query.ts - t0))[..., None])
            numpyro.sample("y_out", dist.Normal(f_out, sigma))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ts = np.linspace(0.0, 2.0, 8)
    ys = np.exp(-0.8 * ts)[None, :, None] + 0.1 * rng.standard_normal((2, 8, 1))
    return bd.TimeSeries(ts, ys)


def _bits(x):
    x = np.asarray(x)
    return x.dtype, x.shape, x.tobytes()


def _assert_identical(a, b):
    assert sorted(a.samples) == sorted(b.samples)
    for k in a.samples:
        assert _bits(a.samples[k]) == _bits(b.samples[k]), k
    assert sorted(a.params) == sorted(b.params)
    for k in a.params:
        assert _bits(a.params[k]) == _bits(b.params[k]), k
    assert sorted(a.sample_stats) == sorted(b.sample_stats)
    for k in a.sample_stats:
        assert _bits(a.sample_stats[k]) == _bits(b.sample_stats[k]), k
    assert (a.loss is None) == (b.loss is None)
    if a.loss is not None:
        np.testing.assert_array_equal(np.asarray(a.loss, np.float64), np.asarray(b.loss, np.float64))


@pytest.fixture(scope="module")
def fits(data):
    """Two fits per engine with the same key, shared by the tests below."""
    out = {}
    for method, opts in ENGINES.items():
        run = lambda: bd.fit(  # noqa: E731
            DeterminismDecay(), data, method=method, key=jax.random.key(0), progress_bar=False,
            warn=False, **opts,
        )
        out[method] = (run(), run())
    return out


@pytest.mark.parametrize("method", sorted(ENGINES))
def test_same_key_gives_bit_identical_fit(fits, method):
    a, b = fits[method]
    _assert_identical(a, b)
    assert np.all(np.isfinite(np.asarray(a.samples["k"])))
    # Not constant draws: identical because of the key, not because nothing moved.
    assert np.std(np.asarray(a.samples["k"])) > 0


@pytest.mark.parametrize("method", sorted(ENGINES))
def test_save_load_predict_is_bit_identical(fits, method, tmp_path):
    a, b = fits[method]
    a.save(tmp_path / "run")
    loaded = bd.load(tmp_path / "run")
    assert type(loaded.model) is DeterminismDecay
    _assert_identical(a, loaded)
    ts = np.linspace(0.0, 3.0, 5)
    before = a.predict(ts, key=jax.random.key(7))
    after = loaded.predict(ts, key=jax.random.key(7))
    assert _bits(before.samples) == _bits(after.samples)
    assert _bits(before.f_samples) == _bits(after.f_samples)
    assert np.std(np.asarray(before.samples)) > 0
