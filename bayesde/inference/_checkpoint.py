"""SVI checkpoints: the optimiser state (keys included) as equinox leaves, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint"]


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _plain(state):
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def save_checkpoint(folder, state, step: int, losses: np.ndarray, best=None) -> None:
    """Write the optimiser state, the losses so far and, with `SVI.keep_best`, the best
    held-out record `best = (value, step, params)` (or None)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".state.eqx.tmp-{os.getpid()}"
    eqx.tree_serialise_leaves(tmp, _plain(state))
    os.replace(tmp, folder / "state.eqx")
    tmp = folder / f".losses.npy.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(losses, dtype=np.float64), allow_pickle=False)
    os.replace(tmp, folder / "losses.npy")
    meta = {"step": int(step)}
    if best is not None:
        value, best_step, params = best
        tmp = folder / f".best.npz.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in params.items()})
        os.replace(tmp, folder / "best.npz")
        meta["best"] = {"value": float(value), "step": int(best_step)}
    tmp = folder / f".checkpoint.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "checkpoint.json")


def load_checkpoint(folder, like_state, num_steps: int):
    """Returns `(state, step, losses, best)`; `like_state` is a freshly initialised state,
    `best` the record `save_checkpoint` was given (or None)."""
    folder = Path(folder)
    meta = folder / "checkpoint.json"
    if not meta.exists():
        raise ValueError(f"fit: resume={str(folder)!r} holds no checkpoint (no checkpoint.json).")
    meta = json.loads(meta.read_text())
    step = int(meta["step"])
    if step > num_steps:
        raise ValueError(
            f"fit: the checkpoint is at step {step}, beyond num_steps={num_steps}."
        )
    plain = eqx.tree_deserialise_leaves(folder / "state.eqx", _plain(like_state))
    state = jax.tree_util.tree_map(
        lambda new, old: jax.random.wrap_key_data(new, impl=jax.random.key_impl(old)) if _is_key(old) else new,
        plain,
        like_state,
    )
    with open(folder / "losses.npy", "rb") as f:
        losses = np.load(f, allow_pickle=False)
    best = None
    if "best" in meta:
        with np.load(folder / "best.npz", allow_pickle=False) as f:
            best = (meta["best"]["value"], meta["best"]["step"], {k: f[k] for k in f.files})
    return state, step, losses[:step], best
