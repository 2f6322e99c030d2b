"""Initial values found by one compiled program instead of an eager run.

NumPyro's `initialize_model`, given one key, evaluates the model's log density and its
gradient eagerly, operation by operation: every operation of the model becomes its own
small XLA program, compiled before the fit's first step. Given a batch of keys, the same
function runs the same search for a valid starting point as one compiled `lax.map`.
`initialize` hands it a batch of one key and takes the one result back, so the values
are those of the single-key call; NumPyro's autoguides and HMC call `initialize_model`
themselves, and `compiled_initialisation` points them to `initialize` while an engine
sets them up. What it saves is measured by `benchmarks/fit_startup.py`.
"""

import contextlib

import numpyro.infer.autoguide
import numpyro.infer.hmc
from numpyro.infer.util import initialize_model
from numpyro.util import is_prng_key

#: The NumPyro modules whose `initialize_model` the engines' runs go through.
_CALLERS = (numpyro.infer.autoguide, numpyro.infer.hmc)


def initialize(rng_key, model, **kwargs):
    """`numpyro.infer.util.initialize_model`, compiled for one key as for a batch.

    Same arguments and result as NumPyro's: for a single key the search runs as a batch
    of one and `param_info` comes back without the batch axis, its dictionaries in the
    model's order of sites (a compiled result comes back in sorted order, and an
    autoguide draws its sites in the order of its starting values, so the order decides
    which key each site gets); a batch of keys is passed through unchanged."""
    if not is_prng_key(rng_key):
        return initialize_model(rng_key, model, **kwargs)
    info = initialize_model(rng_key[None], model, **kwargs)
    order = list(info.model_trace)

    def one(values):
        if not isinstance(values, dict):
            return None if values is None else values[0]
        return {name: values[name][0] for name in sorted(values, key=order.index)}

    return info._replace(param_info=type(info.param_info)(*map(one, info.param_info)))


@contextlib.contextmanager
def compiled_initialisation():
    """Within the block, NumPyro's autoguides and HMC kernels initialise through
    `initialize`. Not thread-safe: it swaps a module attribute for the block's length."""
    saved = [mod.initialize_model for mod in _CALLERS]
    for mod in _CALLERS:
        mod.initialize_model = initialize
    try:
        yield
    finally:
        for mod, fn in zip(_CALLERS, saved):
            mod.initialize_model = fn
