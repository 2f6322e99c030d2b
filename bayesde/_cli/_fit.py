"""`bayesde fit`: fit a model to a CSV and save the posterior to a run folder."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import typer

from ._common import (DEVICE, FORCE, MARKER, QUIET, SEED, Device, UserError, claim_out, default_chains,
                      json_object, one_line, record, say, setup, staging, write_json)
from ._csv import Transform, read_csv, split_cols, transform_formula
from ._models import MODEL_HELP, MODEL_METAVAR, build_model, model_factory, parse_model, parse_model_args

#: The size options of the command line; an engine takes those among its fields.
_SIZES = ("num_steps", "num_warmup", "num_samples", "num_chains", "learning_rate")


def fit(
    data: str = typer.Option(..., "--data", help="Long-format CSV: one row per series and time; empty cells are missing."),
    out: str = typer.Option(..., "--out", help="Run folder to write (the saved posterior)."),
    model: str = typer.Option("neural-ode", "--model", help=MODEL_HELP, parser=parse_model, metavar=MODEL_METAVAR),
    method: str = typer.Option("svi", "--method",
                               help="The inference engine: svi, nuts, blackjax-nuts, chees or ensemble (any "
                                    "name in bd.inference.ENGINES)."),
    time_col: str = typer.Option("time", "--time-col", help="Time column."),
    series_col: Optional[str] = typer.Option(None, "--series-col", show_default=False,
                                             help="Series id column (default: 'series' if present, else one series)."),
    value_cols: Optional[str] = typer.Option(None, "--value-cols", show_default=False,
                                             help="Comma-separated value columns (default: all other columns)."),
    treatment_cols: Optional[str] = typer.Option(None, "--treatment-cols", show_default=False,
                                                 help="Comma-separated treatment columns (numbers or yes/no)."),
    static_cols: Optional[str] = typer.Option(None, "--static-cols", show_default=False,
                                              help="Comma-separated static covariate columns (constant per series)."),
    transform: Transform = typer.Option(Transform.auto, "--transform", case_sensitive=False,
                                        help="Fit the value columns on another scale: log1p fits log(1 + y) (counts "
                                             "and data >= 0, zeros allowed), log fits log(y) (data > 0). `bayesde "
                                             "forecast` maps every draw back, so the bands stay >= 0 (log1p) or "
                                             "> 0 (log). auto: log1p for --model latent-sde when every value is "
                                             ">= 0, else none."),
    seed: int = SEED,
    num_steps: Optional[int] = typer.Option(None, "--num-steps", show_default=False, help="SVI steps (default: 2000)."),
    num_warmup: Optional[int] = typer.Option(None, "--num-warmup", show_default=False, help="NUTS warmup (default: 500)."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", show_default=False, help="Posterior draws (default: 500)."),
    num_chains: Optional[int] = typer.Option(None, "--num-chains", show_default=False,
                                             help="NUTS chains (default: one per CPU core, 2 to 4)."),
    model_args: Optional[str] = typer.Option(None, "--model-args", show_default=False,
                                             help='Model hyperparameters as JSON, e.g. \'{"width": 32}\'.'),
    method_args: Optional[str] = typer.Option(None, "--method-args", show_default=False,
                                              help="Further options of the engine as JSON, e.g. with --method ensemble "
                                                   '\'{"num_members": 4, "cross_fit": true, "combine": "quantiles"}\'.'),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", show_default=False, help="SVI Adam step size (default: 0.01)."),
    restarts: int = typer.Option(1, "--restarts", metavar="N",
                                 help="SVI only: fit N times from different starting points, side by side in one "
                                      "program, and keep the fit with the highest ELBO (bd.Ensemble(num_members=N, "
                                      "combine='best-elbo')); up to N fits' compute."),
    devices: Optional[str] = typer.Option(None, "--devices", show_default=False, metavar="all|N",
                                          help="SVI only: train data-parallel, the series split over all local "
                                               "devices or the first N (gradients averaged by JAX)."),
    device: Optional[Device] = DEVICE,
    force: bool = FORCE,
    quiet: bool = QUIET,
):
    """Fit a model to your CSV and save the posterior to a run folder.

    The run folder holds the posterior (bd.load(DIR) reads it back) and cli.json with the bayesde version, this command, the data file's sha256, the seed and the --transform.

    Counts (zeros allowed) or other data that cannot go below zero: add --transform log1p (data above zero: --transform log), and the forecast bands stay in the data's range. With --model latent-sde the default (--transform auto) does so when every value is >= 0; --transform none fits the values as they are.

    Example:

        bayesde fit --data sales.csv --series-col store --value-cols units --out runs/sales
    """
    bd = setup(device)
    method = engine_name(bd, method)
    options = fit_options(bd, method, num_steps=num_steps, num_warmup=num_warmup, num_samples=num_samples,
                          num_chains=num_chains, learning_rate=learning_rate)
    options.update(method_options(bd, method, method_args, options))
    kwargs = parse_model_args(model_args)
    n_devices = _parse_devices(devices, method)
    _check_restarts(restarts, method, method_args, n_devices)
    out_p = Path(out)
    claim_out(out_p, force, "--out", run_ok=True)
    chains_note = None
    if method in ("nuts", "blackjax-nuts") and "num_chains" not in options:
        options["num_chains"], chains_note = default_chains()
    factory = model_factory(bd, model)
    ts, meta = read_csv(
        bd, data, time_col=time_col, series_col=series_col or "series", series_explicit=series_col is not None,
        value_cols=split_cols(value_cols), treatment_cols=split_cols(treatment_cols),
        static_cols=split_cols(static_cols), transform=transform.value, model=model,
    )
    transform, reason = Transform(meta.pop("transform")), meta.pop("transform_reason")
    say(f"data: {ts!r} from {Path(data).name}", quiet)
    if transform is not Transform.none:
        what = reason or f"the model is fitted on {transform_formula(transform.value)} of {ts.names}"
        say(f"transform: {what}; `bayesde forecast` maps its draws back to the data's units", quiet)
    if ts.time_unit is not None:
        say(f"time: {time_col!r} holds dates; the model sees {ts.time_unit} since {ts.time_origin}", quiet)
    m = build_model(factory, bd, ts, model, kwargs)
    if restarts > 1:
        method, options = "ensemble", restart_options(bd, restarts, options)
        say(f"SVI: {restarts} restarts side by side, keeping the one with the highest ELBO (--restarts 1: one fit).",
            quiet)
    if ts.treatments is not None and not getattr(m, "needs_treatments", False):
        say(f"note: --model {model} ignores the treatment columns {ts.treatment_names}.", quiet)
    if chains_note:
        say(f"{method.upper()}: {chains_note}.", quiet)
    extra = _devices(n_devices, quiet)
    rec = {"kind": "fit", "seed": seed, "model": model, "model_args": kwargs, "method": method, "options": options,
           "restarts": restarts, "devices": devices, "transform": transform.value, "data": meta}
    _fit_and_save(bd, m, ts, method, out_p, rec, seed=seed, quiet=quiet, options={**options, **extra})


def _fit_and_save(bd, model, data, method: str, out_p: Path, rec: dict, *, seed: int, quiet: bool, options: dict):
    import jax

    t0 = time.perf_counter()
    post, msgs = fit_quietly(bd, model, data, method, key=jax.random.key(seed), quiet=quiet, **options)
    seconds = time.perf_counter() - t0
    with staging(out_p, create=False) as tmp:
        post.save(tmp)
        write_json(tmp / MARKER, record(bd, {**rec, "fit_seconds": round(seconds, 2)}))
    print(health_line(post) + f"  ({seconds:.1f} s)")
    seasons = getattr(post.model, "seasons", ())
    if seasons and not isinstance(seasons, str):
        say(f"seasons: the prior drift knows the phase of a cycle of {' and '.join(f'{p:g}' for p in seasons)} "
            f"{data.time_unit or 'time units'} (LatentSDE seasons; --model-args '{{\"seasons\": null}}' turns it off)",
            quiet)
    for msg in msgs + explains_little(post):
        print(f"warning: {msg}")
    _print_params(post, quiet)
    print(f"saved the run to {out_p}/  (next: bayesde forecast --run {out_p} --horizon H --out {out_p}/forecast)")


def explains_little(post, *, threshold: float = 0.1, num_samples: int = 32) -> list[str]:
    """A warning per value column whose in-sample predictive median explains under
    `threshold` of the data's variance (R²): the fitted noise then carries the data's
    spread and the bands say little more than the data's range. With a model
    discrepancy (`ODE`/`BayesianNeuralODE(discrepancy="ou")`) the in-sample median
    follows the data through the smoothed discrepancy whatever the dynamics, so the
    dynamics' path is judged without it: a discrepancy that carries the data's movement
    reverts past its time constant, and the forecast is then the path's."""
    if getattr(post.model, "needs_treatments", False):
        return []  # treatment models predict ahead of each history, not at it
    import copy
    import dataclasses

    import jax
    import numpy as np

    carried_by = "the fitted noise takes the data's spread, so the bands are about the data's range"
    if getattr(post.model, "discrepancy", None) is not None:
        post = copy.copy(post)
        post.model = dataclasses.replace(post.model, discrepancy=None)
        carried_by = ("the model discrepancy carries the data's movement, so forecasts past its time constant "
                      "follow the dynamics' path")

    data = post.data
    try:
        pred = post.predict(data.ts, data=data, key=jax.random.key(0), num_samples=num_samples)
    except ValueError:
        return []  # the model cannot predict at its own observation times; nothing to check
    median = np.asarray(pred.median)
    # a latent SDE is the model the advice would name: then it names none
    other = "" if type(post.model).__name__ == "LatentSDE" else " (e.g. latent-sde for a noisy or cyclic series)"
    out = []
    for k, name in enumerate(data.names):
        seen = data.mask[..., k]
        y = data.ys[..., k][seen]
        if y.size < 3 or not np.var(y) > 0:
            continue
        r2 = 1.0 - np.mean((median[..., k][seen] - y) ** 2) / np.var(y)
        if r2 < threshold:
            out.append(
                f"the fit explains little of {name!r}: in-sample R² {r2:.2f} ({carried_by}). Try another --model"
                f"{other} or add the variables that drive it."
            )
    return out


