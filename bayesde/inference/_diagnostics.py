"""Sampler health after every fit: numbers, and warnings that say what to do."""

from __future__ import annotations

import warnings

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

__all__ = ["diagnose", "summary_table", "warn_if_unhealthy"]


def _per_param(samples: dict):
    for name, v in samples.items():
        v = np.asarray(v, dtype=float)
        flat = v.reshape(v.shape[:2] + (-1,))
        for j in range(flat.shape[2]):
            label = name if flat.shape[2] == 1 else f"{name}[{j}]"
            yield label, flat[:, :, j]


def diagnose(post) -> dict:
    out: dict = {"method": post.method_name}
    if post.loss is not None:
        loss = np.asarray(post.loss)
        out["num_steps"] = int(len(loss))
        out["final_loss"] = float(np.mean(loss[-max(1, len(loss) // 20):])) if len(loss) else float("nan")
        out["stopped_at_nan"] = post.info.get("stopped_at")
        if len(loss) >= 40:
            tail = loss[-len(loss) // 10:]
            prev = loss[-len(loss) // 5: -len(loss) // 10]
            out["still_improving"] = bool(np.mean(prev) - np.mean(tail) > 2 * np.std(tail) / np.sqrt(len(tail)))
        return out
    stats = post.sample_stats
    out["divergences"] = int(np.sum(stats.get("diverging", 0)))
    depth = stats.get("tree_depth")
    max_depth = post.info.get("max_tree_depth")
    if depth is not None and max_depth is not None:
        out["max_tree_depth_hits"] = int(np.sum(depth >= max_depth))
    rhat, ess = [], []
    for _, x in _per_param(post.samples):
        if x.shape[1] >= 4:
            ess.append(float(effective_sample_size(x)))
            if x.shape[0] > 1 or x.shape[1] >= 4:
                rhat.append(float(split_gelman_rubin(x)))
    out["max_rhat"] = float(np.nanmax(rhat)) if rhat else float("nan")
    out["min_ess"] = float(np.nanmin(ess)) if ess else float("nan")
    return out


def summary_table(post):
    import pandas as pd

    rows = []
    for label, x in _per_param(post.samples):
        row = {
            "param": label,
            "mean": float(np.mean(x)),
            "sd": float(np.std(x)),
            "q05": float(np.quantile(x, 0.05)),
            "q95": float(np.quantile(x, 0.95)),
        }
        if post.loss is None and x.shape[1] >= 4:
            row["r_hat"] = float(split_gelman_rubin(x))
            row["ess"] = float(effective_sample_size(x))
        rows.append(row)
    return pd.DataFrame(rows).set_index("param") if rows else pd.DataFrame()


def warn_if_unhealthy(post) -> list[str]:
    """Warn (and return the messages) when a fit shows known problems, with the fix."""
    d = diagnose(post)
    msgs = []
    if post.loss is not None:
        if d.get("stopped_at_nan") is not None:
            pass  # already warned by the engine, with its fix
        elif d.get("still_improving"):
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
                f"max R-hat is {d['max_rhat']:.2f} (> 1.05): chains disagree; run more warmup "
                "and samples, or check for multimodality."
            )
        if np.isfinite(d.get("min_ess", np.nan)) and d["min_ess"] < 50:
            msgs.append(
                f"the smallest effective sample size is {d['min_ess']:.0f} (< 50); draw more samples."
            )
    for m in msgs:
        warnings.warn(f"fit: {m}", RuntimeWarning, stacklevel=3)
    return msgs
