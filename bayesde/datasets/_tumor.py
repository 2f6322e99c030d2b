"""The PK-PD lung-cancer tumour-growth simulator (Geng et al. 2017), as used by CRN,
TE-CDE and BNCDE, with informative irregular observation and true counterfactuals."""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from .._checks import check_int
from .._data import TimeSeries
from ._registry import register

__all__ = ["tumor_growth", "TumorSimulation", "TUMOR_PARAMS"]

#: Population parameters of the simulator (Geng et al. 2017; CRN, Bica et al. 2020).
TUMOR_PARAMS = {
    "K": float(np.pi * 30.0**3 / 6.0),  # carrying capacity: volume of a 30 cm sphere
    "alpha_rho_mean": (0.0398, 7.00e-5),
    "alpha_rho_sd": (0.168, 7.23e-3),
    "alpha_rho_corr": 0.87,
    "beta_c_mean": 0.028,
    "beta_c_sd": 0.0007,
    "noise_sd": 0.01,
    "radio_dose": 2.0,
    "chemo_dose": 5.0,
    "d_max": 13.0,
    "window": 15,
    # stage: (weight, mu, sigma, upper diameter bound in cm) for log-diameter ~ N(mu, sigma)
    "stages": {
        "I": (1432, 1.72, 4.70, 5.0),
        "II": (128, 1.96, 1.63, 13.0),
        "IIIA": (1306, 1.91, 9.40, 13.0),
        "IIIB": (7248, 2.76, 6.87, 13.0),
        "IV": (12840, 3.86, 8.82, 13.0),
    },
    "d_min": 0.3,
    "sequential_chemo_days": (27, 34, 41, 48, 55),
    "combined_days": (27, 41, 55),
}

_PLAN_NAMES = ("none", "chemo", "radio", "both", "factual", "sequential", "combined")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _volume(d):
    return np.pi * d**3 / 6.0


def _diameter(v):
    return (6.0 * v / np.pi) ** (1.0 / 3.0)


def _truncnorm(rng, mu, sd, lo, hi, size):
    from scipy.stats import truncnorm

    a, b = (lo - mu) / sd, (hi - mu) / sd
    return truncnorm.rvs(a, b, loc=mu, scale=sd, size=size, random_state=rng)


def _draw_patients(rng, n):
    p = TUMOR_PARAMS
    # (alpha, rho) bivariate normal, correlation 0.87, truncated to positive by rejection.
    m = np.asarray(p["alpha_rho_mean"])
    s = np.asarray(p["alpha_rho_sd"])
    c = p["alpha_rho_corr"]
    cov = np.array([[s[0] ** 2, c * s[0] * s[1]], [c * s[0] * s[1], s[1] ** 2]])
    ar = np.empty((n, 2))
    todo = np.arange(n)
    while todo.size:
        draw = rng.multivariate_normal(m, cov, size=todo.size)
        ok = np.all(draw > 0, axis=1)
        ar[todo[ok]] = draw[ok]
        todo = todo[~ok]
    alpha, rho = ar[:, 0], ar[:, 1]
    beta_c = _truncnorm(rng, p["beta_c_mean"], p["beta_c_sd"], 0.0, np.inf, n)
    ptype = rng.integers(1, 4, size=n)
    alpha = np.where(ptype == 1, alpha * 1.1, alpha)
    beta_c = np.where(ptype == 3, beta_c * 1.1, beta_c)
    beta = alpha / 10.0
    names = list(p["stages"])
    w = np.asarray([p["stages"][k][0] for k in names], dtype=float)
    stage = rng.choice(len(names), size=n, p=w / w.sum())
    d0 = np.empty(n)
    for k, name in enumerate(names):
        idx = np.flatnonzero(stage == k)
        if idx.size:
            _, mu, sd, hi = p["stages"][name]
            d0[idx] = np.exp(_truncnorm(rng, mu, sd, np.log(p["d_min"]), np.log(hi), idx.size))
    return {
        "alpha": alpha, "beta": beta, "rho": rho, "beta_c": beta_c,
        "type": ptype, "stage": stage, "v0": _volume(d0),
    }


def _step(v, c_prev, chemo, radio, par, e):
    """One day: `C_t = C_{t-1}/2 + 5 chemo_t`, then
    `V_{t+1} = V_t (1 + ρ log(K/V_t) − β_c C_t − (α d_t + β d_t²) + e_t)`."""
    p = TUMOR_PARAMS
    c = c_prev / 2.0 + p["chemo_dose"] * chemo
    d = p["radio_dose"] * radio
    growth = par["rho"] * np.log(p["K"] / v)
    v1 = v * (1.0 + growth - par["beta_c"] * c - (par["alpha"] * d + par["beta"] * d**2) + e)
    v1 = np.clip(v1, _volume(1e-2), p["K"])
    return v1, c


