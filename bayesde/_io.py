"""Saving and loading runs: JSON config + equinox leaves + netCDF. Never pickle.

A run folder holds

- `bayesde.json`: format and package versions, the model class and its configuration,
  the method, run info, the fit key, checksums of the other files;
- `posterior.nc`: posterior draws, sample statistics and the SVI loss (netCDF4/HDF5);
- `params.eqx`: point-estimated parameters (`eqx.tree_serialise_leaves`);
- `data.nc`: the training data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._data import TimeSeries
from ._version import FORMAT_VERSION, __version__
from .inference._engines import BlackJAXNUTS, EngineResult, NUTS, SVI
from .inference._posterior import Posterior
from .models._base import MODEL_REGISTRY, _from_json, _to_json

__all__ = ["save_posterior", "load"]

_FILES = ("posterior.nc", "params.eqx", "data.nc")
_METHODS = {"svi": SVI, "nuts": NUTS, "blackjax-nuts": BlackJAXNUTS}


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
        out[f.name] = v
    return out


def _write_posterior_nc(post, path: Path):
    import xarray as xr

    variables = {}
    for k, v in post.samples.items():
        v = np.asarray(v)
        variables[f"sample:{k}"] = xr.Variable(("chain", "draw") + tuple(f"{k}_dim_{i}" for i in range(v.ndim - 2)), v)
    for k, v in post.sample_stats.items():
        v = np.asarray(v)
        variables[f"stat:{k}"] = xr.Variable(("chain", "draw"), v)
    if post.loss is not None:
        variables["loss"] = xr.Variable(("step",), np.asarray(post.loss))
    xr.Dataset(variables).to_netcdf(path, engine="h5netcdf")


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


def save_posterior(post: Posterior, path, *, overwrite: bool = False) -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"save: {str(path)!r} already exists; pass overwrite=True to replace it, or choose "
            "another path."
        )
    if path.exists() and not (path / "bayesde.json").exists():
        raise FileExistsError(
            f"save: {str(path)!r} exists and is not a bayesde run; refusing to replace it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_posterior_nc(post, tmp / "posterior.nc")
        params = {k: jnp.asarray(v) for k, v in post.params.items()}
        eqx.tree_serialise_leaves(tmp / "params.eqx", params)
        _write_data_nc(post.data, tmp / "data.nc")
        config = {
            "format_version": FORMAT_VERSION,
            "bayesde_version": __version__,
            "model": {"class": type(post.model).__name__, "config": post.model.config()},
            "method": {"name": post.method_name, "config": _method_config(post.method)},
            "info": _to_json(post.info, "info", "Posterior"),
            "key_data": post._key_data.tolist(),
            "params": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)} for k, v in post.params.items()},
            "data": {
                "names": post.data.names,
                "treatment_names": post.data.treatment_names,
                "static_names": post.data.static_names,
                "series_ids": [s if isinstance(s, (int, str)) else str(s) for s in post.data.series_ids],
            },
            "checksums": {f: _sha256(tmp / f) for f in _FILES},
        }
        with open(tmp / "bayesde.json", "w") as f:
            json.dump(config, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(path) -> Posterior:
    """Load a run saved by `Posterior.save`.

    Refuses a folder that is not a bayesde run, a different format version (naming
    both versions), and files that were truncated or edited (checksums).
    """
    import xarray as xr

    path = Path(path)
    _recover_interrupted_save(path)
    meta = path / "bayesde.json"
    if not meta.exists():
        raise ValueError(f"load: {str(path)!r} is not a bayesde run (no bayesde.json inside).")
    try:
        config = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"load: {str(meta)!r} is not valid JSON ({e}); the run is damaged.") from None
    if not isinstance(config, dict) or "format_version" not in config:
        raise ValueError(f"load: {str(meta)!r} is not a bayesde run description.")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"load: {str(path)!r} has format version {config['format_version']!r} (written by bayesde "
            f"{config.get('bayesde_version', '?')}); this bayesde {__version__} reads format version "
            f"{FORMAT_VERSION}. Load it with the bayesde version that wrote it."
        )
    for f in _FILES:
        p = path / f
        if not p.exists():
            raise ValueError(f"load: {str(p)!r} is missing; the run is incomplete.")
        if _sha256(p) != config.get("checksums", {}).get(f):
            raise ValueError(
                f"load: {str(p)!r} does not match its checksum; the file was truncated or edited."
            )
    try:
        return _build(path, config)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(
            f"load: {str(meta)!r} is not a bayesde run description this bayesde can rebuild "
            f"({type(e).__name__}: {e}); was it edited by hand? Save the run again from Python."
        ) from None


def _recover_interrupted_save(path: Path) -> None:
    """An overwrite swaps the old run aside, then moves the new one in. If the process
    died between the two renames, put the old run back (and say so) instead of losing it."""
    import warnings

    if path.exists():
        return
    old = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.exists() else []
    old = [o for o in old if (o / "bayesde.json").exists()]
    if len(old) == 1:
        os.replace(old[0], path)
        warnings.warn(
            f"load: a save to {str(path)!r} was interrupted; restored the previous run from "
            f"{str(old[0])!r}.",
            stacklevel=3,
        )


def _build(path: Path, config: dict) -> Posterior:
    import xarray as xr

    cls_name = config["model"]["class"]
    if cls_name not in MODEL_REGISTRY:
        raise ValueError(f"load: unknown model class {cls_name!r}; is the package that defines it imported?")
    model = MODEL_REGISTRY[cls_name].from_config(config["model"]["config"])

    with xr.open_dataset(path / "data.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    dmeta = config["data"]
    data = TimeSeries(
        ds["ts"].values,
        ds["ys"].values,
        mask=ds["mask"].values.astype(bool),
        treatments=ds["treatments"].values if "treatments" in ds else None,
        static=ds["static"].values if "static" in ds else None,
        names=dmeta["names"],
        treatment_names=dmeta["treatment_names"],
        static_names=dmeta["static_names"],
        series_ids=dmeta["series_ids"],
        lengths=ds["lengths"].values,
    )
    with xr.open_dataset(path / "posterior.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    samples = {k.split(":", 1)[1]: ds[k].values for k in ds.data_vars if k.startswith("sample:")}
    stats = {k.split(":", 1)[1]: ds[k].values for k in ds.data_vars if k.startswith("stat:")}
    loss = ds["loss"].values if "loss" in ds else None
    template = {k: jnp.zeros(v["shape"], dtype=v["dtype"]) for k, v in config["params"].items()}
    params = eqx.tree_deserialise_leaves(path / "params.eqx", template)
    params = {k: np.asarray(v) for k, v in params.items()}
    mname = config["method"]["name"]
    if mname not in _METHODS:
        raise ValueError(f"load: unknown method {mname!r} in {str(path / 'bayesde.json')!r}; expected one of {sorted(_METHODS)}.")
    mcfg = {k: v for k, v in config["method"]["config"].items() if not (k in ("optimizer", "guide") and isinstance(v, str) and v not in ("normal", "mvn", "delta"))}
    method = _METHODS[mname](**{k: _from_json(v) for k, v in mcfg.items()})
    result = EngineResult(samples=samples, params=params, sample_stats=stats, loss=loss, info=_from_json(config["info"]))
    return Posterior(model, data, method, result, key_data=np.asarray(config["key_data"], dtype=np.uint32), method_name=mname)
