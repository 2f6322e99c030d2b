"""Markov-approximate fractional Brownian motion (MA-fBM).

Fractional Brownian motion `B^H` with Hurst index `H ∈ (0, 1)` is not Markov, so an SDE
driven by it cannot be stepped like an Itô SDE. Harms & Stefanovits (2019) write the
fBM kernel as a superposition of exponentials and truncate it to `K` Ornstein–Uhlenbeck
processes driven by *one* Brownian motion `W`:

    dY_k = −γ_k Y_k dt + dW,        B̂^H(t) = Σ_k ω_k (Y_k(t) − Y_k(0))   (type I)
                                     B̂^H(t) = Σ_k ω_k Y_k(t), Y(0) = 0    (type II)

with speeds on a geometric grid `γ_k = r^{k − (K+1)/2}`, `r = γ_max^{2/(K−1)}`, and the
weights `ω(H) = A⁻¹ b(H)` that minimise `∫_0^T E(B^H(t) − B̂^H(t))² dt` (Daems, Opper,
Crevecoeur & Birdal, ICLR 2024, "Variational inference for SDEs driven by fractional
noise", Prop. 3 and App. B). Type I targets the Mandelbrot–van Ness fBM
`B^H(t) = Γ(H+½)⁻¹ ∫_{−∞}^t [(t−s)_+^{H−½} − (−s)_+^{H−½}] dW_s` (stationary increments,
`Var B^H(t) = t^{2H} / (Γ(2H+1) sin πH)`); type II the Riemann–Liouville fBM
`B^H(t) = Γ(H+½)⁻¹ ∫_0^t (t−s)^{H−½} dW_s`.

The weights involve `e^{γT} Q(H+½, γT)` (`Q` the regularised upper incomplete gamma
function), which overflows in float32 once `γT > 88` and gives NaN gradients with
respect to `H`. Here it is evaluated as `x^a · CF(a, x) / Γ(a)` with Legendre's continued
fraction for `x ≥ 5`, and the linear system is solved after a symmetric diagonal
rescaling, so weights and their `H`-gradients are finite in float32 and float64.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammainc, gammaincc, gammaln

from .._checks import check_int, check_real
from ._sde import brownian_increments, solve_sde_grid

__all__ = [
    "fbm_speeds",
    "fbm_weights",
    "ma_fbm_covariance",
    "fbm_covariance",
    "fbm_variance_constant",
    "MarkovFBM",
]

FBMType = Literal["I", "II"]

_CF_SWITCH = 5.0
_CF_TERMS = 40
RIDGE = 0.1


def _check_type(fbm_type) -> str:
    if fbm_type not in ("I", "II"):
        raise ValueError(
            f"fbm_type: {fbm_type!r} is not 'I' (Mandelbrot–van Ness) or 'II' "
            "(Riemann–Liouville); pass fbm_type='I' or fbm_type='II'."
        )
    return fbm_type


def fbm_speeds(num_ou: int = 5, gamma_max: float = 20.0, dtype=None):
    """Speeds `γ_k = r^{k − (K+1)/2}`, `k = 1..K`, `r = γ_max^{2/(K−1)}` (geometric grid
    from `1/γ_max` to `γ_max`; Daems et al. 2024, Sec. 3).

    **Arguments:**

    - `num_ou`: the number `K ≥ 1` of OU processes (`K = 1` gives `γ = 1`).
    - `gamma_max`: the largest speed (`> 1`).

    **Returns:** an array of shape `(K,)`, increasing.
    """
    check_int("fbm_speeds.num_ou", num_ou)
    check_real("fbm_speeds.gamma_max", gamma_max, 1.0, open_low=True)
    dtype = dtype or jnp.zeros(()).dtype
    if num_ou == 1:
        return jnp.ones((1,), dtype)
    k = np.arange(1, num_ou + 1)
    log_r = 2.0 * np.log(gamma_max) / (num_ou - 1)
    return jnp.asarray(np.exp(log_r * (k - (num_ou + 1) / 2)), dtype)


def _cf_upper_gamma(a, x):
    """Legendre's continued fraction `Γ(a, x) e^x x^{−a}`, evaluated backwards with a
    fixed number of terms (differentiable in `a` and `x`; accurate for `x ≥ 5`, `a ≤ 2`)."""

    def body(f, n):
        n = n.astype(x.dtype)
        return n * (n - a) / (x + 2.0 * n + 1.0 - a - f), None

    f, _ = jax.lax.scan(body, jnp.zeros_like(x), jnp.arange(_CF_TERMS, 0, -1))
    return 1.0 / (x + 1.0 - a - f)


def exp_gammaincc(a, x):
    """`e^x Q(a, x)` without overflow (`Q` the regularised upper incomplete gamma).

    For `x < 5`: `exp(x) · gammaincc(a, x)`; for `x ≥ 5`: `x^a CF(a, x) / Γ(a)` with
    Legendre's continued fraction. Both branches see clamped inputs, so the unused one
    never feeds a NaN into the gradient.
    """
    a = jnp.asarray(a)
    x = jnp.asarray(x)
    a, x = jnp.broadcast_arrays(a, x)
    small = x < _CF_SWITCH
    xs = jnp.where(small, x, 0.5 * _CF_SWITCH)
    xl = jnp.where(small, 2.0 * _CF_SWITCH, x)
    lo = jnp.exp(xs) * gammaincc(a, xs)
    hi = jnp.exp(a * jnp.log(xl) - gammaln(a)) * _cf_upper_gamma(a, xl)
    return jnp.where(small, lo, hi)


def _phi(x):
    """`(e^{−x} − 1 + x) / x` without cancellation for small `x`."""
    small = x < 1e-2
    xs = jnp.where(small, x, 1.0)
    xl = jnp.where(small, 1.0, x)
    series = xs / 2.0 - xs**2 / 6.0 + xs**3 / 24.0 - xs**4 / 120.0
    return jnp.where(small, series, (jnp.expm1(-xl) + xl) / xl)


def _type1_b_core(a, x):
    """`F(a, x) = 2x − x^a/Γ(a+1) + e^{−x} − e^{x} Q(a, x)` (so `b_k = F / γ_k^{a+1}`).

    For `x < 2` the four terms cancel to `O(x^{a+1})`; there the series
    `F = x^{a+1} Σ_n x^n/Γ(a+n+2) − 2 (sinh x − x)` (from `P(a, x) = x^a e^{−x}
    Σ_n x^n/Γ(a+n+1)`) is used instead.
    """
    small = x < 2.0
    xs = jnp.where(small, x, 1.0)
    xl = jnp.where(small, 3.0, x)
    n = jnp.arange(24, dtype=x.dtype)
    log_xs = jnp.log(xs)[..., None]
    series = jnp.sum(jnp.exp((a[..., None] + 1.0 + n) * log_xs - gammaln(a[..., None] + n + 2.0)), -1)
    m = jnp.arange(1, 10, dtype=x.dtype)
    sinh_minus = jnp.sum(jnp.exp((2.0 * m + 1.0) * log_xs - gammaln(2.0 * m + 2.0)), -1)
    lo = series - 2.0 * sinh_minus
    hi = 2.0 * xl - jnp.exp(a * jnp.log(xl) - gammaln(a + 1.0)) + jnp.exp(-xl) - exp_gammaincc(a, xl)
    return jnp.where(small, lo, hi)


def _system(hurst, speeds, window, fbm_type):
    g = speeds
    T = window
    a = hurst + 0.5
    gs = g[:, None] + g[None, :]
    log_g = jnp.log(g)
    x = g * T
    if fbm_type == "II":
        A = T * _phi(gs * T) / gs
        b = T * gammainc(a, x) * jnp.exp(-a * log_g) - a * gammainc(a + 1.0, x) * jnp.exp(
            -(a + 1.0) * log_g
        )
    else:
        p = _phi(x)
        A = T * (p[:, None] + p[None, :]) / gs
        b = _type1_b_core(jnp.broadcast_to(a, x.shape), x) * jnp.exp(-(a + 1.0) * log_g)
    return A, b


def fbm_weights(hurst, speeds, window: float = 1.0, fbm_type: FBMType = "I"):
    """Optimal weights `ω(H) = A⁻¹ b` of the Markov approximation (Daems et al. 2024,
    Prop. 3), minimising `∫_0^T E(B^H(t) − Σ_k ω_k Ŷ_k(t))² dt`.

    Type II (Riemann–Liouville, `Y(0) = 0`), `a = H + ½`:

    - `A_ij = [T + (e^{−(γ_i+γ_j)T} − 1)/(γ_i+γ_j)] / (γ_i+γ_j)`
    - `b_k = T P(a, γ_k T)/γ_k^{a} − a P(a+1, γ_k T)/γ_k^{a+1}`

    Type I (Mandelbrot–van Ness, stationary `Y(0) ~ N(0, Σ)`, `Ŷ = Y(t) − Y(0)`):

    - `A_ij = [2T + (e^{−γ_i T} − 1)/γ_i + (e^{−γ_j T} − 1)/γ_j] / (γ_i+γ_j)`
    - `b_k = 2T/γ_k^{a} − T^{a}/(γ_k Γ(a+1)) + (e^{−γ_k T} − e^{γ_k T} Q(a, γ_k T))/γ_k^{a+1}`

    `P`, `Q` are the regularised lower/upper incomplete gamma functions;
    `e^{γT} Q(a, γT)` is computed by `exp_gammaincc` (no overflow). The system is
    solved after scaling `A` to unit diagonal (it is a near-Cauchy matrix, badly
    conditioned for large `K`) with a tiny ridge proportional to the dtype's epsilon.

    **Arguments:**

    - `hurst`: `H ∈ (0, 1)` (a scalar; differentiable).
    - `speeds`: `(K,)` speeds (`fbm_speeds`).
    - `window`: `T > 0`, the time window the approximation is optimised over.
    - `fbm_type`: `"I"` or `"II"`.

    **Returns:** `(K,)` weights, in the dtype of `speeds`.
    """
    _check_type(fbm_type)
    speeds = jnp.asarray(speeds)
    dtype = speeds.dtype
    hurst = jnp.asarray(hurst, dtype)
    window = jnp.asarray(window, dtype)
    A, b = _system(hurst, speeds, window, fbm_type)
    d = jax.lax.rsqrt(jnp.diag(A))
    As = A * d[:, None] * d[None, :]
    ridge = RIDGE * jnp.sqrt(jnp.finfo(dtype).eps)
    As = As + ridge * jnp.eye(A.shape[0], dtype=dtype)
    chol = jnp.linalg.cholesky(As)
    w = jax.scipy.linalg.cho_solve((chol, True), b * d)
    return w * d


def fbm_variance_constant(hurst, fbm_type: FBMType = "I"):
    """`c_H` with `Var B^H(t) = c_H t^{2H}` for the normalisation used here:
    type I `1 / (Γ(2H+1) sin πH)`, type II `1 / (2H Γ(H+½)²)`. Both equal 1 at `H = ½`."""
    _check_type(fbm_type)
    h = jnp.asarray(hurst)
    if fbm_type == "I":
        return jnp.exp(-gammaln(2.0 * h + 1.0)) / jnp.sin(jnp.pi * h)
    return jnp.exp(-2.0 * gammaln(h + 0.5)) / (2.0 * h)


def _ou_cross_cov(t, s, gi, gj, fbm_type):
    """`Cov(Y_i(t), Y_j(s))` of OU processes sharing one Brownian motion."""
    m = jnp.minimum(t, s)
    decay = jnp.exp(-gi * (t - m) - gj * (s - m))
    if fbm_type == "II":
        return decay * (-jnp.expm1(-(gi + gj) * m)) / (gi + gj)
    return decay / (gi + gj)


def ma_fbm_covariance(ts, hurst, speeds, window: float = 1.0, fbm_type: FBMType = "I", weights=None):
    """Exact covariance `Cov(B̂^H(t), B̂^H(s))` of the Markov approximation on `ts`.

    `Cov(B̂(t), B̂(s)) = Σ_ij ω_i ω_j Cov(Ŷ_i(t), Ŷ_j(s))` with, for type II,
    `Cov(Y_i(t), Y_j(s)) = e^{−γ_i(t−m) − γ_j(s−m)} (1 − e^{−(γ_i+γ_j)m}) / (γ_i+γ_j)`,
    `m = min(t, s)`, and for type I the stationary `e^{−γ_i(t−m) − γ_j(s−m)}/(γ_i+γ_j)`
    differenced at time 0.

    **Returns:** `(n, n)` for `ts` of shape `(n,)` (times `≥ 0`).
    """
    _check_type(fbm_type)
    speeds = jnp.asarray(speeds)
    ts = jnp.asarray(ts, speeds.dtype)
    w = fbm_weights(hurst, speeds, window, fbm_type) if weights is None else jnp.asarray(weights)
    t = ts[:, None, None, None]
    s = ts[None, :, None, None]
    gi = speeds[None, None, :, None]
    gj = speeds[None, None, None, :]
    k = _ou_cross_cov(t, s, gi, gj, fbm_type)
    if fbm_type == "I":
        t0, s0 = jnp.zeros_like(t), jnp.zeros_like(s)
        k = (
            k
            - _ou_cross_cov(t, s0, gi, gj, fbm_type)
            - _ou_cross_cov(t0, s, gi, gj, fbm_type)
            + _ou_cross_cov(t0, s0, gi, gj, fbm_type)
        )
    return jnp.einsum("abij,i,j->ab", k, w, w)


def fbm_covariance(ts, hurst: float, fbm_type: FBMType = "I") -> np.ndarray:
    """Covariance of the fBM that the Markov approximation targets (NumPy reference).

    - Type I: `c_H · ½ (t^{2H} + s^{2H} − |t − s|^{2H})`, `c_H = 1/(Γ(2H+1) sin πH)`.
    - Type II: `Γ(a)⁻² ∫_0^{s} (t−u)^{a−1} (s−u)^{a−1} du` (`s ≤ t`, `a = H + ½`)
      `= Γ(a)⁻² (t−s)^{a−1} s^{a}/a · ₂F₁(1−a, a; a+1; −s/(t−s))`, and
      `t^{2H} / (2H Γ(a)²)` on the diagonal.

    **Returns:** `(n, n)` float64 array.
    """
    from scipy.special import gamma as G
    from scipy.special import hyp2f1

    _check_type(fbm_type)
    ts = np.asarray(ts, dtype=np.float64)
    h = float(hurst)
    t, s = ts[:, None], ts[None, :]
    if fbm_type == "I":
        c = 1.0 / (G(2 * h + 1) * np.sin(np.pi * h))
        return c * 0.5 * (t ** (2 * h) + s ** (2 * h) - np.abs(t - s) ** (2 * h))
    a = h + 0.5
    hi, lo = np.maximum(t, s), np.minimum(t, s)
    out = np.empty(np.broadcast(t, s).shape)
    diag = hi == lo
    out[diag] = hi[diag] ** (2 * h) / (2 * h)
    d = (hi - lo)[~diag]
    m = lo[~diag]
    with np.errstate(divide="ignore", invalid="ignore"):
        val = d ** (a - 1) * m**a / a * hyp2f1(1 - a, a, a + 1, -m / d)
    out[~diag] = np.where(m > 0, val, 0.0)
    return out / G(a) ** 2


class MarkovFBM(eqx.Module):
    """Markov-approximate fBM: `K` OU processes per channel driven by one Brownian
    motion, combined with the optimal weights `ω(H)` (Harms & Stefanovits 2019;
    Daems et al. ICLR 2024). A PyTree: `hurst` may be a traced, learned value.

    It drives an SDE `dX = b(t, X) dt + s(t, X) ⊙ dB̂^H` through the augmented Markov
    state `(X, Y_1..Y_K)` (`solve`), optionally with a control `u` added to every `dY_k`
    (the posterior SDE of Daems et al.; path KL `½ ∫ |u|² dt`).

    **Arguments:**

    - `hurst`: `H ∈ (0, 1)`; `H = ½` gives Brownian motion (`Σ_k ω_k = 1`, every
      other direction weighted out in the limit).
    - `num_ou`: `K` (default 5, as in the paper).
    - `gamma_max`: largest speed (default 20); speeds span `[1/γ_max, γ_max]`.
    - `window`: `T`, the window (in the SDE's time units) the weights are optimised over.
    - `fbm_type`: `"I"` (Mandelbrot–van Ness; stationary increments; default) or `"II"`
      (Riemann–Liouville).
    """

    hurst: jnp.ndarray
    speeds: jnp.ndarray
    window: float
    fbm_type: str = eqx.field(static=True, default="I")

    def __init__(self, hurst, num_ou: int = 5, gamma_max: float = 20.0, window: float = 1.0,
                 fbm_type: FBMType = "I", *, dtype=None):
        _check_type(fbm_type)
        if not (isinstance(hurst, jax.core.Tracer) or 0.0 < float(hurst) < 1.0):
            raise ValueError(f"MarkovFBM.hurst: {hurst!r} is outside (0, 1); pass 0 < hurst < 1.")
        if not float(window) > 0:
            raise ValueError(f"MarkovFBM.window: must be > 0, got {window!r}.")
        self.speeds = fbm_speeds(num_ou, gamma_max, dtype)
        self.hurst = jnp.asarray(hurst, self.speeds.dtype)
        self.window = window
        self.fbm_type = fbm_type

    @property
    def num_ou(self) -> int:
        return int(self.speeds.shape[0])

    @property
    def weights(self):
        """`ω(H)`, shape `(K,)`."""
        return fbm_weights(self.hurst, self.speeds, self.window, self.fbm_type)

    def stationary_cov(self):
        """`Σ_ij = 1/(γ_i + γ_j)`, the stationary covariance of `Y` (type I start)."""
        g = self.speeds
        return 1.0 / (g[:, None] + g[None, :])

    def stationary_chol(self):
        """Lower Cholesky factor `L` of `Σ` (a small ridge keeps it finite in float32)."""
        K = self.num_ou
        return jnp.linalg.cholesky(self.stationary_cov() + 1e-7 * jnp.eye(K, dtype=self.speeds.dtype))

    def initial_state(self, key, shape=()):
        """`Y(0)`: zeros (type II) or a draw `L ζ` from `N(0, Σ)`, `ζ ~ N(0, I)` (type I);
        shape `(*shape, K)`."""
        K = self.num_ou
        if self.fbm_type == "II":
            return jnp.zeros((*shape, K), self.speeds.dtype)
        z = jax.random.normal(key, (*shape, K), self.speeds.dtype)
        return z @ self.stationary_chol().T

    def solve(
        self,
        drift: Callable,
        diffusion: Callable,
        x0,
        ts,
        dW,
        *,
        y0=None,
        control: Optional[Callable] = None,
        args=None,
    ):
        """Euler-solve `dX = b dt + s ⊙ Σ_k ω_k dY_k`, `dY_k = (−γ_k Y_k + u) dt + dW` on
        the grid `ts` with `bd.solvers.solve_sde_grid`, accumulating `½ ∫ |u|² dt`.

        **Arguments:**

        - `drift`: `b(t, x, args) -> (d,)`; `diffusion`: `s(t, x, args) -> (d,)`.
        - `x0`: `(d,)` initial state; `ts`: `(n,)` grid; `dW`: `(n − 1, d)` increments
          (`brownian_increments(key, ts, (d,))`), one Brownian motion per channel.
        - `y0`: `(d, K)` initial OU states (default zeros; use `initial_state` for type I).
        - `control`: optional `u(t, x, y, args) -> (d,)` added to every `dY_k` (`y` has
          shape `(d, K)`).

        **Returns:** `(xs (n, d), ys (n, d, K), kl)` with `kl = ½ ∫ |u|² dt` (0 without
        control), the Girsanov KL of the controlled path from the uncontrolled one.
        """
        x0 = jnp.asarray(x0)
        d = x0.shape[0]
        K = self.num_ou
        g = self.speeds
        w = self.weights
        if y0 is None:
            y0 = jnp.zeros((d, K), x0.dtype)
        z0 = jnp.concatenate([x0, y0.reshape(-1), jnp.zeros((1,), x0.dtype)])

        def unpack(z):
            return z[:d], z[d : d + d * K].reshape(d, K)

        def f(t, z, a):
            x, y = unpack(z)
            u = jnp.zeros((d,), z.dtype) if control is None else control(t, x, y, a)
            dy = -g * y + u[:, None]
            dx = drift(t, x, a) + diffusion(t, x, a) * (dy @ w)
            return jnp.concatenate([dx, dy.reshape(-1), 0.5 * jnp.sum(u**2, keepdims=True)])

        eye = jnp.eye(d, dtype=x0.dtype)
        ones = jnp.ones((1, K, 1), x0.dtype)

        def gfun(t, z, a):
            x, _ = unpack(z)
            gx = eye * (diffusion(t, x, a) * jnp.sum(w))[:, None]
            gy = (eye[:, None, :] * ones).reshape(d * K, d)
            return jnp.concatenate([gx, gy, jnp.zeros((1, d), z.dtype)], axis=0)

        zs = solve_sde_grid(f, gfun, z0, ts, dW, args, scheme="euler", noise="general")
        xs = zs[:, :d]
        ys = zs[:, d : d + d * K].reshape(-1, d, K)
        return xs, ys, zs[-1, -1]

    def sample(self, key, ts, shape=()):
        """Paths of `B̂^H` on the grid `ts` (from `ts[0]`), shape `(len(ts), *shape)`,
        with the OU components Euler-stepped on the grid (use a grid finer than
        `1/γ_max` for accurate paths)."""
        ts = jnp.asarray(ts, self.speeds.dtype)
        k0, k1 = jax.random.split(key)
        y0 = self.initial_state(k0, shape)
        dW = brownian_increments(k1, ts, shape, dtype=self.speeds.dtype)
        g, w = self.speeds, self.weights

        def step(y, inp):
            dt, dw = inp
            y1 = y - g * y * dt + dw[..., None]
            return y1, y1

        _, ys = jax.lax.scan(step, y0, (jnp.diff(ts), dW))
        ys = jnp.concatenate([y0[None], ys], axis=0)
        return (ys - y0[None]) @ w if self.fbm_type == "I" else ys @ w
