"""Sampler health after every fit: ArviZ's numbers, and warnings that say what to do.

R-hat is the rank-normalised split R-hat and ESS the bulk and tail effective sample
sizes of Vehtari et al. (2021), "Rank-normalization, folding, and localization: an
improved R-hat", computed by ArviZ (`az.summary`) on the same layout as
`Posterior.to_arviz()`, so the numbers here are the numbers ArviZ reports.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._arviz import posterior_dataset

__all__ = ["diagnose", "summary_table", "warn_if_unhealthy"]


def _posterior_idata(post):
    import arviz as az

    return az.InferenceData(posterior=posterior_dataset(post.samples))


def _arviz_summary(post, **kwargs):
    import arviz as az

    with warnings.catch_warnings():
        # Short chains (fewer than 4 draws) give NaN diagnostics, with a warning from
        # ArviZ per site; the NaN says it already.
        warnings.simplefilter("ignore")
        return az.summary(_posterior_idata(post), **kwargs)


def diagnose(post) -> dict:
    """Sampler health as a dict.

    MCMC: `divergences`, `max_tree_depth_hits`, `max_rhat` (rank-normalised split R-hat,
    worst parameter, and its label `max_rhat_param`), `min_ess` (= `min_ess_bulk`, with
    `min_ess_param`) and `min_ess_tail`: ArviZ's `r_hat`, `ess_bulk`, `ess_tail`
    (`az.summary(post.to_arviz(), round_to="none")`), NaN with fewer than 4 draws.
    SVI: `num_steps` (steps run), `final_loss`, `stopped_at_nan`, `still_improving`,
    `best_step` (the step whose parameters `keep_best` kept, or None) and
    `patience_stop` (the step where `SVI.patience` or `Ensemble.patience` ended the run, or None).
    """
    out: dict = {"method": post.method_name}
    if post.loss is not None:
        loss = np.asarray(post.loss)
        out["num_steps"] = int(len(loss))
        out["final_loss"] = float(np.mean(loss[-max(1, len(loss) // 20):])) if len(loss) else float("nan")
        out["stopped_at_nan"] = getattr(post.info, "stopped_at", None)
        out["best_step"] = getattr(post.info, "best_step", None)
        out["patience_stop"] = getattr(post.info, "patience_stop", None)
        if len(loss) >= 40:
            tail = loss[-len(loss) // 10:]
            prev = loss[-len(loss) // 5: -len(loss) // 10]
            out["still_improving"] = bool(np.mean(prev) - np.mean(tail) > 2 * np.std(tail) / np.sqrt(len(tail)))
        return out
    stats = post.sample_stats
    out["divergences"] = int(np.sum(stats.get("diverging", 0)))
    depth = stats.get("tree_depth")
    max_depth = getattr(post.info, "max_tree_depth", None)
    if depth is not None and max_depth is not None:
        out["max_tree_depth_hits"] = int(np.sum(depth >= max_depth))
    out.update(max_rhat=float("nan"), max_rhat_param=None, min_ess=float("nan"), min_ess_param=None,
               min_ess_bulk=float("nan"), min_ess_tail=float("nan"))
    if not post.samples:
        return out
    table = _arviz_summary(post, kind="diagnostics", round_to="none")
    rhat, bulk, tail = (table[c].to_numpy(dtype=float) for c in ("r_hat", "ess_bulk", "ess_tail"))
    if np.any(np.isfinite(rhat)):
        i = int(np.nanargmax(rhat))
        out["max_rhat"], out["max_rhat_param"] = float(rhat[i]), str(table.index[i])
    if np.any(np.isfinite(bulk)):
        i = int(np.nanargmin(bulk))
        out["min_ess"], out["min_ess_param"] = float(bulk[i]), str(table.index[i])
        out["min_ess_bulk"] = out["min_ess"]
    if np.any(np.isfinite(tail)):
        out["min_ess_tail"] = float(np.nanmin(tail))
    return out


def summary_table(post, **kwargs):
    """`az.summary` of the posterior draws (same numbers as
    `az.summary(post.to_arviz())`): mean, sd, 94% HDI, MCSE, bulk/tail ESS and
    rank-normalised R-hat per parameter, one row per scalar (`"w[0, 1]"`); `**kwargs`
    go to `az.summary` (e.g. `var_names=`, `round_to="none"`)."""
    import pandas as pd

    if not post.samples:
        return pd.DataFrame()
    return _arviz_summary(post, **kwargs)


def warn_if_unhealthy(post) -> list[str]:
    """Warn (and return the messages) when a fit shows known problems, with the fix."""
    d = diagnose(post)
    msgs = []
    if post.loss is not None:
        if d.get("stopped_at_nan") is not None:
            pass  # already warned by the engine, with its fix
        elif d.get("still_improving") and (d.get("best_step") is None or d["best_step"] >= d["num_steps"]):
            msgs.append(
                "the SVI loss was still falling at the end; raise num_steps (or the learning rate) "
                "for a converged fit."
            )
    else:
        n = d.get("divergences", 0)
        total = int(np.size(post.sample_stats.get("diverging", [])))
        if n > 0:
            msgs.append(
                f"{n} of {total} post-warmup transitions diverged; raise target_accept_prob "
                "(e.g. 0.95), reparameterise, or use tighter priors."
            )
        if d.get("max_tree_depth_hits", 0) > 0.1 * max(total, 1):
            msgs.append(
                f"{d['max_tree_depth_hits']} transitions hit the maximum tree depth; raise "
                "max_tree_depth or reparameterise (strong posterior correlations)."
            )
        if np.isfinite(d.get("max_rhat", np.nan)) and d["max_rhat"] > 1.05 and post.num_chains > 1:
            msgs.append(
                f"max R-hat is {d['max_rhat']:.3f} (> 1.05, at {d['max_rhat_param']}): chains "
                "disagree; run more warmup and samples, or check for multimodality."
            )
        bulk, tail = d.get("min_ess", np.nan), d.get("min_ess_tail", np.nan)
        if (np.isfinite(bulk) and bulk < 50) or (np.isfinite(tail) and tail < 50):
            msgs.append(
                f"the smallest effective sample size is {bulk:.0f} (bulk, at {d['min_ess_param']}) "
                f"and {tail:.0f} (tail) (< 50); draw more samples."
            )
    for m in msgs:
        warnings.warn(f"fit: {m}", RuntimeWarning, stacklevel=3)
    return msgs
