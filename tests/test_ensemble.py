"""`method="ensemble"`: deep ensembles behind `fit`. Members start from their own
initialisations and end apart, the posterior lays them out as chains so that the
predictive is their mixture, the same key gives the same numbers, a saved run loads
back identical, and a member whose loss turns NaN is kept at its last finite step and
reported."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesde as bd
from bayesde.inference import Ensemble


def param_mean(batch, query=None):
    """A mean per value column as a `numpyro.param` point estimate (initialised from the
    key), the noise scale as a latent site: both kinds of site in one program."""
    d = batch.ys.shape[-1]
    mu = numpyro.param("mu", lambda k: 3.0 * jax.random.normal(k, (d,)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(mu, sigma).mask(batch.mask), obs=batch.ys)
    if query is not None:
        f = numpyro.deterministic("f_out", jnp.broadcast_to(mu, query.ts.shape + (d,)))
        numpyro.sample("y_out", dist.Normal(f, sigma))


def nan_below_zero(batch, query=None):
    """The loss is NaN wherever the parameter `w` (standard normal at the start) is
    negative: members that start there fail at their first step."""
    w = numpyro.param("w", lambda k: jax.random.normal(k, ()))
    numpyro.factor("guard", jnp.where(w > 0, 0.0, jnp.nan))
    numpyro.sample("y", dist.Normal(w, 1.0).mask(batch.mask), obs=batch.ys)
    if query is not None:
        f = numpyro.deterministic("f_out", jnp.broadcast_to(w, query.ts.shape + (1,)))
        numpyro.sample("y_out", dist.Normal(f, 1.0))


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    ts = np.linspace(0.0, 1.0, 8)
    ys = np.array([1.0, -2.0]) + 0.5 * rng.normal(size=(3, 8, 2))
    return bd.TimeSeries(np.broadcast_to(ts, (3, 8)), ys)


TOY = dict(num_members=3, num_steps=100, num_samples=10, chunk_size=50, progress_bar=False, warn=False)


@pytest.fixture(scope="module")
def toy_post(toy):
    return bd.fit(param_mean, toy, method="ensemble", key=jax.random.key(0), **TOY)


@pytest.fixture(scope="module")
def ou():
    data = bd.datasets.ornstein_uhlenbeck(n_series=4, n_times=12, t_max=4.0, key=jax.random.key(3))
    return data.split(3.0)


SDE = dict(num_members=3, num_steps=60, num_samples=16, chunk_size=30, learning_rate=2e-2,
           progress_bar=False, warn=False)


@pytest.fixture(scope="module")
def sde_post(ou):
    hist, _ = ou
    model = bd.models.LatentSDE(latent_dim=1, context_dim=4, width=8, substeps=1)
    return bd.fit(model, hist, method=bd.Ensemble(**{k: v for k, v in SDE.items() if k not in ("progress_bar", "warn")}),
                  key=jax.random.key(1), progress_bar=False, warn=False)


def test_options_are_checked_naming_the_field():
    assert bd.Ensemble is Ensemble and Ensemble().name == "ensemble"
    for kwargs, field in [({"num_members": 1}, "num_members"), ({"num_steps": 0}, "num_steps"),
                          ({"learning_rate": 0.0}, "learning_rate"), ({"guide": "laplace"}, "guide"),
                          ({"optimizer": "adam"}, "optimizer"), ({"batch_size": 0}, "batch_size"),
                          ({"best_from": -1}, "best_from"), ({"keep_best": 1}, "keep_best"),
                          ({"combine": "mean"}, "combine")]:
        with pytest.raises(ValueError, match=f"Ensemble.{field}"):
            Ensemble(**kwargs)


def test_members_are_chains_and_end_apart(toy_post):
    post = toy_post
    assert post.method_name == "ensemble" and post.num_chains == 3 and post.num_draws == 10
    # The param site is a point per member, repeated over its draws; the latent site
    # is drawn from each member's own guide.
    mu, sigma = post.samples["mu"], post.samples["sigma"]
    assert mu.shape == (3, 10, 2) and sigma.shape == (3, 10)
    np.testing.assert_array_equal(mu, np.broadcast_to(mu[:, :1], mu.shape))
    assert np.min(np.ptp(mu[:, 0], axis=0)) > 1e-3  # members differ
    assert np.all(sigma > 0)
    assert post.params["sigma_auto_loc"].shape == (3,)
    assert post.info.num_members == 3 and post.info.failed_members == ()
    assert len(post.info.member_final_loss) == 3 and post.loss.shape == (100,)


def test_same_key_same_numbers(toy, toy_post):
    again = bd.fit(param_mean, toy, method="ensemble", key=jax.random.key(0), **TOY)
    for k in toy_post.samples:
        np.testing.assert_array_equal(again.samples[k], toy_post.samples[k])
    np.testing.assert_array_equal(again.loss, toy_post.loss)


def test_to_arviz_has_one_chain_per_member(toy_post):
    idata = toy_post.to_arviz()
    assert idata.posterior.sizes["chain"] == 3 and idata.posterior.sizes["draw"] == 10
    assert idata.log_likelihood["y"].sizes["chain"] == 3


def test_mixture_is_wider_than_a_member_on_held_out_times(ou, sde_post):
    hist, fut = ou
    pred = sde_post.predict(fut.ts, key=jax.random.key(2))
    s = np.asarray(pred.samples)  # (member * draw, series, time, value), members in order
    assert s.shape[0] == 3 * 16
    per_member = s.reshape((3, 16) + s.shape[1:])
    within = np.mean(np.var(per_member, axis=1))
    mixture = np.mean(np.var(s, axis=0))
    # Law of total variance: the mixture adds the spread between the members' means.
    assert mixture > 1.05 * within, (mixture, within)
    # A network weight is a point per member: one value per chain.
    name = next(k for k in sde_post.samples if sde_post.samples[k].ndim > 2)
    w = sde_post.samples[name]
    np.testing.assert_array_equal(w, np.broadcast_to(w[:, :1], w.shape))
    assert not np.allclose(w[0, 0], w[1, 0])


def test_save_and_load_give_identical_draws(tmp_path, ou, sde_post):
    _, fut = ou
    sde_post.save(tmp_path / "run")
    back = bd.load(tmp_path / "run")
    assert isinstance(back.method, Ensemble) and back.method == sde_post.method
    assert sorted(back.samples) == sorted(sde_post.samples)
    for k, v in sde_post.samples.items():
        np.testing.assert_array_equal(back.samples[k], v)
    np.testing.assert_array_equal(back.loss, sde_post.loss)
    assert back.info.member_final_loss == sde_post.info.member_final_loss
    assert tuple(back.info.member_best_step) == tuple(sde_post.info.member_best_step)
    a = sde_post.predict(fut.ts, key=jax.random.key(5)).samples
    b = back.predict(fut.ts, key=jax.random.key(5)).samples
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_member_whose_loss_turns_nan_is_kept_and_reported():
    data = bd.TimeSeries(np.linspace(0.0, 1.0, 5)[None], np.ones((1, 5, 1)))
    with pytest.warns(RuntimeWarning, match=r"of 6 ensemble members became NaN/inf \(member"):
        post = bd.fit(nan_below_zero, data, method="ensemble", num_members=6, num_steps=20, num_samples=2,
                      key=jax.random.key(0), progress_bar=False, warn=False)
    w0 = post.samples["w"][:, 0]
    failed = [i for i in range(6) if w0[i] <= 0]
    assert 0 < len(failed) < 6, w0  # the key gives both kinds
    assert post.info.failed_members == tuple(failed)
    assert [post.info.stopped_at[i] for i in failed] == [0] * len(failed)
    assert all(post.info.stopped_at[i] is None for i in range(6) if i not in failed)
    assert np.all(np.isfinite(post.loss))  # the mean over the members still training


def test_when_every_member_fails_the_warning_says_what_to_change():
    data = bd.TimeSeries(np.linspace(0.0, 1.0, 5)[None], -np.ones((1, 5, 1)))

    def always_nan(batch, query=None):
        w = numpyro.param("w", lambda k: jax.random.normal(k, ()))
        numpyro.factor("guard", jnp.nan * w)
        numpyro.sample("y", dist.Normal(w, 1.0).mask(batch.mask), obs=batch.ys)

    with pytest.warns(RuntimeWarning, match="every ensemble member.*learning_rate"):
        post = bd.fit(always_nan, data, method="ensemble", num_members=2, num_steps=5, num_samples=2,
                      key=jax.random.key(0), progress_bar=False, warn=False)
    assert post.info.failed_members == (0, 1)


def test_each_member_keeps_the_step_where_its_held_out_forecasts_scored_best(ou, sde_post):
    """`keep_best` (the default) chooses member by member: the loss trajectory is the plain
    run's, and each member's kept networks are exactly its own at its `member_best_step`
    (a run of that many steps, whose trajectory is the same)."""
    hist, _ = ou
    best = sde_post.info.member_best_step
    assert len(best) == 3 and set(best) <= {30, 60}
    opts = {k: v for k, v in SDE.items() if k not in ("progress_bar", "warn")}
    model = bd.models.LatentSDE(latent_dim=1, context_dim=4, width=8, substeps=1)
    kw = dict(key=jax.random.key(1), progress_bar=False, warn=False)
    plain = bd.fit(model, hist, method=bd.Ensemble(**opts, keep_best=False), **kw)
    assert plain.info.member_best_step is None
    np.testing.assert_array_equal(plain.loss, sde_post.loss)
    short = bd.fit(model, hist, method=bd.Ensemble(**dict(opts, num_steps=30), keep_best=False), **kw)
    weights = [k for k, v in sde_post.samples.items() if v.ndim > 2]
    assert weights
    for i, step in enumerate(best):
        ref = plain if step == 60 else short
        for k in weights:
            np.testing.assert_array_equal(sde_post.samples[k][i], ref.samples[k][i])


def test_cross_fit_members_hold_back_their_own_fold_of_series(ou, sde_post):
    """`Ensemble(cross_fit=True)`: member `m` holds back the fold `model.member_fold(m)`
    (a constant of its parameters, never trained); member 0's fold is a single fit's, so
    its whole run is the plain ensemble's member 0, and the others' runs differ. Every
    fold holds back `n // every` series; the default fold is the single fit's."""
    from bayesde.models._common import held_back, held_back_rows

    idx = np.arange(10)
    assert np.flatnonzero(held_back(idx, 10, 4)).tolist() == [3, 7] == list(held_back_rows(10, 4))
    for fold in range(4):
        rows = np.flatnonzero(held_back(idx, 10, 4, fold))
        assert rows.tolist() == list(held_back_rows(10, 4, fold)) and len(rows) == 2 and np.all(rows % 4 == fold)
    assert held_back(idx[:3], 3, 4, 0).all() and list(held_back_rows(3, 4, 2)) == [0, 1, 2]  # fewer than every
    hist, _ = ou
    model = bd.models.LatentSDE(latent_dim=1, context_dim=4, width=8, substeps=1)
    assert [model.member_fold(m) for m in range(5)] == [3, 2, 1, 0, 3]
    opts = {k: v for k, v in SDE.items() if k not in ("progress_bar", "warn")}
    post = bd.fit(model, hist, method=bd.Ensemble(**opts, cross_fit=True), key=jax.random.key(1),
                  progress_bar=False, warn=False)
    folds = post.samples[model.fold_param]
    np.testing.assert_array_equal(folds, np.broadcast_to(np.array([3.0, 2.0, 1.0])[:, None], folds.shape))
    np.testing.assert_array_equal(sde_post.samples[model.fold_param], 3.0)
    kappa = "latent_sde.forecast_log_scale"
    np.testing.assert_array_equal(post.samples[kappa][0], sde_post.samples[kappa][0])
    assert np.all(post.samples[kappa][1:, 0] != sde_post.samples[kappa][1:, 0])
    with pytest.raises(ValueError, match="Ensemble.cross_fit"):
        Ensemble(cross_fit=1)


