# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Bayesian ODEs on the hare–lynx cycle
#
# Every ecology course fits the Lotka–Volterra equations to the Hudson's Bay Company pelt
# records of 1900–1920. Here we do it the Bayesian way and ask the question a forecaster
# cares about: **if we had stopped in 1915, how well would we have predicted 1916–1920?**
#
# 1. a *mechanistic* ODE (Lotka–Volterra, four rates with priors), fitted by NUTS;
# 2. a *Bayesian neural ODE* (an MLP vector field with priors on its weights), fitted by
#    variational inference (SVI) and by NUTS.
#
# Each fit ends in a posterior predictive distribution with credible bands.
#
# **What you will learn:**
#
# 1. how to write a mechanistic ODE with priors (`bd.models.ODE`) and a Bayesian neural
#    ODE (`bd.models.BayesianNeuralODE`), and fit both with one verb, `bd.fit`;
# 2. how to check a sampler with ArviZ (`post.to_arviz()`, `az.summary`, `az.plot_trace`,
#    `az.plot_pair`);
# 3. how to score held-out years (90% coverage, CRPS) from a posterior predictive;
# 4. how to answer "mechanistic or neural?" with `az.compare` (PSIS-LOO).
#
# The committed notebook runs in full mode (sizes in the first code cell);
# `BAYESDE_FAST=1` runs everything in seconds with tiny sizes.

# %%
import os

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist

import bayesde as bd

FAST = os.environ.get("BAYESDE_FAST", "") not in ("", "0")
# full mode: 2 chains × (250 warm-up + 250 draws) for the mechanistic NUTS fit,
# 2 chains × (120 + 120) for the neural one (tree depth ≤ 6), 800 SVI steps
SIZES = dict(num_warmup=40, num_samples=40, num_chains=1) if FAST else dict(num_warmup=250, num_samples=250, num_chains=2)
NEURAL_SIZES = dict(num_warmup=40, num_samples=40) if FAST else dict(num_warmup=120, num_samples=120)
SVI_STEPS = 100 if FAST else 800

# %% [markdown]
# ## The data
# Thousands of pelts per year; `t` counts years since 1900. We keep 1916–1920 aside.

# %%
data = bd.datasets.load("hare_lynx")
hist, future = data.split(at=15.0)
print(data)
print(bd.datasets.card("hare_lynx").splitlines()[0])

# %% [markdown]
# ## 1. The mechanistic model
# `dH/dt = (α − β L) H`, `dL/dt = (−γ + δ H) L`, with LogNormal priors on the rates, a
# LogNormal initial state around the first counts and multiplicative (LogNormal)
# measurement noise. NUTS samples all seven unknowns.

# %%
priors = {
    "alpha": dist.LogNormal(np.log(0.5), 0.5),
    "beta": dist.LogNormal(np.log(0.025), 0.5),
    "gamma": dist.LogNormal(np.log(0.8), 0.5),
    "delta": dist.LogNormal(np.log(0.025), 0.5),
}
lv = bd.models.ODE(bd.models.lotka_volterra_field, priors, observation="lognormal")
post_lv = bd.fit(lv, hist, method="nuts", key=jax.random.key(0), progress_bar=False, **SIZES)
print(post_lv.summary().round(3))
print(post_lv.diagnostics())

# %% [markdown]
# ### Did the sampler work?
# `post.to_arviz()` is an ArviZ `InferenceData` (posterior, sample_stats,
# posterior_predictive, log_likelihood, observed_data). The trace plot should show the
# chains overlapping like "hairy caterpillars"; the pair plot shows the posterior
# correlations (the predation rate `beta` and the prey growth `alpha` move together).

# %%
idata_lv = post_lv.to_arviz()
RATES = ["alpha", "beta", "gamma", "delta"]
az.plot_trace(idata_lv, var_names=RATES, figsize=(10, 7))
plt.tight_layout()
plt.show()

# %%
az.plot_pair(idata_lv, var_names=RATES, kind="scatter", divergences=True,
             marginals=True, scatter_kwargs=dict(alpha=0.3), figsize=(7, 7))
plt.show()

# %% [markdown]
# The posterior predictive on a quarter-year grid up to 1925 (it contains the held-out
# years, so one predictive serves the plot and the score): coverage of the 90% interval
# on the five held-out years, and CRPS (lower is better).

# %%
grid = np.arange(0.0, 25.01, 0.25)
held_idx = np.searchsorted(grid, future.ts[0])


def held_out(pred):
    return bd.Prediction(pred.samples[:, :, held_idx], future.ts, names=pred.names)


pred_lv = post_lv.predict(grid, key=jax.random.key(1))
print(f"mechanistic: 90% coverage {bd.metrics.coverage(held_out(pred_lv), future, 0.9):.2f}, "
      f"CRPS {bd.metrics.crps(held_out(pred_lv), future):.2f}")

# %% [markdown]
# ## 2. A Bayesian neural ODE
# No mechanism, just an MLP vector field on the (log, standardised) state with Normal
# priors on its weights. Variational inference is fast; NUTS is exact but slower.

# %%
neural = bd.models.BayesianNeuralODE(state_dim=2, width=8, depth=1, observation="lognormal")
post_svi = bd.fit(neural, hist, method="svi", num_steps=SVI_STEPS, key=jax.random.key(2), progress_bar=False)
post_nuts = bd.fit(neural, hist, method="nuts", num_chains=1 if FAST else 2, max_tree_depth=5 if FAST else 6,
                   key=jax.random.key(3), progress_bar=False, **NEURAL_SIZES)

