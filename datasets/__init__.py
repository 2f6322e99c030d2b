"""The real data extracts and data cards that `bd.datasets.load` reads.

This folder is installed as the package `bayesde.datasets.data` (see `pyproject.toml`);
the file makes it a regular package so that editable installs find it too. Nothing to
import here: use `bayesde.datasets`.
"""