def test_average_quantiles_averages_the_groups_quantiles_and_keeps_each_draws_rank():
    """Two groups of four draws at one value, another value with a NaN draw: the first
    value's draws become the groups' quantiles at levels (k + 1/2)/8, averaged, handed
    back by rank; the NaN value is left as it was; one group is left as it was."""
    from bayesde.inference import average_quantiles

    a, b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([10.0, 11.0, 12.0, 13.0])
    levels = (np.arange(8) + 0.5) / 8
    want = (np.quantile(a, levels) + np.quantile(b, levels)) / 2
    draws = np.stack([np.concatenate([a, b]), np.r_[np.nan, np.arange(7.0)]], axis=1)  # (8, 2)
    order = np.array([3, 0, 7, 5, 1, 6, 2, 4])  # the draws shuffled, groups with them
    group = np.repeat([0, 1], 4)[order]
    out = average_quantiles(draws[order], group)
    np.testing.assert_allclose(np.sort(out[:, 0]), want)
    np.testing.assert_array_equal(np.argsort(out[:, 0]), np.argsort(draws[order, 0]))  # ranks kept
    np.testing.assert_array_equal(out[:, 1], draws[order, 1])  # a value with a NaN draw: unchanged
    np.testing.assert_array_equal(average_quantiles(draws, np.zeros(8, int)), draws)


