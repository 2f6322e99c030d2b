"""Packaging: the declared dependencies are exactly what `bayesde/` imports, the wheel
carries every shipped data set with its card, and `bd.datasets.load` works from the
installed wheel (not the source tree); a slow test installs every direct dependency at
its declared lower bound."""

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What a clean clone needs to build the wheel (tracked files only, no build outputs).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "bayesde", "datasets")


def _requirements(group=None):
    project = PYPROJECT["project"]
    lines = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return [Requirement(line) for line in lines]


def _shipped_files():
    return sorted(p.name for p in (ROOT / "datasets").iterdir() if p.suffix in (".csv", ".md"))


def _is_type_checking_block(node):
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported_modules():
    """Top-level names of every absolute import in `bayesde/` (also inside functions;
    not under `if TYPE_CHECKING:`), and the netCDF engines named as strings."""
    found = {}
    for path in sorted((ROOT / "bayesde").rglob("*.py")):
        source = path.read_text()
        skip = set()
        for node in ast.walk(ast.parse(source)):
            if _is_type_checking_block(node):
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(ast.parse(source)):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path.relative_to(ROOT))
        for engine in re.findall(r"""engine\s*=\s*["'](\w+)["']""", source):
            found.setdefault(engine, path.relative_to(ROOT))
    return {
        m: where for m, where in found.items()
        if m not in sys.stdlib_module_names and m not in ("bayesde", "__future__")
    }


def _clean_copy(dest: Path) -> Path:
    """The files a clean clone has (no build outputs, no editable-install leftovers)."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=junk)
        else:
            shutil.copy2(src, dest / name)
    return dest


def _build_wheel(tmp: Path) -> Path:
    """`pip wheel` from a clean copy of the tree, offline (no build isolation)."""
    src = _clean_copy(tmp / "src")
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(src)],
        check=True, cwd=tmp, capture_output=True, text=True,
    )
    (wheel,) = out.glob("bayesde-*.whl")
    return wheel


def _fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_packages_list_names_every_package():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bayesde").rglob("__init__.py")
    }
    assert on_disk - listed == set(), (
        f"pyproject.toml [tool.setuptools] packages misses {sorted(on_disk - listed)}; add them "
        "there or they are left out of the wheel."
    )
    assert listed - on_disk == {"bayesde.datasets.data"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"bayesde.datasets.data": "datasets"}


def test_dependencies_are_exactly_the_imports():
    imported = _imported_modules()
    dists = metadata.packages_distributions()
    needed = {}
    for module, where in imported.items():
        assert module in dists, f"{where} imports {module!r}, which no installed distribution provides."
        for dist in dists[module]:
            needed[canonicalize_name(dist)] = where
    declared = {canonicalize_name(r.name) for r in _requirements()}
    assert set(needed) - declared == set(), (
        "imported but not declared in pyproject.toml [project] dependencies: "
        + ", ".join(f"{d} (in {needed[d]})" for d in sorted(set(needed) - declared))
    )
    assert declared - set(needed) == set(), (
        f"declared in [project] dependencies but never imported: {sorted(declared - set(needed))}; "
        "drop them (or move them to an extra)."
    )
    assert "statsmodels" not in declared


def test_dev_extra_brings_docs_and_notebook():
    (self_ref,) = [r for r in _requirements("dev") if canonicalize_name(r.name) == "bayesde"]
    assert self_ref.extras == {"docs", "notebook"}
    assert {"jupytext", "nbformat", "nbclient", "ipykernel"} <= {r.name for r in _requirements("notebook")}
    assert {"mkdocs-material", "mkdocstrings", "mkdocs-jupyter"} <= {r.name for r in _requirements("docs")}
    (jax,) = [r for r in _requirements() if r.name == "jax"]
    for extra in ("cuda", "cuda13"):
        (jax_cuda,) = _requirements(extra)
        assert jax_cuda.name == "jax" and jax_cuda.specifier == jax.specifier, extra


def test_wheel_carries_every_dataset_and_card(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = _shipped_files()
    assert {"co2_weekly.csv", "hare_lynx.csv", "nile.csv", "theoph.csv", "README.md"} <= set(shipped)
    for name in shipped:
        assert f"bayesde/datasets/data/{name}" in names, f"the wheel lacks datasets/{name}"
    assert not [n for n in names if n.startswith("datasets/")], "datasets/ must only live under bayesde/"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    runtime = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in runtime if "statsmodels" in line]


def test_datasets_load_from_the_installed_wheel(wheel, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "-q", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    # The test venv's packages (JAX, pandas, ...) become visible through a plain path line;
    # .pth files inside a path added that way are not processed, so the editable install's
    # finder never runs and `bayesde` can only come from the wheel.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    cards = [n[:-3] for n in _shipped_files() if n.endswith(".md") and n != "README.md"]
    script = f"""
