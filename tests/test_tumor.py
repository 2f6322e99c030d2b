"""The tumour-growth simulator (Geng et al. 2017 as used by CRN / TE-CDE / BNCDE)."""

import jax
import numpy as np
import pytest

import bayesde as bd
from bayesde.datasets._tumor import TUMOR_PARAMS


@pytest.fixture(scope="module")
def sim():
    return bd.datasets.tumor_growth(n_patients=120, n_test=40, gamma=2.0, key=jax.random.key(0))


def _mean_diameter_window(volume):
    """`d̄_t`: mean diameter over the last 15 days, per patient and day."""
    d = (6.0 * volume / np.pi) ** (1.0 / 3.0)
    w = TUMOR_PARAMS["window"]
    c = np.cumsum(np.pad(d, ((0, 0), (1, 0))), axis=1)
    t = np.arange(d.shape[1])
    lo = np.maximum(0, t - w + 1)
    return (c[:, t + 1] - c[:, lo]) / (t + 1 - lo)


def test_shapes_and_conventions(sim):
    tr, te = sim.train, sim.test
    assert tr.shape == (120, 60, 1) and tr.treatments.shape == (120, 60, 2)
    assert tr.static.shape == (120, 3) and np.all(tr.static.sum(1) == 1)
    assert np.all(tr.treatments[:, 0] == 0), "nothing acts before day 0"
    assert np.all(tr.mask[:, 0]), "day 0 is always observed"
    assert te.n_series == 40 and np.all(te.lengths == sim.cutoff + 1)
    assert np.all(sim.cutoff >= 15) and np.all(sim.cutoff <= 59 - 5)
    # The history holds nothing after the cutoff.
    for i in range(te.n_series):
        assert not te.mask[i, sim.cutoff[i] + 1 :].any()
    f = sim.factual
    assert f.shape == (40, 5, 1)
    np.testing.assert_array_equal(f.ts, sim.cutoff[:, None] + np.arange(1, 6))


def test_factual_is_the_counterfactual_of_the_factual_plan(sim):
    np.testing.assert_allclose(sim.counterfactual("factual").ys, sim.factual.ys, rtol=1e-12)
    # and the history agrees with the simulated volumes where observed
    v = sim.truth["volume"][sim.truth["test_index"]]
    for i in range(5):
        t0 = sim.cutoff[i]
        obs = sim.test.mask[i, : t0 + 1, 0]
        np.testing.assert_allclose(sim.test.ys[i, : t0 + 1, 0][obs], v[i, : t0 + 1][obs])


def test_treatment_shrinks_tumours_with_shared_noise(sim):
    none = sim.counterfactual("none").ys
    chemo = sim.counterfactual("chemo").ys
    both = sim.counterfactual("both").ys
    assert np.all(chemo <= none * (1 + 1e-12))
    assert np.all(both <= chemo * (1 + 1e-12))
    assert np.mean(chemo[:, -1] / none[:, -1]) < 0.8
    # plans broadcast from (horizon, K)
    arr = np.tile([[1.0, 0.0]], (5, 1))
    np.testing.assert_allclose(sim.counterfactual(arr).ys, chemo)


def test_patient_parameters(sim):
    t = sim.truth
    assert np.all(t["alpha"] > 0) and np.all(t["rho"] > 0) and np.all(t["beta_c"] > 0)
    np.testing.assert_allclose(t["beta"], t["alpha"] / 10)
    d0 = (6 * t["v0"] / np.pi) ** (1 / 3)
    assert np.all(d0 >= 0.3 - 1e-9) and np.all(d0 <= 13 + 1e-9)
    assert set(np.unique(t["type"])) <= {1, 2, 3}


def test_assignment_rates_follow_the_formula():
    """`p = sigmoid(γ/13 (d̄ − 6.5))`: γ = 0 is a coin flip; since most tumours have
    d̄ < 6.5 cm, the overall treatment rate falls as γ grows, while among large tumours
    (d̄ > 6.5) it rises: larger γ means stronger confounding, not less treatment."""
    rates, big_rates = [], []
    for g in (0.0, 2.0, 6.0):
        s = bd.datasets.tumor_growth(n_patients=400, n_test=1, gamma=g, key=jax.random.key(3))
        a = s.truth["treatments"]  # (N, days, 2), given on day t
        dbar = _mean_diameter_window(s.truth["volume"])[:, :-1]
        rates.append(a.mean())
        big = dbar > 6.5
        big_rates.append(a[big].mean())
        # the empirical rate matches the formula's mean probability
        p = 1 / (1 + np.exp(-g / 13 * (dbar - 6.5)))
        assert abs(a.mean() - p.mean()) < 0.02
    assert abs(rates[0] - 0.5) < 0.02
    assert rates[0] > rates[1] > rates[2]
    assert big_rates[0] < big_rates[1] < big_rates[2]


def test_informative_observation():
    s = bd.datasets.tumor_growth(n_patients=300, n_test=1, gamma=2.0, gamma_obs=10.0, key=jax.random.key(4))
    dbar = _mean_diameter_window(s.truth["volume"])
    obs = s.truth["observed"]
    assert obs[:, 1:][dbar[:, 1:] > 6.5].mean() > obs[:, 1:][dbar[:, 1:] < 3].mean() + 0.2


def test_same_key_same_numbers():
    a = bd.datasets.tumor_growth(n_patients=20, key=jax.random.key(7))
    b = bd.datasets.tumor_growth(n_patients=20, key=jax.random.key(7))
    np.testing.assert_array_equal(a.train.ys, b.train.ys)
    np.testing.assert_array_equal(a.counterfactual("chemo").ys, b.counterfactual("chemo").ys)


def test_regimens_design():
    s = bd.datasets.tumor_growth(n_patients=30, n_test=10, assignment="regimens", key=jax.random.key(5))
    assert np.all(s.cutoff == 26)
    seq, comb = s.plan("sequential"), s.plan("combined")
    assert seq.shape == (10, 5, 2)
    np.testing.assert_array_equal(seq[:, 1], [[1.0, 0.0]] * 10)  # day 27: chemo
    np.testing.assert_array_equal(comb[:, 1], [[1.0, 1.0]] * 10)  # day 27: chemo + radio
    reg = s.truth["regimen"][s.truth["train_index"]]
    chemo_days = s.train.treatments[:, :, 0].sum(1)
    np.testing.assert_array_equal(chemo_days, np.where(reg == 0, 5, 3))
    assert np.all(s.counterfactual("combined").ys <= s.counterfactual("sequential").ys * (1 + 1e-12))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n_patients"):
        bd.datasets.tumor_growth(n_patients=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="assignment"):
        bd.datasets.tumor_growth(n_patients=5, assignment="random", key=jax.random.key(0))
    with pytest.raises(ValueError, match="horizon"):
        bd.datasets.tumor_growth(n_patients=5, horizon=50, key=jax.random.key(0))
    s = bd.datasets.tumor_growth(n_patients=5, n_test=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="unknown plan"):
        s.plan("surgery")
    with pytest.raises(ValueError, match="expected"):
        s.counterfactual(np.zeros((4, 2)))


def test_registered_and_theoph_loads():
    assert "tumor_growth" in bd.datasets.names()
    d = bd.datasets.load("theoph")
    assert d.shape == (12, 11, 1) and d.treatments.shape == (12, 11, 1)
    assert np.all(d.treatments[:, 1, 0] > 0) and np.all(d.treatments[:, 2:] == 0)
    assert "Boeckmann" in bd.datasets.card("theoph")