def test_median_of_quantiles_follows_the_middle_group_not_an_outlying_one():
    """Three groups, one ten times wider: their median quantile function is the middle
    group's at every level, where the mean is pulled a third of the way to the wide one;
    an unknown statistic is refused by name."""
    from bayesde.inference import average_quantiles

    base = np.linspace(-1.0, 1.0, 10)
    groups = [base, 1.1 * base, 10.0 * base]  # narrow, middle, far wider
    draws = np.concatenate(groups)[:, None]
    group = np.repeat([0, 1, 2], 10)
    levels = (np.arange(30) + 0.5) / 30
    q = np.stack([np.quantile(g, levels) for g in groups])
    med = average_quantiles(draws, group, statistic="median")[:, 0]
    mean = average_quantiles(draws, group)[:, 0]
    np.testing.assert_allclose(np.sort(med), q[1])
    np.testing.assert_allclose(np.sort(mean), q.mean(axis=0))
    assert np.ptp(med) < 0.3 * np.ptp(mean)
    with pytest.raises(ValueError, match="average_quantiles: statistic must be 'mean' or 'median', got 'max'"):
        average_quantiles(draws, group, statistic="max")


def test_combine_quantiles_predicts_the_members_averaged_quantiles(ou, sde_post):
    """`Ensemble(combine="quantiles")` changes no fit, only how the members' draws make
    one predictive: `average_quantiles` of the mixture's draws (with `num_samples` too),
    narrower than the mixture, whose spread adds the members' disagreement."""
    import copy
    import dataclasses

    from bayesde.inference import average_quantiles

    _, fut = ou
    post = copy.copy(sde_post)
    post.method = dataclasses.replace(sde_post.method, combine="quantiles")
    for n in (None, 29):
        mix = np.asarray(sde_post.predict(fut.ts, key=jax.random.key(2), num_samples=n).samples)
        avg = np.asarray(post.predict(fut.ts, key=jax.random.key(2), num_samples=n).samples)
        member = np.arange(48)[np.linspace(0, 47, n or 48).round().astype(int)] // 16
        np.testing.assert_allclose(avg, average_quantiles(mix, member), rtol=1e-6, atol=1e-6)
    width = lambda s: np.mean(np.diff(np.quantile(s, [0.05, 0.95], axis=0), axis=0))  # noqa: E731
    assert width(avg) < 0.95 * width(mix), (width(avg), width(mix))
    # the members' median quantile function instead of their mean: the same draws, combined so
    post.method = dataclasses.replace(sde_post.method, combine="median-quantiles")
    med = np.asarray(post.predict(fut.ts, key=jax.random.key(2), num_samples=29).samples)
    np.testing.assert_allclose(med, average_quantiles(mix, member, statistic="median"), rtol=1e-6, atol=1e-6)
    assert not np.allclose(med, avg)