def _check_restarts(restarts: int, method: str, method_args: Optional[str], n_devices) -> None:
    """`--restarts`: a positive count; above 1 with --method svi, without --devices or --method-args."""
    if restarts < 1:
        raise UserError(f"--restarts must be a positive integer, got {restarts}.")
    if restarts == 1:
        return
    if method != "svi":
        raise UserError(f"--restarts applies to --method svi only; got --method {method}. With --method ensemble "
                        "pass --method-args '{\"combine\": \"best-elbo\"}'.")
    if n_devices is not None:
        raise UserError("--restarts trains the restarts side by side on one device; drop --devices or pass "
                        "--restarts 1.")
    if method_args is not None:
        raise UserError("--restarts with --method-args: the restarts are --method ensemble with "
                        "'{\"combine\": \"best-elbo\"}'; pass that with its options instead of --restarts.")


def restart_options(bd, restarts: int, options: dict) -> dict:
    """`bd.fit`'s options for `restarts` SVI fits, the best kept: an `Ensemble` of that many
    members with `combine="best-elbo"`, the command line's size options, and as many draws
    as one SVI fit keeps (an ensemble's `num_samples` is per member)."""
    svi = bd.inference.SVI()
    return {"num_members": restarts, "combine": "best-elbo", "num_samples": svi.num_samples, **options}


