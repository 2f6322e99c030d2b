"""Stochastic variational inference: NumPyro SVI with an optax optimiser, run as
compiled chunks of steps with a NaN guard, checkpoints, data parallelism and a
progress bar.

`SVI.run` reads as the steps of a fit: set up the guide and the optimiser
(`_setup`), continue from a checkpoint (`_resume`), optimise chunk by chunk
(`_optimise`, each chunk one `lax.scan` built by `_chunk_fn`), then draw from the
fitted guide (`_draw`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import Predictive, Trace_ELBO
from numpyro.infer import SVI as _NumPyroSVI
from numpyro.infer import autoguide

from .._checks import check_bool, check_int, check_real
from ._registry import (AbstractEngine, EngineInfo, EngineResult, _bind,
                        _progress, register_engine)
from ._init import compiled_initialisation
from ._sites import site_kinds

__all__ = ["SVI", "SVIInfo", "default_optimizer", "run_svi"]


def check_optimizer_and_guide(owner: str, optimizer, guide) -> None:
    """The checks SVI-like engines share: an optax transformation (or None) and a guide
    name, callable or None; errors name `owner`'s field."""
    if optimizer is not None and not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(
            f"{owner}.optimizer: expected an optax GradientTransformation such as "
            f"optax.adam(1e-2), got {optimizer!r}."
        )
    if isinstance(guide, str) and guide not in ("normal", "mvn", "delta"):
        raise ValueError(
            f"{owner}.guide: unknown guide {guide!r}; choose 'normal', 'mvn', 'delta', a "
            "NumPyro guide callable, or None."
        )


@dataclasses.dataclass(frozen=True)
class SVIInfo(EngineInfo):
    """What an SVI run reports.

    - `seconds`: wall-clock seconds from the guide's initialisation to the last step.
    - `seconds_per_step`: steady seconds per step (the median full chunk after the
      first, which compiles; `None` with fewer than three chunks).
    - `first_chunk_seconds`: seconds of the first chunk (compilation included).
    - `num_steps_run`: steps whose loss was kept.
    - `stopped_at`: the step whose loss was NaN/inf, where the run stopped (else `None`).
    - `best_step`: with `keep_best` and a model with a held-out score, the step whose
      parameters were kept (the end of the chunk where that score was lowest).
    - `patience_stop`: the step where `SVI.patience` ended the run (the held-out score
      had not improved for `patience` steps, and `min_steps` had run), else `None`.
    - `guide`: the guide's class name (`"none"` for a model without latent sites).
    - `num_devices`: devices the steps ran on.
    """

    seconds_per_step: Optional[float] = None
    first_chunk_seconds: Optional[float] = None
    num_steps_run: Optional[int] = None
    stopped_at: Optional[int] = None
    best_step: Optional[int] = None
    patience_stop: Optional[int] = None
    guide: Optional[str] = None
    num_devices: int = 1

    @property
    def stopped_early(self) -> bool:
        """Whether a NaN/inf loss stopped the run before `num_steps`."""
        return self.stopped_at is not None


