"""Deep ensembles: several SVI fits of the same program from different initialisations,
trained side by side in one compiled program, whose predictive is the mixture of the
members.

The engine registers itself in the one table of engines (`_registry.ENGINES`), so that
the imports run one way: `_ensemble` -> `_svi` (whose guide choice it shares) ->
`_registry`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.flatten_util import ravel_pytree
from numpyro.infer import Predictive, Trace_ELBO
from numpyro.infer import SVI as _NumPyroSVI
from numpyro.infer import autoguide
from numpyro.infer.svi import SVIState

from .._checks import check_bool, check_int, check_real
from ._registry import (AbstractEngine, EngineInfo, EngineResult, _bind,
                        _progress, register_engine)
from ._init import compiled_initialisation
from ._sites import site_kinds
from ._svi import (_held_out_fn, _make_guide, check_optimizer_and_guide, default_optimizer, elbo_fn,
                   patience_ended)

__all__ = ["Ensemble", "EnsembleInfo", "run_ensemble", "average_quantiles"]

#: The ways `Ensemble.combine` makes one predictive of the members': the draws pooled
#: (`None`), or the statistic `average_quantiles` takes of their quantile functions.
#: `"best-elbo"` keeps one member (`run_ensemble` drops the others), so its draws are used
#: as they are.
COMBINE = {"mixture": None, "quantiles": "mean", "median-quantiles": "median", "best-elbo": None}

#: Particles of the ELBO that `combine="best-elbo"` ranks the members by (one estimate per
#: member, so its Monte Carlo error should be well below the spread between members').
SELECTION_PARTICLES = 64


@dataclasses.dataclass(frozen=True)
class EnsembleInfo(EngineInfo):
    """What an ensemble run reports.

    - `seconds`: wall-clock seconds from the members' initialisation to the last step.
    - `seconds_per_step`: steady seconds per step of all members together (the median
      full chunk after the first, which compiles; `None` with fewer than three chunks).
    - `first_chunk_seconds`: seconds of the first chunk (compilation included).
    - `num_members`: members trained.
    - `num_steps_run`: steps of the longest-running member.
    - `stopped_at`: per member, the step whose loss was NaN/inf, where that member
      stopped (`None` for a member that ran to the end); `None` when none stopped.
    - `failed_members`: the members that stopped early.
    - `member_final_loss`: per member, the mean loss over its last 5% of steps.
    - `guide`: the guide's class name (`"none"` for a model without latent sites).
    - `member_best_step`: with `keep_best` and a model with a held-out score, per member
      the step whose parameters it kept (`None` for a member never scored finite); else
      `None`.
    - `patience_stop`: the step where `patience` ended the run (every member past its
      patience), else `None`.
    - `member_elbo`: with `combine="best-elbo"`, per member the ELBO at the parameters it
      kept (without the held-out score; `SELECTION_PARTICLES` particles); else `None`.
    - `selected_member`: with `combine="best-elbo"`, the member kept (the highest finite
      `member_elbo`); else `None`.
    """

    seconds_per_step: Optional[float] = None
    first_chunk_seconds: Optional[float] = None
    num_members: Optional[int] = None
    num_steps_run: Optional[int] = None
    stopped_at: Optional[Sequence[Optional[int]]] = None
    failed_members: Sequence[int] = ()
    member_final_loss: Sequence[float] = ()
    guide: Optional[str] = None
    member_best_step: Optional[Sequence[Optional[int]]] = None
    patience_stop: Optional[int] = None
    member_elbo: Optional[Sequence[float]] = None
    selected_member: Optional[int] = None

    @property
    def stopped_early(self) -> bool:
        """Whether some member's NaN/inf loss stopped it before `num_steps`."""
        return bool(self.failed_members)