def _parse_devices(text: Optional[str], method: str):
    """`--devices`: None, "all" or a positive int; SVI only."""
    if text is None:
        return None
    if method != "svi":
        raise UserError(f"--devices applies to --method svi only (data-parallel training); got --method {method}.")
    if text.strip().lower() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"--devices: expected 'all' or a positive number of devices, got {text!r}.")
    return n


def _devices(n_devices, quiet: bool) -> dict:
    """`bd.fit`'s `devices=` for `--devices` (checked against this machine), or nothing."""
    if n_devices is None:
        return {}
    import jax

    local = jax.local_devices()
    if n_devices != "all" and n_devices > len(local):
        raise UserError(f"--devices {n_devices}: this machine has {len(local)} local device(s) "
                        f"({local[0].platform}); pass --devices all or a number up to {len(local)}.")
    chosen = local if n_devices == "all" else local[:n_devices]
    say(f"SVI: data-parallel over {len(chosen)} device(s).", quiet)
    return {"devices": chosen}


def engine_name(bd, name: str) -> str:
    """`--method`: a name in the engine registry (`bd.inference.ENGINES`)."""
    key = name.strip().lower()
    if key not in bd.inference.ENGINES:
        raise UserError(f"--method {name!r} is not an inference engine; choose from {sorted(bd.inference.ENGINES)}.")
    return key


def fit_options(bd, method: str, **sizes) -> dict:
    """The size options given on the command line, checked against the fields of
    `method`'s options class in the engine registry."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(bd.inference.ENGINES[method])}
    allowed = tuple(k for k in _SIZES if k in fields)
    out = {}
    for k, v in sizes.items():
        if v is None:
            continue
        if k not in allowed:
            raise UserError(f"--{k.replace('_', '-')} does not apply to --method {method}; it takes {['--' + a.replace('_', '-') for a in allowed]}.")
        if k != "learning_rate" and v < 1:
            raise UserError(f"--{k.replace('_', '-')} must be a positive integer, got {v}.")
        if k == "learning_rate" and not v > 0:
            raise UserError(f"--learning-rate must be positive, got {v}.")
        out[k] = v
    return out


def method_options(bd, method: str, text: Optional[str], given: dict) -> dict:
    """`--method-args` JSON -> further fields of `method`'s options class, checked by
    building it (with the size options `given` on the command line) before anything
    is read or compiled."""
    import dataclasses

    if text is None:
        return {}
    args = json_object(text, "--method-args", "engine options", '{"num_members": 4}')
    cls = bd.inference.ENGINES[method]
    fields = [f.name for f in dataclasses.fields(cls)]
    for k in args:
        if k not in fields:
            raise UserError(f"--method-args: {k!r} is not an option of --method {method}; it takes {fields}.")
        if k in given:
            raise UserError(f"--method-args: {k!r} is also given as --{k.replace('_', '-')}; give it once.")
    try:
        cls(**{**given, **args})
    except (TypeError, ValueError) as e:
        raise UserError(f"--method-args for --method {method}: {one_line(e)}") from None
    return args


def fit_quietly(bd, model, data, method, *, key, quiet, **options):
    """`bd.fit` with its health warnings collected and printed as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        post = bd.fit(model, data, method, key=key, progress_bar=not quiet, **options)
    # RuntimeWarning too: an SVI run that stopped on a NaN loss says so, with what to change.
    msgs = list(dict.fromkeys(one_line(w.message) for w in caught
                              if issubclass(w.category, (UserWarning, RuntimeWarning))))
    return post, msgs


