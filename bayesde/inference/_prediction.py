"""`Prediction`: posterior predictive draws with the summaries people read."""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from .._checks import check_real

__all__ = ["Prediction"]


class Prediction:
    """Posterior predictive draws `samples (S, N, T, D)` at times `ts (N, T)`.

    `samples` include observation noise; `f_samples` (when the model records them) are the
    noise-free latent means. Everything is a summary of the draws: `mean`, `median`,
    `std`, `quantiles(qs)` and equal-tailed `interval(level)`.
    """

    def __init__(
        self,
        samples,
        ts,
        *,
        f_samples=None,
        names: Optional[Sequence[str]] = None,
        series_ids: Optional[Sequence] = None,
    ):
        samples = jnp.asarray(samples)
        if samples.ndim != 4:
            raise ValueError(
                f"Prediction.samples: expected shape (S, N, T, D), got {samples.shape}."
            )
        ts = np.asarray(ts, dtype=float)
        if ts.ndim == 1:
            ts = np.broadcast_to(ts, samples.shape[1:3]).copy()
        if ts.shape != samples.shape[1:3]:
            raise ValueError(
                f"Prediction.ts: shape {ts.shape} does not match samples {samples.shape}."
            )
        self.samples = samples
        self.ts = ts
        self.f_samples = None if f_samples is None else jnp.asarray(f_samples)
        d = samples.shape[3]
        self.names = list(names) if names is not None else [f"y{i}" for i in range(d)]
        n = samples.shape[1]
        self.series_ids = list(series_ids) if series_ids is not None else list(range(n))

    @property
    def num_samples(self) -> int:
        return self.samples.shape[0]

    @property
    def shape(self) -> tuple:
        return self.samples.shape

    @property
    def mean(self):
        return jnp.mean(self.samples, axis=0)

    @property
    def std(self):
        return jnp.std(self.samples, axis=0)

    @property
    def median(self):
        return jnp.median(self.samples, axis=0)

    def quantiles(self, qs):
        """Quantiles of the draws: shape `(len(qs), N, T, D)`."""
        try:
            qs = np.asarray(qs, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"Prediction.quantiles: qs must be numbers in [0, 1], e.g. [0.05, 0.5, 0.95]; got {qs!r}."
            ) from None
        if qs.ndim > 1:
            raise ValueError(f"Prediction.quantiles: qs must be a number or a 1-D list, got shape {qs.shape}.")
        qs = jnp.asarray(qs, dtype=self.samples.dtype)
        if not np.all(np.isfinite(np.asarray(qs))) or jnp.any((qs < 0) | (qs > 1)):
            raise ValueError(f"Prediction.quantiles: every q must lie in [0, 1], got {np.asarray(qs)}.")
        return jnp.quantile(self.samples, qs, axis=0)

    def interval(self, level: float = 0.9):
        """The equal-tailed credible interval `(lo, hi)`, each `(N, T, D)`."""
        level = check_real("Prediction.interval.level", level, 0.0, 1.0, open_low=True, open_high=True,
                           hint="e.g. 0.9")
        a = (1 - level) / 2
        q = self.quantiles([a, 1 - a])
        return q[0], q[1]

    def map(self, fn) -> "Prediction":
        """The same prediction with `fn` applied elementwise to every draw: `samples`
        and, when present, `f_samples` (`ts`, `names`, `series_ids` and any other
        attribute, e.g. a subclass's label, are kept).

        Use it to read a model fitted on a transformed scale in the data's units, e.g.
        `pred.map(np.expm1)` after fitting `log(1 + y)`. Quantiles commute with monotone
        maps, so for a monotone `fn` the quantiles, intervals and median of the result are
        `fn` of those of `self` (exactly at the draws; between two draws up to the linear
        interpolation of `quantiles`), and bands mapped back through the inverse of a
        transform lie in the data's support. `mean` and `std` do not commute: they are
        recomputed from the mapped draws, as they should be.

        **Arguments:**

        - `fn`: an elementwise function of an array that keeps its shape, e.g. `np.exp`
          or `jnp.expm1`.

        **Returns:** a new `Prediction` (of the same class).
        """
        samples = jnp.asarray(fn(self.samples))
        if samples.shape != self.samples.shape:
            raise ValueError(
                f"Prediction.map: fn must act elementwise and keep the shape {self.samples.shape}, "
                f"got {samples.shape}."
            )
        out = copy.copy(self)
        out.samples = samples
        out.f_samples = None if self.f_samples is None else jnp.asarray(fn(self.f_samples))
        out.ts = self.ts.copy()
        out.names = list(self.names)
        out.series_ids = list(self.series_ids)
        return out

    def __sub__(self, other: "Prediction") -> "Prediction":
        if not isinstance(other, Prediction) or other.samples.shape != self.samples.shape:
            raise ValueError("Prediction: can only subtract a Prediction of the same shape.")
        f = None
        if self.f_samples is not None and other.f_samples is not None:
            f = self.f_samples - other.f_samples
        return Prediction(
            self.samples - other.samples, self.ts, f_samples=f, names=self.names,
            series_ids=self.series_ids,
        )

    def to_pandas(self, qs=(0.05, 0.25, 0.5, 0.75, 0.95)):
        """Tidy frame: `series, time, variable, mean, q05, q25, q50, q75, q95`."""
        import pandas as pd

        mean = np.asarray(self.mean)
        q = np.asarray(self.quantiles(list(qs)))
        s, n, t, d = self.samples.shape
        ii, jj, kk = np.meshgrid(np.arange(n), np.arange(t), np.arange(d), indexing="ij")
        ii, jj, kk = ii.ravel(), jj.ravel(), kk.ravel()
        frame = {
            "series": [self.series_ids[i] for i in ii],
            "time": self.ts[ii, jj],
            "variable": [self.names[k] for k in kk],
            "mean": mean[ii, jj, kk],
        }
        for qi, qv in enumerate(qs):
            frame[f"q{int(round(qv * 100)):02d}"] = q[qi, ii, jj, kk]
        return pd.DataFrame(frame)

    def __repr__(self) -> str:
        s, n, t, d = self.samples.shape
        return f"Prediction(samples={s}, series={n}, times={t}, dim={d})"
