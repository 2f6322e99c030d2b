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
# # Forecasting an irregular series with a latent SDE
#
# The weekly CO2 record from Mauna Loa has gaps: instrument and calibration outages
# left 59 weeks without a value, so after dropping them the observation times are
# irregular (gaps from one to 19 weeks). A **latent SDE** (Li et al. 2020) handles that
# natively: an encoder reads the observations backwards in time at whatever times they
# were taken, a posterior SDE tracks the history, and the *prior* SDE, learned from the
# same data, carries the state forward with its own noise. The spread of its sample
# paths is the forecast's uncertainty.
#
# We ask: **if we had stopped at the end of 1967, how well would we have forecast
# 1968–1969?** (the 1960s hold most of the gaps, including the longest one in 1964).
#
# **What you will learn:**
#
# 1. how a latent SDE learns from one long irregular record (it reads it in windows) and
#    how to tell it the time of year (`seasons`);
# 2. how to fit `bd.models.LatentSDE` by SVI and check the loss curve;
# 3. how to forecast with credible bands from the end of the record and score the
#    forecast on held-out weeks (90% coverage, interval width, CRPS);
# 4. how to swap in the stable SDE families of Oh, Lim & Kim (2024) with one argument
#    and compare them on held-out CRPS.
#
# The committed notebook runs in full mode (the sizes are set in the first code cell);
# `BAYESDE_FAST=1` runs everything in seconds with tiny sizes.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

import bayesde as bd

FAST = os.environ.get("BAYESDE_FAST", "") not in ("", "0")
START = 1962.0 if FAST else 1958.0  # first year used for training
CUT = 1968.0  # forecast origin
STEPS = 40 if FAST else 2000  # SVI steps per fit (2000 is the default, with early stopping)
SIZES = dict(latent_dim=4, context_dim=8, width=16) if FAST else dict(latent_dim=4, context_dim=16, width=32)

# %% [markdown]
# ## The data
# One series, `t` in decimal years. We keep 1968–1969 aside.

# %%
co2 = bd.datasets.load("co2", start=START, end=CUT + 2.0)
print(co2)
print(bd.datasets.card("co2").splitlines()[0])
gaps_weeks = np.diff(co2.ts[0]) * 365.25 / 7
print(f"gaps between observations: {gaps_weeks.min():.1f} to {gaps_weeks.max():.1f} weeks")

# %% [markdown]
# ## One record, read in windows
# A latent SDE learns dynamics from many sample paths, and here there is one record.
# `LatentSDE` cuts a series longer than `window` rows (64 by default) into windows of
# that many consecutive observations, each with its own encoder pass and initial state,
# at a new random offset every training step: every stretch of the record becomes a
# training path. Nothing to prepare: the record goes in as it is.

# %%
train = bd.datasets.load("co2", start=START, end=CUT - 1e-6)
future = bd.datasets.load("co2", start=CUT, end=CUT + 2.0)
recent = bd.datasets.load("co2", start=CUT - 2.0, end=CUT - 1e-6)  # the last two years, for the plot
print(train)

# %% [markdown]
# ## Fit
# `LatentSDE` standardises the data and time, encodes each window with a GRU run
# backwards, and fits the ELBO (likelihood − initial-state KL − path KL) by SVI. The
# SDE is stepped on each window's own observation times (`substeps` Euler steps
# between consecutive observations), with Brownian increments from explicit keys.
#
# CO2 rises and falls with the northern growing season. A forecast two years ahead
# cannot keep that cycle's phase by integrating its own dynamics: it needs to know the
# time of year. `seasons=(1.0,)` gives the prior drift the phase of a cycle of one time
# unit (here a year: `t` is in decimal years). With a date column
# (`TimeSeries.from_pandas` on dates, or `bayesde fit` on a CSV with dates) the default
# `seasons="auto"` finds the yearly cycle itself.

# %%
model = bd.models.LatentSDE(**SIZES, encoder="gru", family="neural", substeps=1, seasons=(1.0,))
post = bd.fit(model, train, method="svi", num_steps=STEPS, learning_rate=1e-2,
              key=jax.random.key(0), progress_bar=False, warn=False)
print(f"negative ELBO: first {post.loss[0]:.4g}, last {post.loss[-1]:.4g}")

