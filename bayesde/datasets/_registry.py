"""Named data sets: `load(name)` and `names()`; each entry has a data card."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable

__all__ = ["register", "load", "names", "card", "data_path"]

_LOADERS: dict[str, tuple[Callable, str, str]] = {}


def register(name: str, loader: Callable, summary: str, card: str | None = None) -> None:
    """Register `loader(**kwargs) -> TimeSeries | dataset object` under `name`.

    `card` is the file name of a markdown data card in the repository's `datasets/`
    folder (installed as `bayesde/datasets/data/`).
    """
    _LOADERS[name] = (loader, summary, card)


def names() -> dict[str, str]:
    """The registered data sets with a one-line summary each."""
    return {k: v[1] for k, v in sorted(_LOADERS.items())}


def load(name: str, **kwargs):
    """Load a bundled data set or run a simulator with its defaults (no downloads)."""
    if not isinstance(name, str) or name not in _LOADERS:
        raise ValueError(
            f"datasets.load: unknown data set {name!r}; choose one of {sorted(_LOADERS)}."
        )
    return _LOADERS[name][0](**kwargs)


def data_path(filename: str):
    """A file shipped with bayesde's real data sets, as an `importlib.resources` traversable.

    The files live in the repository's top-level `datasets/` folder; the build maps that
    folder onto the package `bayesde.datasets.data` (see `pyproject.toml`), so the same
    call works from an editable install and an installed wheel. Code imported straight
    from a source checkout (e.g. `python -m pytest` in the repository, which puts the
    checkout first on `sys.path`) has no such package and reads the folder itself.
    """
    try:
        return resources.files("bayesde.datasets.data").joinpath(filename)
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "datasets"
        if not (checkout / filename).is_file():
            raise
        return checkout / filename


def card(name: str) -> str:
    """The markdown data card of a data set (or its summary when it has none)."""
    if not isinstance(name, str) or name not in _LOADERS:
        raise ValueError(f"datasets.card: unknown data set {name!r}; choose one of {sorted(_LOADERS)}.")
    _, summary, card_file = _LOADERS[name]
    if card_file is None:
        return summary
    return data_path(card_file).read_text()
