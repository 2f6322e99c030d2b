"""Every tutorial runs top to bottom in fast mode, and its committed notebook is the
same story executed in full mode: in sync with the script, with outputs and figures."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))
IDS = [p.stem for p in TUTORIALS]


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_runs_in_fast_mode(path, tmp_path):
    # The backend comes from the environment, so the same script shows its figures
    # inline in Jupyter and renders off-screen here.
    env = {**os.environ, "BAYESDE_FAST": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def check_notebook(script: Path, notebook: Path) -> None:
    """Raise `AssertionError` unless `notebook` is `script`'s executed twin: the same
    cells (type and source, outputs and metadata ignored), every code cell executed
    without an error, and at least one inline PNG figure."""
    import jupytext

    assert notebook.exists(), f"{notebook.name} is missing; execute it with `jupytext --to ipynb --execute {script.name}`"
    source = script.read_text()
    assert "matplotlib.use(" not in source, (
        f"{script.name} calls matplotlib.use(...), which hides every figure in Jupyter; "
        "leave the backend to the environment (the tests set MPLBACKEND=Agg)."
    )
    want, got = _cells(jupytext.read(script)), _cells(jupytext.read(notebook))
    for i, (w, g) in enumerate(zip(want, got)):
        assert w == g, (
            f"{notebook.name}: cell {i} differs from {script.name} "
            f"({w[0]} {w[1][:60]!r}... vs {g[0]} {g[1][:60]!r}...); "
            f"re-execute it with `jupytext --to ipynb --execute {script.name}`."
        )
    assert len(want) == len(got), (
        f"{notebook.name} has {len(got)} cells, {script.name} has {len(want)}; "
        f"re-execute it with `jupytext --to ipynb --execute {script.name}`."
    )
    code = [c for c in jupytext.read(notebook).cells if c.cell_type == "code"]
    unrun = [i for i, c in enumerate(code) if c.source.strip() and c.get("execution_count") is None]
    assert not unrun, (
        f"{notebook.name}: code cells {unrun} were never executed; "
        f"execute the notebook in full mode (BAYESDE_FAST unset)."
    )
    outputs = [o for c in code for o in c.get("outputs", [])]
    errors = [o.get("ename") for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{notebook.name}: executed with errors {errors}; fix the script and re-execute."
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, (
        f"{notebook.name} shows no figure (no image/png output); call plt.show() in the "
        "figure cells and execute it without a non-interactive matplotlib backend."
    )


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_notebook_is_executed_and_in_sync(path):
    pytest.importorskip("jupytext")
    check_notebook(path, path.with_suffix(".ipynb"))


def test_notebook_check_fails_when_out_of_sync_or_without_outputs(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    script = tmp_path / "01_demo.py"
    script.write_text(
        "# %% [markdown]\n# A figure.\n\n# %%\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n"
    )
    notebook = script.with_suffix(".ipynb")
    with pytest.raises(AssertionError, match="missing"):
        check_notebook(script, notebook)

    nb = jupytext.read(script)
    jupytext.write(nb, notebook)
    with pytest.raises(AssertionError, match="never executed"):
        check_notebook(script, notebook)

    nb.cells[1].execution_count = 1
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="no figure\n")]
    jupytext.write(nb, notebook)
    with pytest.raises(AssertionError, match="no figure"):
        check_notebook(script, notebook)

    png = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    nb.cells[1].outputs = [png]
    jupytext.write(nb, notebook)
    check_notebook(script, notebook)  # executed, in sync, with a figure

    script.write_text(script.read_text().replace("[1, 2]", "[1, 3]"))
    with pytest.raises(AssertionError, match="cell 1 differs"):
        check_notebook(script, notebook)

    script.write_text(script.read_text().replace("[1, 3]", "[1, 2]") + "\n# %%\nprint('more')\n")
    with pytest.raises(AssertionError, match="has 2 cells"):
        check_notebook(script, notebook)