@dataclasses.dataclass(frozen=True)
class Ensemble(AbstractEngine):
    """A deep ensemble (Lakshminarayanan, Pritzel & Blundell 2017, "Simple and scalable
    predictive uncertainty estimation using deep ensembles"): `num_members` SVI fits of
    the model, each from its own random initialisation and with its own stream of
    minibatches and ELBO noise, and a predictive that is the equal-weight mixture of the
    members' predictives,
    $p(y \\mid \\mathcal{D}) \\approx \\tfrac1M \\sum_{m=1}^M p(y \\mid \\theta_m)$
    (or, with `combine="quantiles"`, the average of their quantile functions).

    Each member is what `bd.SVI` fits with the same options: for a model whose networks
    are `numpyro.param` point estimates (`LatentSDE`, `FractionalSDE`) the member is
    those parameters, trained on the model's proper scoring rule (its ELBO); for a model
    with latent sample sites, the member is the guide `SVI` would use (the model's own,
    else `AutoNormal`), started from the model's initialisation strategy with the
    member's key. A single fit reports one point estimate of the networks; the spread
    between members adds the epistemic uncertainty that point estimate leaves out.

    All members train in one compiled program: the SVI step is vectorised over the
    members (`jax.vmap`) inside a `lax.scan` over steps, so more members widen one
    compiled step instead of adding programs (on an accelerator with room to spare, they
    come at little extra wall time). Each member is initialised eagerly, one after the
    other, before that program runs.

    **When to pick it:** where a point estimate of the networks sits today (`LatentSDE`,
    `FractionalSDE`, neural CDEs) and its forecast bands are too narrow away from the
    data; it costs `M` fits of compute.

    **Arguments:**

    - `num_members`: ensemble size `M` (at least 2); the paper uses 5.
    - `num_steps`: optimisation steps of every member.
    - `learning_rate`: used when `optimizer` is None.
    - `optimizer`: an optax `GradientTransformation`; default Adam at `learning_rate`
      after clipping the gradient norm to 10 (as `SVI`).
    - `batch_size`: series per step (minibatch SVI; each member draws its own batches).
    - `num_samples`: predictive draws per member; the posterior holds
      `num_members * num_samples` draws.
    - `guide`: as in `SVI`: `None` (the model's guide, else `"normal"`), `"normal"`,
      `"mvn"`, `"delta"` (MAP members, the classic deep ensemble) or a NumPyro guide.
    - `num_particles`: ELBO Monte Carlo particles per step.
    - `chunk_size`: steps compiled into one `lax.scan` between progress-bar updates.
    - `keep_best`: as in `SVI`, member by member: for a model that scores data its ELBO
      does not see (a `held_out_site`, e.g. `LatentSDE`'s held-back forecasts), each
      member keeps the parameters of the chunk end where that score was lowest, not its
      last step (`info.member_best_step` says which). No effect on other models.
    - `best_from`: `keep_best` chooses among the steps from this one on.
    - `patience`, `min_steps`: as in `SVI`, for all members together: with `keep_best`
      and a held-out score, the run ends once every member has gone `patience` steps
      without its score improving, never before step `min_steps` (`info.patience_stop`);
      `None` runs all `num_steps`. With the defaults (as `SVI`'s) a run of up to 2000
      steps runs every step; a longer one stops where its members stopped improving, so
      ten times the steps do not mean ten times the time.
    - `cross_fit`: for a model that holds back some series to fit its forecast spread
      (one with a `fold_param`, e.g. `LatentSDE`), member `m` holds back its own fold
      of them (`model.member_fold(m)`), so that the members' spreads are fitted on
      different series and every series trains most members; otherwise every member
      holds back the same series. No effect on other models.
    - `combine`: how the members' predictives make one. `"mixture"` (default): their
      equal-weight mixture, the classic deep ensemble, whose spread adds the members'
      disagreement to each member's own spread. `"quantiles"`: their quantiles averaged
      (Vincentization; `average_quantiles`), a distribution as wide as a typical member
      and centred on their average. Pair it with `cross_fit=True`: then each member's
      spread is already fitted to data it did not train on, and a mixture of such
      members is wider than any of them (it over-covers), while their averaged
      quantiles keep each member's calibration and average away the noise of fitting
      it on one fold. `"median-quantiles"`: the members' median quantile function
      (`average_quantiles(..., statistic="median")`), for cross-fitted members whose
      spreads differ a lot from fold to fold: a member whose fold happened to hold an
      unusual stretch (a jump, a change of level) moves the median no more than any other
      member, where it pulls the mean towards its own width. `"best-elbo"`: restarts, not
      an ensemble: the fit keeps the one member whose ELBO at the parameters it kept is
      highest (the data's likelihood less the KL terms, without the held-out score, so
      the future is not consulted; `info.member_elbo`, `info.selected_member`) and drops
      the others, so the posterior has one chain. For a model whose fits of one data set
      land in different optima (a latent SDE on one record: some fits learn its cycle,
      some explain it as noise around a level), the best of a few initialisations by the
      quantity each was trained on; it adds no epistemic spread.

    The `Posterior` lays the members out as chains (one, the kept member, with
    `combine="best-elbo"`): every site, including the
    `numpyro.param` sites of the model (repeated over a member's draws), has draws
    `(member, draw, ...)`, so `post.predict` draws from the mixture (then combined as
    `combine` says) and `post.to_arviz()`
    has one chain per member. `post.params` holds the guide parameters per member
    (`(member, ...)`). `post.loss` is the loss per step averaged over the members still
    training; `post.info` has `member_final_loss` and, per member, `stopped_at` (the step
    where its loss became NaN/inf, else None); such a member keeps its last finite
    parameters and is named in a warning.
    """

    num_members: int = 5
    num_steps: int = 2000
    learning_rate: float = 1e-2
    optimizer: Any = None
    batch_size: Optional[int] = None
    num_samples: int = 100
    guide: Any = None
    num_particles: int = 1
    chunk_size: int = 100
    keep_best: bool = True
    best_from: int = 0
    patience: Optional[int] = 1000
    min_steps: int = 2000
    cross_fit: bool = False
    combine: str = "mixture"

    name = "ensemble"
    info_type = EnsembleInfo
    #: Fits `numpyro.param` sites (like SVI), so `fit` need not refuse programs with them.
    point_estimates: ClassVar[bool] = True

    def __post_init__(self):
        check_int("Ensemble.num_members", self.num_members, 1)
        if self.num_members < 2:
            raise ValueError(
                f"Ensemble.num_members: expected at least 2 members, got {self.num_members}; "
                "an ensemble of one is a point estimate (use method='svi'), 5 is a good default."
            )
        check_int("Ensemble.num_steps", self.num_steps, 1)
        check_int("Ensemble.num_samples", self.num_samples, 1)
        check_int("Ensemble.num_particles", self.num_particles, 1)
        check_int("Ensemble.chunk_size", self.chunk_size, 1)
        check_int("Ensemble.batch_size", self.batch_size, 1, optional=True)
        check_int("Ensemble.best_from", self.best_from, 0)
        check_int("Ensemble.patience", self.patience, 1, optional=True)
        check_int("Ensemble.min_steps", self.min_steps, 0)
        check_bool("Ensemble.keep_best", self.keep_best)
        check_bool("Ensemble.cross_fit", self.cross_fit)
        if not isinstance(self.combine, str) or self.combine not in COMBINE:
            raise ValueError(f"Ensemble.combine: expected one of {list(COMBINE)}, got {self.combine!r}.")
        if self.combine == "best-elbo" and self.cross_fit:
            raise ValueError(
                "Ensemble.combine: 'best-elbo' ranks the members by their ELBOs, which with cross_fit=True "
                "are sums over different series (each member holds back its own fold); drop cross_fit, or "
                "combine with 'quantiles'."
            )
        check_real("Ensemble.learning_rate", self.learning_rate, 0.0, open_low=True)
        check_optimizer_and_guide("Ensemble", self.optimizer, self.guide)

    def run(self, model, batch, *, key, progress_bar: bool) -> EngineResult:
        """Run this fit; see `AbstractEngine.run` and `run_ensemble`."""
        return run_ensemble(model, batch, self, key=key, progress_bar=progress_bar)

    def combine_draws(self, draws, chain):
        """The predictive draws of the members (`chain` is the member) made one by
        `combine`; see `AbstractEngine.combine_draws` and `average_quantiles`."""
        statistic = COMBINE[self.combine]
        return draws if statistic is None else average_quantiles(draws, chain, statistic=statistic)


