"""`bayesde demo`: the one-command tour on the bundled hare–lynx pelts."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import typer

from ._common import (DEVICE, FORCE, MARKER, QS, QUIET, SEED, Device, claim_out, figure, progress, record, say, setup,
                      staging, write_json)
from ._fit import fit_quietly, health_line
from ._models import lv_model

#: The demo fits 1900–1915 (t = 0..15) and forecasts to 1925 on a quarter-year grid.
_SPLIT, _HORIZON, _EVERY = 15.0, 10.0, 0.25


def demo(
    out: str = typer.Option("bayesde-demo", "--out", help="Output folder."),
    quick: bool = typer.Option(False, "--quick", metavar="", help="Fewer NUTS draws (a smoke test, not for conclusions)."),
    seed: int = SEED,
    device: Optional[Device] = DEVICE,
    force: bool = FORCE,
    quiet: bool = QUIET,
):
    """The one-command tour: a Bayesian Lotka–Volterra ODE on the hare–lynx pelts.

    Fits 1900–1915 by NUTS, forecasts to 1925, scores the held-out 1916–1920 and writes forecast.csv, holdout.csv, forecast.png, posterior.nc (ArviZ), the saved run (run/) and summary.json.

    Example:

        bayesde demo --out bayesde-demo
    """
    out_p = Path(out)
    claim_out(out_p, force, "--out")
    t_start = time.perf_counter()
    bd = setup(device)
    import jax

    data = bd.datasets.load("hare_lynx")
    history, heldout = data.split(_SPLIT)
    model = lv_model(bd, data)
    sizes = dict(num_warmup=100, num_samples=100, num_chains=2) if quick else dict(
        num_warmup=300, num_samples=300, num_chains=2)
    say("bayesde demo: Lotka–Volterra ODE, hare–lynx pelts (thousands), fit 1900–1915, hold out 1916–1920", quiet)
    say(f"NUTS: {sizes['num_chains']} chains x ({sizes['num_warmup']} warmup + {sizes['num_samples']} draws); "
        "the first seconds are JIT compilation", quiet)
    key_fit, key_pred = jax.random.split(jax.random.key(seed))
    post, msgs = fit_quietly(bd, model, history, "nuts", key=key_fit, quiet=quiet, **sizes)
    fit_seconds = time.perf_counter() - t_start
    bar = progress(2, "predict", quiet)
    # One predictive on a fine grid that contains the held-out years (one compile).
    df, pred = post.forecast(_HORIZON, every=_EVERY, key=key_pred, quantiles=QS, return_prediction=True)
    bar.update(1)
    pred_hold = _at_heldout_times(bd, pred, heldout)
    summary = _summary(bd, post, pred_hold, heldout, sizes=sizes, seed=seed)
    with staging(out_p) as tmp:
        df.insert(2, "year", df["time"] + 1900)
        df.to_csv(tmp / "forecast.csv", index=False)
        _holdout_table(pred_hold, heldout).to_csv(tmp / "holdout.csv", index=False)
        _plot(bd, pred, data, history, heldout, tmp / "forecast.png")
        bar.set_description("arviz")
        post.to_arviz(pred).to_netcdf(str(tmp / "posterior.nc"))
        bar.update(1)
        bar.close()
        post.save(tmp / "run")
        write_json(tmp / "summary.json", summary)
        write_json(tmp / MARKER, record(bd, {"kind": "demo", "seed": seed, "quick": quick,
                                             "data": {"name": "hare_lynx"}}))
    _report(post, summary, msgs, out_p, fit_seconds, time.perf_counter() - t_start)


def _at_heldout_times(bd, pred, heldout):
    """The draws of `pred` at the grid times nearest the held-out times."""
    import numpy as np

    grid = np.asarray(pred.ts).reshape(-1, np.shape(pred.ts)[-1])[0]
    t_hold = heldout.ts[0]
    idx = np.array([int(np.argmin(np.abs(grid - t))) for t in t_hold])
    return bd.Prediction(pred.samples[:, :, idx], t_hold, names=pred.names, series_ids=pred.series_ids)


def _summary(bd, post, pred_hold, heldout, *, sizes: dict, seed: int) -> dict:
    """summary.json: the fit's health and the scores on the held-out years."""
    import numpy as np

    years = heldout.ts[0, : heldout.lengths[0]] + 1900
    return {
        "data": "hare_lynx", "history": "1900-1915", "held_out": f"{int(years[0])}-{int(years[-1])}",
        "sizes": sizes, "seed": seed, "diagnostics": post.diagnostics(),
        "held_out_values": int(heldout.mask.sum()),
        "coverage_50": bd.metrics.coverage(pred_hold, heldout, 0.5),
        "coverage_90": bd.metrics.coverage(pred_hold, heldout, 0.9),
        "crps": bd.metrics.crps(pred_hold, heldout),
        "rmse": bd.metrics.rmse(pred_hold, heldout),
        "posterior_means": {k: float(np.mean(post.samples[k])) for k in ("alpha", "beta", "gamma", "delta", "sigma")
                            if k in post.samples},
    }


