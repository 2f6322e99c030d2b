"""Loading runs saved by `bayesde._io` (`Posterior.save`): checks the format version
and the checksums, then rebuilds the model, the method and the `Posterior`."""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._atomic import recover
from ._data import TimeSeries
from ._io import FILES, MARKER, _sha256
from ._version import FORMAT_VERSION, __version__
from .inference._engines import ENGINES, EngineResult, as_info
from .inference._posterior import Posterior
from .models._base import MODEL_REGISTRY, _from_json

__all__ = ["load"]


def load(path) -> Posterior:
    """Load a run saved by `Posterior.save`.

    Refuses a folder that is not a bayesde run, a different format version (naming
    both versions), and files that were truncated or edited (checksums).
    """
    path = Path(path)
    recover(path, marker=MARKER, what="run")
    meta = path / MARKER
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
    for f in FILES:
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


def _read_posterior_nc(path: Path):
    """`(samples, sample_stats, loss)` from `posterior.nc`: the InferenceData layout of
    `_write_posterior_nc`, or the flat layout of earlier runs (`sample:<site>`,
    `stat:<name>`, `loss` at the root)."""
    import h5netcdf
    import xarray as xr

    with h5netcdf.File(path, "r") as f:
        groups, root = set(f.groups), set(f.variables)

    def read(group):
        with xr.open_dataset(path, group=group, engine="h5netcdf") as ds:
            return ds.load()

    if any(k.startswith("sample:") or k.startswith("stat:") or k == "loss" for k in root):
        ds = read(None)
        samples = {k.split(":", 1)[1]: ds[k].values for k in ds.data_vars if k.startswith("sample:")}
        stats = {k.split(":", 1)[1]: ds[k].values for k in ds.data_vars if k.startswith("stat:")}
        return samples, stats, (ds["loss"].values if "loss" in ds else None)
    if not groups & {"posterior", "sample_stats", "loss"}:
        raise ValueError(
            f"load: {str(path)!r} holds no posterior, sample_stats or loss group (nor draws of "
            "the earlier flat layout); the run is damaged. Save it again from Python."
        )
    samples = {}
    if "posterior" in groups:
        posterior = read("posterior")
        samples = {k: posterior[k].values for k in posterior.data_vars}
    stats = {}
    if "sample_stats" in groups:
        ds = read("sample_stats")
        stats = {k: ds[k].values for k in ds.data_vars}
    loss = read("loss")["loss"].values if "loss" in groups else None
    return samples, stats, loss



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
    samples, stats, loss = _read_posterior_nc(path / "posterior.nc")
    template = {k: jnp.zeros(v["shape"], dtype=v["dtype"]) for k, v in config["params"].items()}
    params = eqx.tree_deserialise_leaves(path / "params.eqx", template)
    params = {k: np.asarray(v) for k, v in params.items()}
    mname = config["method"]["name"]
    if mname not in ENGINES:
        raise ValueError(f"load: unknown method {mname!r} in {str(path / 'bayesde.json')!r}; expected one of {sorted(ENGINES)}.")
    mcfg = {k: v for k, v in config["method"]["config"].items() if not (k in ("optimizer", "guide") and isinstance(v, str) and v not in ("normal", "mvn", "delta"))}
    method = ENGINES[mname](**{k: _from_json(v) for k, v in mcfg.items()})
    # `info` is the engine's record as a flat dict (runs saved before the records too).
    info = as_info(_from_json(config["info"]), ENGINES[mname])
    result = EngineResult(samples=samples, params=params, sample_stats=stats, loss=loss, info=info)
    return Posterior(model, data, method, result, key_data=np.asarray(config["key_data"], dtype=np.uint32), method_name=mname)
