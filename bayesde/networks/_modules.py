"""Equinox networks and the two ways a NumPyro program can own their weights."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

__all__ = ["mlp", "sample_module", "param_module", "leaf_names"]


def mlp(
    in_size: int,
    out_size: int,
    width: int,
    depth: int,
    *,
    activation: Callable = jnp.tanh,
    final_activation: Callable = lambda x: x,
    key,
) -> eqx.nn.MLP:
    """An `eqx.nn.MLP` with `depth` hidden layers of `width` units."""
    return eqx.nn.MLP(
        in_size,
        out_size,
        width,
        depth,
        activation=activation,
        final_activation=final_activation,
        key=key,
    )


def _is_leaf_array(x) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def leaf_names(module) -> list[str]:
    """Readable names of a module's array leaves (`layers.0.weight`, ...), in leaf order."""
    paths, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(module, _is_leaf_array))
    names = []
    for path, _ in paths:
        parts = []
        for p in path:
            if isinstance(p, jax.tree_util.GetAttrKey):
                parts.append(p.name)
            elif isinstance(p, jax.tree_util.SequenceKey):
                parts.append(str(p.idx))
            elif isinstance(p, jax.tree_util.DictKey):
                parts.append(str(p.key))
            else:
                parts.append(str(p))
        names.append(".".join(parts))
    return names


def _template(make: Callable):
    # Shapes only: no random numbers are drawn for a template.
    return eqx.filter_eval_shape(make, jax.random.key(0))


def sample_module(name: str, make: Callable, prior_scale: float = 1.0):
    """Sample every array leaf of `make(key)` as a NumPyro site `"{name}.{leaf}"` with an
    i.i.d. `Normal(0, prior_scale)` prior, and return the module with those weights.

    `make` is a function of a key building the module; only its shapes are used.
    """
    template = _template(make)
    params, static = eqx.partition(template, _is_leaf_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    drawn = [
        numpyro.sample(
            f"{name}.{leaf_name}",
            dist.Normal(0.0, prior_scale).expand(leaf.shape).to_event(leaf.ndim),
        )
        for leaf_name, leaf in zip(leaf_names(template), leaves)
    ]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, drawn), static)


def param_module(name: str, make: Callable):
    """Register every array leaf of `make(key)` as a NumPyro `param` `"{name}.{leaf}"`
    (a point estimate, optimised by SVI) and return the module with those weights.

    The initial values come from one call of `make`, with the key NumPyro hands to the
    first `param` that needs one: building the module once per leaf instead would cost a
    whole module's construction for every weight matrix of it.
    """
    template = _template(make)
    params, static = eqx.partition(template, _is_leaf_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    built = []  # the module of initial values, made on the first leaf that asks for one

    def init(key, i):
        if not built:
            built.append(jax.tree_util.tree_leaves(eqx.filter(make(key), eqx.is_array)))
        return built[0][i]

    got = []
    for i, leaf_name in enumerate(leaf_names(template)):
        got.append(numpyro.param(f"{name}.{leaf_name}", lambda key, i=i: init(key, i)))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, got), static)
