"""Calibration checks: simulation-based calibration of an engine, and the coverage /
PIT / interval-score / CRPS summary of a posterior predictive against a known truth.

Simulation-based calibration (SBC; Talts, Betancourt, Simpson, Vehtari & Gelman 2018,
"Validating Bayesian inference algorithms with simulation-based calibration"): draw
`θ̃ ~ p(θ)`, simulate `ỹ ~ p(y | θ̃)`, fit the model to `ỹ` and take `L` posterior draws
`θ_1..θ_L`. The rank `r = #{l : θ_l < θ̃}` is uniform on `{0, ..., L}` for every scalar
parameter when the inference is exact (their Theorem 1). A non-uniform rank histogram
exposes a biased (∪/∩-shaped: over/under-dispersed; skewed: biased) sampler.

```python
res = bd.calibration.sbc(program, simulate=simulate, num_datasets=100,
                         fit_kwargs=dict(method="nuts", num_warmup=200, num_samples=99),
                         key=jax.random.key(0))
res.pvalues            # {"k": 0.43}: chi-square test of rank uniformity per parameter
```
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from ._checks import check_int
from ._backtest import conformalize as conformalize

__all__ = [
    "conformalize",
    "SBCResult",
    "sbc",
    "rank_uniformity",
    "pit_histogram",
    "coverage_curve",
    "calibration_summary",
    "DEFAULT_LEVELS",
]

#: Nominal levels of the coverage curves in the calibration report.
DEFAULT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


# ------------------------------------------------------------------ rank statistics
def rank_uniformity(ranks, num_draws: int, *, bins: Optional[int] = None) -> dict:
    """Chi-square test that SBC ranks are uniform on `{0, ..., num_draws}`.

    The `num_draws + 1` possible ranks are grouped into `bins` contiguous bins; the
    expected count of a bin is proportional to the number of rank values it holds, so
    the test is exact in its null even when `bins` does not divide `num_draws + 1`.

    **Arguments:**

    - `ranks`: integer ranks, any shape (flattened).
    - `num_draws`: `L`, the number of posterior draws each rank was computed from.
    - `bins`: number of bins; default `min(L + 1, max(2, len(ranks) // 5))` so that
      every bin expects about five or more ranks.

    **Returns:** a dict with `statistic`, `pvalue`, `bins`, `observed` and `expected`
    counts.
    """
    from scipy import stats

    num_draws = check_int("rank_uniformity.num_draws", num_draws, 1)
    r = np.asarray(ranks).ravel()
    if r.size < 2:
        raise ValueError(f"rank_uniformity: ranks needs at least 2 values, got {r.size}.")
    if not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(r > num_draws) or np.any(r != np.round(r)):
        raise ValueError(
            f"rank_uniformity: ranks must be integers in [0, num_draws={num_draws}]."
        )
    if bins is None:
        bins = min(num_draws + 1, max(2, r.size // 5))
    bins = check_int("rank_uniformity.bins", bins, 2)
    bins = min(bins, num_draws + 1)
    edges = np.linspace(0, num_draws + 1, bins + 1).round().astype(int)
    observed = np.histogram(r, bins=edges)[0].astype(float)
    expected = np.diff(edges) / (num_draws + 1) * r.size
    stat, p = stats.chisquare(observed, expected)
    return {
        "statistic": float(stat),
        "pvalue": float(p),
        "bins": int(bins),
        "observed": observed,
        "expected": expected,
    }


@dataclasses.dataclass
class SBCResult:
    """What `sbc` returns.

    - `ranks`: `{name: int array (num_datasets, *site_shape)}`, ranks in `[0, num_draws]`.
    - `num_draws`: `L`, posterior draws per rank (after thinning).
    - `truths`: `{name: array (num_datasets, *site_shape)}`, the simulated parameters.
    - `tests`: `{label: rank_uniformity(...) dict}` for every scalar component
      (`"k"`, `"theta[1]"`, ...).
    - `pvalues`: `{label: p-value}`; `min_pvalue` and the Bonferroni-adjusted
      `adjusted_pvalue = min(1, n_components * min_pvalue)`.
    - `seconds`: wall-clock time of the whole run.
    """

    ranks: dict
    num_draws: int
    truths: dict
    tests: dict
    seconds: float

    @property
    def pvalues(self) -> dict:
        return {k: v["pvalue"] for k, v in self.tests.items()}

    @property
    def min_pvalue(self) -> float:
        return min(self.pvalues.values())

    @property
    def adjusted_pvalue(self) -> float:
        return min(1.0, len(self.tests) * self.min_pvalue)

    def plot(self, ax=None, *, name: Optional[str] = None):
        """Rank histogram of one component (default the first) with the uniform band
        (±2 binomial sd); returns the `ax`."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 3))
        name = name or next(iter(self.tests))
        if name not in self.tests:
            raise ValueError(f"SBCResult.plot: name must be one of {sorted(self.tests)}, got {name!r}.")
        t = self.tests[name]
        k = len(t["observed"])
        ax.bar(np.arange(k), t["observed"], width=0.9, color="C0", alpha=0.8)
        e = t["expected"]
        n = float(np.sum(t["observed"]))
        sd = np.sqrt(e * (1 - e / n))
        ax.fill_between(np.arange(k), e - 2 * sd, e + 2 * sd, step="mid", color="0.6", alpha=0.4)
        ax.plot(np.arange(k), e, "k--", lw=1, drawstyle="steps-mid")
        ax.set_xlabel(f"rank bin of {name} (L={self.num_draws})")
        ax.set_ylabel("datasets")
        ax.set_title(f"SBC {name}: p={t['pvalue']:.3f}")
        return ax