#: `average_quantiles`' statistics of the groups' quantiles at each level.
_STATISTICS = {"mean": np.mean, "median": np.median}


def average_quantiles(draws, group, statistic: str = "mean"):
    """Draws of the average of the groups' quantile functions, in the groups' own order.

    For every value (series, time, variable) separately, each group's quantiles at the
    levels `(k + ½) / S`, `k = 0 … S−1`, are averaged over the groups (Vincentization:
    the average of the members' quantile functions is a quantile function), and the
    `S` averaged values are handed back to the draws by rank: the draw that was the
    `k`-th smallest of all draws at that value gets the `k`-th averaged quantile. So
    every value's draws follow the averaged distribution, while each draw keeps the
    ranks its path had (the dependence over time, variables and plans of the pooled
    draws, as ensemble copula coupling keeps it). A value with a non-finite draw keeps
    its draws as they are (a diverged path stays visible).

    With `statistic="median"` the quantiles are the groups' median at each level instead
    of their mean (the median of quantile functions is a quantile function too): one
    group far wider or narrower than the others then moves the result as little as any
    other group, where their mean follows it part of the way.

    **Arguments:**

    - `draws`: `(S, ...)` predictive draws.
    - `group`: `(S,)` the group (ensemble member) of each draw.
    - `statistic`: `"mean"` (Vincentization) or `"median"`.

    **Returns:** an array shaped like `draws`.
    """
    if not isinstance(statistic, str) or statistic not in _STATISTICS:
        raise ValueError(f"average_quantiles: statistic must be 'mean' or 'median', got {statistic!r}.")
    x = np.asarray(draws)
    group = np.asarray(group)
    groups = np.unique(group)
    if len(groups) < 2:
        return x
    n = x.shape[0]
    flat = x.reshape(n, -1)
    finite = np.all(np.isfinite(flat), axis=0)
    vals = flat[:, finite]
    levels = (np.arange(n) + 0.5) / n
    q = _STATISTICS[statistic]([np.quantile(vals[group == g], levels, axis=0) for g in groups], axis=0)
    ranks = np.argsort(np.argsort(vals, axis=0, kind="stable"), axis=0, kind="stable")
    out = flat.astype(np.result_type(flat, q), copy=True)
    out[:, finite] = np.take_along_axis(q, ranks, axis=0)
    return out.reshape(x.shape)