@dataclasses.dataclass(frozen=True)
class SVI(AbstractEngine):
    """Stochastic variational inference (NumPyro SVI with an optax optimiser).

    **Arguments:**

    - `optimizer`: an optax `GradientTransformation`; default Adam at `learning_rate`
      with gradient clipping at norm 10.
    - `num_steps`: optimisation steps.
    - `guide`: `"normal"` (AutoNormal, default), `"mvn"` (AutoMultivariateNormal),
      `"delta"` (MAP), a NumPyro guide callable, or `None` for the model's own guide.
    - `num_particles`: ELBO Monte Carlo particles per step.
    - `batch_size`: series per step (minibatch SVI; models rescale the likelihood).
    - `num_samples`: posterior draws taken from the fitted guide.
    - `learning_rate`: used when `optimizer` is None.
    - `chunk_size`: steps compiled into one `lax.scan` between progress-bar updates.
    - `checkpoint_every`: save the optimiser state every this many steps into
      `checkpoint_dir`, so that an interrupted run can continue.
    - `checkpoint_dir`: folder for checkpoints (required with `checkpoint_every`).
    - `resume`: a checkpoint folder to continue from; the result equals the
      uninterrupted run with the same key.
    - `devices`: `None` (one device), or a list of JAX devices or a mesh from
      `bd.distributed.mesh(...)` for data parallelism: each step's minibatch (the whole
      batch when `batch_size` is None) is split over the devices along the series axis,
      parameters and optimiser state are replicated, and XLA sums the ELBO and its
      gradients across devices. The minibatch is drawn as on one device, so the same key
      gives the same loss trajectory up to the order of floating-point sums. The
      batch must divide evenly over the devices. Across hosts call
      `bd.distributed.initialize()` first and pass `jax.devices()`.
    - `process_local`: with `devices` in a multi-process job, `data` holds only this
      process's series (the same count on every process; the global data set is the
      concatenation in process order; the guide's set-up gathers it once on every host,
      the steps read only the devices' shards). Default `False`: every process passes
      the same, whole data set.
    - `keep_best`: for a model that scores data its ELBO does not see
      (a `model.held_out_site` factor in its training program, e.g. `LatentSDE`'s held-back forecasts), evaluate
      that score after every chunk (the mean of 8 draws, fresh ones at every chunk: with
      the same ones the choice fitted those few draws) and keep the parameters where it
      was lowest: early stopping on a held-out loss, so that more steps do not mean
      an overfitted model. `info.best_step` says which. No effect on other models.
    - `patience`: with `keep_best` and a held-out score, end the run once that many
      steps have passed without the score improving (`info.patience_stop` says where);
      `None` runs all `num_steps`. Without it the kept step is the lowest of ever more
      noisy evaluations as `num_steps` grows, and a ten times longer run kept forecasts
      that covered less (docs/calibration.md); with it, a run whose score has stopped
      improving keeps the same parameters however many steps were asked for, since the
      optimiser's trajectory does not depend on `num_steps`.
    - `min_steps`: patience never ends a run before this step (default 2000, the default
      `num_steps`), so that it only shortens runs asked to be longer than that. A model
      can plateau for a thousand steps before it learns a cycle, and the held-back score
      of the first, untrained steps is as often low by chance as a later one:
      stopping on the plateau kept an untrained model (docs/calibration.md). With
      `min_steps` at least `num_steps`, every step runs and the best is kept.
    - `best_from`: `keep_best` chooses among the parameters of this step onwards (a run
      of fewer steps keeps its last). Default 0: every evaluation counts. The first
      evaluations rate barely trained networks and forecast scales, and a fit can keep
      one whose bands are too narrow; but forcing later steps (500) on the panel fits
      that had kept an early one helped two and worsened more (docs/calibration.md):
      for a quickly overfitting encoder the early steps are often the better forecast.
    - `held_out_refit`: with `keep_best` and a model that names parameters only its
      held-out score moves (`model.held_out_params`, e.g. `LatentSDE`'s forecast scales
      `κ` and `ρ`), refit those to the kept step's networks by this many Adam steps on
      that score (learning rate 0.02, two fresh draws per step, the iterates of the
      second half averaged; the networks stay as kept). Along the run they move a little
      per step behind the networks they scale, so a step kept early carries scales
      fitted to barely trained networks. Default 0 (off): on the panel, 200 steps lifted
      the two fits that had kept step 100 into or near the band but narrowed the bands of
      fits that kept a later step, one below 0.80, for about a sixth more fitting time
      (docs/calibration.md). Try it when `info.best_step` is one of the first steps.
    """

    optimizer: Any = None
    num_steps: int = 2000
    guide: Any = None
    num_particles: int = 1
    batch_size: Optional[int] = None
    num_samples: int = 500
    learning_rate: float = 1e-2
    chunk_size: int = 100
    checkpoint_every: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    resume: Optional[str] = None
    devices: Any = None
    process_local: bool = False
    keep_best: bool = True
    patience: Optional[int] = 1000
    min_steps: int = 2000
    best_from: int = 0
    held_out_refit: int = 0

    name = "svi"
    info_type = SVIInfo
    point_estimates = True

    def __post_init__(self):
        check_int("SVI.num_steps", self.num_steps, 1)
        check_int("SVI.num_particles", self.num_particles, 1)
        check_int("SVI.num_samples", self.num_samples, 1)
        check_int("SVI.chunk_size", self.chunk_size, 1)
        check_int("SVI.batch_size", self.batch_size, 1, optional=True)
        check_int("SVI.checkpoint_every", self.checkpoint_every, 1, optional=True)
        check_int("SVI.patience", self.patience, 1, optional=True)
        check_int("SVI.min_steps", self.min_steps, 0)
        check_int("SVI.best_from", self.best_from, 0)
        check_int("SVI.held_out_refit", self.held_out_refit, 0)
        check_real("SVI.learning_rate", self.learning_rate, 0.0, open_low=True)
        check_optimizer_and_guide("SVI", self.optimizer, self.guide)
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("SVI.checkpoint_dir: checkpoint_every needs a folder; pass checkpoint_dir=...")
        if self.devices is not None:
            from jax.sharding import Mesh

            if isinstance(self.devices, jax.Device):
                object.__setattr__(self, "devices", (self.devices,))
            elif not isinstance(self.devices, Mesh):
                if isinstance(self.devices, str):
                    raise ValueError(
                        f"SVI.devices: expected a list of JAX devices or a Mesh, got the text "
                        f"{self.devices!r}; pass jax.devices()."
                    )
                try:
                    devs = tuple(self.devices)
                except TypeError:
                    raise ValueError(
                        f"SVI.devices: expected a list of JAX devices or a Mesh, got "
                        f"{type(self.devices).__name__}; pass jax.devices()."
                    ) from None
                if not devs:
                    raise ValueError("SVI.devices: the list is empty; pass jax.devices() or None.")
                for i, d in enumerate(devs):
                    # Text entries are the record a saved run keeps (see `_io._method_config`).
                    if not isinstance(d, (jax.Device, str)):
                        raise ValueError(
                            f"SVI.devices[{i}]: {d!r} is not a JAX device; pass jax.devices()."
                        )
                object.__setattr__(self, "devices", devs)
        check_bool("SVI.process_local", self.process_local)
        check_bool("SVI.keep_best", self.keep_best)
        if self.process_local and self.devices is None:
            raise ValueError("SVI.process_local: only means something with devices=...; pass devices=jax.devices().")

    def run(self, model, batch, *, key, progress_bar: bool) -> EngineResult:
        """Run this fit; see `AbstractEngine.run`."""
        return run_svi(model, batch, self, key=key, progress_bar=progress_bar)