import sys, bayesde as bd
assert bd.__file__.startswith({str(tmp_path / "venv")!r}), bd.__file__
assert "__editable___bayesde_0_1_0_finder" not in sys.modules
names = bd.datasets.names()
real = [n for n in names if bd.datasets.card(n) != names[n]]
for n in real:
    data = bd.datasets.load(n)
    assert data.ys.size > 0 and data.mask.any(), n
assert "statsmodels" not in sys.modules
from importlib import resources
files = resources.files("bayesde.datasets.data")
assert str(files).startswith({str(tmp_path / "venv")!r}) and files.joinpath("nile.csv").is_file(), files
print(sorted(real))
"""
    run = subprocess.run([str(python), "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert {"co2", "hare_lynx", "nile", "theoph"} <= set(loaded)
    assert len(loaded) == len(cards), f"cards {cards} but data sets with a card {loaded}"


def _lower_bound_constraints():
    """`name==X` for every direct dependency declared `name>=X`."""
    pins = []
    for req in _requirements():
        (low,) = [s.version for s in req.specifier if s.operator == ">="]
        pins.append(f"{req.name}=={low}")
    return pins


_LOWER_BOUND_SCRIPT = """
import jax, bayesde as bd
data = bd.datasets.load("hare_lynx")
model = bd.models.BayesianNeuralODE(dim=2, width=4, depth=1)
post = bd.fit(model, data, method="svi", num_steps=5, key=jax.random.key(0), progress_bar=False, warn=False)
pred = post.predict(data.ts, key=jax.random.key(1))
assert pred.mean.shape == data.shape, pred.mean.shape
post.save("run")
bd.load("run").to_arviz()
print("ok")
"""


@pytest.mark.slow
def test_lower_bounds_install_and_fit(wheel, tmp_path):
    """Every direct dependency at its declared lower bound (downloads from the registry)."""
    pins = _lower_bound_constraints()
    (tmp_path / "constraints.txt").write_text("\n".join(pins) + "\n")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "lb")], check=True)
    bin_ = tmp_path / "lb" / "bin"
    install = subprocess.run(
        [str(bin_ / "pip"), "install", "-q", "-c", str(tmp_path / "constraints.txt"), f"{wheel}"],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    freeze = subprocess.run([str(bin_ / "pip"), "freeze"], capture_output=True, text=True).stdout
    for pin in pins:
        name, version = pin.split("==")
        assert re.search(rf"(?im)^{re.escape(name)}=={re.escape(version)}(\.0)*$", freeze), (pin, freeze)
    run = subprocess.run([str(bin_ / "python"), "-I", "-c", _LOWER_BOUND_SCRIPT], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
    cli = subprocess.run([str(bin_ / "bayesde"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and "fit" in cli.stdout, cli.stderr[-3000:]
    cli = subprocess.run([str(bin_ / "bayesde"), "datasets"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and "nile" in cli.stdout, cli.stderr[-3000:]