preds = {
    "mechanistic (NUTS)": pred_lv,
    "neural (SVI)": post_svi.predict(grid, key=jax.random.key(4)),
    "neural (NUTS)": post_nuts.predict(grid, key=jax.random.key(4)),
}
scores = {}
for name, pred in preds.items():
    held = held_out(pred)
    scores[name] = (bd.metrics.coverage(held, future, 0.9), bd.metrics.crps(held, future))
    print(f"{name:20s} 90% coverage {scores[name][0]:.2f}   CRPS {scores[name][1]:.2f}")

# %% [markdown]
# ## Posterior predictive bands
# Points are the data (open circles: held out), lines the predictive median, bands the
# 50% and 90% intervals.

# %%
fig, axes = plt.subplots(2, 3, figsize=(13, 6), sharex=True)
for col, (name, pred) in enumerate(preds.items()):
    q = np.asarray(pred.quantiles([0.05, 0.25, 0.5, 0.75, 0.95]))
    for row, label in enumerate(data.names):
        ax = axes[row, col]
        ax.fill_between(1900 + grid, q[0, 0, :, row], q[4, 0, :, row], alpha=0.2, color="C0")
        ax.fill_between(1900 + grid, q[1, 0, :, row], q[3, 0, :, row], alpha=0.35, color="C0")
        ax.plot(1900 + grid, q[2, 0, :, row], color="C0")
        ax.plot(1900 + hist.ts[0], hist.ys[0, :, row], "ko", ms=3)
        ax.plot(1900 + future.ts[0], future.ys[0, :, row], "o", mfc="none", mec="k", ms=4)
        ax.axvline(1915.5, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{name}: {label}", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Mechanistic or neural? `az.compare`
# The held-out score above uses only five years. PSIS-LOO (`az.loo`) estimates the
# expected log predictive density of a new year from *all* sixteen training years,
# using each fit's pointwise log-likelihood; `az.compare` ranks the models by it
# (`elpd_loo`: higher is better; `elpd_diff` and `dse` say by how much and how sure).
# Both fits here were sampled by NUTS on the same data with the same likelihood, so
# their ELPDs are comparable. `warning=True` means some Pareto `k` is above the
# reliability threshold, i.e. the estimate is unreliable for some years.

# %%
idata_neural = post_nuts.to_arviz()
comparison = az.compare({"mechanistic (NUTS)": idata_lv, "neural (NUTS)": idata_neural})
print(comparison[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight", "warning"]].round(2))
az.plot_compare(comparison, figsize=(7, 2.5))
plt.show()

# %% [markdown]
# ## What it showed
# The numbers this notebook printed, in one place:

# %%
for name, (cov, crps) in scores.items():
    print(f"{name:20s} held-out 1916–1920: 90% coverage {cov:.2f}, CRPS {crps:.2f}")
print("PSIS-LOO preference:", comparison.index[0])
assert all(np.isfinite(s[1]) for s in scores.values())

# %% [markdown]
# In the full-mode run committed with this notebook (sizes in the first code cell):
#
# - **The mechanistic sampler is healthy.** No divergences, R-hat ≤ 1.014 and bulk ESS
#   ≥ 179 from 500 draws; the trace plots overlap and the pair plot shows the
#   Lotka–Volterra rates are strongly correlated (`alpha` with `beta`, `gamma` with
#   `delta`), which is why the rates are hard to pin down one at a time.
# - **The mechanistic model wins the held-out years.** CRPS 3.04 against 14.03 (neural
#   SVI) and 12.10 (neural NUTS). Its bands are narrow and follow the cycle into
#   1916–1920, but its 90% intervals cover only 0.60 of the ten held-out counts: sharp
#   and slightly overconfident.
# - **The neural ODE has not learned the cycle from 16 points.** Its predictive median is
#   nearly flat and its bands are wide and widen after 1915, so it covers 1.00 (SVI) and
#   0.90 (NUTS) of the held-out counts with much worse CRPS. The neural NUTS fit is
#   also harder to sample (2 of 240 transitions diverged with this short run).
# - **`az.compare` gives the same answer from the training years alone.** PSIS-LOO
#   prefers the mechanistic model by `elpd_diff` ≈ 37 with `dse` ≈ 4.7 (about eight
#   standard errors) and gives it all the stacking weight; the neural fit's `warning`
#   flags Pareto `k` values above the reliability threshold (0.58 for 240 draws) for
#   some years, so its LOO estimate is itself rough.
#
# With 16 noisy yearly points, the right mechanism beats a flexible one. Its overconfidence
# has a cause a model can take in: the residuals of a cycle fitted by an ODE are correlated
# from year to year, which independent noise cannot say. `bd.models.ODE(...,
# discrepancy="ou")` adds an Ornstein–Uhlenbeck discrepancy to the path (integrated out, two
# more parameters); at the demo's sizes it covered all ten held-out counts with a CRPS about
# 40% lower, on three keys (`docs/calibration.md`), but it did not help on
# simulated predator–prey data, so it is an option, not the default. A hybrid model
# (`BayesianNeuralODE(known=...)`) that keeps the Lotka–Volterra terms and learns a
# correction is the natural next model to compare.