def _simulate(rng, par, n_days, gamma, gamma_obs, assignment):
    """Factual trajectories. Returns volumes `(N, n_days + 1)` (day 0..n_days), treatments
    `(N, n_days, 2)` (given on day t, acting over day t -> t+1), chemo concentrations,
    observation indicators `(N, n_days + 1)` and the daily noise `(N, n_days)`."""
    p = TUMOR_PARAMS
    n = par["v0"].shape[0]
    e = rng.normal(0.0, p["noise_sd"], size=(n, n_days))
    u_assign = rng.uniform(size=(n, n_days, 2))
    u_obs = rng.uniform(size=(n, n_days + 1))
    regimen = rng.integers(0, 2, size=n)  # 0 sequential, 1 combined
    v = np.empty((n, n_days + 1))
    conc = np.zeros((n, n_days + 1))  # conc[:, t] = C_{t-1}
    a = np.zeros((n, n_days, 2))
    obs = np.zeros((n, n_days + 1), dtype=bool)
    v[:, 0] = par["v0"]
    diam = np.empty((n, n_days + 1))
    for t in range(n_days + 1):
        diam[:, t] = _diameter(v[:, t])
        dbar = diam[:, max(0, t - p["window"] + 1): t + 1].mean(axis=1)
        p_obs = np.minimum(1.0, _sigmoid(gamma_obs / p["d_max"] * (dbar - p["d_max"] / 2)))
        obs[:, t] = (u_obs[:, t] < p_obs) | (t == 0)
        if t == n_days:
            break
        if assignment == "confounded":
            p_treat = _sigmoid(gamma / p["d_max"] * (dbar - p["d_max"] / 2))
            a[:, t] = u_assign[:, t] < p_treat[:, None]
        else:
            a[:, t] = _regimen_days(regimen, t)
        v[:, t + 1], conc[:, t + 1] = _step(v[:, t], conc[:, t], a[:, t, 0], a[:, t, 1], par, e[:, t])
    return v, a, conc, obs, e, regimen


def _regimen_days(regimen, t):
    p = TUMOR_PARAMS
    out = np.zeros((regimen.shape[0], 2))
    seq = t in p["sequential_chemo_days"]
    comb = t in p["combined_days"]
    out[:, 0] = np.where(regimen == 0, float(seq), float(comb))
    out[:, 1] = np.where(regimen == 0, 0.0, float(comb))
    return out