def test_best_elbo_keeps_the_one_member_whose_elbo_is_highest(tmp_path, toy, ou, sde_post):
    """`Ensemble(combine="best-elbo")`: restarts. The members train as the mixture's do
    (same key, same runs); the fit keeps the member with the highest ELBO at its kept
    parameters, held-out score left out, and drops the rest: one chain, that member's
    networks. With MAP members (`guide="delta"`) the ELBO is the log joint at the member's
    point, so each `member_elbo` is checked against NumPyro's `log_density`."""
    from numpyro.infer.util import log_density

    hist, fut = ou
    opts = {k: v for k, v in SDE.items() if k not in ("progress_bar", "warn")}
    model = bd.models.LatentSDE(latent_dim=1, context_dim=4, width=8, substeps=1)
    best = bd.fit(model, hist, method=bd.Ensemble(**opts, combine="best-elbo"), key=jax.random.key(1),
                  progress_bar=False, warn=False)
    elbo, kept = best.info.member_elbo, best.info.selected_member
    assert len(elbo) == 3 and kept == int(np.argmax(elbo)) and len(set(elbo)) == 3
    assert best.num_chains == 1 and best.info.num_members == 3
    for k, v in sde_post.samples.items():
        np.testing.assert_array_equal(best.samples[k][0], v[kept])
    np.testing.assert_array_equal(best.loss, sde_post.loss)  # the members' runs are the mixture's
    pred = best.predict(fut.ts, key=jax.random.key(2))
    assert np.asarray(pred.samples).shape[0] == 16 and best.to_arviz().posterior.sizes["chain"] == 1
    best.save(tmp_path / "run")
    back = bd.load(tmp_path / "run")
    assert back.method == best.method and back.info.selected_member == kept
    np.testing.assert_array_equal(np.asarray(back.predict(fut.ts, key=jax.random.key(2)).samples),
                                  np.asarray(pred.samples))

    toy_best = bd.fit(param_mean, toy, method="ensemble", key=jax.random.key(0), guide="delta",
                      combine="best-elbo", **TOY)
    toy_mix = bd.fit(param_mean, toy, method="ensemble", key=jax.random.key(0), guide="delta", **TOY)
    for m, value in enumerate(toy_best.info.member_elbo):
        point = {"mu": toy_mix.samples["mu"][m, 0], "sigma": toy_mix.samples["sigma"][m, 0]}
        joint, _ = log_density(param_mean, (toy.batch(),), {}, point)
        np.testing.assert_allclose(value, float(joint), rtol=1e-5)
    assert toy_best.info.selected_member == int(np.argmax(toy_best.info.member_elbo))
    np.testing.assert_array_equal(toy_best.samples["mu"][0], toy_mix.samples["mu"][toy_best.info.selected_member])
    with pytest.raises(ValueError, match="Ensemble.combine: 'best-elbo' ranks the members by their ELBOs, which "
                                         "with cross_fit=True are sums over different series"):
        Ensemble(combine="best-elbo", cross_fit=True)


