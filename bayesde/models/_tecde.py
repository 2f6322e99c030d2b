"""TE-CDE with Monte Carlo dropout: the deterministic neural-CDE baseline of BNCDE
(Seedat, Imrie, Bellot, Qian & van der Schaar, ICML 2022; MC dropout after Gal &
Ghahramani 2016, as evaluated by Hess et al., ICLR 2024)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro

from ._base import register_model
from ._bncde import AbstractCDEForecaster

__all__ = ["TECDE"]


@register_model
class TECDE(AbstractCDEForecaster):
    """Neural CDE encoder–decoder for outcomes under treatment plans, with MC dropout.

    The same encoder `dz = f_θ(t, z, a) dX_t`, decoder `du = g_θ(t, u, a) dA_t` and
    Gaussian head as `BNCDE`, but with point-estimated weights `θ` and dropout (rate
    `dropout`) on the hidden units of both vector fields, at every solver step and for
    every series. Dropout stays on at prediction time: each predictive draw is one
    dropout realisation drawn from `numpyro.prng_key()` (MC dropout), so the predictive
    is the mixture over masks. The domain-adversarial balancing of TE-CDE is left out.

    **Arguments:** as `BNCDE` (`state_dim`, `width`, `horizon`, `ahead_starts`, `fill`,
    `transform`, `forecast_series_every`: the same held-back widening, `exposure_halflives`,
    `forecast`, here `"decoder"` by default as in the paper; `weight_prior`, here `"none"`
    by default, the paper's baseline, and `"gaussian"` puts the prior on every field layer),
    plus `dropout`, the drop probability in `[0, 1)` (0.1 in the paper).
    """

    dropout: float = 0.1

    def _check_fields(self) -> None:
        if not (0.0 <= float(self.dropout) < 1.0):
            raise ValueError(f"TECDE.dropout: must lie in [0, 1), got {self.dropout!r}.")

    def _num_paths(self, training):
        return 1

    def _perturb(self, hidden_act, key):
        p = float(self.dropout)
        if p == 0.0:
            return hidden_act
        keep = jax.random.bernoulli(key, 1.0 - p, hidden_act.shape)
        return jnp.where(keep, hidden_act / (1.0 - p), 0.0)

    def _draw(self, key, num_paths, n_rows):
        fixed = {}
        for part in ("enc", "dec"):
            fixed[part] = {
                nm: numpyro.param(f"{part}.{nm}", self._layer_init(part, nm))
                for nm in self._layer_shapes(part)
            }
        return {}, fixed["enc"], {}, fixed["dec"], jnp.zeros((num_paths,))

