"""`bayesde forecast`: quantile CSV, fan chart and ArviZ file of a fitted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._common import (DEVICE, FORCE, MARKER, QS, QUIET, SEED, Device, UserError, claim_out, figure, progress,
                      record, say, setup, staging, write_json)
from ._csv import Transform, inverse, transform_formula
from ._run import load_run


def forecast(
    run: str = typer.Option(..., "--run", help="Run folder written by `bayesde fit`."),
    horizon: float = typer.Option(..., "--horizon",
                                  help="How far past each series' last observation, in time units (for a date "
                                       "column: the unit `bayesde fit` printed, e.g. days or years)."),
    out: str = typer.Option(..., "--out", help="Output folder for forecast.csv, forecast.png, posterior.nc."),
    every: Optional[float] = typer.Option(None, "--every", show_default=False,
                                          help="Grid step (default: the median observation spacing)."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", show_default=False,
                                              help="Predictive draws (default: every posterior draw)."),
    backtest: int = typer.Option(0, "--backtest",
                                 help="Before forecasting, refit the run's model at this many rolling origins of "
                                      "its data and print coverage, width and CRPS per horizon step; writes "
                                      "backtest.csv. 0: off."),
    conformal: Optional[float] = typer.Option(None, "--conformal", show_default=False,
                                              help="Opt-in: also write forecast_conformal.csv, the forecast with "
                                                   "intervals rescaled so that the backtest's LEVEL intervals would "
                                                   "have covered LEVEL of its values (split conformal). Needs "
                                                   "--backtest."),
    seed: int = SEED,
    device: Optional[Device] = DEVICE,
    force: bool = FORCE,
    quiet: bool = QUIET,
):
    """Forecast a fitted run: quantile CSV, fan chart and ArviZ file.

    forecast.csv is tidy: series, time, variable, part (history/forecast), mean, q05, q25, q50, q75, q95, with a date column after time when the fitted time column held dates. It is the table of post.forecast(...) in Python. forecast.png draws the history points, the median and the 50% and 90% bands. posterior.nc is the ArviZ InferenceData (posterior + this forecast).

    A run fitted with --transform log1p or log is forecast in the data's units: every predictive draw is mapped back (expm1 or exp) before the quantiles of forecast.csv, forecast_conformal.csv and forecast.png are computed, so the bands lie in the data's support; posterior.nc and the backtest's scores stay on the scale the model was fitted on. A run fitted without --transform whose data never go below zero but whose forecast's 5% quantile does gets a note per such column, with the refit (--transform log1p).

    Example:

        bayesde forecast --run runs/sales --horizon 30 --every 1 --out runs/sales/forecast
    """
    if not horizon > 0:
        raise UserError(f"--horizon must be positive, got {horizon}.")
    if every is not None and not every > 0:
        raise UserError(f"--every must be positive, got {every}.")
    if num_samples is not None and num_samples < 1:
        raise UserError(f"--num-samples must be a positive integer, got {num_samples}.")
    if backtest < 0:
        raise UserError(f"--backtest must be a number of origins >= 0, got {backtest}.")
    if conformal is not None and not 0 < conformal < 1:
        raise UserError(f"--conformal must be a level in (0, 1), e.g. 0.9; got {conformal}.")
    if conformal is not None and not backtest:
        raise UserError("--conformal needs --backtest N: the adjustment is computed from the backtest.")
    out_p = Path(out)
    claim_out(out_p, force, "--out")
    bd = setup(device)
    post, run_meta = load_run(bd, run)
    transform = run_transform(run)
    data = post.data
    step, n_times = _grid(post, horizon, every)
    import jax

    unit = f" {data.time_unit}" if data.time_unit else ""
    say(f"forecasting {data.n_series} series, {n_times} times each, step {step:g}{unit}", quiet)
    bar = progress(2, "predict", quiet)
    df, pred = post.forecast(horizon, every=step, key=jax.random.key(seed), num_samples=num_samples,
                             quantiles=QS, return_prediction=True)
    bar.update(1)
    bt, adj = _backtest(bd, jax, post, data, backtest, conformal, pred, seed=seed, num_samples=num_samples,
                        quiet=quiet)
    model_pred, history = pred, data
    if transform is not Transform.none:
        df, pred, adj, history = _to_data_units(bd, post, transform, horizon, step, pred, adj)
        say(f"transform: the model was fitted on {transform_formula(transform.value)}; forecast.csv and "
            "forecast.png are in the data's units (every draw mapped back), posterior.nc"
            + (" and the backtest scores" if bt is not None else "") + " on the model's scale", quiet)
    else:
        for note in support_notes(df, data):
            say(f"note: {note}", quiet)
    with staging(out_p) as tmp:
        df.to_csv(tmp / "forecast.csv", index=False)
        if bt is not None:
            bt.table().to_csv(tmp / "backtest.csv", index=False)
        if adj is not None:
            cdf = adj.to_pandas(QS)
            cdf["adjusted"] = adj.adjusted
            cdf.to_csv(tmp / "forecast_conformal.csv", index=False)
        xlabel = run_meta.get("time_col") or "time"
        if data.time_unit:
            xlabel = f"{data.time_unit} since {str(data.time_origin)[:10]}"
        fan_chart(bd, pred, history, tmp / "forecast.png", xlabel=xlabel)
        bar.set_description("arviz")
        post.to_arviz(model_pred).to_netcdf(str(tmp / "posterior.nc"))
        bar.update(1)
        bar.close()
        write_json(tmp / MARKER, record(bd, {
            "kind": "forecast", "seed": seed, "run": run_meta, "horizon": horizon, "every": step,
            "time_unit": data.time_unit, "num_samples": pred.num_samples,
            "backtest": backtest or None, "conformal": conformal, "transform": transform.value,
        }))
    nf = int((df["part"] == "forecast").sum())
    print(f"wrote {out_p}/forecast.csv ({len(df)} rows, {nf} in the forecast), forecast.png, posterior.nc")


def run_transform(run: str) -> Transform:
    """The `--transform` a run was fitted with, from its cli.json; runs saved before the
    option existed (or not by the command line) read as `none`."""
    try:
        value = json.loads((Path(run) / MARKER).read_text()).get("transform") or "none"
    except (OSError, ValueError, AttributeError):
        value = "none"
    try:
        return Transform(str(value))
    except ValueError:
        raise UserError(f"--run {run}: cli.json holds the unknown transform {value!r}; expected one of "
                        f"{[t.value for t in Transform]}.") from None


def support_notes(df, data) -> list[str]:
    """A note per value column that the data never take below zero (counts, amounts,
    concentrations) but whose forecast's 5% quantile goes below zero: the fit saw the data
    on their own scale, where a Gaussian band has no floor. Says how often and the refit
    that keeps the bands in the data's range (`--transform log1p`, which takes zeros).
    `df` is the forecast table (`part`, `variable`, `q05`), `data` the fitted series."""
    import numpy as np

    fc = df[df["part"] == "forecast"]
    notes = []
    for k, name in enumerate(data.names):
        observed = np.asarray(data.ys)[..., k][np.asarray(data.mask)[..., k]]
        if observed.size == 0 or observed.min() < 0:
            continue
        rows = fc[fc["variable"] == name]
        below = int((rows["q05"] < 0).sum())
        if below:
            notes.append(
                f"{name!r} is never below 0 in the data, but the forecast's 5% quantile is below 0 at {below} of "
                f"{len(rows)} forecast rows; refit with `bayesde fit ... --transform log1p` (log(1 + y), zeros "
                "allowed) to keep the bands at 0 or above."
            )
    return notes


def _to_data_units(bd, post, transform: Transform, horizon: float, step: float, pred, adj):
    """The forecast table, the prediction, the conformal prediction and the history in
    the data's units: every draw mapped back through the transform's inverse, which is
    monotone, so the quantiles are those of the data's units and lie in its support."""
    from ..inference._forecast import forecast_grid, tidy

    back = lambda z: inverse(transform.value, z)  # noqa: E731
    pred = pred.map(back)
    df = tidy(pred, post.data, forecast_grid(post, horizon, step)[1], QS)
    if adj is not None:
        adj = adj.map(back)
    d = post.data
    history = bd.TimeSeries(d.ts, back(d.ys), d.mask, d.treatments, d.static, names=d.names,
                            treatment_names=d.treatment_names, static_names=d.static_names,
                            series_ids=d.series_ids, lengths=d.lengths, time_unit=d.time_unit,
                            time_origin=d.time_origin)
    return df, pred, adj, history