class TumorSimulation:
    """Result of `tumor_growth`: training series, test histories and the true outcomes of
    the test patients under any treatment plan.

    Conventions (all `TimeSeries` here): time in days; the outcome `volume` (cm³) at day
    `t`; `treatments[:, j] = (chemo, radio)` is the treatment given on the day *before*
    `ts[:, j]`, i.e. the one acting over the step that ends at `ts[:, j]` (zero at day 0).
    The static covariates are the one-hot patient type.

    - `train`: factual series of the training patients, days `0..n_days`, NaN where a day
      was not observed (informative sampling).
    - `test`: histories of the test patients up to each patient's cutoff day `t0`
      (`cutoff`, per patient; shorter histories are padded, see `TimeSeries.lengths`).
    - `horizon`: the number of days after the cutoff with known truth.
    - `plan(name)`: treatments `(n_test, horizon, 2)` over days `t0+1 .. t0+horizon`.
    - `counterfactual(plan)`: true outcomes under a plan (a name or an array) with the
      same noise as the factual world.
    - `factual`: the true factual outcomes at the horizon (with the factual treatments).
    - `truth`: patient parameters of train and test patients.
    """

    def __init__(self, train, test, factual, state, horizon, assignment, truth):
        self.train = train
        self.test = test
        self.factual = factual
        self._state = state
        self.horizon = horizon
        self.assignment = assignment
        self.truth = truth
        self.cutoff = state["cutoff"]

    @property
    def plan_names(self) -> tuple:
        base = ("none", "chemo", "radio", "both", "factual")
        return base + (("sequential", "combined") if self.assignment == "regimens" else ())

    def plan(self, name: str) -> np.ndarray:
        """Treatments `(n_test, horizon, 2)` (chemo, radio) of a named plan over the days
        after each test patient's cutoff: `"none"`, `"chemo"` (chemo every day),
        `"radio"` (2 Gy every day), `"both"`, `"factual"` (what the patient actually got)
        and, for `assignment="regimens"`, `"sequential"` / `"combined"`."""
        n, h = self.test.n_series, self.horizon
        fixed = {"none": (0.0, 0.0), "chemo": (1.0, 0.0), "radio": (0.0, 1.0), "both": (1.0, 1.0)}
        if name in fixed:
            return np.broadcast_to(np.asarray(fixed[name]), (n, h, 2)).copy()
        if name == "factual":
            return self.factual.treatments.copy()
        if name in ("sequential", "combined") and self.assignment == "regimens":
            reg = np.full(n, 0 if name == "sequential" else 1)
            out = np.empty((n, h, 2))
            for k in range(h):
                for i in range(n):
                    out[i, k] = _regimen_days(reg[i : i + 1], int(self.cutoff[i]) + k)[0]
            return out
        raise ValueError(
            f"TumorSimulation.plan: unknown plan {name!r}; choose one of {list(self.plan_names)} "
            "or pass a (n_test, horizon, 2) array to counterfactual()."
        )

    def counterfactual(self, plan) -> TimeSeries:
        """True outcomes of the test patients under `plan` (a name or an array shaped
        `(horizon, 2)` or `(n_test, horizon, 2)`), at days `t0+1 .. t0+horizon`, with the
        same daily noise `e_t` as the factual world (common random numbers).

        **Returns:** a `TimeSeries` with `ts (n_test, horizon)`, `ys (n_test, horizon, 1)`
        and the plan as `treatments`.
        """
        s = self._state
        n, h = self.test.n_series, self.horizon
        arr = self.plan(plan) if isinstance(plan, str) else np.asarray(plan, dtype=float)
        if arr.ndim == 2:
            arr = np.broadcast_to(arr, (n,) + arr.shape)
        if arr.shape != (n, h, 2):
            raise ValueError(
                f"TumorSimulation.counterfactual: plan has shape {arr.shape}; expected "
                f"({h}, 2) or ({n}, {h}, 2) (chemo, radio per day)."
            )
        v, c = s["v_cut"].copy(), s["c_cut"].copy()
        out = np.empty((n, h))
        for k in range(h):
            v, c = _step(v, c, arr[:, k, 0], arr[:, k, 1], s["par"], s["e_future"][:, k])
            out[:, k] = v
        ts = s["cutoff"][:, None] + np.arange(1, h + 1)[None]
        return TimeSeries(
            ts.astype(float), out[..., None], treatments=arr, names=["volume"],
            treatment_names=["chemo", "radio"], series_ids=self.test.series_ids,
        )

    def __repr__(self):
        return (
            f"TumorSimulation(train={self.train.n_series}, test={self.test.n_series}, "
            f"horizon={self.horizon}, assignment={self.assignment!r})"
        )