def _empty_guide(*args, **kwargs):
    return None


def _make_guide(spec, program, latent: list[str], init_strategy):
    if callable(spec) and not isinstance(spec, str):
        return spec
    if not latent:
        return _empty_guide
    spec = spec or "normal"
    if spec == "normal":
        return autoguide.AutoNormal(program, init_loc_fn=init_strategy, init_scale=0.05)
    if spec == "mvn":
        return autoguide.AutoMultivariateNormal(program, init_loc_fn=init_strategy, init_scale=0.05)
    if spec == "delta":
        return autoguide.AutoDelta(program, init_loc_fn=init_strategy)
    raise ValueError(f"fit: unknown guide {spec!r}; use 'normal', 'mvn', 'delta' or a callable.")


def default_optimizer(learning_rate):
    """The optimiser `SVI` uses when none is given: Adam at `learning_rate` (a number or an
    optax schedule) after clipping the global gradient norm to 10."""
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(learning_rate))


class _ShardSeriesPlate(numpyro.primitives.Messenger):
    """Lays the indices of the `"series"` plate (the minibatch a model gathers, or
    `arange(N)` for the whole batch) out over the devices, so that everything the model
    computes per series is split the same way. Only inside a trace: the eager first
    trace that initialises the guide runs on one device as without `devices`."""

    def __init__(self, fn, sharding):
        self.sharding = sharding
        super().__init__(fn)

    def postprocess_message(self, msg):
        if (
            msg["type"] == "plate"
            and msg["name"] == "series"
            and isinstance(msg["value"], jax.core.Tracer)
        ):
            msg["value"] = jax.lax.with_sharding_constraint(msg["value"], self.sharding)