def _backtest(bd, jax, post, data, origins: int, conformal, pred, *, seed: int, num_samples, quiet: bool):
    """`--backtest N`: refit the run's model at N rolling origins and print the per-step
    scores; with `--conformal LEVEL`, the forecast rescaled from that backtest."""
    if not origins:
        return None, None
    say(f"backtest: refitting {type(post.model).__name__} at {origins} origins", quiet)
    levels = sorted({0.5, 0.8, 0.9, 0.95} | ({float(conformal)} if conformal else set()))
    bt = bd.backtest(post.model, data, key=jax.random.key(seed + 1), origins=origins, method=post.method,
                     levels=levels, num_samples=num_samples, progress_bar=not quiet)
    print(bt)
    adj = None
    if conformal is not None:
        adj = bt.conformalize(pred, level=conformal)
        say(f"forecast_conformal.csv: {adj.adjusted}", quiet)
    return bt, adj


def _grid(post, horizon: float, every: Optional[float]) -> tuple[float, int]:
    """The grid step (`--every` or the median spacing) and the times per series, refused
    when too many. The public API has neither yet, so this reads `Posterior.forecast`'s
    own helpers."""
    from ..inference._forecast import forecast_grid, median_step

    step = every if every is not None else median_step(post.data)
    n_times = forecast_grid(post, horizon, step)[0].shape[1]
    if n_times > 20000:
        raise UserError(f"--every {step:g} gives {n_times} times per series; use a larger --every.")
    return step, n_times


def fan_chart(bd, pred, data, path: Path, truth=None, max_series: int = 6, title: Optional[str] = None,
              xlabel: str = "time"):
    """One panel per series (up to `max_series`) and value column (up to 4)."""
    n = min(pred.samples.shape[1], max_series)
    d = pred.samples.shape[3]
    cols = min(d, 4)
    fig, axes = figure(n, cols, w=5.0 if cols > 1 else 7.0)
    for i in range(n):
        for k in range(cols):
            ax = axes[i, k]
            bd.plot.forecast(ax, pred, history=data, series=i, variable=k, truth=truth, legend=(i == 0),
                             colors=[f"C{k}"])
            one = pred.samples.shape[1] == 1
            ax.set_title(pred.names[k] if one else f"{pred.names[k]} — series {pred.series_ids[i]}")
            ax.set_xlabel(xlabel)
            ax.axvline(float(data.ts[i, data.lengths[i] - 1]), color="0.5", lw=0.8, ls=":")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