def _where(mask, new, old):
    """Per member: `new` where `mask` (shape `(M,)`), else `old`, leaf by leaf."""

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)

    return jax.tree_util.tree_map(pick, new, old)


def _member_locs(guide, program, batch, keys, init_strategy):
    """Per-member starting locations of an autoguide, in its unconstrained space.

    An autoguide takes its starting point from one trace of the model; drawn once, every
    member would start at the same place. Here each member's point comes from the model's
    initialisation strategy under its own key."""
    if not isinstance(guide, (autoguide.AutoNormal, autoguide.AutoDelta, autoguide.AutoContinuous)):
        return {}
    from numpyro.infer.util import initialize_model

    z = initialize_model(keys, program, model_args=(batch,), init_strategy=init_strategy).param_info.z
    if isinstance(guide, autoguide.AutoContinuous):
        return {f"{guide.prefix}_loc": jax.vmap(lambda zz: ravel_pytree(zz)[0])(z)}
    return {f"{k}_{guide.prefix}_loc": v for k, v in z.items()}


def run_ensemble(model, batch, method: Ensemble, *, key, progress_bar: bool) -> EngineResult:
    """Fit `method.num_members` SVI members of `model`'s program to `batch`.

    **Arguments:**

    - `model`, `batch`: the adapted model and the data it is fitted to.
    - `method`: an `Ensemble` configuration.
    - `key`: split into the members' initialisations, their training streams and
      their draws; `chunk_size` changes no number.
    - `progress_bar`: a tqdm bar over the steps.

    **Returns:** an `EngineResult` with draws `(member, draw, ...)`.
    """
    program = _bind(model, method.batch_size, batch)
    full_program = _bind(model, None, batch)
    m = method.num_members
    k_latent, k_init, k_loc, k_post = jax.random.split(key, 4)
    k_val = jax.random.fold_in(key, 7)
    kinds = site_kinds(program, batch, k_latent)
    latent = [name for name, kind in kinds.items() if kind == "latent"]
    own = sorted(name for name, kind in kinds.items() if kind == "param")
    if not latent and not own:
        raise ValueError(
            f"fit: method='ensemble' has nothing to fit: {type(model).__name__} has neither "
            "latent sample sites nor numpyro.param sites."
        )
    guide = _make_guide(method.guide if method.guide is not None else model.guide(), program, latent,
                        model.init_strategy())
    tx = method.optimizer if method.optimizer is not None else default_optimizer(method.learning_rate)
    svi = _NumPyroSVI(program, guide, numpyro.optim.optax_to_numpyro(tx),
                      loss=Trace_ELBO(num_particles=method.num_particles))
    t_start = time.perf_counter()
    # Member by member: the first builds the autoguide's prototype (from concrete values,
    # its starting point found by one compiled search), the rest reuse it.
    locs = _member_locs(guide, full_program, batch, jax.random.split(k_loc, m), model.init_strategy())
    fold = getattr(model, "fold_param", None) if method.cross_fit else None
    states = []
    with compiled_initialisation():
        for i, k in enumerate(jax.random.split(k_init, m)):
            st = svi.init(k, batch)
            params = svi.optim.get_params(st.optim_state)
            params = {**params, **{n: v[i] for n, v in locs.items() if n in params}}
            if fold in params:  # this member's fold of held-back series: a constant the model never trains
                params[fold] = jnp.asarray(model.member_fold(i), jnp.result_type(params[fold]))
            states.append(SVIState(svi.optim.init(params), st.mutable_state, st.rng_key))
    states = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
    update = jax.vmap(svi.update, in_axes=(0, None))
    chunk = int(min(method.chunk_size, method.num_steps))
    n_chunks = -(-method.num_steps // chunk)

    @jax.jit
    def run_chunk(states, verified, bad, start, num_steps, batch):
        # As in SVI, a step's loss is that of the parameters going in: a member whose
        # loss is non-finite stops, and `verified` keeps its last checked parameters.
        # The run's length is an argument, so runs of any length share the program.
        def body(carry, i):
            st, ver, bad = carry
            new, loss = update(st, batch)
            active = (start + i < num_steps) & ~bad
            take = active & jnp.isfinite(loss)
            ver = _where(take, st, ver)
            st = _where(take, new, st)
            bad = bad | (active & ~jnp.isfinite(loss))
            return (st, ver, bad), jnp.where(active, loss, jnp.nan)

        (states, verified, bad), losses = jax.lax.scan(body, (states, verified, bad), jnp.arange(chunk))
        return states, verified, bad, losses

    site = getattr(model, "held_out_site", None) if method.keep_best else None
    held_out = None
    if site in kinds:  # per member: the held-out score of its parameters, its own draws
        one = _held_out_fn(model, batch, site, model.held_out_draws)
        held_out = jax.jit(jax.vmap(one))
    params_of = jax.jit(jax.vmap(svi.get_params))
    best_value, best_step, best_params = np.full(m, np.inf), [None] * m, None
    first_eligible = min(method.best_from, method.num_steps)

    bar = _progress(progress_bar, method.num_steps, "ensemble")
    verified, bad = states, jnp.zeros((m,), bool)
    losses, chunk_seconds, patience_stop = [], [], None
    for c in range(n_chunks):
        # SVI's rule, checked before the chunk, for every member: none improved for `patience` steps.
        if held_out is not None and all(patience_ended(method, c * chunk, b) for b in best_step):
            patience_stop = c * chunk
            break
        t_chunk = time.perf_counter()
        states, verified, bad, ls = run_chunk(states, verified, bad, c * chunk, method.num_steps, batch)
        ls = np.asarray(ls)  # (step, member)
        chunk_seconds.append(time.perf_counter() - t_chunk)
        losses.append(ls)
        all_bad = bool(np.all(np.asarray(bad)))
        done = min((c + 1) * chunk, method.num_steps)
        if held_out is not None and done >= first_eligible:
            # A member whose loss turned non-finite is scored at its last checked state.
            current = params_of(_where(bad, verified, states))
            values = np.asarray(held_out(current, jax.random.split(jax.random.fold_in(k_val, c), m)))
            better = np.isfinite(values) & (values < best_value)
            if better.any():
                best_params = current if best_params is None else _where(jnp.asarray(better), current, best_params)
                best_value = np.where(better, values, best_value)
                best_step = [done if b else s for b, s in zip(better, best_step)]
        if bar is not None:
            bar.update(min(chunk, method.num_steps - c * chunk))
            alive = ls[-1][np.isfinite(ls[-1])]
            if alive.size:
                bar.set_postfix(loss=f"{np.mean(alive):.4g}", members=int(alive.size))
        if all_bad:
            break
    if bar is not None:
        bar.close()
    member_loss = np.concatenate(losses)[: method.num_steps].T  # (member, step)
    bad = np.asarray(bad)
    stopped = [int(np.argmax(~np.isfinite(row))) if b else None for row, b in zip(member_loss, bad)]
    states = _where(jnp.asarray(bad), verified, states)
    if any(s is not None for s in stopped):
        where = ", ".join(f"member {i} at step {s}" for i, s in enumerate(stopped) if s is not None)
        fixes = ("a smaller learning_rate, gradient clipping (optimizer=...), tighter priors or a "
                 "rescaled data set")
        if bad.all():
            msg = (f"fit: the loss of every ensemble member became NaN/inf ({where}); each keeps the "
                   f"parameters of its last finite step, so the fit is not converged. Fixes: {fixes}.")
        else:
            msg = (f"fit: the loss of {int(bad.sum())} of {m} ensemble members became NaN/inf ({where}); "
                   "they keep the parameters of their last finite step and stay in the mixture. "
                   f"If they are far from the others, refit with {fixes}.")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    n_run = int(np.max([len(r) if s is None else s for r, s in zip(member_loss, stopped)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps where no member is left
        loss = np.nanmean(member_loss[:, :n_run], axis=0)
    params = params_of(states)
    if best_params is not None:  # members never scored finite keep their last parameters
        params = _where(jnp.asarray([s is not None for s in best_step]), best_params, params)
    member_elbo, selected = None, None
    if method.combine == "best-elbo":
        member_elbo, selected = _select_by_elbo(program, guide, getattr(model, "held_out_site", None), params,
                                                batch, jax.random.fold_in(key, 11))
        params = jax.tree_util.tree_map(lambda a: a[selected:selected + 1], params)
    seconds = time.perf_counter() - t_start

    s = method.num_samples
    kept = m if selected is None else 1
    samples = {
        k: np.broadcast_to(np.asarray(params[k])[:, None], (kept, s) + np.shape(params[k])[1:]).copy()
        for k in own
    }
    if latent:
        keys = jax.random.split(k_post, m)  # a member's draws come from its own key, kept or pooled
        keys = keys if selected is None else keys[selected:selected + 1]
        if isinstance(guide, autoguide.AutoGuide):
            draw = lambda k, p: guide.sample_posterior(k, p, sample_shape=(s,))  # noqa: E731
        else:
            draw = lambda k, p: Predictive(guide, params=p, num_samples=s)(k, batch)  # noqa: E731
        flat = jax.jit(jax.vmap(draw))(keys, params)
        samples.update({k: np.asarray(v) for k, v in flat.items() if k in latent})
    guide_params = {k: np.asarray(v) for k, v in params.items() if k not in own}
    final = []
    for r in member_loss:
        r = r[np.isfinite(r)]
        final.append(float(np.mean(r[-max(1, len(r) // 20):])) if r.size else float("nan"))
    return EngineResult(
        samples=samples,
        params=guide_params,
        sample_stats={},
        loss=loss,
        info=EnsembleInfo(
            seconds=seconds,
            seconds_per_step=(
                float(np.median(chunk_seconds[1:]) / chunk) if len(chunk_seconds) > 2 else None
            ),
            first_chunk_seconds=float(chunk_seconds[0]) if chunk_seconds else None,
            num_members=m,
            num_steps_run=n_run,
            stopped_at=tuple(stopped) if any(x is not None for x in stopped) else None,
            failed_members=tuple(i for i, x in enumerate(stopped) if x is not None),
            member_final_loss=tuple(final),
            guide="none" if not latent else getattr(guide, "__name__", type(guide).__name__),
            member_best_step=tuple(best_step) if held_out is not None else None,
            patience_stop=patience_stop,
            member_elbo=member_elbo,
            selected_member=selected,
        ),
    )


def _select_by_elbo(program, guide, site, params, batch, key):
    """`(member ELBOs, the member with the highest finite one)`: every member's ELBO at its
    `params` (`(member, ...)`), the held-out factor `site` left out, the same keys for all
    members (so that their difference is not Monte Carlo noise of different draws). With no
    finite ELBO, member 0 is kept and a warning says so."""
    elbo = elbo_fn(program, guide, site, SELECTION_PARTICLES)
    values = np.asarray(jax.jit(jax.vmap(elbo, in_axes=(0, None, None)))(params, key, batch), dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        warnings.warn(
            "fit: combine='best-elbo' found no member with a finite ELBO at its kept parameters, so it kept "
            "member 0, which is not a fit to trust; refit with a smaller learning_rate, or with "
            "combine='mixture' to see every member.",
            RuntimeWarning, stacklevel=5,  # _select_by_elbo, run_ensemble, Ensemble.run, the runner, fit
        )
    return tuple(float(v) for v in values), int(np.argmax(np.where(finite, values, -np.inf)))


register_engine(Ensemble)
