"""Many devices and many hosts: a device mesh, a sharded posterior predictive and a
thin multi-host start-up.

```python
import jax, bayesde as bd
post = bd.fit(model, data, method="nuts", num_chains=4, key=jax.random.key(0))
pred = post.predict(ts, key=jax.random.key(1), devices=jax.devices())   # sharded draws
```

**What is spread over devices, and how.**

- *Chains* (NUTS): `bd.fit(..., method="nuts")` runs one chain per device
  (NumPyro's `chain_method="parallel"`) whenever `jax.local_device_count() >=
  num_chains`, and vectorises the chains on one device otherwise; pass
  `chain_method=...` to choose. Nothing else is needed.
- *Posterior draws / Monte Carlo sample paths* (the posterior predictive):
  `post.predict(ts, key=k, devices=...)` cuts the draws into the same chunks as the
  single-device run, lays each chunk out over a 1-D device mesh (axis `"d"`) and lets
  XLA partition the vectorised program; the data and query times are replicated. Every
  draw keeps the key it has on one device (`fold_in(key, chunk)` then NumPyro's split),
  and JAX's partitionable Threefry makes random bits independent of the layout, so
  the numbers equal the single-device run for the same key.
- *Series / patients*: pass a 2-D `jax.sharding.Mesh` with axes `("d", "series")`
  (e.g. `bd.distributed.mesh(shape=(2, 2))`) to also split the series axis of the data,
  the query times and the output.
- *Series in SVI* (data parallelism): `bd.fit(model, data, method="svi",
  devices=jax.devices(), key=k)` splits each minibatch (the whole batch when
  `batch_size` is None) over the devices along the series axis and keeps the
  variational parameters and optimiser state replicated; XLA adds the cross-device sums
  of the ELBO and of its gradients. The series are split over every axis of the mesh.
  The minibatch is drawn exactly as on one device (same key, same series), so the loss
  trajectory equals the single-device one up to the order of floating-point sums.

**Many hosts.** Start every process with `bd.distributed.initialize(...)` (a thin
wrapper over `jax.distributed.initialize`) before anything else touches JAX; then
`jax.devices()` lists the devices of all hosts, and `predict(..., devices=jax.devices())`
runs one global predictive whose draws every process receives in full. Every process
must run the same program on the same `Posterior` (fit with the same key, or
`bd.load` the same saved run). Under SLURM (one task per node, `srun` sets the
variables `jax.distributed.initialize` reads):

```bash
#!/bin/bash
#SBATCH --nodes=2 --ntasks-per-node=1 --gpus-per-node=4 --time=01:00:00
srun python forecast.py          # forecast.py calls bd.distributed.initialize() first
```

Elsewhere give the coordinator explicitly, the same address on every process:
`bd.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=i)`. On CPUs
the processes exchange data through gloo (JAX's default CPU collectives).

**Data-parallel SVI over hosts** (`bd.fit(..., method="svi", devices=jax.devices())`
after `initialize`) takes the data in one of two ways:

- *global* (default): every process passes the same, whole `TimeSeries`; each process
  puts on its devices only what they hold (`jax.make_array_from_callback`): their share
  of the series for a whole-batch fit, all series when minibatching, so that drawing a
  minibatch needs no communication.
- *process-local*: each process passes only its own series, `bd.fit(model, local,
  method="svi", devices=jax.devices(), process_local=True, key=k)`. Every process holds
  the same number of series, and the global data set is the concatenation of the local
  ones in process order (`jax.make_array_from_process_local_data`); the guide's one-off
  set-up gathers the whole data on every host, the steps read only the devices' shards.
  The model must come out of `adapt` identical on every process (its standardisation
  constants are data-derived): this is checked, and a mismatch is refused before
  anything runs.

Either way the same key gives the single-process loss trajectory; checkpoints are
written by process 0 only.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["initialize", "mesh", "sharded_predict", "is_multiprocess", "series_sharding", "ShardedPlacement"]

DRAWS = "d"
SERIES = "series"


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    local_device_ids=None,
    cpu_collectives: Optional[str] = "gloo",
    initialization_timeout: int = 300,
    **kwargs,
) -> None:
    """Join a multi-host JAX job (a thin wrapper over `jax.distributed.initialize`).

    Call it first thing in every process, before any JAX computation. With no arguments
    the cluster is detected from the environment (SLURM, Open MPI, Kubernetes, cloud
    TPUs); otherwise give the same `coordinator_address` (`"host:port"` of process 0)
    and `num_processes` to every process, and each its own `process_id`.

    **Arguments:**

    - `coordinator_address`, `num_processes`, `process_id`, `local_device_ids`: as in
      `jax.distributed.initialize`.
    - `cpu_collectives`: `"gloo"` (default) or `"mpi"`, how CPU devices of different
      processes talk; `None` leaves JAX's setting alone.
    - `initialization_timeout`: seconds to wait for every process to join.
    - `**kwargs`: passed to `jax.distributed.initialize`.

    **Returns:** nothing; afterwards `jax.process_index()`, `jax.process_count()` and
    `jax.devices()` describe the whole job.
    """
    if num_processes is not None and (not isinstance(num_processes, int) or num_processes < 1):
        raise ValueError(f"initialize: num_processes must be a positive int, got {num_processes!r}.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"initialize: process_id={process_id!r} must be in 0..{num_processes - 1} for "
            f"num_processes={num_processes}."
        )
    if cpu_collectives is not None:
        if cpu_collectives not in ("gloo", "mpi"):
            raise ValueError(f"initialize: cpu_collectives={cpu_collectives!r}; use 'gloo' or 'mpi'.")
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
        **kwargs,
    )


def is_multiprocess() -> bool:
    """Whether this process is one of several in a `jax.distributed` job."""
    return jax.process_count() > 1


def mesh(devices: Optional[Sequence] = None, *, shape: Optional[tuple] = None) -> Mesh:
    """A device mesh for `predict(..., devices=...)`.

    **Arguments:**

    - `devices`: JAX devices (default `jax.devices()`: every device of every process).
    - `shape`: `None` for a 1-D mesh over posterior draws (axis `"d"`), or
      `(n_draws, n_series)` for a 2-D mesh that also splits the series (axes
      `("d", "series")`); the product must equal the number of devices.

    **Returns:** a `jax.sharding.Mesh`.
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("mesh: devices is empty; pass jax.devices() or a non-empty list.")
    auto = jax.sharding.AxisType.Auto
    if shape is None:
        return Mesh(np.array(devs), (DRAWS,), axis_types=(auto,))
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or math.prod(shape) != len(devs):
        raise ValueError(
            f"mesh: shape={shape} must be (n_draws, n_series) with product {len(devs)} "
            "(the number of devices)."
        )
    return Mesh(np.array(devs).reshape(shape), (DRAWS, SERIES), axis_types=(auto, auto))


