"""`bayesde effects`: counterfactual outcomes under treatment plans, and contrasts."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Optional

import typer

from ._common import (DEVICE, FORCE, MARKER, QS, QUIET, SEED, Device, UserError, claim_out, figure, progress,
                      record, setup, sha256, staging, write_json)
from ._csv import BOOL_TEXT
from ._forecast import run_transform
from ._run import load_run


def effects(
    run: str = typer.Option(..., "--run", help="Run folder of a model with treatment inputs (e.g. --model bncde)."),
    plans: str = typer.Option(..., "--plans", help='JSON file: {"treat": {"dose": 1}, "none": {"dose": 0}}.'),
    horizon: int = typer.Option(..., "--horizon", help="Number of future steps."),
    out: str = typer.Option(..., "--out", help="Output folder for outcomes.csv, contrasts.csv, effects.png."),
    every: Optional[float] = typer.Option(None, "--every", show_default=False,
                                          help="Time between future steps (default: the median spacing)."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", show_default=False, help="Predictive draws."),
    seed: int = SEED,
    device: Optional[Device] = DEVICE,
    force: bool = FORCE,
    quiet: bool = QUIET,
):
    """Counterfactual outcomes under treatment plans, and the contrasts between plans.

    Each plan gives every treatment column a constant or one value per future step. All plans share the posterior draws and noise (common random numbers), so each contrast is a paired difference. outcomes.csv: plan, series, time, variable, mean, quantiles; contrasts.csv: the same for "A - B" per series and for their average.

    Example:

        echo '{"treat": {"dose": 1}, "none": {"dose": 0}}' > plans.json
        bayesde effects --run runs/trial --plans plans.json --horizon 5 --out runs/trial/effects
    """
    if horizon < 1:
        raise UserError(f"--horizon must be a positive integer, got {horizon}.")
    if every is not None and not every > 0:
        raise UserError(f"--every must be positive, got {every}.")
    out_p = Path(out)
    claim_out(out_p, force, "--out")
    bd = setup(device)
    post, run_meta = load_run(bd, run)
    if run_transform(run).value != "none":
        raise UserError(f"--run {run} was fitted with --transform {run_transform(run).value}; effects on a transformed "
                        "scale are not supported yet (a contrast of log values is not a difference of outcomes): "
                        "refit with --transform none.")
    if not getattr(post.model, "needs_treatments", False) or post.data.treatments is None:
        raise UserError(f"--run {run}: its model ({type(post.model).__name__}) takes no treatments, so plans cannot "
                        "change its forecasts; fit with --model bncde (or tecde) and --treatment-cols.")
    plan_arrays, notes = read_plans(plans, post.data, horizon)
    import jax

    bar = progress(1, "counterfactual", quiet)
    with warnings.catch_warnings(record=True) as caught:  # said as the command's own warnings, below
        warnings.simplefilter("always", UserWarning)
        eff = bd.effects.counterfactual(post, post.data, plans=plan_arrays, horizon=horizon,
                                        key=jax.random.key(seed), num_samples=num_samples, step=every)
    notes = notes + [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    bar.update(1)
    bar.close()
    outcomes, contrasts = _tables(eff)
    with staging(out_p) as tmp:
        outcomes.to_csv(tmp / "outcomes.csv", index=False)
        contrasts.to_csv(tmp / "contrasts.csv", index=False)
        _plot(bd, eff, post.data, tmp / "effects.png")
        write_json(tmp / MARKER, record(bd, {
            "kind": "effects", "seed": seed, "run": run_meta, "horizon": horizon,
            "plans_file": str(Path(plans).resolve()), "plans_sha256": sha256(Path(plans)),
        }))
    for note in notes:
        print(f"warning: {note}")
    names = list(eff.outcomes)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            avg = eff.average(a, b)
            lo, hi = (float(x[0, -1, 0]) for x in avg.interval(0.9))
            print(f"average effect {a} - {b} at the last step: mean {float(avg.mean[0, -1, 0]):.4g}, "
                  f"90% interval [{lo:.4g}, {hi:.4g}]")
    for name, res in (eff.overlap or {}).items():
        print(f"overlap share of {name}: {res['share']:.2f} of similar training histories received its treatments"
              + (f" (below {res['threshold']:.2f}: its outcomes extrapolate beyond the data)"
                 if res["below_threshold"] else ""))
    print(f"wrote {out_p}/outcomes.csv ({len(outcomes)} rows), contrasts.csv ({len(contrasts)} rows), effects.png")


def _tables(eff):
    """`outcomes` (one block per plan) and `contrasts` (each pair of plans, per series
    and averaged) as tidy quantile frames."""
    import pandas as pd

    names = list(eff.outcomes)
    frames = []
    for name in names:
        df = eff.outcomes[name].to_pandas(QS)
        df.insert(0, "plan", name)
        frames.append(df)
    cframes = []
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            for kind, pr in (("series", eff.contrast(a, b)), ("average", eff.average(a, b))):
                df = pr.to_pandas(QS)
                df.insert(0, "contrast", f"{a} - {b}")
                df.insert(1, "scope", kind)
                cframes.append(df)
    contrasts = pd.concat(cframes, ignore_index=True) if cframes else pd.DataFrame()
    return pd.concat(frames, ignore_index=True), contrasts


def _plot(bd, eff, data, path: Path) -> None:
    """Per series (up to 4): the outcomes under each plan, and the first contrast."""
    names = list(eff.outcomes)
    n_show = min(data.n_series, 4)
    fig, axes = figure(n_show, 2 if len(names) > 1 else 1, w=5.5)
    for i in range(n_show):
        bd.plot.counterfactual(axes[i, 0], eff, series=i, history=data, legend=(i == 0))
        if len(names) > 1:
            c = eff.contrast(names[0], names[1])
            bd.plot.forecast(axes[i, 1], c, series=i, variable=0, legend=(i == 0))
            axes[i, 1].axhline(0.0, color="0.5", lw=0.8)
            axes[i, 1].set_title(f"{names[0]} − {names[1]}, series {c.series_ids[i]}")
            axes[i, 1].set_ylabel(f"difference in {c.names[0]}")
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- plans
def read_plans(path: str, data, horizon: int):
    """plans.json: `{"plan": {"treatment column": number | [one per step]}}` or
    `{"plan": [[...K values...], ... one row per step]}`.

    **Returns:** `{plan: (horizon, K) array}` and notes on plans that leave the range
    of treatments seen in the data."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--plans: file {path!r} not found.")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"--plans {p.name}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}).") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"--plans {p.name}: expected an object of plan name -> treatments, e.g. "
                        '{"treat": {"dose": 1}, "none": {"dose": 0}}.')
    names = list(data.treatment_names)
    plans = {}
    for plan, spec in raw.items():
        if isinstance(spec, dict):
            plans[str(plan)] = _plan_by_column(p, plan, spec, names, horizon)
        elif isinstance(spec, list):
            plans[str(plan)] = _plan_by_step(p, plan, spec, names, horizon)
        else:
            raise UserError(f"--plans {p.name}: plan {plan!r} must be an object {{column: value}} or a list of steps.")
    return plans, _range_notes(plans, data)