fig, ax = plt.subplots(figsize=(6, 2.5))
ax.plot(post.loss, lw=0.8)
ax.set(xlabel="SVI step", ylabel="negative ELBO", yscale="symlog", title="training loss (neural family)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Forecast with credible bands
# `predict` conditions on the record (the encoder reads its last window: the model is
# amortised) and continues with the prior SDE from the last observed week to the
# query times.

# %%
pred = post.predict(future.ts, key=jax.random.key(1), num_samples=100 if FAST else 200, data=train)
print(f"90% coverage {bd.metrics.coverage(pred, future, level=0.9):.2f}, "
      f"CRPS {bd.metrics.crps(pred, future):.3f} ppmv")

fig, ax = plt.subplots(figsize=(8, 3.5))
bd.plot.forecast(ax, pred, recent, truth=future)
ax.set_xlabel("year")
ax.set_ylabel("CO2 (ppmv)")
ax.set_title("Latent SDE forecast of Mauna Loa CO2 from the end of 1967")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The stable SDE families
# Oh, Lim & Kim (2024) constrain the diffusion for robustness: Langevin-type
# `dz = γ(z) dt + σ(t) dW`, linear-noise `dz = γ(z) dt + σ(t) z dW` and geometric
# `dz / z = γ(z) dt + σ(t) dW`. Same data, same budget, compared on held-out CRPS
# (lower is better).

# %%
families = ["neural", "langevin"] if FAST else ["neural", "langevin", "linear-noise", "geometric"]
scores = {"neural": bd.metrics.crps(pred, future)}
table = {"neural": (bd.metrics.coverage(pred, future, 0.9), bd.metrics.interval_width(pred, future, 0.9))}
for family in families[1:]:
    p = bd.fit(bd.models.LatentSDE(**SIZES, family=family, substeps=1, seasons=(1.0,)), train, method="svi",
               num_steps=STEPS, learning_rate=1e-2, key=jax.random.key(0), progress_bar=False, warn=False)
    fp = p.predict(future.ts, key=jax.random.key(1), num_samples=100 if FAST else 200, data=train)
    scores[family] = bd.metrics.crps(fp, future)
    table[family] = (bd.metrics.coverage(fp, future, 0.9), bd.metrics.interval_width(fp, future, 0.9))
for family, score in scores.items():
    cov, width = table[family]
    print(f"{family:>13s}: CRPS {score:.3f} ppmv, 90% coverage {cov:.2f}, mean 90% width {width:.2f} ppmv")

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(list(scores), list(scores.values()), color="tab:blue")
ax.set_ylabel("held-out CRPS (ppmv)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What it showed
#
# In the full-mode run committed with this notebook (the record 1958–1967, 457 weekly
# values, the default 2000 SVI steps per fit with early stopping, 200 forecast paths):
#
# - **Irregular times need no imputation.** The 1–19-week gaps went straight into the
#   `TimeSeries`; the encoder reads each observation at its time and the solver steps
#   between them.
# - **One record is enough when it is read in windows and the model knows the season.**
#   The forecast follows the seasonal cycle (about ±3 ppmv), but in this run it rises too
#   slowly and runs about 2 ppmv low in the second year: 90% coverage 0.52 of the held-out
#   weeks, mean 90% width 3.08 ppmv, CRPS 1.08 ppmv. The width was chosen by the fit
#   itself: the record's last sixteenth (about seven months) was kept out of training and
#   forecast from the rest, and the forecast's diffusion scale `κ` and discrepancy `ρ` were
#   fitted to those forecasts (`post.info.best_step` says which step's parameters forecast
#   them best and were kept). The run committed before this one (the same cells, before the training grid
#   was placed by time) covered 0.99 with a CRPS of 0.58 ppmv. An earlier version of this
#   tutorial cut the record into 17 overlapping windows by hand and had no season: its
#   forecast was a flat band (CRPS 2.11 ppmv, width 15.5 ppmv). Check coverage on
#   held-out data (`bd.backtest`) before trusting any band.
# - **One fit is one draw, and this one is unlucky.** Refitted with keys 0–4 and nothing
#   else changed (`python benchmarks/co2_keys.py`, `benchmarks/results/co2_keys_cpu.json`),
#   the neural family covers 0.99–1.00 of the held-out weeks with keys 1–4 (CRPS 0.27–0.54
#   ppmv; the median of the five fits 0.34): this notebook's key 0 is the one fit of five
#   that runs low. Every family has one such fit among the five keys: `langevin` with key 3
#   (coverage 0.58, CRPS 1.19 ppmv), `geometric` with key 4 (0.35, 1.72), `linear-noise`
#   with key 0 (0.85, 0.59). A version of this tutorial that stopped at 400 steps missed the
#   same way (CRPS 1.54 ppmv, coverage 0.82) where an earlier execution had scored 0.47.
#   Do not judge a model by one fit: rerun with another key, backtest (`bd.backtest`), or
#   fit several (`method="ensemble"`).
# - **The families differ, but this is no verdict.** In this run `langevin` scored best
#   (CRPS 0.40 ppmv, coverage 1.00, width 3.71 ppmv), then `geometric`, solved in log
#   coordinates with a diffusion floor and a bounded drift, 0.58 (coverage 1.00, width
#   5.11 ppmv), `linear-noise` 0.59 (coverage 0.85, width 2.50 ppmv) and `neural` 1.08.
#   The run before ranked them otherwise (`linear-noise` 0.27, `langevin` 0.42, `neural`
#   0.58, `geometric` 1.19, and with keys 1 and 2 the same geometric fit 0.66 and 0.58).
#   Over the five keys the medians are `neural` 0.34, `linear-noise` 0.37, `langevin` 0.53
#   and `geometric` 0.64 ppmv (mean coverage 0.90, 0.92, 0.90 and 0.86).
#   Which family wins depends on the data, the budget and the seed; rerun with another key,
#   and backtest, before choosing. (On the project's calibration panel of simulated
#   processes `langevin` is inside the 90% band on every process and the other families
#   on six of seven; `docs/calibration.md`.)
