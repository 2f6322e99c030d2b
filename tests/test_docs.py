"""The documentation: the site builds with `mkdocs build --strict` (offline), its API
pages carry the docstrings, the tutorials are rendered with their figures, and the code
on the "Extending bayesde" page runs as written."""

import html
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def _text(page: Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", page.read_text(encoding="utf-8"), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


def _squash(text: str) -> str:
    """No whitespace at all: inline tags become spaces in `_text`, so compare without."""
    return "".join(text.replace("`", "").replace("**", "").split())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def test_api_page_carries_the_docstrings(site):
    import bayesde as bd

    text = _text(site / "api" / "fit" / "index.html")
    assert _squash(bd.fit.__doc__.strip().splitlines()[0]) in _squash(text)
    # The **Arguments:** list renders as a list with every argument of `fit`.
    for arg in ("model", "data", "method", "key", "progress_bar", "**options"):
        assert _squash(f"{arg}:") in _squash(text), arg
    models = _text(site / "api" / "models" / "index.html")
    for name in ("AbstractModel", "register_model", "BayesianNeuralODE", "LatentSDE", "BNCDE"):
        assert name in models, name
    assert _squash(bd.models.LatentSDE.__doc__.strip().splitlines()[0]) in _squash(models)


def test_tutorials_are_rendered_with_their_figures(site):
    notebooks = sorted(p for p in (ROOT / "tutorials").glob("*.ipynb") if p.with_suffix(".py").is_file())
    assert len(notebooks) >= 4
    total = 0
    for nb_path in notebooks:
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        page = site / "tutorials" / nb_path.stem / "index.html"
        assert page.is_file(), page
        raw = page.read_text(encoding="utf-8")
        title = "".join(nb["cells"][0]["source"]).splitlines()[0].lstrip("# ").strip()
        assert title in html.unescape(raw), (nb_path.name, title)
        images = sum(
            "image/png" in out.get("data", {})
            for cell in nb["cells"] if cell["cell_type"] == "code"
            for out in cell.get("outputs", [])
        )
        # Every figure the committed notebook holds is on its page (not re-executed).
        shown = len(re.findall(r'<img[^>]*src="data:image/png;base64,', raw))
        assert shown == images, (nb_path.name, images, shown)
        total += shown
    assert total > 0, "the committed notebooks hold no figures; execute them (jupytext --execute)"


def test_every_local_image_and_link_resolves(site):
    perf = (site / "performance" / "index.html").read_text(encoding="utf-8")
    assert "run_cpu_quick.json" in perf and "3.80 s per training iteration" in perf
    calibration = (site / "calibration" / "index.html").read_text(encoding="utf-8")
    assert 'src="../benchmarks/results/calibration.png"' in calibration
    for page in site.rglob("*.html"):
        for ref in re.findall(r'(?:src|href)="([^"#?]+)', page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:|^/", ref) or not ref.endswith((".png", ".json", ".csv", ".ipynb")):
                continue
            assert (page.parent / ref).resolve().is_file(), (page.relative_to(site), ref)


def test_readme_is_the_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # CI runs the README's two set-up commands verbatim (.ci/run).
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [ci[i + 1] for i, line in enumerate(ci) if line.startswith("# README, command")]
    assert len(commands) == 2
    setup = readme.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    for command in commands:
        assert f"\n{command}\n" in setup, command
    # Relative links (to docs pages, tutorials, results) point at files that exist.
    links = re.findall(r"\]\(([^)#\s]+)", readme)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if not re.match(r"^[a-z]+:", link):
            assert (ROOT / link).exists(), link
    assert 'pip install -e ".[docs]" && mkdocs build --strict' in readme


def _extending_page():
    """The page's code: `{filename: body}` for titled python blocks, the untitled python
    blocks joined into one script, and the shell blocks."""
    blocks = FENCE.findall((DOCS / "extending.md").read_text(encoding="utf-8"))
    files = {re.search(r'title="([^"]+)"', meta).group(1): body for lang, meta, body in blocks
             if lang == "python" and "title=" in meta}
    script = "\n".join(body for lang, meta, body in blocks if lang == "python" and "title=" not in meta)
    shell = [body for lang, meta, body in blocks if lang == "bash"]
    return files, script, shell


def _run_python_blocks(tmp_path) -> dict:
    """Write `growth.py`, run the page's other python blocks in order, in `tmp_path`."""
    files, script, _ = _extending_page()
    assert list(files) == ["growth.py"] and len(files["growth.py"].splitlines()) <= 65
    assert "bd.models.register_model" in files["growth.py"]
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    (tmp_path / "page.py").write_text(script)
    env = {**os.environ, "BAYESDE_FAST": "1", "PYTHONPATH": str(tmp_path), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "90% coverage" in proc.stdout
    assert (tmp_path / "runs" / "growth" / "bayesde.json").is_file()
    assert (tmp_path / "growth.csv").is_file()
    return env


def test_extending_page_runs_as_written(tmp_path):
    """The custom model fits by SVI and NUTS, predicts, saves and loads (the page's own
    asserts check that the loaded run predicts the same numbers)."""
    _run_python_blocks(tmp_path)


@pytest.mark.slow  # a second process that imports JAX and compiles the model again
def test_extending_page_cli_runs_as_written(tmp_path):
    env = _run_python_blocks(tmp_path)
    _, _, shell = _extending_page()
    assert shell and all(command.lstrip().startswith("bayesde ") for command in shell)
    bayesde = Path(sys.executable).with_name("bayesde")
    for command in shell:
        argv = shlex.split(command.replace("\\\n", " "))
        proc = subprocess.run([str(bayesde), *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, command + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "runs" / "growth-cli" / "bayesde.json").is_file()
    assert (tmp_path / "runs" / "growth-cli" / "forecast" / "forecast.csv").is_file()