def _components(name: str, x: np.ndarray):
    """Scalar components of a site's value: label and flat index."""
    size = int(np.prod(x.shape))
    if size == 1:
        yield name, 0
        return
    for j, idx in enumerate(np.ndindex(*x.shape)):
        yield f"{name}[{','.join(str(i) for i in idx)}]", j


def _is_factory(obj) -> bool:
    from .models._base import AbstractModel

    if isinstance(obj, AbstractModel) or not callable(obj):
        return False
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return not required


def sbc(
    model,
    *,
    simulate: Callable,
    num_datasets: int = 100,
    fit_kwargs: Optional[dict] = None,
    key,
    params: Optional[Sequence[str]] = None,
    thin: int = 1,
    bins: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> SBCResult:
    """Simulation-based calibration of `bd.fit` (Talts et al. 2018, Algorithm 1).

    For `i = 1..num_datasets`: `truth, data = simulate(key_i)` draws the parameters from
    the prior and a data set given them; `bd.fit(model, data, key=..., **fit_kwargs)`
    fits it; the rank of each true scalar parameter among the posterior draws is
    recorded. Ranks are uniform on `{0, ..., L}` when the engine samples the exact
    posterior; the uniformity is tested per scalar component with a chi-square test.

    **Arguments:**

    - `model`: a `bd.models` model, a NumPyro program `fn(batch, query=None)`, or a
      zero-argument factory returning either (called once per data set).
    - `simulate`: `simulate(key) -> (truth, data)`: `truth` a dict `{site: value}` drawn
      from the model's prior, `data` a `bd.TimeSeries` drawn given `truth`. The prior
      must not depend on the data (SBC's assumption).
    - `num_datasets`: number of simulated data sets (Talts et al. use 1000; 100 detects
      gross miscalibration).
    - `fit_kwargs`: keyword arguments of `bd.fit` (default `method="nuts"`); progress
      bars and health warnings are off unless given.
    - `key`: a JAX PRNG key.
    - `params`: the sites to rank (default every key of `truth`).
    - `thin`: keep every `thin`-th posterior draw (reduces autocorrelation, which
      otherwise makes even exact samplers look non-uniform).
    - `bins`: bins of the uniformity test (see `rank_uniformity`).
    - `progress`: optional callback `progress(i, num_datasets)` after each fit.

    **Returns:** an `SBCResult`.
    """
    import time

    from .inference import fit

    num_datasets = check_int("sbc.num_datasets", num_datasets, 2)
    thin = check_int("sbc.thin", thin, 1)
    if not callable(simulate):
        raise TypeError(f"sbc: simulate must be a function simulate(key) -> (truth, data), got {type(simulate).__name__}.")
    if fit_kwargs is not None and not isinstance(fit_kwargs, dict):
        raise TypeError(f"sbc: fit_kwargs must be a dict of bd.fit options, got {type(fit_kwargs).__name__}.")
    kwargs = {"method": "nuts", "progress_bar": False, "warn": False, **(fit_kwargs or {})}
    if "key" in kwargs:
        raise ValueError("sbc: fit_kwargs must not contain 'key'; sbc derives one per data set from key.")
    factory = _is_factory(model)
    if key is None:
        raise ValueError("sbc: key is required, e.g. key=jax.random.key(0).")

    t0 = time.perf_counter()
    ranks: dict = {}
    truths: dict = {}
    num_draws = None
    for i in range(num_datasets):
        k_sim, k_fit = jax.random.split(jax.random.fold_in(key, i))
        out = simulate(k_sim)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict)):
            raise TypeError("sbc: simulate(key) must return a tuple (truth: dict, data: TimeSeries).")
        truth, data = out
        names = list(params) if params is not None else list(truth)
        m = model() if factory else model
        post = fit(m, data, key=k_fit, **kwargs)
        for name in names:
            if name not in post.samples:
                raise ValueError(
                    f"sbc: parameter {name!r} is not a latent site of the fitted model; its sites "
                    f"are {sorted(post.samples)}."
                )
            if name not in truth:
                raise ValueError(f"sbc: simulate's truth has no value for {name!r}.")
            draws = np.asarray(post.samples[name])
            draws = draws.reshape((-1,) + draws.shape[2:])[::thin]
            true = np.asarray(truth[name], dtype=draws.dtype)
            if true.shape != draws.shape[1:]:
                raise ValueError(
                    f"sbc: truth[{name!r}] has shape {true.shape} but the site's draws have "
                    f"shape {draws.shape[1:]}."
                )
            if num_draws is None:
                num_draws = draws.shape[0]
            elif draws.shape[0] != num_draws:
                raise ValueError("sbc: every fit must return the same number of draws.")
            r = np.sum(draws < true[None], axis=0)
            ranks.setdefault(name, []).append(r)
            truths.setdefault(name, []).append(true)
        if progress is not None:
            progress(i + 1, num_datasets)
    ranks = {k: np.stack(v).astype(int) for k, v in ranks.items()}
    truths = {k: np.stack(v) for k, v in truths.items()}
    tests = {}
    for name, r in ranks.items():
        for label, j in _components(name, r[0]):
            tests[label] = rank_uniformity(r.reshape(r.shape[0], -1)[:, j], num_draws, bins=bins)
    return SBCResult(
        ranks=ranks, num_draws=int(num_draws), truths=truths, tests=tests,
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------- predictive calibration
def coverage_curve(pred, truth, levels: Sequence[float] = DEFAULT_LEVELS):
    """Nominal levels and observed coverage of the equal-tailed intervals:
    `(levels, observed)` (a calibrated predictive lies on the diagonal)."""
    from . import metrics

    levels = np.asarray(levels, dtype=float)
    if levels.ndim != 1 or levels.size == 0 or not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"coverage_curve: levels must be values in (0, 1), got {levels.tolist()}.")
    return metrics.calibration_curve(pred, truth, levels)