def health_line(post) -> str:
    """One line on the fit's health: SVI's final loss, or R-hat, ESS and divergences."""
    d = post.diagnostics()
    if post.loss is not None:
        several = getattr(post.info, "num_members", None) is not None  # an ensemble (or restarts): per fit
        kept = getattr(post.info, "selected_member", None)
        if kept is None:
            name = "SVI" if post.method_name == "svi" else post.method_name
            line = f"{name}: {d.get('num_steps', '?')} steps, final loss {d.get('final_loss', float('nan')):.4g}"
        else:
            line = (f"SVI, {post.info.num_members} restarts: {d.get('num_steps', '?')} steps, kept restart {kept} "
                    f"(highest ELBO, {post.info.member_elbo[kept]:.4g}; the others "
                    f"{', '.join(f'{v:.4g}' for i, v in enumerate(post.info.member_elbo) if i != kept)})")
        stopped = d.get("stopped_at_nan")
        if stopped is not None and several:
            failed = [(i, at) for i, at in enumerate(stopped) if at is not None]
            which = ", ".join(f"fit {i} at step {at}" for i, at in failed)
            line += (f" ({len(failed)} of {len(stopped)} fits stopped on a NaN loss ({which}) and kept their last "
                     "finite parameters" + ("" if kept is None else "; the kept fit is " + (
                         "one of them" if kept in dict(failed) else "not one of them")) +
                     ": refit with a smaller --learning-rate, e.g. half)")
        elif stopped is not None:
            line += (f" (stopped at step {stopped} on a NaN loss and kept the last finite "
                     "parameters: refit with a smaller --learning-rate, e.g. half)")
        elif d.get("patience_stop") is not None and several:
            line += (f" (stopped early at step {d['patience_stop']}: no fit's forecasts of the held-back data had "
                     f"scored better for {post.method.patience} steps; each kept its best step, "
                     f"{', '.join(map(str, post.info.member_best_step))}; more steps would not change them)")
        elif d.get("patience_stop") is not None:
            line += (f" (stopped early: the forecasts of the held-back data had not scored better since step "
                     f"{d['best_step']}, whose parameters it kept; more steps would not change them)")
        elif d.get("best_step") is not None and d["best_step"] < d.get("num_steps", 0):
            line += (f" (kept the parameters of step {d['best_step']}, where the forecasts of the held-back "
                     "data scored best; more steps would not change them)")
        elif d.get("still_improving"):
            # Measured: more steps lowered the loss but narrowed forecast intervals below their
            # level, so the advice is to check calibration, not to train longer.
            line += (" (loss still falling; more steps fit the training data closer but can make "
                     "forecast intervals too narrow: check with `bayesde forecast --backtest 4` first)")
        return line
    return (
        f"{post.method_name.upper()}: {post.num_chains} chain(s) x {post.num_draws} draws, "
        f"max R-hat {d.get('max_rhat', float('nan')):.3f}, min ESS {d.get('min_ess', float('nan')):.0f} bulk / "
        f"{d.get('min_ess_tail', float('nan')):.0f} tail (ArviZ, rank-normalised), "
        f"divergences {d.get('divergences', 0)}"
    )


def _print_params(post, quiet: bool, limit: int = 12):
    """The posterior of the scalar parameters (network weights and per-series states
    are left to `post.summary()` in Python)."""
    if quiet or not post.samples:
        return
    import numpy as np

    scalar = [k for k, v in post.samples.items() if np.ndim(v) == 2]
    if not scalar:
        return
    try:
        table = post.summary()
        table = table[table.index.isin(scalar)]
    except Exception:  # noqa: BLE001 - a summary is a courtesy
        return
    if len(table) == 0:
        return
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 12, "display.precision", 4):
        print(table.head(limit).to_string())