def _as_mesh(devices, owner: str = "predict") -> Mesh:
    if isinstance(devices, Mesh):
        if devices.axis_names[0] != DRAWS or (len(devices.axis_names) > 1 and devices.axis_names[1:] != (SERIES,)):
            raise ValueError(
                f"{owner}: devices is a Mesh with axes {devices.axis_names}; expected ('d',) or "
                "('d', 'series'); build it with bd.distributed.mesh(...)."
            )
        return devices
    if isinstance(devices, jax.Device):
        devices = [devices]
    try:
        devs = list(devices)
    except TypeError:
        raise TypeError(
            f"{owner}: devices must be a list of JAX devices or a Mesh, got {type(devices).__name__}."
        ) from None
    for i, d in enumerate(devs):
        if not isinstance(d, jax.Device):
            raise TypeError(f"{owner}: devices[{i}] is {d!r}, not a JAX device; use jax.devices().")
    return mesh(devs)


def series_sharding(devices) -> NamedSharding:
    """The layout of data-parallel SVI: the leading (series) axis split over every device
    of the mesh, in mesh order.

    **Arguments:**

    - `devices`: a list of JAX devices or a `Mesh` from `mesh(...)`.

    **Returns:** a `NamedSharding`; `NamedSharding(s.mesh, P())` is its replicated twin.
    """
    m = _as_mesh(devices, "SVI.devices")
    return NamedSharding(m, P(tuple(m.axis_names)))


def _global(x, sharding: NamedSharding):
    """A global `jax.Array` from a host value every process holds in full."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _replicated(tree, m: Mesh):
    """A PyTree of host or single-device values (typed PRNG keys included) as global
    arrays replicated over the mesh `m`; every process must pass the same values."""
    rep = NamedSharding(m, P())

    def put(x):
        if _is_key(x):
            return jax.random.wrap_key_data(_global(jax.random.key_data(x), rep), impl=jax.random.key_impl(x))
        return _global(x, rep)

    return jax.tree.map(put, tree)


def _place_series(tree, sharding: NamedSharding, *, process_local: bool = False):
    """A PyTree of arrays whose leading axis is the series as global arrays laid out by
    `sharding`. `process_local=False`: every process holds the whole arrays;
    `process_local=True`: each holds its own rows, concatenated in process order."""
    if process_local:
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
    return jax.tree.map(lambda x: _global(x, sharding), tree)


def _gather_series(tree):
    """Host copies of the whole data from each process's own rows (process order)."""
    if not is_multiprocess():
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True)), tree)


def _check_same_on_every_process(what: str, value: bytes, fix: str) -> None:
    """Refuse (on every process) when `value` differs between the processes of a job."""
    if not is_multiprocess():
        return
    import hashlib

    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(value).digest()[:8], dtype=np.int32)
    every = np.asarray(multihost_utils.process_allgather(digest))
    differ = [i for i in range(every.shape[0]) if not np.array_equal(every[i], every[0])]
    if differ:
        raise ValueError(f"{what} differs between process 0 and process {differ[0]}; {fix}")


