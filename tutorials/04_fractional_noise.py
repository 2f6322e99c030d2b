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
# # Fractional noise: SDEs with memory
#
# A Brownian SDE has independent increments: whatever the drift does, the noise forgets
# its past at once. Many real series do not: river flows, volatility, network traffic
# show *long memory* (wet years follow wet years) or *anti-persistence* (rough paths
# whose increments tend to reverse). Fractional Brownian motion with Hurst index `H`
# captures both: increments are positively correlated for `H > ½`, negatively for
# `H < ½`, and independent only at `H = ½`.
#
# `bd.models.FractionalSDE` (Daems et al., ICLR 2024) drives a neural SDE with a
# *Markov approximation* of fBM (a weighted sum of `K` Ornstein–Uhlenbeck processes,
# `bd.solvers.MarkovFBM`) and learns `H` with the rest of the model by variational
# inference.
#
# **What you will learn:**
#
# 1. what Brownian noise misses: the autocorrelation of increments for `H = 0.3, 0.5, 0.7`;
# 2. how to learn `H` with its uncertainty (`learn_hurst=True`) on data where the truth is
#    known, and how to read the posterior;
# 3. how to compare forecasts with a Brownian latent SDE (the same model at `H = ½`) by
#    held-out coverage and CRPS;
# 4. how to fit a real long-memory series (the Nile) the same way.
#
# The committed notebook runs in full mode (32 series × 200 times, 300 SVI steps);
# `BAYESDE_FAST=1` runs it in seconds with tiny sizes.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

import bayesde as bd

FAST = os.environ.get("BAYESDE_FAST", "") not in ("", "0")
N_SERIES, N_TIMES, STEPS = (6, 40, 30) if FAST else (32, 200, 300)

# %% [markdown]
# ## 1. Memory in the increments
#
# Fractional Ornstein–Uhlenbeck paths `dX = θ(μ − X) dt + σ dB^H` from *exact* fBM
# (Davies–Harte). The lag-1 autocorrelation of the increments is `2^{2H−1} − 1`
# for fBM: negative for rough `H = 0.3`, zero for Brownian `H = 0.5`, positive for
# persistent `H = 0.7`. A Brownian SDE can only produce the middle one.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for i, h in enumerate((0.3, 0.5, 0.7)):
    sim = bd.datasets.fractional_ou(hurst=h, n_series=64, n_times=200, key=jax.random.key(i))
    dx = np.diff(sim.ys[..., 0], axis=1)
    dx = dx - dx.mean()
    acf = [np.mean(dx[:, : -k or None] * dx[:, k:]) / np.mean(dx * dx) for k in range(6)]
    axes[0].plot(sim.ts[0], sim.ys[0, :, 0], lw=0.8, label=f"H = {h}")
    axes[1].plot(range(6), acf, "o-", label=f"H = {h} (fBM lag 1: {2 ** (2 * h - 1) - 1:+.2f})")
axes[0].set(title="one fOU path per H", xlabel="t")
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set(title="autocorrelation of increments", xlabel="lag")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Learning H
#
# Rough data (`H = 0.3`), 80 % of the window for training. `learn_hurst=True` makes `H`
# a sample site with a Uniform(0, 1) prior, so SVI returns a posterior over it.

# %%
data = bd.datasets.fractional_ou(hurst=0.3, n_series=N_SERIES, n_times=N_TIMES, key=jax.random.key(10))
train, test = data.split(8.0)

frac = bd.models.FractionalSDE(latent_dim=1, num_ou=5, learn_hurst=True)
post = bd.fit(frac, train, method="svi", num_steps=STEPS, key=jax.random.key(1), progress_bar=False, warn=False)
h = np.asarray(post.samples["hurst"])
print(f"true H = {data.truth['hurst']}, posterior mean {h.mean():.3f}, "
      f"90% interval [{np.quantile(h, 0.05):.3f}, {np.quantile(h, 0.95):.3f}]")

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(post.loss, lw=0.8)
axes[0].set(xlabel="SVI step", ylabel="negative ELBO", title="training loss")
axes[1].hist(h.ravel(), bins=30, color="C0", alpha=0.7)
axes[1].axvline(data.truth["hurst"], color="k", ls="--", label="true H")
axes[1].axvline(0.5, color="C3", ls=":", label="Brownian (H = ½)")
axes[1].set(xlabel="H", title="posterior draws of H")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The interval is the AutoNormal guide's: variational posteriors are typically too
# narrow. The posterior paths are *guided*: a backward filter tells every step what all
# later observations say about the hidden OU components, which keeps the ELBO from
# trading `H` for an easier posterior (on 32 × 200 fOU paths, 300 steps: true 0.3 / 0.5
# → 0.32 / 0.52). For strongly persistent data (`H ≳ 0.7`) the Markov approximation
# with `K = 5` itself points at a smaller `H` (about 0.65 for 0.7); `num_ou=10,
# gamma_max=40` recovers 0.69 (`tests/test_fractional_sde.py`, `tests/test_fbm.py`).
#
# ## 3. Forecasts against a Brownian latent SDE
#
# The same model with `H` fixed at ½ is a Brownian latent SDE (Li et al. 2020 with a
# guided posterior). Both forecast the held-out 20 % of the window.