class _DataParallel:
    """Where the pieces of a data-parallel SVI run live: series split over the mesh,
    everything else replicated."""

    def __init__(self, method: SVI, batch, model):
        from .. import distributed

        self.sharding = distributed.series_sharding(method.devices)
        self.mesh = self.sharding.mesh
        self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self.n_devices = int(self.mesh.size)
        local = int(batch.ts.shape[0])
        if method.process_local:
            distributed._check_same_on_every_process(
                "fit: the number of local series (process_local=True)", str(local).encode(),
                "give every process the same number of series.",
            )
            distributed._check_same_on_every_process(
                f"fit: the adapted {type(model).__name__} (process_local=True)", _fingerprint(model),
                "its data-derived constants come from each process's own series; pass the whole "
                "data set on every process (process_local=False) or data whose local statistics agree.",
            )
        n = local * (jax.process_count() if method.process_local else 1)
        per_step = n if method.batch_size is None else method.batch_size
        if per_step % self.n_devices:
            lower = per_step // self.n_devices * self.n_devices
            hint = f"e.g. batch_size={lower}" if lower else f"at least {self.n_devices}"
            if method.batch_size is None:
                fix = (
                    f"pass a batch_size that is a multiple of {self.n_devices} ({hint}) or use"
                    if getattr(model, "minibatch", True) else "use"
                )
                raise ValueError(
                    f"fit: batch_size=None puts all {n} series in every step, which do not divide "
                    f"evenly over {self.n_devices} devices; {fix} a device count that divides {n}."
                )
            raise ValueError(
                f"fit: batch_size={method.batch_size} does not divide evenly over "
                f"{self.n_devices} devices; use a multiple of {self.n_devices} ({hint})."
            )
        # What the eager set-up (site discovery, guide initialisation) sees: the whole
        # data, so that it equals the single-process run.
        self.host_batch = distributed._gather_series(batch) if method.process_local else batch
        if method.process_local:
            self.batch = distributed._place_series(batch, self.sharding, process_local=True)
        elif method.batch_size is None:
            self.batch = distributed._place_series(batch, self.sharding)
        else:
            # Replicated, so that gathering a random minibatch needs no communication;
            # the gathered rows are then split by `_ShardSeriesPlate`.
            self.batch = distributed._replicated(batch, self.mesh)

    def wrap(self, fn):
        if fn is None:
            return None
        return _ShardSeriesPlate(fn, self.sharding)

    def replicate(self, tree):
        from .. import distributed

        return distributed._replicated(tree, self.mesh)


def _fingerprint(model) -> bytes:
    import json

    try:
        return json.dumps(model.config(), sort_keys=True, default=str).encode()
    except (ValueError, TypeError):
        return repr(model).encode()


@dataclasses.dataclass
class _Setup:
    """The pieces of one SVI run, built once by `_setup`."""

    svi: Any
    guide: Any
    latent: list
    state: Any
    batch: Any  # what the eager set-up and the guide's draws see (the whole data)
    batch_in: Any  # what the compiled steps see (placed over the devices with `devices`)
    dp: Optional[_DataParallel]
    k_post: Any
    t_start: float
    held_out: Any = None  # `fn(params, key) -> loss` with keep_best and a held-out site
    k_val: Any = None