def tumor_growth(
    n_patients: int = 1000,
    *,
    n_test: Optional[int] = None,
    gamma: float = 2.0,
    gamma_obs: float = 2.0,
    n_days: int = 59,
    horizon: int = 5,
    min_history: int = 15,
    assignment: str = "confounded",
    key,
) -> TumorSimulation:
    """Simulate the PK-PD tumour-growth benchmark (Geng et al. 2017; CRN; TE-CDE; BNCDE).

    Daily dynamics of the tumour volume `V_t` (cm³), chemotherapy concentration `C_t` and
    radiotherapy dose `d_t` (2 Gy when given):

        C_t = C_{t−1}/2 + 5·chemo_t
        V_{t+1} = V_t (1 + ρ log(K/V_t) − β_c C_t − (α d_t + β d_t²) + e_t),  e_t ~ N(0, 0.01²)

    with `K` the volume of a 30 cm sphere, `(α, ρ)` bivariate normal (means 0.0398, 7e-5;
    sds 0.168, 7.23e-3; correlation 0.87) truncated positive, `β = α/10`,
    `β_c ~ N(0.028, 0.0007²)` truncated positive, patient types 1–3 (+10 % α for type 1,
    +10 % β_c for type 3) and initial diameters from stage-wise truncated log-normals.

    Treatment assignment:

    - `"confounded"` (default): each day chemo and radio are each given with probability
      `p = sigmoid(γ/13 · (d̄ − 6.5))`, `d̄` the mean diameter (cm) over the last 15 days.
      `γ = 0` is a coin flip; larger `γ` ties treatment more strongly to tumour size (big
      tumours are treated more, small ones less).
    - `"regimens"`: each patient gets the sequential (chemo on days 27, 34, 41, 48, 55) or
      the combined regimen (chemo + radio on days 27, 41, 55) with probability ½.

    Each day is observed with probability `min(1, sigmoid(γ_obs/13 · (d̄ − 6.5)))`
    (informative sampling; day 0 always). Values are the volume itself (the process
    noise `e_t` is the only noise), so the counterfactual truth is exact.

    **Arguments:**

    - `n_patients`: training patients; `n_test`: test patients (default `n_patients // 4`,
      at least 1).
    - `gamma`: confounding strength; `gamma_obs`: informativeness of observation times.
    - `n_days`: days after day 0 (60 days in all by default); `horizon`: days after the
      cutoff with known truth (τ = 1..horizon).
    - `min_history`: earliest cutoff day of a test patient; cutoffs are uniform on
      `[min_history, n_days − horizon]` (`"regimens"`: day 26, just before the first dose).
    - `key`: a JAX PRNG key.

    **Returns:** a `TumorSimulation` (`.train`, `.test`, `.plan(name)`,
    `.counterfactual(plan)`, `.factual`, `.truth`).
    """
    check_int("tumor_growth.n_patients", n_patients)
    n_test = max(1, n_patients // 4) if n_test is None else n_test
    check_int("tumor_growth.n_test", n_test)
    if assignment not in ("confounded", "regimens"):
        raise ValueError(
            f"tumor_growth: assignment must be 'confounded' or 'regimens', got {assignment!r}."
        )
    if horizon < 1 or n_days - horizon < max(1, min_history):
        raise ValueError(
            f"tumor_growth: need 1 <= horizon and min_history <= n_days - horizon; got "
            f"horizon={horizon}, min_history={min_history}, n_days={n_days}."
        )
    if assignment == "regimens" and not (26 + horizon <= n_days):
        raise ValueError("tumor_growth: assignment='regimens' needs n_days >= 26 + horizon.")
    for name, val in (("gamma", gamma), ("gamma_obs", gamma_obs)):
        if not np.isfinite(val):
            raise ValueError(f"tumor_growth: {name} must be finite, got {val!r}.")
    seed = np.asarray(jax.random.randint(key, (2,), 0, np.iinfo(np.int32).max))
    rng = np.random.default_rng([int(seed[0]), int(seed[1])])
    n_all = n_patients + n_test
    par = _draw_patients(rng, n_all)
    v, a, conc, obs, e, regimen = _simulate(rng, par, n_days, gamma, gamma_obs, assignment)
    days = np.arange(n_days + 1, dtype=float)
    treat_rows = np.concatenate([np.zeros((n_all, 1, 2)), a], axis=1)  # row t: given on day t-1
    onehot = np.eye(3)[par["type"] - 1]
    y = np.where(obs, v, np.nan)[..., None]
    tr = slice(0, n_patients)
    common = dict(names=["volume"], treatment_names=["chemo", "radio"],
                  static_names=["type1", "type2", "type3"])
    train = TimeSeries(days, y[tr], treatments=treat_rows[tr], static=onehot[tr],
                       series_ids=list(range(n_patients)), **common)
    te = np.arange(n_patients, n_all)
    if assignment == "regimens":
        cutoff = np.full(n_test, 26)
    else:
        cutoff = rng.integers(min_history, n_days - horizon + 1, size=n_test)
    width = int(cutoff.max()) + 1
    ts_h = np.broadcast_to(np.arange(width, dtype=float), (n_test, width)).copy()
    y_h = np.full((n_test, width, 1), np.nan)
    u_h = np.zeros((n_test, width, 2))
    for i, (p_i, t0) in enumerate(zip(te, cutoff)):
        y_h[i, : t0 + 1] = y[p_i, : t0 + 1]
        u_h[i, : t0 + 1] = treat_rows[p_i, : t0 + 1]
    test = TimeSeries(ts_h, y_h, treatments=u_h, static=onehot[te], lengths=cutoff + 1,
                      series_ids=list(range(n_patients, n_all)), **common)
    rows = cutoff[:, None] + np.arange(1, horizon + 1)[None]
    factual = TimeSeries(
        rows.astype(float), np.take_along_axis(v[te], rows, axis=1)[..., None],
        treatments=np.take_along_axis(treat_rows[te], rows[..., None], axis=1),
        series_ids=test.series_ids, **{k: common[k] for k in ("names", "treatment_names")},
    )
    par_te = {k: par[k][te] for k in ("alpha", "beta", "rho", "beta_c")}
    state = {
        "par": par_te,
        "cutoff": cutoff,
        "v_cut": v[te, cutoff],
        "c_cut": conc[te, cutoff],
        "e_future": np.take_along_axis(e[te], cutoff[:, None] + np.arange(horizon)[None], axis=1),
    }
    truth = {k: np.asarray(v_) for k, v_ in par.items()}
    truth.update({"volume": v, "treatments": a, "observed": obs, "regimen": regimen,
                  "train_index": np.arange(n_patients), "test_index": te})
    return TumorSimulation(train, test, factual, state, horizon, assignment, truth)


register(
    "tumor_growth",
    lambda **kw: tumor_growth(**{"key": jax.random.key(0), **kw}),
    "PK-PD lung-cancer tumour growth under chemo/radio (simulated, with true counterfactuals)",
)