def test_best_elbo_never_keeps_a_failed_member_and_says_when_none_is_finite():
    """Members whose loss turned NaN keep parameters whose ELBO is NaN: `best-elbo` keeps a
    member that trained. When no member's ELBO is finite it keeps member 0 and warns."""
    data = bd.TimeSeries(np.linspace(0.0, 1.0, 5)[None], np.ones((1, 5, 1)))
    kw = dict(method="ensemble", num_members=6, num_steps=20, num_samples=2, key=jax.random.key(0),
              progress_bar=False, warn=False)
    with pytest.warns(RuntimeWarning, match="ensemble members became NaN/inf"):
        post = bd.fit(nan_below_zero, data, combine="best-elbo", **kw)
    elbo = np.array(post.info.member_elbo)
    assert np.isnan(elbo[list(post.info.failed_members)]).all() and post.samples["w"][0, 0] > 0
    assert post.info.selected_member == int(np.nanargmax(elbo))
    from bayesde._cli._fit import health_line

    failed = post.info.failed_members
    which = ", ".join(f"fit {i} at step 0" for i in failed)
    assert (f"({len(failed)} of 6 fits stopped on a NaN loss ({which}) and kept their last finite parameters; "
            "the kept fit is not one of them: refit with a smaller --learning-rate, e.g. half)") in health_line(post)

    def always_nan(batch, query=None):
        w = numpyro.param("w", lambda k: jax.random.normal(k, ()))
        numpyro.factor("guard", jnp.nan * w)
        numpyro.sample("y", dist.Normal(w, 1.0).mask(batch.mask), obs=batch.ys)

    with pytest.warns(RuntimeWarning, match="found no member with a finite ELBO at its kept parameters, so it "
                                            "kept member 0"):
        post = bd.fit(always_nan, data, combine="best-elbo", **dict(kw, num_members=2, num_steps=5))
    assert post.info.selected_member == 0 and post.num_chains == 1


def test_patience_ends_the_run_once_every_member_stopped_improving(ou):
    """`Ensemble(patience=P)` stops at the first chunk where every member has gone P steps
    without its held-out score improving: the step after the last member's best plus P.
    A run asked for five times the steps stops there with the same members; `min_steps`
    keeps it going."""
    hist, _ = ou
    # Euler steps: with these keys every member's held-out score stops improving well inside 100 steps
    model = bd.models.LatentSDE(latent_dim=1, context_dim=4, width=8, substeps=1, scheme="euler")
    opts = dict(num_members=2, num_samples=4, chunk_size=10, learning_rate=3e-2, patience=20, min_steps=0)
    kw = dict(key=jax.random.key(1), progress_bar=False, warn=False)
    short = bd.fit(model, hist, method=bd.Ensemble(num_steps=100, **opts), **kw)
    stop, best = short.info.patience_stop, short.info.member_best_step
    assert stop is not None and stop == max(best) + 20 and len(short.loss) == stop == short.info.num_steps_run
    long = bd.fit(model, hist, method=bd.Ensemble(num_steps=500, **opts), **kw)
    assert (long.info.patience_stop, long.info.member_best_step) == (stop, best)
    np.testing.assert_array_equal(long.loss, short.loss)
    for k, v in short.samples.items():
        np.testing.assert_array_equal(long.samples[k], v)
    from bayesde._cli._fit import health_line

    assert (f"(stopped early at step {stop}: no fit's forecasts of the held-back data had scored better for 20 "
            f"steps; each kept its best step, {best[0]}, {best[1]};") in health_line(short)
    every = bd.fit(model, hist, method=bd.Ensemble(num_steps=100, **dict(opts, min_steps=100)), **kw)
    assert every.info.patience_stop is None and every.info.num_steps_run == 100
    with pytest.raises(ValueError, match="Ensemble.patience"):
        Ensemble(patience=0)