# %%
brown = bd.models.FractionalSDE(latent_dim=1, num_ou=5, learn_hurst=False, hurst=0.5)
post_b = bd.fit(brown, train, method="svi", num_steps=STEPS, key=jax.random.key(1), progress_bar=False, warn=False)

rows = {}
for name, p in (("fractional", post), ("brownian", post_b)):
    pred = p.predict(test.ts, key=jax.random.key(2), num_samples=100)
    rows[name] = pred
    print(f"{name:>10}: 90% coverage {bd.metrics.coverage(pred, test, 0.9):.2f}, "
          f"CRPS {bd.metrics.crps(pred, test):.3f}")

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
i = 0
ax.plot(data.ts[i], data.ys[i, :, 0], "k.", ms=3, label="data")
for (name, pred), c in zip(rows.items(), ("C0", "C1")):
    lo, hi = (np.asarray(q)[i, :, 0] for q in pred.interval(0.9))
    ax.fill_between(test.ts[i], lo, hi, color=c, alpha=0.3, label=f"{name} 90%")
ax.axvline(8.0, color="k", lw=0.5)
ax.set(xlabel="t", title="held-out forecasts, series 0")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## A real long-memory series
#
# The Nile's annual flow (1871–1970) is where Hurst found long memory. It ships with
# bayesde (`bd.datasets.load("nile")`, card below); fitting it works exactly as above.

# %%
nile = bd.datasets.load("nile")
print(nile)
print(bd.datasets.card("nile").splitlines()[0])
if not FAST:
    post_nile = bd.fit(bd.models.FractionalSDE(), nile, method="svi", num_steps=STEPS,
                       key=jax.random.key(3), progress_bar=False, warn=False)
    hn = np.asarray(post_nile.samples["hurst"])
    print(f"Nile: H = {hn.mean():.2f} [{np.quantile(hn, 0.05):.2f}, {np.quantile(hn, 0.95):.2f}]")

# %% [markdown]
# ## What it showed
#
# The numbers this notebook printed, in one place:

# %%
print(f"learned H: {h.mean():.3f}, 90% interval [{np.quantile(h, 0.05):.3f}, {np.quantile(h, 0.95):.3f}]"
      f" (truth {data.truth['hurst']})")
for name, pred in rows.items():
    print(f"{name:>10}: 90% coverage {bd.metrics.coverage(pred, test, 0.9):.2f}, "
          f"mean 90% width {bd.metrics.interval_width(pred, test, 0.9):.2f}, "
          f"CRPS {bd.metrics.crps(pred, test):.3f}")

# %% [markdown]
# In the full-mode run committed with this notebook (32 series × 200 times, 300 SVI steps):
#
# - **Memory is visible in the increments.** The lag-1 autocorrelation of the simulated
#   increments is about −0.23 for `H = 0.3`, about 0 for `H = 0.5` and about +0.25 for
#   `H = 0.7` (the fBM values −0.24 / 0 / +0.32, damped by the OU mean reversion); a
#   Brownian SDE can only produce the middle curve.
# - **`H` is learned.** The posterior mean is 0.323 for a true 0.3, far from the Brownian
#   ½; but the 90% interval [0.314, 0.333] misses the truth: the variational
#   posterior is too narrow, as warned above. Read it as a point estimate with a
#   too-optimistic error bar.
# - **On this short horizon the forecasts barely differ.** Fractional and Brownian
#   models cover 0.87 and 0.86 of the held-out values with their 90% intervals (slightly
#   below 0.9), with mean widths 2.17 and 2.11 and CRPS 0.395 and 0.397. Memory matters
#   for what the model says about the noise (`H`), much less for a two-time-unit
#   forecast of a mean-reverting process.
# - **The Nile is not a one-liner.** The default `FractionalSDE` with 300 steps puts the
#   Nile's `H` at about 0.20 [0.16, 0.25], i.e. rough, not the long memory (`H ≈ 0.7–0.9`)
#   Hurst found. A likely reason (not tested here): with 100 yearly values and a learned
#   drift, the drift absorbs the slow swings and leaves the noise with the year-to-year
#   roughness. Treat it as a starting point, not a replication of Hurst.