class ShardedPlacement:
    """Where the chunks of the posterior predictive run when `predict(..., devices=...)`
    is given: each chunk's draws split over the mesh axis `"d"`, the data and the query
    times replicated (or split over the axis `"series"` of a 2-D mesh).

    The chunk loop, the chunk size and the keys are those of the single-device run
    (`bayesde.inference._predictive`); this only pads each chunk up to a multiple of the
    number of devices on the draw axis (the extra draws are computed and dropped) and
    lays the arrays out. JAX's partitionable Threefry makes random bits independent of
    the layout, and NumPyro's split keys are a prefix-stable function of their count,
    so the kept draws equal the single-device ones.

    **Arguments:**

    - `devices`: a list of devices (1-D mesh over draws) or a `Mesh` from `mesh(...)`.
    - `n_series`: the number of series of the data predicted from.
    """

    def __init__(self, devices, *, n_series: int):
        self.mesh = _as_mesh(devices)
        if not jax.config.jax_threefry_partitionable:
            raise ValueError(
                "predict(devices=...): needs jax.config.update('jax_threefry_partitionable', True) "
                "(JAX's default) so that random numbers do not depend on the device layout."
            )
        self.n_draws = self.mesh.shape[DRAWS]
        n_s = self.mesh.shape.get(SERIES, 1)
        if n_s > 1 and n_series % n_s:
            raise ValueError(
                f"predict: the mesh splits series over {n_s} devices but data has {n_series} "
                f"series; use a series axis that divides {n_series}."
            )
        self._rep = NamedSharding(self.mesh, P())
        self._draws = NamedSharding(self.mesh, P(DRAWS))
        self._series = NamedSharding(self.mesh, P(SERIES)) if n_s > 1 else self._rep
        self._out = NamedSharding(self.mesh, P(DRAWS, SERIES)) if n_s > 1 else self._draws

    def worthwhile(self, chunk: int) -> bool:
        """False for one draw per chunk over several devices: NumPyro does not split the
        key for a single draw, so padding it would change the numbers, and one draw
        gains nothing from a mesh anyway (the caller then stays on one device)."""
        return not (chunk == 1 and self.n_draws > 1)

    def size(self, chunk: int) -> int:
        return -(-chunk // self.n_draws) * self.n_draws

    def shared(self, tree):
        return jax.tree.map(lambda x: _global(x, self._series), tree)

    def draws(self, tree):
        return {k: _global(np.asarray(v), self._draws) for k, v in tree.items()}

    def key(self, key):
        """A chunk's key as replicated key data, with its PRNG implementation (or
        `None` for a raw `uint32` key)."""
        if _is_key(key):
            return _global(jax.random.key_data(key), self._rep), jax.random.key_impl(key)
        return _global(key, self._rep), None

    def compile(self, fn):
        """`fn(key, draws, batch, query, n)` taking `key` as `self.key` gives it and
        returning its outputs laid out over the mesh (one compiled program per PRNG
        implementation)."""
        compiled = []

        def call(key, sub, batch, q, n):
            kd, impl = key
            for known, jitted in compiled:
                if known == impl:
                    break
            else:
                def run(kd, sub, batch, q, n):
                    k = kd if impl is None else jax.random.wrap_key_data(kd, impl=impl)
                    return fn(k, sub, batch, q, n)

                jitted = jax.jit(run, static_argnums=4, out_shardings=self._out)
                compiled.append((impl, jitted))
            return jitted(kd, sub, batch, q, n)

        return call

    def assemble(self, parts):
        return _assemble(parts)


def sharded_predict(post, query, data, *, key, num_samples=None, devices=None):
    """The posterior predictive of `post` with its draws (and optionally series) split
    over devices: `post.predict(query.ts, ..., devices=devices)`, kept for code written
    against it (see `ShardedPlacement` for the layout).

    **Arguments:**

    - `post`: a `bd.Posterior`.
    - `query`: the validated `Query` (query times, treatments).
    - `data`: the `bd.TimeSeries` to condition on.
    - `key`: a JAX PRNG key.
    - `num_samples`: predictive draws (default every posterior draw).
    - `devices`: a list of devices (1-D mesh over draws) or a `Mesh` from `mesh(...)`;
      default every device.

    **Returns:** a `bd.Prediction`; in one process its arrays stay sharded over the
    mesh (see `pred.samples.sharding`), in a multi-process job every process gets all
    draws as host arrays.
    """
    return post.predict(
        np.asarray(query.ts), key=key, num_samples=num_samples, data=data, treatments=query.treatments,
        devices=jax.devices() if devices is None else devices,
    )


def _assemble(parts):
    """Concatenate chunk outputs, dropping padding; keeps the sharding when nothing is
    dropped, gathers to every process in a multi-process job."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        arrs = [np.asarray(multihost_utils.process_allgather(a, tiled=True))[:k] for a, k in parts]
        return np.concatenate(arrs)
    if len(parts) == 1 and parts[0][0].shape[0] == parts[0][1]:
        return parts[0][0]
    return jnp.concatenate([a[:k] for a, k in parts])