def pit_histogram(pit_values, bins: int = 10):
    """Counts of PIT values in `bins` equal bins of [0, 1] and the count a uniform PIT
    would give per bin: `(edges, counts, expected)`."""
    u = np.asarray(pit_values, dtype=float).ravel()
    bins = check_int("pit_histogram.bins", bins, 1)
    if u.size == 0 or np.any(~np.isfinite(u)) or np.any((u < 0) | (u > 1)):
        raise ValueError("pit_histogram: pit_values must be a non-empty array of values in [0, 1].")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.histogram(u, bins=edges)[0]
    return edges, counts, u.size / bins


def calibration_summary(pred, truth, levels: Sequence[float] = DEFAULT_LEVELS, *, pit_bins: int = 10) -> dict:
    """Every calibration number of a `Prediction` against the truth, in one dict:
    `levels`, `coverage` (observed per level), `interval_score` and `width` per level,
    `crps`, `rmse`, `pit` (values), `pit_counts` (`pit_bins` bins), `pit_ks_pvalue`
    (KS test of PIT uniformity; PIT values of discrete draws are approximate) and `n`
    (scored values)."""
    from scipy import stats

    from . import metrics

    levels, observed = coverage_curve(pred, truth, levels)
    u = metrics.pit(pred, truth)
    # Randomised PIT (Czado, Gneiting & Held 2009): spread each value over the gap of one
    # draw so that a finite number of draws still gives a continuous uniform under the null.
    s = pred.num_samples
    u_rand = np.clip(u + np.random.default_rng(0).uniform(0, 1.0 / s, size=u.shape), 0, 1)
    return {
        "levels": levels,
        "coverage": observed,
        "interval_score": np.array([metrics.interval_score(pred, truth, float(l)) for l in levels]),
        "width": np.array([metrics.interval_width(pred, truth, float(l)) for l in levels]),
        "crps": metrics.crps(pred, truth),
        "rmse": metrics.rmse(pred, truth),
        "pit": u,
        "pit_counts": pit_histogram(u_rand, pit_bins)[1],
        "pit_ks_pvalue": float(stats.kstest(u_rand, "uniform").pvalue),
        "n": int(u.size),
    }