def _setup(model, batch, method: SVI, key) -> _Setup:
    program = _bind(model, method.batch_size, batch)
    dp = _DataParallel(method, batch, model) if method.devices is not None else None
    if dp is not None:
        batch = dp.host_batch
    k_init, k_latent, k_post = jax.random.split(key, 3)
    kinds = site_kinds(program, batch, k_latent)
    latent = [name for name, kind in kinds.items() if kind == "latent"]
    spec = method.guide if method.guide is not None else model.guide()
    guide = _make_guide(spec, program, latent, model.init_strategy())
    tx = method.optimizer if method.optimizer is not None else default_optimizer(method.learning_rate)
    wrap = (lambda f: f) if dp is None else dp.wrap
    svi = _NumPyroSVI(wrap(program), wrap(guide), numpyro.optim.optax_to_numpyro(tx),
                      loss=Trace_ELBO(num_particles=method.num_particles))
    t_start = time.perf_counter()
    with compiled_initialisation():
        state = svi.init(k_init, batch)
    site = getattr(model, "held_out_site", None) if method.keep_best else None
    if site not in kinds:
        site = None  # e.g. the model emits it only with some settings
    return _Setup(svi, guide, latent, state, batch, batch if dp is None else dp.batch, dp, k_post, t_start,
                  held_out=None if site is None else _held_out_fn(model, batch, site, model.held_out_draws),
                  k_val=jax.random.fold_in(key, 7))


def _held_out_fn(model, batch, site: str, num_draws: int = 8):
    """`fn(params, key)`: minus the factor `site` of the whole-batch training program
    with `params`, averaged over `num_draws` keys (one device, host copies of params)."""
    program = _bind(model, None, batch)

    def one(params, key):
        seeded = numpyro.handlers.seed(numpyro.handlers.substitute(program, data=params), key)
        return -numpyro.handlers.trace(seeded).get_trace(batch)[site]["fn"].log_factor

    return jax.jit(lambda params, key: jnp.mean(jax.vmap(lambda k: one(params, k))(jax.random.split(key, num_draws))))


def elbo_fn(program, guide, site: Optional[str], num_particles: int):
    """`fn(params, key, batch)`: the ELBO of `program` and `guide` at `params` (NumPyro's
    `Trace_ELBO` with `num_particles` particles, sign flipped: higher is better), without
    the factor `site` (the held-out score, which the training loss adds but which is not
    part of the data's likelihood; `None`: nothing left out). For a model whose only
    unknowns are `numpyro.param` sites this is the training program's log density at
    `params`."""
    scored = program if site is None else numpyro.handlers.block(program, hide=[site])
    elbo = Trace_ELBO(num_particles=num_particles)
    return lambda params, key, batch: -elbo.loss(key, params, scored, guide, batch)


def _chunk_length(method: SVI) -> int:
    """Steps per compiled chunk: `chunk_size`, cut so that checkpoints fall on chunk ends."""
    chunk = int(min(method.chunk_size, method.num_steps))
    if method.checkpoint_every is not None:
        chunk = int(np.gcd(chunk, method.checkpoint_every))
    return chunk


def _resume(method: SVI, state, chunk: int):
    """`(state, first_chunk, losses, best)`: from the checkpoint in `method.resume`, or the
    start; `best` is the held-out record `(value, step, params)` so far (or None)."""
    if method.resume is None:
        return state, 0, [], None
    from ._checkpoint import load_checkpoint

    state, done, old_losses, best = load_checkpoint(method.resume, state, method.num_steps)
    if done % chunk:
        raise ValueError(
            f"fit: the checkpoint in {method.resume!r} is at step {done}, which is not a "
            f"multiple of the chunk size {chunk}; resume with the same chunk_size and "
            "checkpoint_every as the interrupted run."
        )
    return state, done // chunk, [old_losses], best


def _chunk_fn(svi, chunk: int, dp: Optional[_DataParallel]):
    """One compiled chunk of `chunk` steps: `(state, verified, start, num_steps, batch) ->
    (state, verified, bad, losses)`. `verified` is the last state whose loss was computed
    and finite. A step's loss is that of the parameters going in, so when it is non-finite
    the chunk stops stepping and `verified` holds parameters that were checked. The run's
    length is an argument, not a constant of the program, so that runs of any length share
    one compiled chunk (and XLA's persistent cache, where it is on)."""

    def run_chunk(state, verified, start, num_steps, batch):
        def body(carry, i):
            st, ver, bad = carry
            new, loss = svi.update(st, batch)
            active = (start + i < num_steps) & ~bad
            take = active & jnp.isfinite(loss)
            ver = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), st, ver)
            st = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new, st)
            bad = bad | (active & ~jnp.isfinite(loss))
            return (st, ver, bad), jnp.where(active, loss, jnp.nan)

        (state, verified, bad), losses = jax.lax.scan(
            body, (state, verified, jnp.asarray(False)), jnp.arange(chunk)
        )
        return state, verified, bad, losses

    return jax.jit(run_chunk) if dp is None else jax.jit(run_chunk, out_shardings=dp.replicated)


