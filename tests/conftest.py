import itertools

import jax
import numpy as np
import pytest


@pytest.fixture
def getkey():
    """Fresh, reproducible keys: `getkey()` returns key 0, 1, 2, ... for each test."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))


def pytest_collection_modifyitems(config, items):
    # Tutorials and CLI subprocesses last: they are the slowest and least specific.
    items.sort(key=lambda it: ("tutorial" in it.nodeid) or ("test_cli" in it.nodeid))
