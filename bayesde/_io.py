"""Saving runs: JSON config + equinox leaves + netCDF. Never pickle (`bayesde._load`
reads them back).

A run folder holds

- `bayesde.json`: format and package versions, the model class and its configuration,
  the method, run info, the fit key, checksums of the other files;
- `posterior.nc`: an ArviZ `InferenceData` (`az.from_netcdf`): posterior draws, sample
  statistics and the SVI loss (netCDF4/HDF5);
- `params.eqx`: point-estimated parameters (`eqx.tree_serialise_leaves`);
- `data.nc`: the training data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._atomic import claim_dir, staged_dir
from ._data import TimeSeries
from ._version import FORMAT_VERSION, __version__
from .models._base import _to_json

if TYPE_CHECKING:
    from .inference._posterior import Posterior

__all__ = ["save_posterior"]

#: The files of a run besides `bayesde.json`, each with a checksum there.
FILES = ("posterior.nc", "params.eqx", "data.nc")
#: The file that marks a folder as a bayesde run.
MARKER = "bayesde.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _method_config(method) -> dict:
    out = {}
    for f in dataclasses.fields(method):
        v = getattr(method, f.name)
        if f.name in ("optimizer", "guide") and v is not None and not isinstance(v, str):
            v = repr(v)  # recorded for the reader; not restorable
        if f.name == "devices" and v is not None:
            # Where the fit ran, as text (device objects belong to one process); a
            # loaded run keeps the record, and a refit needs devices=jax.devices() again.
            v = [str(d) for d in np.asarray(getattr(v, "devices", v), dtype=object).reshape(-1)]
        out[f.name] = v
    return out


def _write_posterior_nc(post, path: Path):
    """Write `posterior.nc` as an ArviZ `InferenceData` (netCDF4 groups, opened by
    `az.from_netcdf`): `posterior` (the draws, `(chain, draw, ...)`; absent for a pure
    point estimate, whose parameters live in `params.eqx`), `sample_stats` (MCMC) and `loss` (the SVI loss per
    `step`, a group of bayesde's own). The predictive groups of `Posterior.to_arviz` are
    derived data and are not stored."""
    import arviz as az
    import xarray as xr

    from .inference._arviz import posterior_dataset, sample_stats_dataset

    groups = {"posterior": posterior_dataset(post.samples)} if post.samples else {}
    if post.sample_stats:
        groups["sample_stats"] = sample_stats_dataset(post.sample_stats)
    if post.loss is not None:
        groups["loss"] = xr.Dataset({"loss": xr.Variable(("step",), np.asarray(post.loss))})
    az.InferenceData(**groups).to_netcdf(str(path), engine="h5netcdf")


def _write_data_nc(data: TimeSeries, path: Path):
    import xarray as xr

    v = {
        "ts": xr.Variable(("series", "time"), data.ts),
        "ys": xr.Variable(("series", "time", "dim"), data.ys),
        "mask": xr.Variable(("series", "time", "dim"), data.mask.astype(np.int8)),
        "lengths": xr.Variable(("series",), data.lengths),
    }
    if data.treatments is not None:
        v["treatments"] = xr.Variable(("series", "time", "k"), data.treatments)
    if data.static is not None:
        v["static"] = xr.Variable(("series", "c"), data.static)
    xr.Dataset(v).to_netcdf(path, engine="h5netcdf")


def save_posterior(post: "Posterior", path, *, overwrite: bool = False) -> None:
    path = Path(path)
    refused = claim_dir(path, overwrite=overwrite, marker=MARKER, what="save:")
    if refused is not None:
        raise FileExistsError(refused.replace("--force", "overwrite=True"))
    with staged_dir(path) as tmp:
        _write_posterior_nc(post, tmp / "posterior.nc")
        params = {k: jnp.asarray(v) for k, v in post.params.items()}
        eqx.tree_serialise_leaves(tmp / "params.eqx", params)
        _write_data_nc(post.data, tmp / "data.nc")
        data = post.data
        config = {
            "format_version": FORMAT_VERSION,
            "bayesde_version": __version__,
            "model": {"class": type(post.model).__name__, "config": post.model.config()},
            "method": {"name": post.method_name, "config": _method_config(post.method)},
            "info": _to_json(post.info.to_dict(), "info", "Posterior"),
            "key_data": post.key_data.tolist(),
            "params": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)} for k, v in post.params.items()},
            "data": {
                "names": data.names,
                "treatment_names": data.treatment_names,
                "static_names": data.static_names,
                "series_ids": [s if isinstance(s, (int, str)) else str(s) for s in data.series_ids],
                "time_unit": data.time_unit,
                "time_origin": None if data.time_origin is None else str(data.time_origin),
            },
            "checksums": {f: _sha256(tmp / f) for f in FILES},
        }
        with open(tmp / MARKER, "w") as f:
            json.dump(config, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
