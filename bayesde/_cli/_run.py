"""`--run`: a run folder written by `bayesde fit`, loaded with `bd.load`."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import MARKER, UserError, one_line, sha256
from ._models import user_model


def load_run(bd, run: str):
    """Load a run folder; its cli.json says which user module defines the model (imported
    first, so that `bd.load` finds the class) and the date unit of its time column.

    **Returns:** the `bd.Posterior` and a record of the run (for `cli.json`)."""
    p = Path(run)
    if not p.is_dir():
        raise UserError(f"--run: folder {run!r} not found; make one with `bayesde fit ... --out {run}`.")
    cli = {}
    if (p / MARKER).exists():
        try:
            cli = json.loads((p / MARKER).read_text())
        except json.JSONDecodeError:
            cli = {}
    cli_data = cli.get("data") or {}
    if ":" in str(cli.get("model", "")):
        user_model(cli["model"])
    try:
        post = bd.load(p)
    except ValueError as e:  # a damaged or foreign folder: bd.load says what and where
        raise UserError(f"--run {run}: {one_line(e)}") from None
    if post.data.time_unit is None and cli_data.get("time_unit"):
        # Runs saved before the run format recorded date units: take them from cli.json.
        import numpy as np

        post.data.time_unit = cli_data["time_unit"]
        post.data.time_origin = np.datetime64(cli_data["time_origin"], "s")
    meta = {"path": str(p.resolve()), "bayesde_json_sha256": sha256(p / "bayesde.json")}
    if cli:
        meta["fit_command"] = cli.get("command")
        meta["data_sha256"] = cli_data.get("sha256")
        meta["fit_seed"] = cli.get("seed")
        meta["time_col"] = cli_data.get("time_col")
    return post, meta
