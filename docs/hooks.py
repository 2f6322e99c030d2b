"""mkdocs hook: put repository files that live outside `docs/` into the site.

The tutorials (`tutorials/*.ipynb`, rendered by mkdocs-jupyter without executing
them), their figures and the benchmark results stay where they are in the repository;
this hook adds them to the build under the same paths, so there is never a second
committed copy. Pages link to them as `../tutorials/...` / `../benchmarks/...` (which
works when reading `docs/*.md` on GitHub); the hook rewrites those links to the paths
the files have inside the site.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
#: Repository files (glob patterns relative to the root) that the site carries.
MIRRORED = (
    "tutorials/*.ipynb",
    "tutorials/figures/*.png",
    "benchmarks/results/*.png",
    "benchmarks/results/*.json",
    "benchmarks/results/*.csv",
    "benchmarks/results/*.jsonl",
    "benchmarks/results/*/*.json",
)
_LINK = re.compile(r"(\]\()((?:\.\./)+)((?:tutorials|benchmarks)/[^)\s#]*)")


def _mirrored_paths() -> set[str]:
    paths = {p for pattern in MIRRORED for p in ROOT.glob(pattern)}
    # A notebook is a tutorial when it is paired with its jupytext script (this skips
    # jupytext's temporary files while a notebook is being re-executed).
    paths = {p for p in paths if p.suffix != ".ipynb" or p.with_suffix(".py").is_file()}
    return {p.relative_to(ROOT).as_posix() for p in paths}


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files, config):
    for rel in sorted(_mirrored_paths()):
        if files.get_file_from_path(rel) is None:
            # A real file whose source folder is the repository root (not File.generated:
            # mkdocs-jupyter's page wrapper needs `src_dir` to find the notebook).
            files.append(File(rel, src_dir=str(ROOT), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    """Repository links that leave `docs/` (`../tutorials/x`, `../benchmarks/x`) -> the
    same files inside the site, for the files this hook carries."""
    depth = page.file.src_uri.count("/")

    def fix(m):
        ups, rel = m.group(2), m.group(3)
        if len(ups) != 3 * (depth + 1) or files.get_file_from_path(rel) is None:
            return m.group(0)  # not a carried file: leave it for mkdocs to check
        return m.group(1) + "../" * depth + rel

    return _LINK.sub(fix, markdown)