def _checkpoint_due(method: SVI, done: int) -> bool:
    return (
        method.checkpoint_every is not None
        and (done % method.checkpoint_every == 0 or done == method.num_steps)
        and jax.process_index() == 0
    )


def patience_ended(method, step: int, best_step: Optional[int]) -> bool:
    """Whether `method.patience` ends a run before the chunk starting at `step`: the
    held-out score last improved at `best_step` (None: not scored yet, so it goes on),
    at least `patience` steps ago, and `min_steps` have run."""
    return (method.patience is not None and best_step is not None and step >= method.min_steps
            and step - best_step >= method.patience)


def _optimise(s: _Setup, method: SVI, *, progress_bar: bool):
    """Run the chunks; returns `(state, losses, stopped, chunk_seconds, best, patience_stop)`,
    `stopped` the step of the first non-finite loss (then `state` is the last verified one)
    or None, `best` the held-out record `(value, step, params)` (None without a held-out
    score), `patience_stop` the step where `method.patience` ended the run or None."""
    chunk = _chunk_length(method)
    state, first_chunk, losses, best = _resume(method, s.state, chunk)
    if s.dp is not None:
        state = s.dp.replicate(state)
    run_chunk = _chunk_fn(s.svi, chunk, s.dp)
    bar = _progress(progress_bar, method.num_steps, "svi")
    if bar is not None and first_chunk:
        bar.update(first_chunk * chunk)
    verified, stopped, patience_stop, chunk_seconds = state, None, None, []
    first_eligible = min(method.best_from, method.num_steps)  # keep_best's earliest candidate step
    for c in range(first_chunk, -(-method.num_steps // chunk)):
        # Checked before the chunk, so that a run resumed from a checkpoint stops where
        # the uninterrupted run did.
        if patience_ended(method, c * chunk, None if best is None else best[1]):
            patience_stop = c * chunk
            break
        t_chunk = time.perf_counter()
        state, verified, bad, ls = run_chunk(state, verified, c * chunk, method.num_steps, s.batch_in)
        ls, bad = np.asarray(ls), bool(bad)
        chunk_seconds.append(time.perf_counter() - t_chunk)
        losses.append(ls)
        if bar is not None:
            bar.update(int(np.sum(~np.isnan(ls))) if not bad else chunk)
            finite = ls[np.isfinite(ls)]
            if finite.size:
                bar.set_postfix(loss=f"{finite[-1]:.4g}")
        if bad:
            stopped, state = c * chunk + int(np.argmax(~np.isfinite(ls))), verified
            break
        done = min((c + 1) * chunk, method.num_steps)
        if s.held_out is not None:
            params = jax.device_get(s.svi.get_params(state))
            value = float(s.held_out(params, jax.random.fold_in(s.k_val, c)))
            if done >= first_eligible and np.isfinite(value) and (best is None or value < best[0]):
                best = (value, done, params)
        if _checkpoint_due(method, done):
            from ._checkpoint import save_checkpoint

            save_checkpoint(method.checkpoint_dir, state, done, np.concatenate(losses)[:done], best)
    if bar is not None:
        bar.close()
    return state, np.concatenate(losses)[: method.num_steps], stopped, chunk_seconds, best, patience_stop


#: Adam's learning rate for `SVI.held_out_refit` (the scales are logs: 0.02 per step), and
#: the draws of the held-out score behind each of its steps (as many as a training step's
#: score: the averaged iterates, not each gradient, need to be precise).
HELD_OUT_REFIT_LR = 0.02
HELD_OUT_REFIT_DRAWS = 2


def _refit_held_out_params(s: _Setup, model, params: dict, steps: int) -> dict:
    """`params` with `model.held_out_params` refitted to the other (kept) parameters by
    `steps` Adam steps on the held-out score, fresh draws each step; returns the mean of
    the second half's iterates (the score is noisy, and its minimum is a flat valley)."""
    names = [k for k in model.held_out_params if k in params]
    if not names:
        return params
    fixed = {k: jnp.asarray(v) for k, v in params.items()}
    sub = {k: fixed[k] for k in names}
    tx = optax.adam(HELD_OUT_REFIT_LR)
    score = _held_out_fn(model, s.batch, model.held_out_site, HELD_OUT_REFIT_DRAWS)

    @jax.jit
    def run(sub, fixed, key):
        def step(carry, k):
            sub, opt = carry
            grad = jax.grad(lambda x: score({**fixed, **x}, k))(sub)
            updates, opt = tx.update(grad, opt)
            sub = optax.apply_updates(sub, updates)
            return (sub, opt), sub

        _, path = jax.lax.scan(step, (sub, tx.init(sub)), jax.random.split(key, steps))
        return jax.tree.map(lambda p: jnp.mean(p[steps // 2:], axis=0), path)

    refitted = run(sub, fixed, jax.random.fold_in(s.k_val, 2**31 - 1))
    return {**params, **{k: jnp.asarray(v, dtype=jnp.asarray(params[k]).dtype) for k, v in refitted.items()}}


def _warn_stopped(stopped: int) -> None:
    warnings.warn(
        f"fit: the SVI loss became NaN/inf at step {stopped}; stopped and kept the "
        "parameters of the last finite step. Fixes: a smaller learning rate, "
        "gradient clipping, tighter priors or a rescaled data set.",
        RuntimeWarning,
        stacklevel=6,  # _warn_stopped, run_svi, SVI.run, the runner, fit, the caller
    )


def _draw(s: _Setup, params: dict, num_samples: int) -> dict:
    """`num_samples` draws of the latent sites from the fitted guide, `(1, draw, ...)`."""
    if not s.latent:
        return {}
    if isinstance(s.guide, autoguide.AutoGuide):
        flat = s.guide.sample_posterior(s.k_post, params, sample_shape=(num_samples,))
    else:
        flat = Predictive(s.guide, params=params, num_samples=num_samples)(s.k_post, s.batch)
    return {k: np.asarray(v)[None] for k, v in flat.items() if k in s.latent}


def run_svi(model, batch, method: SVI, *, key, progress_bar: bool) -> EngineResult:
    """Fit `model` to `batch` by SVI with the options `method`; see `SVI`."""
    s = _setup(model, batch, method, key)
    state, loss, stopped, chunk_seconds, best, patience_stop = _optimise(s, method, progress_bar=progress_bar)
    if stopped is not None:
        loss = loss[:stopped]
        _warn_stopped(stopped)
    params = s.svi.get_params(state) if best is None else {k: jnp.asarray(v) for k, v in best[2].items()}
    if best is not None and method.held_out_refit:
        params = _refit_held_out_params(s, model, params, method.held_out_refit)
    if s.dp is not None:
        # Host copies: drawing from the guide runs on one device, as without `devices`.
        params = {k: np.asarray(v) for k, v in params.items()}
    seconds = time.perf_counter() - s.t_start
    info = SVIInfo(
        seconds=seconds,
        seconds_per_step=(
            float(np.median(chunk_seconds[1:]) / _chunk_length(method)) if len(chunk_seconds) > 2 else None
        ),
        first_chunk_seconds=float(chunk_seconds[0]) if chunk_seconds else None,
        num_steps_run=int(len(loss)),
        stopped_at=stopped,
        best_step=None if best is None else int(best[1]),
        patience_stop=patience_stop,
        guide="none" if s.guide is _empty_guide else getattr(s.guide, "__name__", type(s.guide).__name__),
        num_devices=1 if s.dp is None else s.dp.n_devices,
    )
    return EngineResult(samples=_draw(s, params, method.num_samples),
                        params={k: np.asarray(v) for k, v in params.items()},
                        sample_stats={}, loss=loss, info=info)


register_engine(SVI)
