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
# 1968–1969?** (the 1960s hold most of the gaps, including the longest one in 1964) and compare the stable SDE families of Oh, Lim & Kim (2024) on held-out
# CRPS. Set `BAYESDE_FAST=1` to run everything in seconds with tiny sizes.

# %%
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import bayesde as bd

FAST = os.environ.get("BAYESDE_FAST", "") not in ("", "0")
START = 1962.0 if FAST else 1958.0  # first year used for training
CUT = 1968.0  # forecast origin
WINDOW = 2.0  # years per training window
STEPS = 40 if FAST else 1500
SIZES = dict(latent_dim=4, context_dim=8, hidden=16) if FAST else dict(latent_dim=4, context_dim=16, hidden=32)

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
# ## Many windows of one series
# A latent SDE learns dynamics from many sample paths. With a single long record, a
# standard trick is to cut it into overlapping windows (here two years, starting every
# quarter): each window is one series of a `TimeSeries`, with its own irregular times
# (the windows are padded to a common length automatically).

# %%
frame = co2.to_pandas()
starts = np.arange(START, CUT - WINDOW + 1e-9, 0.25 if not FAST else 0.5)
windows = []
for s in starts:
    w = frame[(frame.time >= s) & (frame.time < s + WINDOW)].copy()
    w["series"] = f"{s:.2f}"
    windows.append(w)
train = bd.TimeSeries.from_pandas(pd.concat(windows), time="time", series="series", values=["co2"])
history = bd.datasets.load("co2", start=CUT - WINDOW, end=CUT - 1e-6)  # the last window
future = bd.datasets.load("co2", start=CUT, end=CUT + 2.0)
print(train)

# %% [markdown]
# ## Fit
# `LatentSDE` standardises the data and time, encodes each window with a GRU run
# backwards, and fits the ELBO (likelihood − initial-state KL − path KL) by SVI. The
# SDE is stepped on each window's own observation times (`substeps` Euler steps
# between consecutive observations), with Brownian increments from explicit keys.

# %%
model = bd.models.LatentSDE(**SIZES, encoder="gru", family="neural", substeps=1)
post = bd.fit(model, train, method="svi", num_steps=STEPS, learning_rate=1e-2,
              key=jax.random.key(0), progress_bar=False, warn=False)
print(f"negative ELBO: first {post.loss[0]:.4g}, last {post.loss[-1]:.4g}")

# %% [markdown]
# ## Forecast with credible bands
# `predict` conditions on the last window (the encoder reads it: the model is
# amortised) and continues with the prior SDE from the last observed week to the
# query times.

# %%
pred = post.predict(future.ts, key=jax.random.key(1), num_samples=100 if FAST else 300, data=history)
print(f"90% coverage {bd.metrics.coverage(pred, future, level=0.9):.2f}, "
      f"CRPS {bd.metrics.crps(pred, future):.3f} ppmv")

fig, ax = plt.subplots(figsize=(8, 3.5))
bd.plot.forecast(ax, pred, history, truth=future)
ax.set_xlabel("year")
ax.set_ylabel("CO2 (ppmv)")
ax.set_title("Latent SDE forecast of Mauna Loa CO2 from the end of 1967")
fig.tight_layout()

# %% [markdown]
# ## The stable SDE families
# Oh, Lim & Kim (2024) constrain the diffusion for robustness: Langevin-type
# `dz = γ(z) dt + σ(t) dW`, linear-noise `dz = γ(z) dt + σ(t) z dW` and geometric
# `dz / z = γ(z) dt + σ(t) dW`. Same data, same budget, compared on held-out CRPS
# (lower is better).

# %%
families = ["neural", "langevin"] if FAST else ["neural", "langevin", "linear-noise", "geometric"]
scores = {"neural": bd.metrics.crps(pred, future)}
for i, family in enumerate(families[1:]):
    p = bd.fit(bd.models.LatentSDE(**SIZES, family=family, substeps=1), train, method="svi",
               num_steps=STEPS, learning_rate=1e-2, key=jax.random.key(0), progress_bar=False, warn=False)
    fp = p.predict(future.ts, key=jax.random.key(1), num_samples=100 if FAST else 300, data=history)
    scores[family] = bd.metrics.crps(fp, future)
for family, score in scores.items():
    print(f"{family:>13s}: CRPS {score:.3f} ppmv")

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(list(scores), list(scores.values()), color="tab:blue")
ax.set_ylabel("held-out CRPS (ppmv)")
fig.tight_layout()

# %% [markdown]
# ## What to take away
# - Irregular times and missing values need no imputation: the encoder reads each
#   observation at its time and the solver steps between them.
# - The forecast's spread comes from the learned prior SDE; check it on held-out data
#   (coverage, CRPS) before trusting it, since latent SDEs are known to learn too
#   little diffusion with short training.
# - The stable families are one argument away (`family=...`); which one wins depends on
#   the data and the budget.
