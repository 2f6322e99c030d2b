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
# Set `BAYESDE_FAST=1` to run everything in seconds with tiny sizes.

# %%
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist

import bayesde as bd

FAST = os.environ.get("BAYESDE_FAST", "") not in ("", "0")
SIZES = dict(num_warmup=40, num_samples=40) if FAST else dict(num_warmup=500, num_samples=500)
SVI_STEPS = 100 if FAST else 3000

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
post_lv = bd.fit(lv, hist, method="nuts", num_chains=2, key=jax.random.key(0), **SIZES)
print(post_lv.summary().round(3))
print(post_lv.diagnostics())

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
print("mechanistic: 90% coverage", bd.metrics.coverage(held_out(pred_lv), future, 0.9),
      "CRPS", round(bd.metrics.crps(held_out(pred_lv), future), 2))

# %% [markdown]
# ## 2. A Bayesian neural ODE
# No mechanism, just an MLP vector field on the (log, standardised) state with Normal
# priors on its weights. Variational inference is fast; NUTS is exact but slower.

# %%
neural = bd.models.BayesianNeuralODE(dim=2, width=8, depth=1, observation="lognormal")
post_svi = bd.fit(neural, hist, method="svi", num_steps=SVI_STEPS, key=jax.random.key(2))
post_nuts = bd.fit(neural, hist, method="nuts", max_tree_depth=5 if FAST else 8, key=jax.random.key(3), **SIZES)

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
fig.savefig("01_bayesian_ode.png", dpi=80)

# %% [markdown]
# The mechanistic model extrapolates the cycle because the mechanism is right; the
# neural ODE has to learn the cycle from 16 points and its bands widen honestly once it
# leaves the data. A hybrid model (`BayesianNeuralODE(known=...)`) sits in between.

# %%
assert all(np.isfinite(s[1]) for s in scores.values())