def _holdout_table(pred_hold, heldout):
    """holdout.csv: the predictive quantiles at the held-out years, the observed value
    and whether the 50% and 90% bands cover it."""
    hold = pred_hold.to_pandas(QS)
    hold.insert(2, "year", hold["time"] + 1900)
    obs = heldout.to_pandas().melt(id_vars=["series", "time"], var_name="variable", value_name="observed")
    hold = hold.merge(obs, on=["series", "time", "variable"], how="left")
    hold["in_50"] = (hold["observed"] >= hold["q25"]) & (hold["observed"] <= hold["q75"])
    hold["in_90"] = (hold["observed"] >= hold["q05"]) & (hold["observed"] <= hold["q95"])
    return hold


def _plot(bd, pred, data, history, heldout, path: Path) -> None:
    fig, axes = figure(1, 2, w=5.5, h=3.4)
    for k in range(2):
        ax = axes[0, k]
        bd.plot.forecast(ax, pred, history=history, variable=k, truth=heldout, legend=True, colors=[f"C{k}"])
        ax.axvline(_SPLIT, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("years since 1900")
        ax.set_ylabel("pelts (thousands)")
        ax.set_title(f"{data.names[k]}: fit 1900–1915, held out 1916–1920 (◆)")
    fig.suptitle("Bayesian Lotka–Volterra ODE (NUTS): median, 50% and 90% predictive bands")
    fig.savefig(path, dpi=110)


def _report(post, summary: dict, msgs: list, out_p: Path, fit_seconds: float, total: float) -> None:
    print(health_line(post) + ("  [ok]" if _healthy(summary["diagnostics"]) else "  [check the warnings]"))
    for msg in msgs:
        print(f"warning: {msg}")
    n_hold, cov50, cov90 = summary["held_out_values"], summary["coverage_50"], summary["coverage_90"]
    print(f"held out {summary['held_out']} ({n_hold} values): the 50% band covers {round(cov50 * n_hold)}/{n_hold} "
          f"({cov50:.0%}), the 90% band {round(cov90 * n_hold)}/{n_hold} ({cov90:.0%}); CRPS {summary['crps']:.3g}, "
          f"RMSE {summary['rmse']:.3g} (thousand pelts)")
    note = _coverage_note(n_hold, round(cov90 * n_hold), 0.9)
    if note:
        print(note)
    means = ", ".join(f"{k} {v:.3g}" for k, v in summary["posterior_means"].items())
    print(f"posterior means: {means}")
    print(f"wrote {out_p}/: forecast.csv, holdout.csv, forecast.png, posterior.nc, run/, summary.json "
          f"(fit {fit_seconds:.0f} s, total {total:.0f} s)")


def _coverage_note(n: int, inside: int, level: float) -> Optional[str]:
    """What to make of `inside` of `n` held-out values inside the `level` band, when a band
    that honest would leave that many out less than one time in ten (`None` otherwise): ten
    values are too few for a coverage to mean much by itself, so the note gives the chance
    and what is behind the miss on these pelts."""
    from scipy.stats import binom

    chance = float(binom.cdf(inside, n, level))  # P(at most `inside` of n inside an honest band)
    if chance >= 0.1:
        return None
    return (f"note: {inside}/{n} inside the {level:.0%} band; an honest band leaves {n - inside} or more of {n} out "
            f"{chance:.0%} of the time. The ODE reads the pelts' departures from its cycle as independent noise, "
            "so its band does not widen over the forecast; a discrepancy from the path, an Ornstein-Uhlenbeck "
            "process, lets it: `bayesde fit --model ode-lv --model-args '{\"discrepancy\": \"ou\"}' --method "
            "nuts` (it is not better on every predator-prey series; what it gives on these years and where "
            "it does not help: docs/calibration.md).")


def _healthy(diag: dict) -> bool:
    rhat = diag.get("max_rhat", float("nan"))
    return diag.get("divergences", 0) == 0 and (not math.isfinite(rhat) or rhat < 1.05)