def _number(p: Path, plan, col, step, v) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in BOOL_TEXT:
        return BOOL_TEXT[v.strip().lower()]
    where = f"step {step}" if step is not None else "its value"
    raise UserError(f"--plans {p.name}: plan {plan!r}, treatment {col!r}, {where}: unknown value {v!r}; "
                    "use a finite number (0/1 or a dose) or yes/no/true/false.")


def _plan_by_column(p: Path, plan, spec: dict, names: list, horizon: int):
    """`{"column": value or [value per step]}` -> `(horizon, K)`."""
    import numpy as np

    arr = np.zeros((horizon, len(names)))
    for col in spec:
        if col not in names:
            raise UserError(f"--plans {p.name}: plan {plan!r} names the unknown treatment column {col!r}; "
                            f"the run's treatment columns are {names}.")
    for j, col in enumerate(names):
        if col not in spec:
            raise UserError(f"--plans {p.name}: plan {plan!r} gives no value for treatment column {col!r}.")
        v = spec[col]
        if isinstance(v, list):
            if len(v) < horizon:
                raise UserError(f"--plans {p.name}: plan {plan!r}, treatment {col!r} lists {len(v)} steps "
                                f"but --horizon is {horizon}.")
            arr[:, j] = [_number(p, plan, col, s, x) for s, x in enumerate(v[:horizon])]
        else:
            arr[:, j] = _number(p, plan, col, None, v)
    return arr


def _plan_by_step(p: Path, plan, rows: list, names: list, horizon: int):
    """`[[K values], ... per step]` -> `(horizon, K)`."""
    import numpy as np

    k = len(names)
    arr = np.zeros((horizon, k))
    if len(rows) < horizon:
        raise UserError(f"--plans {p.name}: plan {plan!r} lists {len(rows)} steps but --horizon is {horizon}.")
    for s, row in enumerate(rows[:horizon]):
        row = row if isinstance(row, list) else [row]
        if len(row) != k:
            raise UserError(f"--plans {p.name}: plan {plan!r} step {s} has {len(row)} values for the "
                            f"{k} treatment columns {names}.")
        arr[s] = [_number(p, plan, names[j], s, x) for j, x in enumerate(row)]
    return arr


def _range_notes(plans: dict, data) -> list[str]:
    import numpy as np

    lo = np.min(data.treatments, axis=(0, 1))
    hi = np.max(data.treatments, axis=(0, 1))
    notes = []
    for plan, arr in plans.items():
        for j, col in enumerate(data.treatment_names):
            if np.any(arr[:, j] < lo[j] - 1e-9) or np.any(arr[:, j] > hi[j] + 1e-9):
                notes.append(f"plan {plan!r} sets {col!r} outside the range seen in the data "
                             f"[{lo[j]:g}, {hi[j]:g}]: the model extrapolates there.")
    return notes
