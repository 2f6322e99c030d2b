"""Every tutorial runs top to bottom in fast mode, and its notebook is in sync."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_fast_mode(path, tmp_path):
    env = {**os.environ, "BAYESDE_FAST": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_has_paired_notebook(path):
    jupytext = pytest.importorskip("jupytext")
    nb_path = path.with_suffix(".ipynb")
    assert nb_path.exists(), f"{nb_path.name} is missing; run `jupytext --to ipynb {path.name}`"
    script = jupytext.read(path)
    notebook = jupytext.read(nb_path)
    code = lambda nb: [c.source.strip() for c in nb.cells if c.cell_type == "code"]  # noqa: E731
    assert code(script) == code(notebook), f"{nb_path.name} is out of date; re-run jupytext --sync"
